"""One segment: a memory-mapped ``.log`` file of batches and its two indexes.

The file is named by its base offset, zero-padded to 20 digits, so ``ls`` sorts
segments in offset order. Space is reserved with ``posix_fallocate`` before it is
mapped and grows in steps (``reserve``), so a full disk raises an error at
allocation time instead of a SIGBUS on a page fault. The file never shrinks:
another process may have it mapped, and every read is bounded by the partition's
published state, never by the file size. Unwritten space is zero bytes, which is
how a scan recognizes the end of a closed segment.

The segment owns the policy of its indexes (when to add an entry, when to rebuild);
``SegmentIndexes`` holds the pair and its load state; ``_index`` owns only their
format and search.

This module owns every file name of a partition's data (``file_name``): ``<base>.log``
with its ``.index`` and ``.timeindex``, and the two crash-safe file protocols at the
end of the module: ``*.cut-*`` files that keep bytes recovery moved aside
(``move_aside``, ``rename_aside``), and the ``.cleaned`` / ``.swap`` files of a
compaction's swap (``replace_with_cleaned``, ``finish_interrupted_swaps``).

Indexes are derived data, so a rebuild never fails for want of space: when the new
index files cannot be written (a full disk, a read-only file system) the indexes are
left invalid and lookups scan instead, until a later rebuild succeeds. A segment of a
log opened ``read_only`` maps its file read-only and never writes its indexes.
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
import sys
import threading
from collections.abc import Collection, Iterator
from typing import NamedTuple

from . import _fileutil, _format
from ._format import BatchHeader, DecodedBatch, EncodedBatch
from ._index import OffsetIndex, TimeIndex
from ._segment_lookup import SegmentLookups
from .errors import CorruptRecordError

SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIME_INDEX_SUFFIX = ".timeindex"
CLEANED_SUFFIX = ".cleaned"  # a compaction's rewritten segment, not yet swapped in
SWAP_SUFFIX = ".swap"        # ... being swapped in (complete: recovery finishes the swap)
_MIN_GROW_BYTES = 64 * 1024
_MAX_GROW_BYTES = 4 * 1024 * 1024
_TRACKFD = {"trackfd": False} if sys.version_info >= (3, 13) else {}
# Why an index rewrite may fail without failing its caller (see the module docstring).
_NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
_logger = logging.getLogger("eventlog")


def file_name(base_offset: int, suffix: str = SUFFIX) -> str:
    """``<base_offset, 20 digits><suffix>``: the name of a file of the segment at
    ``base_offset`` (its data by default)."""
    return f"{base_offset:020d}{suffix}"


def parse_file_name(name: str, suffix: str = SUFFIX) -> int | None:
    """The base offset named by ``file_name(base, suffix)``, or None for any other
    file."""
    if len(name) != 20 + len(suffix) or not name.endswith(suffix):
        return None
    digits = name[:20]
    return int(digits) if digits.isdigit() and digits.isascii() else None


def list_bases(directory: str) -> list[int]:
    """Base offsets of the segment files in ``directory``, sorted. Cost: one listdir."""
    with _fileutil.os_errors(f"listing {directory}"):
        names = os.listdir(directory)
    return sorted(b for b in map(parse_file_name, names) if b is not None)


class ScanResult(NamedTuple):
    """What a validating scan found: the end of the valid data and why it stopped."""

    end_position: int
    next_offset: int
    max_timestamp_ms: int
    last_batch_position: int
    batches: int
    error: str | None  # None: stopped at unwritten space or the limit


class SegmentIndexes:
    """The offset and time index of one segment in this process: loaded lazily and
    once, shared by reader threads (a lock orders loads and rewrites), appended to by
    the writer. The segment decides when to add entries and when to rebuild."""

    def __init__(self, directory: str, base_offset: int) -> None:
        self.base_offset = base_offset
        self.offset = OffsetIndex(os.path.join(directory, file_name(base_offset,
                                                                    INDEX_SUFFIX)), base_offset)
        self.time = TimeIndex(os.path.join(directory, file_name(base_offset,
                                                                TIME_INDEX_SUFFIX)), base_offset)
        self.checked = False  # a sealed segment's indexes verified once (sealed_indexes_ok)
        # Read the index files yet (``ensure``)? A plain attribute, not a property: the
        # writer tests it on every append. Only this class sets it.
        self.loaded = False
        self._lock = threading.RLock()

    @property
    def valid(self) -> bool:
        """Both indexes consistent as far as loaded (else lookups scan instead)."""
        return self.offset.valid and self.time.valid

    def invalidate(self) -> None:
        """Stop trusting both (an entry could not be written): they get rebuilt."""
        self.offset.valid = self.time.valid = False

    def ensure(self) -> SegmentIndexes:
        """Load the index files once; a missing or damaged file is marked invalid, and
        lookups then scan instead (callers rebuild it where they may). Returns self."""
        if not self.loaded:
            with self._lock:
                if not self.loaded:
                    self.offset.load()
                    self.time.load()
                    self.loaded = True
        return self

    def refresh(self) -> SegmentIndexes:
        """Load, or read the entries other processes appended since. Returns self."""
        with self._lock:
            if not self.loaded:
                return self.ensure()
            if self.offset.valid:
                self.offset.refresh()
            if self.time.valid:
                self.time.refresh()
        return self

    def drop(self) -> None:
        """Forget loaded entries (memory bound for segments nobody reads)."""
        with self._lock:
            if self.loaded:
                self.offset.reset()
                self.time.reset()
                self.loaded = False
                self.checked = False

    def write_all(self, offset_entries: list[tuple[int, int]],
                  time_entries: list[tuple[int, int]]) -> None:
        """Replace both index files. Entries are (offset, position) and
        (timestamp, offset) with absolute offsets."""
        base = self.base_offset
        with self._lock:
            self.offset.write_all([(o - base, p) for o, p in offset_entries])
            self.time.write_all([(t, o - base) for t, o in time_entries])
            self.loaded = True

    def append(self, policy: IndexPolicy) -> None:
        """Append the entries ``policy`` decided on to both index files (loading them
        first: appending to an index this object has not read would overwrite it)."""
        self.ensure()
        with self._lock:
            for offset, position in policy.offset_entries:
                self.offset.append(offset, position)
            for ts, offset in policy.time_entries:
                self.time.append(ts, offset)

    def present(self, names: Collection[str]) -> bool:
        """True when both index files are among ``names`` (a directory listing)."""
        return os.path.basename(self.offset.path) in names and \
            os.path.basename(self.time.path) in names

    def close(self) -> None:
        self.offset.close()
        self.time.close()

    def unlink(self) -> None:
        """Delete both index files (derived data: rebuilt when next needed)."""
        self.offset.unlink()
        self.time.unlink()


class Segment(SegmentLookups):
    """A segment file in one process. Thread-safety: reads may run in any thread;
    writes (append, grow, cut, index updates) need the partition lock.

    ``read_only``: the file is opened and mapped read-only and index rebuilds keep
    their result in memory only (a log opened ``read_only``); writing is not for it."""

    def __init__(self, directory: str, base_offset: int, read_only: bool = False) -> None:
        self.directory = directory
        self.base_offset = base_offset
        self.read_only = read_only
        self.path = os.path.join(directory, file_name(base_offset))
        self.indexes = SegmentIndexes(directory, base_offset)
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
                fd = _fileutil.open_fd(self.path, os.O_RDONLY if self.read_only else os.O_RDWR)
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
            if self.read_only:
                mm = mmap.mmap(fd, size, access=mmap.ACCESS_READ, **_TRACKFD)
            else:
                mm = mmap.mmap(fd, size, **_TRACKFD)
        finally:
            if own_fd:
                os.close(fd)
        # The old mapping (if any) is unmapped when its last user drops it.
        self._mm = mm
        self._mapped_bytes = size
        return mm

    @property
    def mapped_bytes(self) -> int:
        """Bytes of the file this process has mapped (0: not mapped)."""
        return self._mapped_bytes

    def unmap(self) -> None:
        """Drop this object's mapping and loaded index entries, so that a segment nobody
        reads costs no resident memory. The mapping itself is unmapped when the last
        reader holding it lets go; the next read maps the file again. Cost: O(1)."""
        self._mm = None
        self._mapped_bytes = 0
        self.indexes.drop()

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
        end = position + _format.HEADER_BYTES + len(batch.payload)
        mm = self._mm
        if mm is None or self._mapped_bytes < end or self._fd is None \
                or self._allocated_bytes < end:  # (else reserve would return mm as it is)
            mm = self.reserve(end, segment_bytes)
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

    @property
    def writer_open(self) -> bool:
        """True while this process holds the segment open for writing."""
        return self._fd is not None

    def release_writer(self) -> None:
        """Drop writer resources (after a roll made another segment active)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.indexes.close()

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
        stopping at unwritten space. Raises ``CorruptRecordError`` at a bad batch: the
        position after the last one yielded is where the good data ends.

        The one scan over a segment's batches (``batches``, validation, seals, sizes,
        invariants and producer-state rebuilds all use it; only ``fetch`` keeps an inlined
        loop, being the hot path). ``verify`` checks each checksum (O(bytes)); without
        it, headers are only sanity-checked (O(batches)). Thread-safe.
        """
        mm = self.mapping(limit)
        if mm is None:
            return
        read = _format.read_batch_header if verify else _format.read_header
        unwritten = _format.is_unwritten
        while position < limit and not unwritten(mm, position, limit):
            header = read(mm, position, limit)
            yield position, header
            position += header.length

    def batches(self, position: int, limit: int) -> Iterator[DecodedBatch]:
        """The batches of ``headers(position, limit)``, each verified and decoded (its
        ``position`` says where it lies). Cost: O(bytes). Thread-safe."""
        mm = self.mapping(limit)
        decode = _format.decode_batch
        for pos, _ in self.headers(position, limit, verify=False):
            yield decode(mm, pos, limit)

    def read_batch(self, position: int, limit: int) -> DecodedBatch | None:
        """Decode the verified batch at ``position``; None at unwritten space/limit."""
        mm = self._mm if self._mapped_bytes >= limit else self.mapping(limit)
        if mm is None or position >= limit:
            return None
        try:
            return _format.decode_batch(mm, position, limit)
        except CorruptRecordError:
            # Unwritten space (zeros) never decodes (no magic): looked for only then,
            # off the path of every batch that does.
            if _format.is_unwritten(mm, position, limit):
                return None
            raise

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
        end = start_position   # of the valid data
        next_offset = start_offset
        max_ts = -1
        last_batch = -1
        count = 0
        error: str | None = None
        policy = IndexPolicy(index_interval_bytes)
        try:
            for position, header in self.headers(start_position, limit):
                if header.base_offset < next_offset:
                    error = (f"batch at position {position} has base offset "
                             f"{header.base_offset}, below the expected {next_offset}")
                    break
                max_ts = max(max_ts, header.max_timestamp_ms)
                policy.observe(position, header.base_offset, max_ts)
                last_batch = position
                next_offset = header.next_offset
                end = position + header.length
                count += 1
        except CorruptRecordError as exc:
            error = str(exc)
        if rebuild_indexes and start_position == 0:
            if seal:
                policy.finish(max_ts)
            self._write_indexes(policy)
        return ScanResult(end, next_offset, max_ts, last_batch, count, error)

    def _write_indexes(self, policy: IndexPolicy) -> None:
        """Replace both index files with ``policy``'s entries. Where they cannot be
        written (a read-only segment; no space, or a read-only file system) they are
        left invalid instead, loaded first so that nothing reloads the old files as
        valid: lookups then scan, and a later rebuild writes them."""
        indexes = self.indexes
        if not self.read_only:
            try:
                indexes.write_all(policy.offset_entries, policy.time_entries)
                return
            except OSError as exc:
                if exc.errno not in _NO_ROOM:
                    raise
                _logger.warning("indexes of %s not rewritten (%s); lookups scan until "
                                "they are rebuilt", self.path, exc)
        indexes.ensure()
        indexes.invalidate()

    def appended_after(self, position: int, next_offset: int, limit: int) -> ScanResult:
        """The whole, checksummed batches from ``position`` on that continue the
        offsets from ``next_offset`` exactly (as a writer appends them at the published
        end), up to the first that does not, unwritten space or ``limit``: what was
        appended after a state, and possibly published in a newer one that was lost.
        Cost: O(bytes scanned)."""
        end, offset, max_ts, last_batch, count = position, next_offset, -1, -1, 0
        error: str | None = None
        try:
            for pos, header in self.headers(position, limit):
                if header.base_offset != offset:
                    error = (f"batch at position {pos} starts at offset "
                             f"{header.base_offset}, not {offset}")
                    break
                max_ts = max(max_ts, header.max_timestamp_ms)
                last_batch, offset, end = pos, header.next_offset, pos + header.length
                count += 1
        except CorruptRecordError as exc:
            error = str(exc)
        return ScanResult(end, offset, max_ts, last_batch, count, error)

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

    def index_batch(self, position: int, base_offset: int, max_ts_so_far: int,
                    interval: int) -> None:
        """After the writer published a batch at ``position``: add index entries for
        it if ``IndexPolicy`` says so (every ``interval`` bytes). The batch is stored
        already: an index that cannot be written is derived data, marked invalid and
        rebuilt later, so this never fails. Cost: O(1), a pwrite per entry."""
        positions = self.indexes.offset.positions  # IndexPolicy's rule, inlined (hot)
        if not positions or position - positions[-1] >= interval:
            policy = self.index_policy(interval)
            policy.observe(position, base_offset, max_ts_so_far)
            try:
                self.indexes.append(policy)
            except OSError as exc:
                self.indexes.invalidate()
                _logger.warning("index of %s not updated (%s); it will be rebuilt",
                                self.path, exc)

    def index_policy(self, interval: int) -> IndexPolicy:
        """A policy continuing from this segment's current index entries."""
        return IndexPolicy(interval, self.indexes.offset.last_position(),
                           self.indexes.time.max_timestamp())

    def prepare_writer_indexes(self, limit: int, interval: int) -> None:
        """Under the partition lock: load new entries, and rebuild indexes that are
        missing while data exists, or damaged."""
        indexes = self.indexes.refresh()
        offset, time = indexes.offset, indexes.time
        offset_ok = offset.valid or (limit == 0 and not offset)
        time_ok = time.valid or (limit == 0 and not time)
        last = offset.last()
        # an entry naming unpublished bytes (a writer died after indexing), or a
        # published batch left without the entry it should have
        if (last is not None and last[1] >= limit) or \
                (offset_ok and time_ok and self._unindexed_tail(last, limit, interval)):
            offset_ok = False
        if not (offset_ok and time_ok):
            self.rebuild_indexes(limit, interval, seal=False)
        else:
            offset.valid = time.valid = True

    def _unindexed_tail(self, last: tuple[int, int] | None, limit: int,
                        interval: int) -> bool:
        """Whether a published batch after the last index entry should have an entry
        of its own: a writer indexes a batch after publishing it, so one killed in
        between leaves it out. Cost: a header scan of at most ``interval`` bytes."""
        start = last[1] if last is not None else 0
        return any(position - start >= interval or (last is None and position == 0)
                   for position, _ in self.headers(start, limit, verify=False))

    def seal(self, limit: int, max_timestamp_ms: int, interval: int) -> None:
        """Add the final index entries that mark the indexes complete (at a roll; the
        data ends at ``limit``, its largest timestamp is ``max_timestamp_ms``). Cost:
        a header scan from the last index entry, or a rebuild of damaged indexes."""
        if not self.indexes.refresh().valid:
            self.rebuild_indexes(limit, interval)
            return
        policy = self.index_policy(interval)
        last = self.indexes.offset.last()
        for position, header in self.headers(last[1] if last else 0, limit, verify=False):
            policy.last_batch = (position, header.base_offset)
        policy.finish(max_timestamp_ms)
        self.indexes.append(policy)

    def delete(self) -> None:
        """Unlink the segment files. Safe while others have them mapped, in this process
        (the mapping is not closed here: a reader thread may be using it) or in others:
        the data stays readable through existing mappings until they are dropped."""
        self.release_writer()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        self.indexes.unlink()

    def _check(self, limit: int | None = None) -> None:
        """Assert the invariants up to ``limit`` (the published end; by default the file
        size): the batches verify and their offsets never go backwards; a mapping is
        recorded with its size; every entry of a valid loaded index names a batch, in
        order: the offset index the batch's position, the time index a timestamp no
        lower than any batch before it (what lookups rely on). Used by tests after
        mutations. Cost: O(bytes)."""
        if limit is None:
            limit = self.file_bytes()
        assert (self._mm is None) == (self._mapped_bytes == 0), (self, self._mapped_bytes)
        positions: dict[int, int] = {}    # base offset -> position of its batch
        max_before: dict[int, int] = {}   # base offset -> largest timestamp before it
        next_offset, max_ts, end = self.base_offset, -1, 0
        for position, header in self.headers(0, limit):
            assert header.base_offset >= next_offset, (self, position, header)
            positions[header.base_offset] = position
            max_before[header.base_offset] = max_ts
            max_ts = max(max_ts, header.max_timestamp_ms)
            next_offset = header.next_offset
            end = position + header.length
        assert self.sealed_data_bytes in (None, end), (self, self.sealed_data_bytes, end)
        # retention deletes by it: it must never be below a record's timestamp
        assert self.sealed_max_timestamp_ms is None or self.sealed_max_timestamp_ms >= max_ts

        base = self.base_offset
        if self.indexes.offset.valid:
            entries = self.indexes.offset.entries()
            assert entries == sorted(set(entries)), (self, entries)
            for rel, position in entries:
                assert positions.get(base + rel) == position, (self, rel, position)
        if self.indexes.time.valid:
            entries = self.indexes.time.entries()
            assert entries == sorted(set(entries)), (self, entries)
            for ts, rel in entries:
                assert base + rel in max_before and ts >= max_before[base + rel], \
                    (self, ts, rel)


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


