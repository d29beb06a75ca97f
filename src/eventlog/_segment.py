"""One segment: a memory-mapped ``.log`` file of batches and its two indexes.

The file is named by its base offset, zero-padded to 20 digits, so ``ls`` sorts
segments in offset order. Space is reserved with ``posix_fallocate`` before it is
mapped and grows in steps (``_grow_to``), so a full disk raises an error at
allocation time instead of a SIGBUS on a page fault. The file never shrinks:
another process may have it mapped, and every read is bounded by the partition's
published state, never by the file size. Unwritten space is zero bytes, which is
how a scan recognizes the end of a closed segment.

The segment owns the policy of its indexes (when to add an entry, when to rebuild);
``_index`` owns only their format and search.
"""

from __future__ import annotations

import mmap
import os
import sys
import threading
from collections.abc import Iterator
from typing import NamedTuple

from . import _fileutil, _format
from ._format import BatchHeader, DecodedBatch, EncodedBatch
from ._index import OffsetIndex, TimeIndex
from .errors import CorruptRecordError

SUFFIX = ".log"
_MIN_GROW_BYTES = 64 * 1024
_MAX_GROW_BYTES = 4 * 1024 * 1024
_TRACKFD = {"trackfd": False} if sys.version_info >= (3, 13) else {}


def file_name(base_offset: int) -> str:
    return f"{base_offset:020d}{SUFFIX}"


def parse_file_name(name: str) -> int | None:
    """The base offset named by a segment file name, or None for any other file."""
    if len(name) != 20 + len(SUFFIX) or not name.endswith(SUFFIX):
        return None
    digits = name[:20]
    return int(digits) if digits.isdigit() and digits.isascii() else None


class ScanResult(NamedTuple):
    """What a validating scan found: the end of the valid data and why it stopped."""

    end_position: int
    next_offset: int
    max_timestamp_ms: int
    last_batch_position: int
    batches: int
    error: str | None  # None: stopped at unwritten space or the limit


