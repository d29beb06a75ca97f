"""Fetch and ListOffsets with ``isolation_level=1`` (READ_COMMITTED), as Kafka's broker
answers them: the last stable offset (LSO), nothing at or past it, and the aborted
transactions among the batches returned.

The decisions are eventlog's ``read_committed`` rule (``_isolation.CommittedView``:
the fate of a transactional batch is the first marker of its producer id after it),
so a Kafka client and an eventlog ``Consumer(isolation_level="read_committed")`` see
the same records. The client filters, as with Kafka: transactional batches go out
with attribute bit 4, markers as control batches (bit 5), and the response lists
``(producer_id, first_offset)`` of each aborted transaction in range, which the client
skips up to that producer's abort marker. Nothing is dropped server-side, so a fetch
whose range holds only aborted records still moves the client on.

A partition held at its LSO by an undecided transaction has that transaction looked
at (``TransactionCoordinator.resolve``) at most once a second: aborted if it timed out
or nothing can end it, as an eventlog consumer does.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from .._format import ATTR_CONTROL, ATTR_TXN_BITS
from .._isolation import CommittedView
from ..errors import EventLogError, OffsetOutOfRangeError

if TYPE_CHECKING:
    from .._backend import Backend, PartitionBackend
    from .._format import DecodedBatch

__all__ = ["READ_COMMITTED", "CommittedReads", "aborted_transactions"]

log = logging.getLogger("eventlog.serve")

READ_COMMITTED = 1
_RESOLVE_EVERY_S = 1.0
_SEARCH_BYTES = 256 << 10


class _Stable:
    """What is known of one partition's LSO: every transactional batch below ``lso``
    is decided; ``view`` remembers the markers seen on the way (each stretch of the
    partition is read once)."""

    __slots__ = ("lock", "lso", "plog", "view")

    def __init__(self, plog: PartitionBackend, start: int) -> None:
        self.lock = threading.Lock()
        self.lso = start
        self.plog = plog
        self.view = CommittedView(plog)


class CommittedReads:
    """LSOs of partitions, and the look at what holds them. Thread-safe.

    The LSO only moves forward (a transaction starts at the end, and a decided batch
    stays decided), so each partition's search resumes where the last one stopped:
    held at an open transaction, a fetch costs a look at that one batch's fate (the
    markers appended since); caught up, a read of what was appended since. A
    partition whose start passed the known LSO (retention) or whose end is below it
    (a deleted and recreated topic) starts afresh."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._lock = threading.Lock()
        self._stable: dict[tuple[str, int], _Stable] = {}
        self._next_resolve: dict[tuple[str, int], float] = {}

    def stable_offset(self, topic: str, index: int, plog: PartitionBackend) -> int:
        """The partition's last stable offset: the first offset of an undecided
        transactional batch, else the end offset."""
        start, end = plog.bounds()
        key = (topic, index)
        with self._lock:
            entry = self._stable.get(key)
            if entry is None or entry.plog is not plog or not start <= entry.lso <= end:
                if len(self._stable) > 4096:
                    self._stable.clear()
                entry = self._stable[key] = _Stable(plog, start)
        with entry.lock:
            lso = entry.lso = self._search(entry, plog, entry.lso, end)
            if lso >= end:   # nothing undecided: no marker seen so far is needed again
                entry.view = CommittedView(plog)
        if lso < end:
            self._held(topic, index, plog, lso)
        return lso

    @staticmethod
    def _search(entry: _Stable, plog: PartitionBackend, position: int, end: int) -> int:
        while position < end:
            try:
                batches = plog.fetch(position, _SEARCH_BYTES)
            except OffsetOutOfRangeError as exc:
                position = exc.start_offset
                continue
            if not batches:
                break
            for batch in batches:
                h = batch.header
                if h.next_offset <= position:
                    continue
                if h.attributes & ATTR_TXN_BITS and not h.attributes & ATTR_CONTROL \
                        and entry.view.fate(h) is None:
                    return max(position, h.base_offset)
                position = h.next_offset
        return min(position, end)

    def _held(self, topic: str, index: int, plog: PartitionBackend, lso: int) -> None:
        now = time.monotonic()
        with self._lock:
            if now < self._next_resolve.get((topic, index), 0.0):
                return
            self._next_resolve[(topic, index)] = now + _RESOLVE_EVERY_S
            if len(self._next_resolve) > 4096:
                self._next_resolve.clear()
        if self._backend.read_only:
            return
        try:
            batches = plog.fetch(lso, max_bytes=1)
            if batches:
                h = batches[0].header
                self._backend.transactions().resolve(topic, index, h.producer_id,
                                                     h.producer_epoch)
        except EventLogError as exc:
            log.warning("could not look at the transaction holding %s[%d]: %s",
                        topic, index, exc)


def aborted_transactions(plog: PartitionBackend, batches: list[DecodedBatch]
                         ) -> list[dict[str, Any]]:
    """Kafka's ``aborted_transactions`` for ``batches`` (all below the LSO): for each
    run of aborted batches of one producer id up to its marker, the id and the run's
    first offset. Cost: O(batches) and the scan the decisions need (up to each
    transaction's marker)."""
    view = CommittedView(plog)
    out: list[dict[str, Any]] = []
    running: set[int] = set()
    for batch in batches:
        h = batch.header
        if not h.attributes & ATTR_TXN_BITS:
            continue
        if h.attributes & ATTR_CONTROL:
            running.discard(h.producer_id)
        elif h.producer_id not in running and view.fate(h) is False:
            running.add(h.producer_id)
            out.append({"producer_id": h.producer_id, "first_offset": h.base_offset})
    return out
