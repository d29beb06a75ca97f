"""Committed offsets of one consumer group, and the history of its commits: an
append-only, checksummed sidecar file.

``<log>/groups/<group>.offsets`` is a 16-byte header (``b"EvLgOFS1"`` + an 8-byte random
file id, zero in files of earlier versions) followed by commit records::

    4s  b"EvOc"      sync marker (lets a reader find the next record after damage)
    u32 length       of the payload
    u64 checksum     xxh3_64 of the payload
    ... payload      msgpack: {"ts": ms, "gen": generation, "member": id,
                               "offsets": [[topic, partition, offset], ...],
                               "ends": [end offset, ...],             (optional)
                               "history": [[topic, partition,         (optional)
                                            [[offset, ts, end], ...]], ...]}

A commit appends one record (under an ``flock`` on the file) holding the offsets it
commits; reading replays the records and the last one for each partition wins. A record
is only counted when its checksum holds, so a torn append (a crash mid-write) or a
damaged record reads as if that commit never happened: the partition keeps its previous
committed offset. A committer finding bytes after the last valid record (junk, or a
torn append) cuts them off first; nobody else appends while it holds the lock.

History. ``"ends"`` runs parallel to ``"offsets"``: the end offset of each partition
when the consumer committed it (``None`` where it could not be read), so the one record
that commits an offset also adds its history entry ``(offset, ts, end)`` — both land, or
neither. ``group_status`` judges a partition by its last entries (``_status``). A rewrite
carries the last ``HISTORY_MAX`` entries of each partition in ``"history"``. Both keys
are optional and only the history reads them: records without them (from earlier
versions, from ``OffsetStore.commit`` without ``ends``) still commit their offsets, and
a malformed ``"ends"`` or ``"history"`` only loses history, never an offset, so the
offsets part reads the same with or without history. A reader keeps at most
``HISTORY_MAX`` entries per partition (a bounded deque), whatever the file holds.

Caches. A reader remembers the offsets (and, for ``read_history``, the history) as of
the end of the last valid record it read, and a committer the end and record count as
of its own last commit, so that the next call reads only what was appended since. Both
are keyed by the inode *and* the file id: a file deleted and created again
(``Log.delete_group``, a rewrite) can get the same inode number back at once, and a
cache keyed by the inode alone would then parse the new file from the old file's end,
mid-record. Both stop at record boundaries, never at the file size, so a cut-and-append
by a committer cannot make a reader skip a record.

When the file grows past ``_COMPACT_RECORDS`` records it is rewritten as a single record
holding every offset and the last ``HISTORY_MAX`` commits of each partition (temp file,
fsync, rename); a committer that locked the old file notices the rename and retries on
the new one. So the file stays within one rewrite record plus ``_COMPACT_RECORDS``
commits, and its history within ``HISTORY_MAX`` entries a partition after each rewrite.
"""

from __future__ import annotations

import fcntl
import os
import struct
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, NamedTuple

import msgpack
import xxhash

from . import _fileutil
from ._types import TopicPartition
from .errors import CorruptRecordError

_MAGIC = b"EvLgOFS1"
_FILE_HEADER = _MAGIC + bytes(8)   # the shape of the header: parse() starts after it
_ID = struct.Struct("<Q")
_RECORD = struct.Struct("<4sIQ")
_SYNC = b"EvOc"
_MAX_RECORD_BYTES = 16 << 20
_MAX_FILE_BYTES = 1 << 30
_COMPACT_RECORDS = 2000
HISTORY_MAX = 50   # commits remembered per partition: the widest window group_status judges
_KEYS = frozenset({"ts", "gen", "member", "offsets"})
_OPTIONAL_KEYS = frozenset({"ends", "history"})


class Commit(NamedTuple):
    """One commit of a partition, as the history remembers it."""

    offset: int          # the committed offset
    timestamp_ms: int    # when, on the committer's log clock
    end_offset: int      # the partition's end offset at that moment

    @property
    def lag(self) -> int:
        """Records behind at the commit."""
        return max(0, self.end_offset - self.offset)


