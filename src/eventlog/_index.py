"""Sparse offset and time indexes of one segment: entry format and search only.

Both are derived data. They can be deleted at any time and are rebuilt from the
segment; the segment owns the policy of when to add entries and when to rebuild.

File layout (little-endian)::

    .index      16-byte header b"EvLgIDX1" + i64 base_offset, then 8-byte entries
                (u32 offset - base_offset, u32 byte position of the batch)
    .timeindex  16-byte header b"EvLgTIX1" + i64 base_offset, then 12-byte entries
                (i64 largest timestamp so far, u32 offset - base_offset of the batch)

Entries are appended with ``pwrite`` under the partition's writer lock; a reader in
another process picks up new entries with ``refresh``. Nothing here is memory-mapped,
so a rebuilt index can replace the file (rename) without endangering any mapping.
An entry is a hint: callers verify that the batch at the returned position has the
expected base offset, and rebuild the index when it does not. A time entry is checked
the same way before anything acts on it (retention deleting a segment, a time lookup
skipping batches): ``Segment.time_entry_holds`` recomputes its timestamp from the
batches it summarizes, which the way entries are added (``IndexPolicy``) confines to
about ``index_interval_bytes`` before the batch it names.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import os
import struct
from abc import ABC, abstractmethod
from array import array
from itertools import pairwise

from . import _fileutil

_FILE_HEADER = struct.Struct("<8sq")
HEADER_BYTES = _FILE_HEADER.size  # 16


class _IndexFile(ABC):
    """Common machinery: a header, fixed-size entries, append and incremental load."""

    MAGIC = b""
    ENTRY = struct.Struct("<II")

    def __init__(self, path: str, base_offset: int) -> None:
        self.path = path
        self.base_offset = base_offset
        self._fd: int | None = None
        self._file_bytes = 0  # bytes of the file already loaded (header + whole entries)
        self.valid = True     # False once a load found the file inconsistent
        self._clear()

    @abstractmethod
    def _clear(self) -> None:
        """Empty the in-memory columns (each subclass owns its own)."""

    @abstractmethod
    def _add(self, raw: tuple[int, int]) -> bool:
        """Add one entry in memory; False when it would break monotonicity."""

    @abstractmethod
    def __len__(self) -> int:
        """Number of entries loaded."""

    @abstractmethod
    def _ordered(self) -> bool:
        """True when the loaded entries keep the order ``_add`` enforces."""

    def _check(self) -> None:
        """Assert the invariants of the loaded entries: in order, and (while the index
        is valid) exactly the whole entries of the file bytes loaded. Cost: O(entries).
        Whether each entry names a real batch is ``Segment._check``'s concern."""
        assert self._ordered(), self.path
        if self.valid:
            loaded, n = self._file_bytes, len(self)
            assert (loaded == 0 and n == 0) or loaded == HEADER_BYTES + n * self.ENTRY.size, \
                (self.path, loaded, n)

    # -- file handling --------------------------------------------------------------

    def _open(self, create: bool) -> int | None:
        if self._fd is None:
            flags = os.O_RDWR | (os.O_CREAT if create else 0)
            try:
                self._fd = _fileutil.open_fd(self.path, flags)
            except FileNotFoundError:
                return None
            except OSError as exc:
                # Loading only reads: on a read-only file system (a log opened
                # read_only there) read through a read-only descriptor.
                if create or exc.errno not in (errno.EROFS, errno.EACCES):
                    raise
                self._fd = _fileutil.open_fd(self.path, os.O_RDONLY)
        return self._fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def reset(self) -> None:
        """Close the file and forget the loaded entries (to bound the memory of segments
        nobody reads); the next ``load`` reads the file again. Cost: O(1)."""
        self.close()
        self._clear()
        self._file_bytes = 0

    def load(self) -> bool:
        """(Re)read the whole file. Returns False (and clears) when it is missing or
        inconsistent, so the caller can rebuild it. Cost: O(entries)."""
        self.reset()
        self.valid = True
        if self._open(create=False) is None:
            self.valid = False
            return False
        return self.refresh()

    def refresh(self) -> bool:
        """Read entries appended since the last load (by this or another process).

        A trailing partial entry (torn write) is ignored. Returns False when the new
        entries break monotonicity or the header is wrong. Cost: one pread.
        """
        fd = self._open(create=False)
        if fd is None:
            self.valid = False
            return False
        if self._file_bytes == 0:
            head = os.pread(fd, HEADER_BYTES, 0)
            if len(head) < HEADER_BYTES:
                self.valid = False
                return False
            magic, base = _FILE_HEADER.unpack(head)
            if magic != self.MAGIC or base != self.base_offset:
                self.valid = False
                return False
            self._file_bytes = HEADER_BYTES
        size = self.ENTRY.size
        data = os.pread(fd, 1 << 24, self._file_bytes)
        usable = len(data) - len(data) % size
        for raw in self.ENTRY.iter_unpack(data[:usable]):
            if not self._add(raw):
                self.valid = False
                return False
        self._file_bytes += usable
        return True

    def _write_entry(self, raw: bytes) -> None:
        fd = self._open(create=True)
        assert fd is not None
        if self._file_bytes == 0:
            _fileutil.pwrite_all(fd, _FILE_HEADER.pack(self.MAGIC, self.base_offset), 0)
            self._file_bytes = HEADER_BYTES
        _fileutil.pwrite_all(fd, raw, self._file_bytes)
        self._file_bytes += len(raw)

    def read_tail(self, n: int) -> list[tuple[int, int]]:
        """The last ``n`` whole entries in the file (raw, in order), read with one pread
        and without loading the index; empty when the file is missing, foreign or
        empty."""
        try:
            fd = _fileutil.open_fd(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return []
        try:
            size = os.fstat(fd).st_size
            entries = (size - HEADER_BYTES) // self.ENTRY.size
            if entries <= 0:
                return []
            head = os.pread(fd, HEADER_BYTES, 0)
            if len(head) < HEADER_BYTES or _FILE_HEADER.unpack(head) != (self.MAGIC,
                                                                        self.base_offset):
                return []
            n = min(n, entries)
            raw = os.pread(fd, n * self.ENTRY.size,
                           HEADER_BYTES + (entries - n) * self.ENTRY.size)
            usable = len(raw) - len(raw) % self.ENTRY.size
            return list(self.ENTRY.iter_unpack(raw[:usable]))
        finally:
            os.close(fd)

    def write_all(self, entries: list[tuple[int, int]]) -> None:
        """Replace the file with ``entries`` (temp file + rename)."""
        self.close()
        body = b"".join(self.ENTRY.pack(*e) for e in entries)
        data = _FILE_HEADER.pack(self.MAGIC, self.base_offset) + body
        if self._same_content(data):  # usual after an unclean shutdown: skip the rename
            self._clear()
            for e in entries:
                self._add(e)
            self._file_bytes = len(data)
            self.valid = True
            return
        tmp = _fileutil.temp_name(self.path)
        fd = _fileutil.open_fd(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            try:
                _fileutil.write_all(fd, data)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except BaseException:
            # A full disk: leave no half-written temp file holding the space.
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._clear()
        for e in entries:
            self._add(e)
        self._file_bytes = len(data)
        self.valid = True

    def _same_content(self, data: bytes) -> bool:
        try:
            fd = _fileutil.open_fd(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            return os.fstat(fd).st_size == len(data) and os.pread(fd, len(data), 0) == data
        finally:
            os.close(fd)

    def unlink(self) -> None:
        """Delete the file (derived data: it is rebuilt when needed)."""
        self.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class OffsetIndex(_IndexFile):
    """Maps offsets to byte positions of batches. Lookup: O(log n)."""

    MAGIC = b"EvLgIDX1"
    ENTRY = struct.Struct("<II")

    def _clear(self) -> None:
        self.relative_offsets = array("I")
        self.positions = array("I")

    def __len__(self) -> int:
        return len(self.positions)

    def _ordered(self) -> bool:
        rel, pos = self.relative_offsets, self.positions
        return len(rel) == len(pos) and all(a < b for a, b in pairwise(rel)) \
            and all(a < b for a, b in pairwise(pos))

    def _add(self, raw: tuple[int, int]) -> bool:
        rel, pos = raw
        if self.positions and (rel <= self.relative_offsets[-1] or pos <= self.positions[-1]):
            return False
        self.relative_offsets.append(rel)
        self.positions.append(pos)
        return True

    def append(self, offset: int, position: int) -> None:
        """Add an entry for the batch starting at ``offset`` and ``position``."""
        raw = (offset - self.base_offset, position)
        if not self._add(raw):
            return  # already covered (e.g. the final entry written twice)
        self._write_entry(self.ENTRY.pack(*raw))

    def lookup(self, offset: int) -> tuple[int, int]:
        """The (offset, position) of the last entry at or before ``offset``, or
        (base_offset, 0) when there is none. Cost: O(log n)."""
        i = bisect.bisect_right(self.relative_offsets, offset - self.base_offset) - 1
        if i < 0:
            return self.base_offset, 0
        return self.base_offset + self.relative_offsets[i], self.positions[i]

    def last(self) -> tuple[int, int] | None:
        if not self.positions:
            return None
        return self.base_offset + self.relative_offsets[-1], self.positions[-1]

    def last_position(self) -> int:
        return self.positions[-1] if self.positions else -1

    def entries(self) -> list[tuple[int, int]]:
        return list(zip(self.relative_offsets, self.positions, strict=True))


class TimeIndex(_IndexFile):
    """Maps timestamps to offsets: entry i holds the largest timestamp of all batches
    up to and including the batch at its offset, so timestamps never decrease.
    Lookup: O(log n)."""

    MAGIC = b"EvLgTIX1"
    ENTRY = struct.Struct("<qI")

    def _clear(self) -> None:
        self.timestamps = array("q")
        self.relative_offsets = array("I")

    def __len__(self) -> int:
        return len(self.timestamps)

    def _ordered(self) -> bool:
        ts, rel = self.timestamps, self.relative_offsets
        return len(ts) == len(rel) and all(a <= b for a, b in pairwise(ts)) \
            and all(a < b for a, b in pairwise(rel))

    def _add(self, raw: tuple[int, int]) -> bool:
        ts, rel = raw
        if self.timestamps and (ts < self.timestamps[-1] or rel <= self.relative_offsets[-1]):
            return False
        self.timestamps.append(ts)
        self.relative_offsets.append(rel)
        return True

    def append(self, timestamp_ms: int, offset: int) -> None:
        raw = (timestamp_ms, offset - self.base_offset)
        if not self._add(raw):
            return
        self._write_entry(self.ENTRY.pack(*raw))

    def max_timestamp(self) -> int | None:
        return self.timestamps[-1] if self.timestamps else None

    def last(self) -> tuple[int, int] | None:
        if not self.timestamps:
            return None
        return self.timestamps[-1], self.base_offset + self.relative_offsets[-1]

    def lookup(self, timestamp_ms: int) -> int:
        """An offset from which scanning finds the first record with a timestamp
        >= ``timestamp_ms``: the offset of the last entry whose timestamp is below it
        (every batch before that entry's batch is entirely older). Cost: O(log n)."""
        i = self.entry_before(timestamp_ms)
        if i < 0:
            return self.base_offset
        return self.base_offset + self.relative_offsets[i]

    def entry_before(self, timestamp_ms: int) -> int:
        """The index of the entry ``lookup`` uses (-1: none, scan from the start). A
        hint: ``Segment.time_entry_holds`` checks it against the batches. O(log n)."""
        return bisect.bisect_left(self.timestamps, timestamp_ms) - 1

    def entries(self) -> list[tuple[int, int]]:
        return list(zip(self.timestamps, self.relative_offsets, strict=True))
