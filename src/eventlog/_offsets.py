"""Committed offsets of one consumer group: an append-only, checksummed sidecar file.

``<log>/groups/<group>.offsets`` is a 16-byte header (``b"EvLgOFS1"`` + an 8-byte random
file id, zero in files of earlier versions) followed by commit records::

    4s  b"EvOc"      sync marker (lets a reader find the next record after damage)
    u32 length       of the payload
    u64 checksum     xxh3_64 of the payload
    ... payload      msgpack: {"ts": ms, "gen": generation, "member": id,
                               "offsets": [[topic, partition, offset], ...]}

A commit appends one record (under an ``flock`` on the file) holding the offsets it
commits; reading replays the records and the last one for each partition wins. A record
is only counted when its checksum holds, so a torn append (a crash mid-write) or a
damaged record reads as if that commit never happened: the partition keeps its previous
committed offset. A committer finding bytes after the last valid record (junk, or a
torn append) cuts them off first; nobody else appends while it holds the lock.

Caches. A reader remembers the offsets as of the end of the last valid record it read,
and a committer the end and record count as of its own last commit, so that the next
call reads only what was appended since. Both are keyed by the inode *and* the file id:
a file deleted and created again (``Log.delete_group``, a rewrite) can get the same inode
number back at once, and a cache keyed by the inode alone would then parse the new
file from the old file's end, mid-record. Both stop at record boundaries, never at the
file size, so a cut-and-append by a committer cannot make a reader skip a record.

When the file grows past ``_COMPACT_RECORDS`` records it is rewritten as a single record
(temp file, fsync, rename); a committer that locked the old file notices the rename and
retries on the new one.
"""

from __future__ import annotations

import fcntl
import os
import struct
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

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

Offsets = dict[TopicPartition, int]


def new_header() -> bytes:
    """The header of a new file: the magic and a random file id."""
    return _MAGIC + os.urandom(_ID.size)


def _file_id(header: bytes) -> int:
    return int(_ID.unpack_from(header, len(_MAGIC))[0]) if len(header) >= len(_FILE_HEADER) \
        else -1


def encode_record(offsets: Mapping[TopicPartition, int], now_ms: int, generation: int,
                  member: str) -> bytes:
    payload: bytes = msgpack.packb({"ts": now_ms, "gen": generation, "member": member,
                             "offsets": [[tp.topic, tp.partition, off]
                                         for tp, off in offsets.items()]})
    return _RECORD.pack(_SYNC, len(payload), xxhash.xxh3_64_intdigest(payload)) + payload


def _parse_payload(payload: bytes) -> list[tuple[TopicPartition, int]]:
    doc: Any = msgpack.unpackb(payload, raw=False)
    out = []
    for topic, partition, offset in doc["offsets"]:
        if not (isinstance(topic, str) and type(partition) is int and type(offset) is int):
            raise ValueError("malformed offset entry")
        out.append((TopicPartition(topic, partition), offset))
    return out


def parse(data: bytes, start: int = len(_FILE_HEADER)
          ) -> tuple[list[tuple[TopicPartition, int]], int, int]:
    """Replay commit records from ``start``. Returns (entries in order, end of the last
    valid record, number of records); damaged records are skipped by looking for the
    next sync marker."""
    entries, valid_end, records, _ = _walk(data, start)
    return entries, valid_end, records


def damaged_bytes(data: bytes) -> int:
    """How many bytes after the header belong to no valid record (damaged or torn
    records, junk), wherever they are in the file."""
    if len(data) <= len(_FILE_HEADER):
        return 0
    return len(data) - len(_FILE_HEADER) - _walk(data, len(_FILE_HEADER))[3]


def _walk(data: bytes, start: int) -> tuple[list[tuple[TopicPartition, int]], int, int, int]:
    """``parse``, and the number of bytes the valid records take."""
    entries: list[tuple[TopicPartition, int]] = []
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
                    entries.extend(_parse_payload(payload))
                except Exception:  # a checksummed but malformed record: skip it
                    ok = False
                else:
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


