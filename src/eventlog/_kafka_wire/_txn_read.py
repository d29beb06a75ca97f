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
from ..errors import EventLogError

if TYPE_CHECKING:
    from .._backend import Backend, PartitionBackend
    from .._format import DecodedBatch

__all__ = ["READ_COMMITTED", "CommittedReads", "aborted_transactions"]

log = logging.getLogger("eventlog.serve")

READ_COMMITTED = 1
_RESOLVE_EVERY_S = 1.0


class CommittedReads:
    """LSOs of partitions, and the look at what holds them. Thread-safe."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._lock = threading.Lock()
        self._next_resolve: dict[tuple[str, int], float] = {}

    def stable_offset(self, topic: str, index: int, plog: PartitionBackend, offset: int
                      ) -> tuple[int, CommittedView]:
        """The LSO from ``offset`` on (a read of the partition from there), and the
        view that decided it (for ``aborted_transactions``)."""
        view = CommittedView(plog)
        lso = view.last_stable_offset(offset)
        if lso < plog.end_offset:
            self._held(topic, index, plog, lso)
        return lso, view

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


def aborted_transactions(view: CommittedView, batches: list[DecodedBatch]
                         ) -> list[dict[str, Any]]:
    """Kafka's ``aborted_transactions`` for ``batches`` (all below the LSO): for each
    run of aborted batches of one producer id up to its marker, the id and the run's
    first offset. Cost: O(batches) and the scan the decisions need."""
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