Offsets = dict[TopicPartition, int]
History = dict[TopicPartition, "deque[Commit]"]
# (inode, file id, end of the last valid record read, offsets up to there, history
# up to there or None when not read)
_View = tuple[int, int, int, Offsets, "History | None"]


def new_header() -> bytes:
    """The header of a new file: the magic and a random file id."""
    return _MAGIC + os.urandom(_ID.size)


def recognised(data: bytes) -> bool:
    """True when ``data`` is an offsets file: it starts with the magic, or its magic is
    damaged but checksummed commit records follow (a flipped bit in the header must
    not make a group's offsets read as empty: a consumer would then reset)."""
    if data.startswith(_MAGIC):
        return True
    return len(data) > len(_FILE_HEADER) and parse(data)[2] > 0


def _file_id(header: bytes) -> int:
    return int(_ID.unpack_from(header, len(_MAGIC))[0]) if len(header) >= len(_FILE_HEADER) \
        else -1


def encode_record(offsets: Mapping[TopicPartition, int], now_ms: int, generation: int,
                  member: str, ends: Mapping[TopicPartition, int] | None = None,
                  history: Mapping[TopicPartition, Iterable[Commit]] | None = None) -> bytes:
    """One commit record. ``ends``: the end offset of (some of) the partitions at the
    commit, written as their history entries; ``history``: the entries a rewrite keeps."""
    doc: dict[str, Any] = {"ts": now_ms, "gen": generation, "member": member,
                           "offsets": [[tp.topic, tp.partition, off]
                                       for tp, off in offsets.items()]}
    if ends:
        doc["ends"] = [ends.get(tp) for tp in offsets]
    if history:
        doc["history"] = [[tp.topic, tp.partition, [list(c) for c in commits]]
                          for tp, commits in history.items()]
    payload: bytes = msgpack.packb(doc)
    return _RECORD.pack(_SYNC, len(payload), xxhash.xxh3_64_intdigest(payload)) + payload


def _parse_payload(payload: bytes, history: list[tuple[TopicPartition, Commit]] | None = None
                   ) -> list[tuple[TopicPartition, int]]:
    """The offsets of a record (``ValueError`` and others if malformed); with ``history``,
    its history entries are appended there (none if they are malformed)."""
    doc: Any = msgpack.unpackb(payload, raw=False)
    out = []
    for topic, partition, offset in doc["offsets"]:
        if not (isinstance(topic, str) and type(partition) is int and type(offset) is int):
            raise ValueError("malformed offset entry")
        out.append((TopicPartition(topic, partition), offset))
    if history is not None:
        history.extend(_history_entries(doc, out))
    return out


def _history_entries(doc: Any, offsets: list[tuple[TopicPartition, int]]
                     ) -> list[tuple[TopicPartition, Commit]]:
    """The entries a record adds to the history: a rewrite's kept ones, then one per
    committed partition whose end it names. Malformed ones make it add nothing (the
    record's offsets count regardless: see the module docstring)."""
    found: list[tuple[TopicPartition, Commit]] = []
    try:
        kept = doc.get("history")
        if kept is not None:
            for topic, partition, commits in kept:
                if not (isinstance(topic, str) and type(partition) is int
                        and isinstance(commits, list) and len(commits) <= HISTORY_MAX):
                    raise ValueError("malformed history")
                tp = TopicPartition(topic, partition)
                for offset, ts, end in commits:
                    if not (type(offset) is int and type(ts) is int and type(end) is int):
                        raise ValueError("malformed history entry")
                    found.append((tp, Commit(offset, ts, end)))
        ends = doc.get("ends")
        if ends is not None:
            ts = doc["ts"]
            if not (isinstance(ends, list) and len(ends) == len(offsets) and type(ts) is int):
                raise ValueError("malformed ends")
            for (tp, offset), end in zip(offsets, ends, strict=True):
                if end is None:
                    continue
                if type(end) is not int:
                    raise ValueError("malformed end offset")
                found.append((tp, Commit(offset, ts, end)))
    except (TypeError, ValueError, KeyError, AttributeError):
        return []
    return found