class OffsetStore:
    """The sidecar of one group, as seen by one process. Thread-safe."""

    def __init__(self, path: str, fsync: bool) -> None:
        self.path = path
        self._fsync = fsync
        # (inode, file id, end of the last valid record read, offsets up to there)
        self._cache: tuple[int, int, int, Offsets] | None = None
        # (inode, file id, end of the last valid record, records) after our last commit
        self._tail: tuple[int, int, int, int] | None = None

    # -- reading ------------------------------------------------------------------------

    def read(self) -> Offsets:
        """The committed offsets (the last good commit of each partition).
        Cost: reads only what was appended since the last call (and the header),
        unless the file was replaced (compacted, reset, deleted and created again)."""
        try:
            fd = _fileutil.open_fd(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return {}
        try:
            st = os.fstat(fd)
            key = (st.st_ino, _file_id(os.pread(fd, len(_FILE_HEADER), 0)))
            cache = self._cache
            if cache is not None and cache[:2] == key and cache[2] <= st.st_size:
                end, offsets = cache[2], dict(cache[3])
                if end < st.st_size:  # appended since: replay only the new records
                    entries, valid, _ = parse(_FILE_HEADER + os.pread(fd, st.st_size - end, end))
                    offsets.update(entries)
                    end += valid - len(_FILE_HEADER)
                    self._cache = (*key, end, dict(offsets))
                return offsets
            data = self._read_all(fd, st.st_size)
        finally:
            os.close(fd)
        offsets = {}
        end = len(data)   # a file without the magic holds no commit (a committer restarts it)
        if data.startswith(_MAGIC):
            entries, end, _ = parse(data)
            offsets.update(entries)
        self._cache = (*key, end, dict(offsets))
        return offsets

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
        is checksummed and well formed, with a non-negative partition and offset;
        nothing after the valid end checks out; no more than ``_COMPACT_RECORDS``
        records. A cache naming the file as it is now (inode, size) equals a fresh
        parse; a commit tail naming it parses to exactly that end and record count.
        No temp file of this thread is left. Cost: reads and parses the whole file."""
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
        entries, valid_end, records = parse(data) if data else ([], 0, 0)
        # An independent walk: records found where parse found them, each well formed.
        walked: list[tuple[TopicPartition, int]] = []
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
                    assert set(doc) == {"ts", "gen", "member", "offsets"}, doc
                    assert type(doc["ts"]) is int and type(doc["gen"]) is int, doc
                    assert isinstance(doc["member"], str), doc
                    assert all(tp.partition >= 0 and off >= 0 for tp, off in found), found
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
        key = (st.st_ino, _file_id(data))
        cache = self._cache
        if cache is not None and cache[:2] == key:
            end = cache[2]
            assert end <= st.st_size, (cache[:3], st.st_size)
            assert end == len(data) or parse(data[:end])[1] == end, cache[:3]
            assert dict(parse(data[:end])[0]) == cache[3], (cache[3], end)
        tail = self._tail
        if tail is not None and tail[:2] == key and tail[2] <= st.st_size:
            _, end, counted = parse(data[:tail[2]])
            assert (end, counted) == tail[2:], (end, counted, tail)

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
               member: str = "") -> None:
        """Append one commit record: atomic (old or new value, never a mix)."""
        record = encode_record(offsets, now_ms, generation, member)
        with _fileutil.os_errors(f"committing offsets to {self.path}"), self._locked() as fd:
            st = os.fstat(fd)
            key = (st.st_ino, _file_id(os.pread(fd, len(_FILE_HEADER), 0)))
            tail = self._tail
            if tail is not None and tail[:2] == key and tail[2] <= st.st_size:
                # Only what others appended since our last commit needs checking.
                start, records = tail[2:]
                data = os.pread(fd, st.st_size - start, start) if st.st_size > start else b""
                _, valid, more = parse(_FILE_HEADER + data)
                valid_end, records = start + valid - len(_FILE_HEADER), records + more
                size = st.st_size
            else:
                data = self._read_all(fd, st.st_size)
                if not data.startswith(_MAGIC):
                    os.ftruncate(fd, 0)  # new or foreign: start over (no one maps it)
                    data = new_header()
                    _fileutil.pwrite_all(fd, data, 0)
                    key = (st.st_ino, _file_id(data))
                _, valid_end, records = parse(data)
                size = len(data)
            if valid_end < size:
                # Junk or a torn append after the last valid record (commits hold the
                # lock, so nobody is writing there): cut it, so records stay contiguous.
                os.ftruncate(fd, valid_end)
                size = valid_end
            if records >= _COMPACT_RECORDS:
                state = self._read_locked(fd)
                state.update(offsets)
                self._rewrite(state, now_ms)
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

    def _read_locked(self, fd: int) -> Offsets:
        data = self._read_all(fd, os.fstat(fd).st_size)
        offsets: Offsets = {}
        offsets.update(parse(data)[0])
        return offsets

    def _rewrite(self, offsets: Mapping[TopicPartition, int], now_ms: int) -> None:
        """Replace the file with one record holding ``offsets`` (temp + fsync + rename).
        Caller holds the lock of the current file."""
        _fileutil.atomic_write(self.path, new_header() + encode_record(offsets, now_ms, -1,
                                                                       "compaction"))

    def replace(self, offsets: Mapping[TopicPartition, int], now_ms: int) -> None:
        """Set the committed offsets to exactly ``offsets`` (admin resets)."""
        with _fileutil.os_errors(f"rewriting {self.path}"), self._locked():
            self._rewrite(offsets, now_ms)

    def delete(self) -> None:
        with self._locked():
            os.unlink(self.path)
