"""Reading one segment through its indexes: where an offset or a time is, and the
figures of a sealed segment (its size, its largest timestamp).

``SegmentLookups`` is the part of ``Segment`` (``_segment.py``) that answers these
questions. An index entry is a hint (``_index.py``): every method here checks the
entry it uses against the batch it points to, and falls back to a scan of the batch
headers when it does not hold, so a damaged index can slow a lookup down but never
make it wrong, and nothing destructive (retention) ever trusts an unchecked entry.
"""

from __future__ import annotations

import bisect
import mmap
from collections.abc import Iterator
from typing import TYPE_CHECKING

from . import _format
from ._format import BatchHeader
from .errors import CorruptRecordError

if TYPE_CHECKING:
    from ._segment import ScanResult, SegmentIndexes

__all__ = ["SegmentLookups"]


class SegmentLookups:
    """Index-guided reads of a segment (mixed into ``Segment``, which provides the
    mapping, the batch scan and the indexes). Thread-safety as ``Segment``'s reads."""

    base_offset: int
    indexes: SegmentIndexes
    sealed_max_timestamp_ms: int | None
    sealed_data_bytes: int | None

    if TYPE_CHECKING:
        def mapping(self, needed: int) -> mmap.mmap | None: ...

        def headers(self, position: int, limit: int, verify: bool = True
                    ) -> Iterator[tuple[int, BatchHeader]]: ...

        def rebuild_indexes(self, limit: int, index_interval_bytes: int,
                            seal: bool = True) -> ScanResult: ...

    def find_position(self, offset: int, limit: int) -> int:
        """Byte position of the batch holding ``offset`` (or the first batch after it,
        where compaction left a gap); ``limit``-bounded. Cost: O(log n) index search,
        then a verified scan over at most ~index_interval_bytes."""
        mm = self.mapping(limit)
        if mm is None:
            return 0
        index = self.indexes.ensure().offset
        position = 0
        if index.valid and len(index):
            entry_offset, entry_position = index.lookup(offset)
            if entry_position > 0 or entry_offset != self.base_offset:
                if self.entry_matches(entry_offset, entry_position, limit):
                    position = entry_position
                else:
                    index.valid = False  # garbled: scan now, rebuild later
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

    def check_sealed_indexes(self, limit: int, interval: int) -> None:
        """Verify a sealed segment's indexes once per mapping; rebuild them if damaged.
        Any process may do this: sealed segments never change. Cost: O(1) after the
        first call, O(segment) for a rebuild."""
        if not self.indexes.checked:
            if not self.sealed_indexes_ok(limit):
                self.rebuild_indexes(limit, interval)
            self.indexes.checked = True

    def sealed_indexes_ok(self, limit: int) -> bool:
        """Check the final entries of a sealed segment's indexes: the last offset entry
        names the last batch, and the last time entry names the same batch. Cost: O(1)
        after the indexes are loaded."""
        indexes = self.indexes.ensure()
        if not indexes.valid:
            return False
        last = indexes.offset.last()
        last_time = indexes.time.last()
        if last is None or last_time is None:
            return self._is_empty(limit)
        return last_time[1] == last[0] and self._is_last_batch(last[0], last[1], limit)

    def _is_empty(self, limit: int) -> bool:
        return limit == 0 or _format.is_unwritten(self.mapping(limit), 0, limit)

    def _is_last_batch(self, offset: int, position: int, limit: int) -> bool:
        """True when the batch at ``position`` starts at ``offset`` and no batch
        follows it before ``limit``."""
        mm = self.mapping(limit)
        try:
            header = _format.read_header(mm, position, limit)
        except CorruptRecordError:
            return False
        end = position + header.length
        return header.base_offset == offset and (
            end >= limit or _format.is_unwritten(mm, end, limit))

    def sealed_max_timestamp(self, limit: int, interval: int) -> int:
        """Largest timestamp in this sealed segment (-1 when it is empty): what
        retention deletes it by, so the index is not trusted for it.

        Read from the final time-index entry with one pread, after checking that the
        final entries of both indexes name the segment's last batch and that the
        timestamp is what the batches say (``time_entry_holds``); when they do not,
        the indexes are rebuilt by a scan, which gives it. Cached. Cost: a header scan
        of about ``index_interval_bytes``, or O(segment) once.
        """
        if self.sealed_max_timestamp_ms is not None:
            return self.sealed_max_timestamp_ms
        last = self.indexes.offset.read_tail(2)
        last_time = self.indexes.time.read_tail(2)
        result: int | None = None
        if last and last_time and last_time[-1][1] == last[-1][0]:
            offset, position = self.base_offset + last[-1][0], last[-1][1]
            before: tuple[int, int] | None = (-1, -1)  # (previous timestamp, its start)
            if len(last_time) == 2:
                before = (last_time[-2][0], last[-2][1]) if len(last) == 2 else None
            if before is not None and self._is_last_batch(offset, position, limit) and \
                    self.time_entry_holds(last_time[-1][0], offset, position, *before,
                                          limit):
                result = last_time[-1][0]
        elif not last and self._is_empty(limit):
            result = -1
        if result is None:
            result = self.rebuild_indexes(limit, interval).max_timestamp_ms
        self.sealed_max_timestamp_ms = result
        return result

    def time_entry_holds(self, timestamp_ms: int, offset: int, position: int,
                         previous_ms: int, start: int, limit: int) -> bool:
        """Check a time-index entry against the batches: ``IndexPolicy`` adds one only
        at a batch that has an offset-index entry (here at ``position``, starting at
        ``offset``), when the largest timestamp so far grew, so the entry's timestamp
        must be the larger of the previous entry's (``previous_ms``; -1 for the first
        entry) and the largest timestamp of the batches after the offset-index entry
        before it (at ``start``) up to and including its own. For the first entry,
        ``start`` is -1: every batch up to its own. Cost: a header scan of about
        ``index_interval_bytes``."""
        grown = -1
        try:
            for pos, header in self.headers(max(start, 0), limit, verify=False):
                if pos == start:
                    continue  # the previous entry's batch: counted in previous_ms
                if pos > position:
                    return False  # no batch starts at position
                grown = max(grown, header.max_timestamp_ms)
                if pos == position:
                    return header.base_offset == offset and \
                        timestamp_ms == max(previous_ms, grown)
        except CorruptRecordError:
            return False
        return False

    def find_time(self, timestamp_ms: int, limit: int) -> int:
        """Byte position from which scanning finds the first record with a timestamp
        >= ``timestamp_ms``: the batch of the last time-index entry below it, once the
        entry is checked against the batches (``time_entry_holds``), since a wrong one
        would skip records. An entry that does not hold marks the time index invalid
        (the caller rebuilds it) and the scan starts at the first batch. Cost:
        O(log n) index search plus a header scan of about ``index_interval_bytes``.
        """
        indexes = self.indexes.ensure()
        if not indexes.valid:
            return 0
        time, offsets = indexes.time, indexes.offset
        i = time.entry_before(timestamp_ms)
        if i < 0:
            return 0
        rel = time.relative_offsets[i]
        j = bisect.bisect_left(offsets.relative_offsets, rel)
        if j < len(offsets) and offsets.relative_offsets[j] == rel and (i == 0 or j > 0):
            position = offsets.positions[j]
            previous, start = (-1, -1) if i == 0 else (time.timestamps[i - 1],
                                                      offsets.positions[j - 1])
            if self.time_entry_holds(time.timestamps[i], self.base_offset + rel, position,
                                     previous, start, limit):
                return position
        time.valid = False  # garbled: scan now, rebuild
        return 0

    def sealed_size(self, limit: int) -> int:
        """Bytes of batches in this sealed segment (the file is larger: preallocated).
        From the final index entry and its batch's length; a scan when the indexes do
        not check out. Cached."""
        if self.sealed_data_bytes is None:
            if self.sealed_indexes_ok(limit):
                last = self.indexes.offset.last()
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