def add_history(history: History, entries: Iterable[tuple[TopicPartition, Commit]]) -> None:
    """Append entries, keeping the last ``HISTORY_MAX`` of each partition."""
    for tp, commit in entries:
        commits = history.get(tp)
        if commits is None:
            commits = history[tp] = deque(maxlen=HISTORY_MAX)
        commits.append(commit)


def parse(data: bytes, start: int = len(_FILE_HEADER), history: History | None = None
          ) -> tuple[list[tuple[TopicPartition, int]], int, int]:
    """Replay commit records from ``start``. Returns (entries in order, end of the last
    valid record, number of records); damaged records are skipped by looking for the
    next sync marker. With ``history``, the records' history entries are added to it."""
    entries, valid_end, records, _ = _walk(data, start, history)
    return entries, valid_end, records


def damaged_bytes(data: bytes) -> int:
    """How many bytes belong to no valid record (damaged or torn records, junk),
    wherever they are in the file, counting a damaged magic too."""
    if len(data) <= len(_FILE_HEADER):
        return 0
    magic = 0 if data.startswith(_MAGIC) else len(_MAGIC)
    return magic + len(data) - len(_FILE_HEADER) - _walk(data, len(_FILE_HEADER))[3]


def _walk(data: bytes, start: int, history: History | None = None
          ) -> tuple[list[tuple[TopicPartition, int]], int, int, int]:
    """``parse``, and the number of bytes the valid records take."""
    entries: list[tuple[TopicPartition, int]] = []
    found: list[tuple[TopicPartition, Commit]] | None = [] if history is not None else None
    position = start
    valid_end = start
    records = 0
    good = 0
    size = len(data)
    while position + _RECORD.size <= size:
        sync, length, checksum = _RECORD.unpack_from(data, position)
        body_start = position + _RECORD.size
        ok = (sync == _SYNC and length <= _MAX_RECORD_BYTES and body_start + length <= size)
        if ok:
            payload = data[body_start:body_start + length]
            if xxhash.xxh3_64_intdigest(payload) == checksum:
                try:
                    entries.extend(_parse_payload(payload, found))
                except Exception:  # a checksummed but malformed record: skip it
                    ok = False
                else:
                    if found and history is not None:
                        # record by record into the bounded deques, so that memory
                        # stays within HISTORY_MAX entries a partition
                        add_history(history, found)
                        found.clear()
                    good += body_start + length - position
                    position = valid_end = body_start + length
                    records += 1
                    continue
        # damaged: resynchronize at the next marker
        nxt = data.find(_SYNC, position + 1)
        if nxt < 0:
            break
        position = nxt
    return entries, valid_end, records, good


def _copy_history(history: History) -> History:
    return {tp: deque(commits, maxlen=HISTORY_MAX) for tp, commits in history.items()}


