"""``read_committed``: what a consumer may return from a partition that has seen
transactions, decided from the partition alone.

The rule (docs/transactions.md): the fate of a transactional batch of producer id P
is the first control batch of P after it — a commit marker makes it visible, an abort
marker hides it, and until one exists the batch is *undecided*: its base offset is the
partition's last stable offset (LSO) and a ``read_committed`` reader stops there.
Markers themselves are never returned.

``CommittedView`` applies the rule for one partition and one consumer. It remembers
the markers it has seen (``_markers``: producer id -> their offsets and outcomes) from
the first transactional batch it had to decide on, and scans forward only as far as a
decision needs, each stretch once, so a pipeline reading a transactional topic reads
each batch about twice (once to find markers, once to return it) and a topic that never
saw a transaction costs a test of each fetched batch's attribute byte (``filter``'s
first line), nothing more.

Reads go through ``PartitionBackend.fetch`` only (the seam). Not thread-safe: the
consumer's thread.
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING

from ._format import ATTR_COMMIT, ATTR_CONTROL, ATTR_TXN_BITS, BatchHeader
from .errors import OffsetOutOfRangeError

if TYPE_CHECKING:
    from ._backend import PartitionBackend
    from ._format import DecodedBatch

__all__ = ["ISOLATION_LEVELS", "CommittedView", "has_transactional"]

ISOLATION_LEVELS = ("read_uncommitted", "read_committed")
_SCAN_BYTES = 4 << 20


def has_transactional(batches: list[DecodedBatch]) -> bool:
    """True if any batch is transactional or a marker. Cost: O(batches)."""
    return any(batch.header.attributes & ATTR_TXN_BITS for batch in batches)


class Filtered:
    """What ``CommittedView.filter`` keeps of some fetched batches."""

    __slots__ = ("batches", "blocked", "resume")

    def __init__(self, batches: list[DecodedBatch], resume: int,
                 blocked: BatchHeader | None) -> None:
        self.batches = batches   # the batches to return records from, in order
        self.resume = resume     # the offset after the last batch kept or dropped
        self.blocked = blocked   # the undecided batch it stopped at (at the LSO), or None


class CommittedView:
    """The markers of one partition seen so far, and the decisions they make."""

    def __init__(self, partition: PartitionBackend) -> None:
        self._partition = partition
        self._start = -1          # markers are known from this offset...
        self._end = -1            # ...up to this one (every control batch in between)
        self._markers: dict[int, tuple[list[int], list[bool]]] = {}

    def filter(self, batches: list[DecodedBatch], position: int) -> Filtered:
        """Keep the batches a ``read_committed`` reader returns, in order, up to the
        first undecided one. Cost: O(batches), plus the scan a decision needs."""
        if not has_transactional(batches):
            return Filtered(batches, batches[-1].header.next_offset if batches else position,
                            None)
        kept: list[DecodedBatch] = []
        resume = position
        for batch in batches:
            header = batch.header
            last_base = header.base_offset
            attributes = header.attributes
            if attributes & ATTR_TXN_BITS:
                if attributes & ATTR_CONTROL:
                    resume = header.next_offset
                    continue
                fate = self.fate(header)
                if fate is None:
                    return Filtered(kept, resume, header)
                if not fate:
                    resume = header.next_offset
                    continue
            kept.append(batch)
            resume = header.next_offset
        # The next fetch starts in the last batch (when the caller took only some of its
        # records) or after it: markers before its base decide nothing it will read.
        self._forget_before(last_base)
        return Filtered(kept, resume, None)

    def fate(self, header: BatchHeader) -> bool | None:
        """True (committed), False (aborted) or None (undecided) for the
        transactional batch ``header``."""
        offset = header.base_offset
        if self._start < 0 or offset < self._start:
            self._start = self._end = offset
            self._markers.clear()
        while True:
            found = self._first_marker_after(header.producer_id, offset)
            if found is not None:
                return found
            if not self._scan():
                return None

    def _first_marker_after(self, producer_id: int, offset: int) -> bool | None:
        entry = self._markers.get(producer_id)
        if entry is None:
            return None
        offsets, commits = entry
        i = bisect.bisect_right(offsets, offset)
        return commits[i] if i < len(offsets) else None

    def _scan(self) -> bool:
        """Read one stretch after ``_end`` for markers; False at the partition's end."""
        try:
            batches = self._partition.fetch(self._end, _SCAN_BYTES)
        except OffsetOutOfRangeError as exc:
            if exc.start_offset > self._end:  # deleted under us: nothing there to find
                self._end = exc.start_offset
                return True
            raise
        if not batches:
            return False
        for batch in batches:
            header = batch.header
            if header.attributes & ATTR_CONTROL and header.base_offset >= self._end:
                offsets, commits = self._markers.setdefault(header.producer_id, ([], []))
                offsets.append(header.base_offset)
                commits.append(bool(header.attributes & ATTR_COMMIT))
        self._end = max(self._end, batches[-1].header.next_offset)
        return True

    def _forget_before(self, offset: int) -> None:
        """Drop markers below ``offset``: the reader is past them (a seek back rescans)."""
        if self._start < 0 or offset <= self._start:
            return
        for pid in list(self._markers):
            offsets, commits = self._markers[pid]
            i = bisect.bisect_left(offsets, offset)
            if i:
                del offsets[:i], commits[:i]
            if not offsets:
                del self._markers[pid]
        self._start = offset
        self._end = max(self._end, offset)

    def last_stable_offset(self, position: int) -> int:
        """The first offset at or after ``position`` of an undecided transactional
        batch, else the end offset. Cost: a read of the partition from ``position``."""
        end = self._partition.end_offset
        while position < end:
            try:
                batches = self._partition.fetch(position, _SCAN_BYTES)
            except OffsetOutOfRangeError as exc:
                position = exc.start_offset
                continue
            if not batches:
                break
            for batch in batches:
                header = batch.header
                if header.attributes & ATTR_TXN_BITS and not header.attributes & ATTR_CONTROL \
                        and self.fate(header) is None:
                    return max(position, header.base_offset)
            position = batches[-1].header.next_offset
        return end

    def _check(self) -> None:
        """Assert the invariants: the known range is ordered, and each producer id's
        markers lie in it in increasing order."""
        assert self._start <= self._end, (self._start, self._end)
        for pid, (offsets, commits) in self._markers.items():
            assert len(offsets) == len(commits) and offsets, pid
            assert offsets == sorted(set(offsets)), pid