# -- crash-safe file protocols -----------------------------------------------------------


def move_aside(segment: Segment, position: int, stamp_ms: int) -> int:
    """Move the bytes of ``segment`` from ``position`` to its last non-zero byte into a
    new file ``<base>.cut-<position>-<stamp_ms>`` (fsynced), then zero them in the
    segment. Returns the bytes moved. The segment keeps its size; nothing is deleted.
    Writer lock held. Cost: O(bytes moved)."""
    stem = os.path.join(segment.directory, file_name(segment.base_offset,
                                                     f".cut-{position}-{stamp_ms}"))
    aside, n = stem, 0
    while os.path.exists(aside):  # a recovery that died after writing it, re-run
        n += 1
        aside = f"{stem}-{n}"
    with _fileutil.os_errors(f"moving damaged bytes of {segment.path} aside"):
        end = segment.data_end()
        if end <= position:
            return 0
        mm = segment.mapping(end)
        assert mm is not None
        fd = _fileutil.open_fd(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        try:
            _fileutil.write_all(fd, mm[position:end])
            os.fsync(fd)
        finally:
            os.close(fd)
        mm[position:end] = bytes(end - position)
        mm.flush()
        return end - position


def rename_aside(segment: Segment, stamp_ms: int) -> None:
    """Move a whole segment and its indexes out of the way: each file gets the suffix
    ``.cut-<stamp_ms>`` (renamed, not deleted). Writer lock held."""
    segment.close()
    for path in (segment.path, segment.indexes.offset.path, segment.indexes.time.path):
        try:
            os.replace(path, f"{path}.cut-{stamp_ms}")
        except FileNotFoundError:
            pass


def cleaned_path(segment: Segment) -> str:
    """Where compaction writes the cleaned copy of ``segment``."""
    return segment.path + CLEANED_SUFFIX


def replace_with_cleaned(segment: Segment, cleaned: str) -> None:
    """Swap the complete, fsynced file ``cleaned`` in as ``segment``'s data: rename it
    to ``<base>.log.swap``, remove the old indexes, rename the swap file over
    ``<base>.log``, fsyncing the directory after each rename. A crash at any step
    leaves the old segment or the new one (``finish_interrupted_swaps``). Processes
    that have the old file mapped keep reading it (another inode). Writer lock held;
    the caller publishes the new layout."""
    swap = segment.path + SWAP_SUFFIX
    os.replace(cleaned, swap)
    _fileutil.sync_dir(segment.directory)
    segment.indexes.unlink()
    os.replace(swap, segment.path)
    _fileutil.sync_dir(segment.directory)


def is_leftover(name: str) -> bool:
    """True for a file an interrupted compaction left (``finish_interrupted_swaps``
    handles it)."""
    return name.endswith((SWAP_SUFFIX, CLEANED_SUFFIX))


def finish_interrupted_swaps(directory: str) -> int:
    """Recovery of ``replace_with_cleaned``: complete swaps that were under way (a
    ``.swap`` file is complete) and discard unfinished ``.cleaned`` files. Returns the
    number of files handled. Caller holds the partition's writer lock."""
    handled = 0
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if name.endswith(SUFFIX + SWAP_SUFFIX):
            base = parse_file_name(name[: -len(SWAP_SUFFIX)])
            if base is not None:
                SegmentIndexes(directory, base).unlink()
            os.replace(path, path[: -len(SWAP_SUFFIX)])
            handled += 1
        elif name.endswith(SUFFIX + CLEANED_SUFFIX):
            os.unlink(path)
            handled += 1
    if handled:
        _fileutil.sync_dir(directory)
    return handled


__all__ = ["IndexPolicy", "ScanResult", "Segment", "SegmentIndexes", "file_name",
           "finish_interrupted_swaps", "list_bases", "move_aside", "parse_file_name",
           "rename_aside", "replace_with_cleaned"]