class OffsetStore:
    """The sidecar of one group, as seen by one process. Thread-safe."""

    def __init__(self, path: str, fsync: bool) -> None:
        self.path = path
        self._fsync = fsync
        self._cache: _View | None = None           # of read(): no history
        self._history_cache: _View | None = None   # of read_history()
        # (inode, file id, end of the last valid record, records) after our last commit
        self._tail: tuple[int, int, int, int] | None = None

    # -- reading ------------------------------------------------------------------------

    def read(self) -> Offsets:
        """The committed offsets (the last good commit of each partition).
        Cost: reads only what was appended since the last call (and the header),
        unless the file was replaced (compacted, reset, deleted and created again)."""
        view = self._replay(self._cache, with_history=False)
        if view is None:
            return {}
        self._cache = view
        return dict(view[3])

    def read_history(self) -> tuple[Offsets, dict[TopicPartition, list[Commit]]]:
        """The committed offsets, and per partition its last ``HISTORY_MAX`` commits
        that named an end offset, oldest first. Cost: as ``read`` (a cache of its own),
        plus copying O(partitions x HISTORY_MAX) entries."""
        view = self._replay(self._history_cache, with_history=True)
        if view is None:
            return {}, {}
        self._history_cache = view
        history = view[4]
        assert history is not None
        return dict(view[3]), {tp: list(commits) for tp, commits in history.items()}

    def _replay(self, view: _View | None, with_history: bool) -> _View | None:
        """``view`` brought up to date with the file (a new view; ``view`` itself is
        never changed, so threads may share it), or None without a file."""
        try:
            fd = _fileutil.open_fd(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            st = os.fstat(fd)
            key = (st.st_ino, _file_id(os.pread(fd, len(_FILE_HEADER), 0)))
            if view is not None and view[:2] == key and view[2] <= st.st_size:
                end = view[2]
                if end == st.st_size:
                    return view
                # appended since: replay only the new records
                known = dict(view[3])
                more = _copy_history(view[4]) if view[4] is not None else None
                entries, valid, _ = parse(_FILE_HEADER + os.pread(fd, st.st_size - end, end),
                                          history=more)
                known.update(entries)
                return (*key, end + valid - len(_FILE_HEADER), known, more)
            data = self._read_all(fd, st.st_size)
        finally:
            os.close(fd)
        offsets: Offsets = {}
        history: History | None = {} if with_history else None
        end = len(data)   # a foreign file holds no commit (a committer restarts it)
        if recognised(data):
            entries, end, _ = parse(data, history=history)
            offsets.update(entries)
        return (*key, end, offsets, history)

    @staticmethod
    def _read_all(fd: int, size: int) -> bytes:
        if size > _MAX_FILE_BYTES:
            raise CorruptRecordError(f"offsets file is {size} bytes; refusing to read it")
        chunks = []
        read = 0
        while read < size:
            chunk = os.pread(fd, size - read, read)
            if not chunk:
                break
            chunks.append(chunk)
            read += len(chunk)
        return b"".join(chunks)

    def _check(self) -> None:
        """Assert the invariants of the file and of this store's view of it. Tests call
        it after every mutation; not meant to run while others commit.

        The file is absent, empty (its creator died before writing the header) or
        starts with the header, and is within the size bound. Every record that counts
        is checksummed and well formed, with a non-negative partition and offset, an
        ``"ends"`` (if any) of an end offset or None per committed partition, and a
        ``"history"`` (rewrites only) of at most ``HISTORY_MAX`` entries for partitions
        it commits; nothing after the valid end checks out; no more than
        ``_COMPACT_RECORDS`` records. The history parse keeps the last ``HISTORY_MAX``
        entries of each partition, exactly those of an unbounded replay, and only of
        committed partitions. A cache naming the file as it is now (inode, file id)
        equals a fresh parse up to its end (history included); a commit tail naming it
        parses to exactly that end and record count. No temp file of this thread is
        left. Cost: reads and parses the whole file."""
        assert not os.path.exists(_fileutil.temp_name(self.path))
        try:
            fd = _fileutil.open_fd(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            st = os.fstat(fd)
            assert st.st_size <= _MAX_FILE_BYTES, st.st_size
            data = self._read_all(fd, st.st_size)
        finally:
            os.close(fd)
        assert data == b"" or (data.startswith(_MAGIC) and len(data) >= len(_FILE_HEADER)), \
            data[:len(_FILE_HEADER)]
        parsed_history: History = {}
        entries, valid_end, records = parse(data, history=parsed_history) if data \
            else ([], 0, 0)
        # An independent walk: records found where parse found them, each well formed.
        walked: list[tuple[TopicPartition, int]] = []
        unbounded: dict[TopicPartition, list[Commit]] = {}
        count = 0
        position = last_end = len(_FILE_HEADER)
        while data and position + _RECORD.size <= len(data):
            sync, length, checksum = _RECORD.unpack_from(data, position)
            body = data[position + _RECORD.size:position + _RECORD.size + length]
            if sync == _SYNC and length <= _MAX_RECORD_BYTES and len(body) == length \
                    and xxhash.xxh3_64_intdigest(body) == checksum:
                try:
                    found = _parse_payload(body)
                except Exception:  # checksummed but malformed: parse skips it too
                    found = None
                if found is not None:
                    doc = msgpack.unpackb(body, raw=False)
                    assert _KEYS <= set(doc) <= _KEYS | _OPTIONAL_KEYS, doc
                    assert type(doc["ts"]) is int and type(doc["gen"]) is int, doc
                    assert isinstance(doc["member"], str), doc
                    assert all(tp.partition >= 0 and off >= 0 for tp, off in found), found
                    for tp, commits in self._check_history(doc, found):
                        unbounded.setdefault(tp, []).extend(commits)
                    walked.extend(found)
                    count += 1
                    position = last_end = position + _RECORD.size + length
                    continue
            nxt = data.find(_SYNC, position + 1)
            if nxt < 0:
                break
            position = nxt
        if data:
            assert (walked, count, last_end) == (entries, records, valid_end), \
                (count, records, last_end, valid_end)
        assert records <= _COMPACT_RECORDS, records
        assert {tp: list(c) for tp, c in parsed_history.items()} == \
            {tp: c[-HISTORY_MAX:] for tp, c in unbounded.items()}, "history replay"
        assert all(c.maxlen == HISTORY_MAX for c in parsed_history.values())
        assert set(parsed_history) <= set(dict(entries)), "history of uncommitted partitions"
        key = (st.st_ino, _file_id(data))
        for cache in (self._cache, self._history_cache):
            if cache is None or cache[:2] != key:
                continue
            end = cache[2]
            assert end <= st.st_size, (cache[:3], st.st_size)
            fresh: History | None = {} if cache[4] is not None else None
            prefix, parsed_end, _ = parse(data[:end], history=fresh)
            assert end == len(data) or parsed_end == end, cache[:3]
            assert dict(prefix) == cache[3], (cache[3], end)
            if cache[4] is not None:
                assert fresh is not None
                assert {tp: list(c) for tp, c in cache[4].items()} == \
                    {tp: list(c) for tp, c in fresh.items()}, "history cache"
                assert all(c.maxlen == HISTORY_MAX for c in cache[4].values())
        tail = self._tail
        if tail is not None and tail[:2] == key and tail[2] <= st.st_size:
            _, end, counted = parse(data[:tail[2]])
            assert (end, counted) == tail[2:], (end, counted, tail)

    @staticmethod
    def _check_history(doc: Any, offsets: list[tuple[TopicPartition, int]]
                       ) -> list[tuple[TopicPartition, list[Commit]]]:
        """Assert a counted record's history keys are well formed; its entries."""
        out: list[tuple[TopicPartition, list[Commit]]] = []
        committed = dict(offsets)
        if "history" in doc:
            assert doc["member"] == "compaction", doc["member"]
            for topic, partition, commits in doc["history"]:
                tp = TopicPartition(topic, partition)
                assert tp in committed and len(commits) <= HISTORY_MAX, (tp, len(commits))
                kept = [Commit(*c) for c in commits]
                assert all(type(v) is int for c in kept for v in c), kept
                assert all(c.offset >= 0 and c.end_offset >= 0 for c in kept), kept
                out.append((tp, kept))
        if "ends" in doc:
            ends = doc["ends"]
            assert isinstance(ends, list) and len(ends) == len(offsets), ends
            assert all(e is None or (type(e) is int and e >= 0) for e in ends), ends
            pairs = zip(offsets, ends, strict=True)
            out += [(tp, [Commit(off, doc["ts"], e)]) for (tp, off), e in pairs if e is not None]
        return out

    # -- writing ------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[int]:
        """An fd of the current file, locked; retries if it was replaced meanwhile."""
        directory = os.path.dirname(self.path)
        while True:
            _fileutil.makedirs(directory)
            fd = _fileutil.open_fd(self.path, os.O_RDWR | os.O_CREAT)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    current = os.stat(self.path).st_ino
                except FileNotFoundError:
                    current = -1
                if current != os.fstat(fd).st_ino:
                    continue  # compacted or deleted while we waited: lock the new file
                yield fd
                return
            finally:
                os.close(fd)

    def commit(self, offsets: Mapping[TopicPartition, int], now_ms: int, generation: int = -1,
               member: str = "", ends: Mapping[TopicPartition, int] | None = None) -> None:
        """Append one commit record: atomic (old or new value, never a mix). ``ends``:
        the end offset of each committed partition now (those it names get a history
        entry, in the same record)."""
        record = encode_record(offsets, now_ms, generation, member, ends)
        with _fileutil.os_errors(f"committing offsets to {self.path}"), self._locked() as fd:
            st = os.fstat(fd)
            key = (st.st_ino, _file_id(os.pread(fd, len(_FILE_HEADER), 0)))
            tail = self._tail
            if tail is not None and tail[:2] == key and tail[2] <= st.st_size:
                # Only what others appended since our last commit needs checking.
                if not os.pread(fd, len(_MAGIC), 0).startswith(_MAGIC):
                    _fileutil.pwrite_all(fd, _MAGIC, 0)  # a damaged magic: mend it in place
                start, records = tail[2:]
                data = os.pread(fd, st.st_size - start, start) if st.st_size > start else b""
                _, valid, more = parse(_FILE_HEADER + data)
                valid_end, records = start + valid - len(_FILE_HEADER), records + more
                size = st.st_size
            else:
                data = self._read_all(fd, st.st_size)
                if not recognised(data):
                    os.ftruncate(fd, 0)  # new or foreign: start over (no one maps it)
                    data = new_header()
                    _fileutil.pwrite_all(fd, data, 0)
                    key = (st.st_ino, _file_id(data))
                elif not data.startswith(_MAGIC):
                    _fileutil.pwrite_all(fd, _MAGIC, 0)  # a damaged magic: mend it in place
                    data = _MAGIC + data[len(_MAGIC):]
                _, valid_end, records = parse(data)
                size = len(data)
            if valid_end < size:
                # Junk or a torn append after the last valid record (commits hold the
                # lock, so nobody is writing there): cut it, so records stay contiguous.
                os.ftruncate(fd, valid_end)
                size = valid_end
            if records >= _COMPACT_RECORDS:
                state, history = self._read_locked(fd)
                state.update(offsets)
                if ends:
                    add_history(history, ((tp, Commit(off, now_ms, ends[tp]))
                                          for tp, off in offsets.items() if tp in ends))
                self._rewrite(state, history, now_ms)
                self._tail = None
                return
            try:
                _fileutil.pwrite_all(fd, record, size)
            except OSError:
                # Leave no half record behind (the next commit would cut it anyway).
                os.ftruncate(fd, size)
                raise
            if self._fsync:
                _fileutil.sync_fd(fd)
            self._tail = (*key, size + len(record), records + 1)

    def _read_locked(self, fd: int) -> tuple[Offsets, History]:
        data = self._read_all(fd, os.fstat(fd).st_size)
        offsets: Offsets = {}
        history: History = {}
        if recognised(data):
            offsets.update(parse(data, history=history)[0])
        return offsets, history

    def _rewrite(self, offsets: Mapping[TopicPartition, int], history: History,
                 now_ms: int) -> None:
        """Replace the file with one record holding ``offsets`` and the history of those
        partitions (temp + fsync + rename). Caller holds the lock of the current file.

        The record must stay readable (``_MAX_RECORD_BYTES``): with very many
        partitions, each keeps fewer entries (halving until it fits)."""
        keep = HISTORY_MAX
        while True:
            kept = {tp: list(history[tp])[-keep:] for tp in offsets if tp in history} \
                if keep else None
            record = encode_record(offsets, now_ms, -1, "compaction", history=kept)
            if len(record) - _RECORD.size <= _MAX_RECORD_BYTES or not keep:
                break
            keep //= 2
        _fileutil.atomic_write(self.path, new_header() + record)

    def replace(self, offsets: Mapping[TopicPartition, int], now_ms: int,
                ends: Mapping[TopicPartition, int] | None = None) -> None:
        """Set the committed offsets to exactly ``offsets`` (admin resets, repairs),
        keeping the history of those partitions; ``ends`` (the end offsets now) adds a
        history entry for each partition it names, as a commit would. Cost: reads the
        whole file, writes a new one."""
        with _fileutil.os_errors(f"rewriting {self.path}"), self._locked() as fd:
            _, history = self._read_locked(fd)
            if ends:
                add_history(history, ((tp, Commit(off, now_ms, ends[tp]))
                                      for tp, off in offsets.items() if tp in ends))
            self._rewrite(offsets, history, now_ms)

    def delete(self) -> None:
        with self._locked():
            os.unlink(self.path)