class Segment:
    """A segment file in one process. Thread-safety: reads may run in any thread;
    writes (append, grow, cut, index updates) need the partition lock."""

    def __init__(self, directory: str, base_offset: int) -> None:
        self.directory = directory
        self.base_offset = base_offset
        stem = os.path.join(directory, f"{base_offset:020d}")
        self.path = stem + SUFFIX
        self.offset_index = OffsetIndex(stem + ".index", base_offset)
        self.time_index = TimeIndex(stem + ".timeindex", base_offset)
        self._indexes_loaded = False
        self.index_checked = False  # sealed indexes verified (sealed_indexes_ok) once
        self._index_lock = threading.RLock()  # loads and rebuilds vs. other threads
        self._mm: mmap.mmap | None = None
        self._mapped_bytes = 0
        self._fd: int | None = None      # kept open only while this process writes here
        self._allocated_bytes = -1       # writer's view of the file size
        self.sealed_max_timestamp_ms: int | None = None  # cached for closed segments
        self.sealed_data_bytes: int | None = None        # cached for closed segments

    def __repr__(self) -> str:
        return f"<Segment {self.path}>"

    # -- mapping -------------------------------------------------------------------

    def mapping(self, needed: int) -> mmap.mmap | None:
        """A mapping that covers ``[0, needed)``, remapping if the file has grown.

        Raises ``CorruptRecordError`` when the file is shorter than published data
        (it was cut by something other than eventlog). Cost: O(1), or one mmap call.
        """
        mm = self._mm
        if mm is not None and self._mapped_bytes >= needed:
            return mm
        fd = self._fd
        own_fd = fd is None
        if fd is None:
            try:
                fd = _fileutil.open_fd(self.path, os.O_RDWR)
            except FileNotFoundError:
                if needed > 0:
                    raise
                return None
        try:
            size = os.fstat(fd).st_size
            if size < needed:
                raise CorruptRecordError(f"{self.path} is {size} bytes but {needed} bytes of "
                                         "it were published: the file was truncated")
            if size == 0:
                return None
            mm = mmap.mmap(fd, size, **_TRACKFD)
        finally:
            if own_fd:
                os.close(fd)
        # The old mapping (if any) is unmapped when its last user drops it.
        self._mm = mm
        self._mapped_bytes = size
        return mm

    def file_bytes(self) -> int:
        """Current size of the file on disk (allocated space, not data)."""
        try:
            return os.stat(self.path).st_size
        except FileNotFoundError:
            return 0

    # -- writing (partition lock held) -------------------------------------------------

    def open_for_write(self) -> None:
        if self._fd is None:
            self._fd = _fileutil.open_fd(self.path, os.O_RDWR | os.O_CREAT)
            self._allocated_bytes = os.fstat(self._fd).st_size

    def reserve(self, end: int, segment_bytes: int) -> mmap.mmap:
        """Make sure ``[0, end)`` is allocated and mapped; return the mapping.

        Grows by doubling from 64 KiB, then in 4 MiB steps, capped at ``segment_bytes``
        (or ``end`` when one batch is larger). A full disk raises ``LogDirectoryError``
        with ``errno.ENOSPC`` and leaves the file and the log as they were.
        """
        self.open_for_write()
        assert self._fd is not None
        if self._allocated_bytes < end:
            # Another process may have grown it meanwhile.
            self._allocated_bytes = os.fstat(self._fd).st_size
        if self._allocated_bytes < end:
            current = self._allocated_bytes
            step = min(max(current, _MIN_GROW_BYTES), _MAX_GROW_BYTES)
            target = max(end, min(current + step, max(segment_bytes, end)))
            with _fileutil.os_errors(f"allocating space in {self.path}"):
                _fileutil.preallocate(self._fd, current, target - current)
            self._allocated_bytes = target
        mm = self.mapping(end)
        assert mm is not None
        return mm

    def append(self, batch: EncodedBatch, position: int, base_offset: int, segment_bytes: int,
               first_timestamp_ms: int | None = None, max_timestamp_ms: int | None = None
               ) -> int:
        """Write ``batch`` at ``position``; return its length. Not yet published."""
        mm = self.reserve(position + batch.size, segment_bytes)
        return _format.write_batch(mm, position, batch, base_offset, first_timestamp_ms,
                                   max_timestamp_ms)

    def sync(self, own_fd: bool = False) -> None:
        """fsync the segment's data (pages written through the mapping included).

        ``own_fd``: use a descriptor of its own rather than the writer's, which a roll
        in another thread may close at any moment (the background flusher runs without
        the writer lock)."""
        mm = self._mm
        if sys.platform == "darwin" and mm is not None:  # pragma: no cover
            mm.flush()
        if self._fd is not None and not own_fd:
            _fileutil.sync_fd(self._fd)
        else:
            fd = _fileutil.open_fd(self.path, os.O_RDWR)
            try:
                _fileutil.sync_fd(fd)
            finally:
                os.close(fd)

    def release_writer(self) -> None:
        """Drop writer resources (after a roll made another segment active)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.offset_index.close()
        self.time_index.close()

    def close(self) -> None:
        self.release_writer()
        mm, self._mm = self._mm, None
        self._mapped_bytes = 0
        if mm is not None:
            try:
                mm.close()
            except BufferError:  # a reader thread still holds a view; it unmaps later
                pass

    # -- reading ------------------------------------------------------------------

    def headers(self, position: int, limit: int, verify: bool = True
                ) -> Iterator[tuple[int, BatchHeader]]:
        """Yield (position, header) of the batches from ``position`` up to ``limit``,
        stopping at unwritten space. Raises ``CorruptRecordError`` on a bad batch."""
        mm = self.mapping(limit)
        if mm is None:
            return
        while position < limit:
            if _format.is_unwritten(mm, position, limit):
                return
            header = (_format.read_batch_header(mm, position, limit) if verify
                      else _format.read_header(mm, position, limit))
            yield position, header
            position += header.length

    def read_batch(self, position: int, limit: int) -> DecodedBatch | None:
        """Decode the verified batch at ``position``; None at unwritten space/limit."""
        mm = self.mapping(limit)
        if mm is None or position >= limit or _format.is_unwritten(mm, position, limit):
            return None
        return _format.decode_batch(mm, position, limit)

    def reread_batch(self, batch: DecodedBatch, limit: int) -> DecodedBatch | None:
        """``read_batch`` at ``batch.position`` for a batch decoded (and verified) there
        before: if the header there is unchanged, return ``batch`` itself instead of
        verifying and unpacking the payload again. Published bytes never change, and
        ``batch`` holds what they were when verified. Cost: one header read."""
        position = batch.position
        mm = self.mapping(limit)
        if mm is None or position >= limit or _format.is_unwritten(mm, position, limit):
            return None
        header = _format.read_header(mm, position, limit)
        if header != batch.header:
            return _format.decode_batch(mm, position, limit)
        return batch

    def ensure_indexes(self) -> None:
        """Load the index files once; a missing or damaged file is marked invalid, and
        lookups then scan instead (callers rebuild it where they may)."""
        if not self._indexes_loaded:
            with self._index_lock:
                if not self._indexes_loaded:
                    self.offset_index.load()
                    self.time_index.load()
                    self._indexes_loaded = True

    def refresh_indexes(self) -> None:
        with self._index_lock:
            if not self._indexes_loaded:
                self.ensure_indexes()
                return
            if self.offset_index.valid:
                self.offset_index.refresh()
            if self.time_index.valid:
                self.time_index.refresh()

    def drop_indexes(self) -> None:
        """Forget loaded index entries (memory bound for closed segments)."""
        with self._index_lock:
            if self._indexes_loaded:
                self.offset_index.close()
                self.time_index.close()
                self.offset_index._clear()
                self.time_index._clear()
                self._indexes_loaded = False
                self.index_checked = False

    def find_position(self, offset: int, limit: int) -> int:
        """Byte position of the batch holding ``offset`` (or the first batch after it,
        where compaction left a gap); ``limit``-bounded. Cost: O(log n) index search,
        then a verified scan over at most ~index_interval_bytes."""
        mm = self.mapping(limit)
        if mm is None:
            return 0
        self.ensure_indexes()
        position = 0
        if self.offset_index.valid and len(self.offset_index):
            entry_offset, entry_position = self.offset_index.lookup(offset)
            if entry_position > 0 or entry_offset != self.base_offset:
                if self.entry_matches(entry_offset, entry_position, limit):
                    position = entry_position
                else:
                    self.offset_index.valid = False  # garbled: scan now, rebuild later
        for pos, header in self.headers(position, limit):
            if header.next_offset > offset:
                return pos
            position = pos + header.length
        return position

    def entry_matches(self, offset: int, position: int, limit: int) -> bool:
        """True when a batch starting at ``offset`` really lies at ``position``."""
        mm = self.mapping(limit)
        if mm is None:
            return False
        try:
            header = _format.read_header(mm, position, limit)
        except CorruptRecordError:
            return False
        return header.base_offset == offset

    def sealed_max_timestamp(self, limit: int, interval: int) -> int:
        """Largest timestamp in this sealed segment (-1 when it is empty).

        Read from the final time-index entry with one pread, after checking that the
        final entries of both indexes name the segment's last batch; when they do not,
        the indexes are rebuilt by a scan. Cached. Cost: O(1), or O(segment) once.
        """
        if self.sealed_max_timestamp_ms is not None:
            return self.sealed_max_timestamp_ms
        last = self.offset_index.read_last()
        last_time = self.time_index.read_last()
        result: int | None = None
        if last is not None and last_time is not None and last_time[1] == last[0]:
            offset, position = self.base_offset + last[0], last[1]
            mm = self.mapping(limit)
            try:
                header = _format.read_header(mm, position, limit)
                end = position + header.length
                if header.base_offset == offset and (
                        end >= limit or _format.is_unwritten(mm, end, limit)):
                    result = last_time[0]
            except CorruptRecordError:
                result = None
        elif last is None and (limit == 0 or _format.is_unwritten(self.mapping(limit), 0,
                                                                   limit)):
            result = -1
        if result is None:
            result = self.rebuild_indexes(limit, interval).max_timestamp_ms
        self.sealed_max_timestamp_ms = result
        return result

    def find_time(self, timestamp_ms: int, limit: int) -> int:
        """Byte position from which scanning finds the first record with a timestamp
        >= ``timestamp_ms``. Cost: O(log n) index search plus a short scan."""
        self.ensure_indexes()
        if not (self.time_index.valid and self.offset_index.valid):
            return 0
        return self.find_position(self.time_index.lookup(timestamp_ms), limit)

    # -- recovery -------------------------------------------------------------------

    def validate(self, start_position: int, start_offset: int, limit: int,
                 index_interval_bytes: int, rebuild_indexes: bool, seal: bool = True
                 ) -> ScanResult:
        """Check batches from ``start_position`` (checksums, layout, offsets never going
        backwards) and stop at the first problem, unwritten space or ``limit``.

        With ``rebuild_indexes`` (and ``start_position == 0``) the indexes are rewritten
        from what the scan saw, with the final entries of a sealed segment if ``seal``
        (never for the active segment: appends continue after them).
        Cost: O(bytes scanned).
        """
        mm = self.mapping(0) if limit == 0 else self.mapping(min(limit, self.file_bytes()))
        limit = min(limit, self._mapped_bytes) if mm is not None else 0
        position = start_position
        next_offset = start_offset
        max_ts = -1
        last_batch = -1
        count = 0
        error: str | None = None
        policy = IndexPolicy(index_interval_bytes)
        while mm is not None and position < limit:
            if _format.is_unwritten(mm, position, limit):
                break
            try:
                header = _format.read_batch_header(mm, position, limit)
            except CorruptRecordError as exc:
                error = str(exc)
                break
            if header.base_offset < next_offset:
                error = (f"batch at position {position} has base offset {header.base_offset}, "
                         f"below the expected {next_offset}")
                break
            max_ts = max(max_ts, header.max_timestamp_ms)
            policy.observe(position, header.base_offset, max_ts)
            last_batch = position
            next_offset = header.next_offset
            position += header.length
            count += 1
        if rebuild_indexes and start_position == 0:
            if seal:
                policy.finish(max_ts)
            self.write_indexes(policy.offset_entries, policy.time_entries)
        return ScanResult(position, next_offset, max_ts, last_batch, count, error)

    def write_indexes(self, offset_entries: list[tuple[int, int]],
                      time_entries: list[tuple[int, int]]) -> None:
        """Replace both index files. Entries are (offset, position) and
        (timestamp, offset) with absolute offsets."""
        base = self.base_offset
        with self._index_lock:
            self.offset_index.write_all([(o - base, p) for o, p in offset_entries])
            self.time_index.write_all([(t, o - base) for t, o in time_entries])
            self._indexes_loaded = True

    def rebuild_indexes(self, limit: int, index_interval_bytes: int, seal: bool = True
                        ) -> ScanResult:
        """Rewrite both indexes from a scan; ``seal=False`` for the active segment."""
        return self.validate(0, self.base_offset, limit, index_interval_bytes, True, seal)

    def data_end(self) -> int:
        """Position after the last non-zero byte of the file.

        Cost: O(zero bytes at the end), read backwards 1 MiB at a time."""
        mm = self.mapping(self.file_bytes())
        if mm is None:
            return 0
        end = self._mapped_bytes
        chunk = 1 << 20
        while end > 0:
            start = max(0, end - chunk)
            tail = mm[start:end].rstrip(b"\0")
            if tail:
                return start + len(tail)
            end = start
        return 0

    def write_entries(self, policy: IndexPolicy) -> None:
        """Append the entries ``policy`` decided on to both index files (loading them
        first: appending to an index this object has not read would overwrite it)."""
        self.ensure_indexes()
        with self._index_lock:
            for offset, position in policy.offset_entries:
                self.offset_index.append(offset, position)
            for ts, offset in policy.time_entries:
                self.time_index.append(ts, offset)

    def index_due(self, position: int, interval: int) -> bool:
        """Would a batch at ``position`` get an index entry? (IndexPolicy's rule, O(1))"""
        last = self.offset_index.last_position()
        return last < 0 or position - last >= interval

    def index_policy(self, interval: int) -> IndexPolicy:
        """A policy continuing from this segment's current index entries."""
        return IndexPolicy(interval, self.offset_index.last_position(),
                           self.time_index.max_timestamp())

    def prepare_writer_indexes(self, limit: int, interval: int) -> None:
        """Under the partition lock: load new entries, and rebuild indexes that are
        missing while data exists, or damaged."""
        self.refresh_indexes()
        offset_ok = self.offset_index.valid or (limit == 0 and not self.offset_index)
        time_ok = self.time_index.valid or (limit == 0 and not self.time_index)
        last = self.offset_index.last()
        if last is not None and last[1] >= limit:
            offset_ok = False
        if not (offset_ok and time_ok):
            self.rebuild_indexes(limit, interval, seal=False)
        else:
            self.offset_index.valid = self.time_index.valid = True

    def sealed_indexes_ok(self, limit: int) -> bool:
        """Check the final entries of a sealed segment's indexes: the last offset entry
        names the last batch, and the last time entry names the same batch. Cost: O(1)
        after the indexes are loaded."""
        self.ensure_indexes()
        if not (self.offset_index.valid and self.time_index.valid):
            return False
        last = self.offset_index.last()
        last_time = self.time_index.last()
        if last is None or last_time is None:
            return limit == 0 or _format.is_unwritten(self.mapping(limit), 0, limit)
        offset, position = last
        mm = self.mapping(limit)
        try:
            header = _format.read_header(mm, position, limit)
        except CorruptRecordError:
            return False
        end = position + header.length
        return (header.base_offset == offset and last_time[1] == offset
                and (end >= limit or _format.is_unwritten(mm, end, limit)))

    def cut(self, position: int, aside_path: str) -> int:
        """Move the bytes from ``position`` to the last non-zero byte into
        ``aside_path`` (fsynced), then zero them here. Returns the bytes moved.
        The file keeps its size; nothing of it is deleted."""
        end = self.data_end()
        if end <= position:
            return 0
        mm = self.mapping(end)
        assert mm is not None
        data = mm[position:end]
        fd = _fileutil.open_fd(aside_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        try:
            _fileutil.write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        mm[position:end] = bytes(end - position)
        mm.flush()
        return end - position

    def rename_aside(self, suffix: str) -> None:
        """Move the whole segment and its indexes out of the way (renamed, not deleted)."""
        self.close()
        for path in (self.path, self.offset_index.path, self.time_index.path):
            try:
                os.replace(path, path + suffix)
            except FileNotFoundError:
                pass

    def delete(self) -> None:
        """Unlink the segment files. Safe while others have them mapped, in this process
        (the mapping is not closed here: a reader thread may be using it) or in others:
        the data stays readable through existing mappings until they are dropped."""
        self.release_writer()
        for path in (self.path, self.offset_index.path, self.time_index.path):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def sealed_size(self, limit: int) -> int:
        """Bytes of batches in this sealed segment (the file is larger: preallocated).
        From the final index entry and its batch's length; a scan when the indexes do
        not check out. Cached."""
        if self.sealed_data_bytes is None:
            if self.sealed_indexes_ok(limit):
                last = self.offset_index.last()
                if last is None:
                    self.sealed_data_bytes = 0
                else:
                    mm = self.mapping(limit)
                    self.sealed_data_bytes = last[1] + _format.read_header(mm, last[1],
                                                                           limit).length
            else:
                end = 0
                for position, header in self.headers(0, limit, verify=False):
                    end = position + header.length
                self.sealed_data_bytes = end
        return self.sealed_data_bytes


class IndexPolicy:
    """When to add index entries: at the first batch, then whenever
    ``index_interval_bytes`` have passed since the last entry; the time index gets an
    entry at the same batches when the largest timestamp grew. ``finish`` adds the
    final entries that mark a sealed index: its last entries name the last batch, and
    the last time entry holds the segment's largest timestamp.

    Appends and rebuilds share this, so a rebuilt index equals the one written live.
    """

    __slots__ = ("interval", "last_batch", "last_position", "last_time", "offset_entries",
                 "time_entries")

    def __init__(self, interval: int, last_position: int = -1, last_time: int | None = None
                 ) -> None:
        self.interval = interval
        self.last_position = last_position
        self.last_time = last_time
        self.last_batch: tuple[int, int] | None = None  # (position, base offset)
        self.offset_entries: list[tuple[int, int]] = []
        self.time_entries: list[tuple[int, int]] = []

    def observe(self, position: int, base_offset: int, max_ts_so_far: int) -> None:
        self.last_batch = (position, base_offset)
        if self.last_position < 0 or position - self.last_position >= self.interval:
            self.offset_entries.append((base_offset, position))
            self.last_position = position
            self._time_entry(max_ts_so_far, base_offset)

    def _time_entry(self, max_ts: int, offset: int) -> None:
        if self.last_time is None or max_ts > self.last_time:
            self.time_entries.append((max_ts, offset))
            self.last_time = max_ts

    def finish(self, max_ts: int) -> None:
        if self.last_batch is None:
            return
        position, offset = self.last_batch
        if self.last_position != position:
            self.offset_entries.append((offset, position))
            self.last_position = position
        if not self.time_entries or self.time_entries[-1][1] != offset:
            ts = max_ts if self.last_time is None else max(max_ts, self.last_time)
            self.time_entries.append((ts, offset))
            self.last_time = ts


__all__ = ["IndexPolicy", "ScanResult", "Segment", "file_name", "parse_file_name"]
