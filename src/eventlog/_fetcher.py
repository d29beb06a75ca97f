"""The fetch step of a consumer: where it reads each assigned partition, and what it
returns or sleeps on.

This room owns the fetch state of every partition assigned to one consumer
(``PartitionFetch``): its position (the offset of the next record to return), whether
the application paused it, whether the consumer owns it yet (a group member waits
until the previous owner lets go; ``_coordinator`` decides that), and the notify words
a reader sleeps on. ``Fetcher.fetch`` is the one step that ``Consumer.poll`` and
``aio.AIOConsumer`` both run:

- take records from the partitions that are ready (owned, not paused), fairly: round
  robin, starting after the partition the previous fetch visited last, at least
  ``MIN_SHARE`` records per visit, and the room left goes to the partitions that have
  more;
- or, when none has a record, return a ``Wait``: the notify words *as they were
  before the fetch* (so an append during the fetch ends the sleep at once), and how
  long to sleep at most before the caller looks at its group again.

Positions not known yet resolve to the group's committed offset when it lies in the
partition, else to ``auto_offset_reset``, and so does a position that the partition no
longer holds (records deleted under it by retention or ``delete_records``, in any
process): the fetch resets it and reads from there, never raising
``OffsetOutOfRangeError`` unless ``auto_offset_reset`` is ``"none"``. Such a reset of
a committed offset or a position skips or rereads records, so it is never silent: a
warning on the ``eventlog`` logger and a count (``metrics()["offset_resets"]``). A
partition whose topic was deleted (in any process) is marked (``PartitionFetch.deleted``)
and skipped; the coordinator drops it from a subscription or raises for an assignment.
Decoded batches
become ``Record`` tuples with the deserializers applied a column at a time
(``_types.records_from_batches``, ``_deserialize``); a record that fails to
deserialize ends the fetch:
the records before it are returned, its position stays at it, and the next fetch
raises a ``SerializationError`` naming its topic, partition and offset.

The fetcher reads the log only through the backend seam (``_backend``) and reads, never
writes, the group's committed offsets. It knows nothing of groups, commits or
listeners, and calls nothing above it. Not thread-safe: one thread at a time (the
consumer's); a ``Wait`` may be slept on in any thread.
"""

from __future__ import annotations

import gc
import logging
import operator
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from . import _notify
from ._deserialize import DeserializeError, column_function, salvage, serialization_error
from ._format import ATTR_CONTROL
from ._isolation import ISOLATION_LEVELS, CommittedView
from ._types import Record, TopicPartition, pause_gc, records_from_batches
from .config import check_int
from .errors import (
    EventLogError,
    InvalidConfigError,
    NotAssignedError,
    OffsetOutOfRangeError,
    SerializationError,
    UnknownTopicError,
)
from .serde import Deserializer, deserializer

if TYPE_CHECKING:
    from ._backend import Backend, PartitionBackend
    from ._format import BatchHeader, DecodedBatch
    from ._offsets import OffsetStore

_logger = logging.getLogger("eventlog")

__all__ = ["DEFAULT_FETCH_MAX_BYTES", "MIN_SHARE", "RESETS", "Fetcher", "PartitionFetch",
           "Wait", "check_tp"]

_logger = logging.getLogger("eventlog")
# At most one warning per partition this often about positions reset out of range.
_WARN_EVERY_S = 10.0

RESETS = ("earliest", "latest", "none")
DEFAULT_FETCH_MAX_BYTES = 4 << 20   # per partition and fetch
# Fewest records a fetch takes from a partition before moving on (unless max_records
# is under four times that): with many partitions an equal share of max_records would
# be a few records each, and every visit to a partition has a fixed cost (its head, a
# fetch, building records).
MIN_SHARE = 16
# With no partition to sleep on (none assigned, owned or unpaused), look again soon:
# what changes that is a rebalance or the previous owner letting go.
_SLICE_NOTHING_READY_S = 0.02
# Fetches of a partition at one visit when each finds its position outside the
# partition (records being deleted faster than the reset position can be read).
_RESET_ATTEMPTS = 4
# read_committed: fetches at one visit that find only aborted records and markers, and
# how often a reader held at the last stable offset looks whether the transaction
# holding it timed out (or was orphaned) and aborts it.
_HIDDEN_FETCHES = 64
_RESOLVE_EVERY_S = 0.5
_load = operator.methodcaller("load")


def check_tp(tp: Any) -> TopicPartition:
    """``tp`` as a ``TopicPartition``; ``InvalidConfigError`` unless it is a
    ``(str, int)`` pair."""
    if not (isinstance(tp, tuple) and len(tp) == 2 and isinstance(tp[0], str)
            and type(tp[1]) is int):
        raise InvalidConfigError(f"not a TopicPartition: {tp!r}")
    return tp if type(tp) is TopicPartition else TopicPartition(*tp)


class PartitionFetch:
    """Fetch state of one assigned partition."""

    __slots__ = ("counter", "deleted", "idle", "next_resolve", "owned", "partition", "paused",
                 "position", "tp", "view", "waiters")

    def __init__(self, tp: TopicPartition, partition: PartitionBackend, owned: bool,
                 committed: bool = False) -> None:
        self.tp = tp
        self.partition = partition
        self.owned = owned              # group: we hold its ownership lock
        self.paused = False
        self.position: int | None = None   # None: resolve at the next read
        # Its topic was deleted (in any process): fetches skip it; the coordinator
        # drops it from a subscription, or raises this for an explicit assignment.
        self.deleted: UnknownTopicError | None = None
        self.counter, self.waiters = partition.wake_words()
        # read_committed: the markers seen, and when to look at a blocking transaction
        self.view = CommittedView(partition) if committed else None
        self.next_resolve = 0.0
        # (notify count, position) when a fetch last found nothing after the position:
        # while both stay the same there is nothing new to fetch (every publish, in any
        # process, bumps the count), so the fetch skips the partition without a look.
        self.idle: tuple[int, int] | None = None


class Wait(NamedTuple):
    """What a fetch that found nothing says to sleep on: the notify words of the ready
    partitions, the values they had before the fetch, and the longest sleep (seconds)
    before the caller should look at its group again."""

    counters: list[_notify.Word]
    waiters: list[_notify.Word]
    expected: list[int]
    slice_s: float

    def sleep(self, timeout: float | None,
              interrupt: tuple[_notify.Word, _notify.Word, int] | None = None) -> bool:
        """Block until an append to one of the partitions, a change of ``interrupt``'s
        word from its given value, or ``min(timeout, slice_s)`` seconds. True if woken
        by a change. Cost while asleep: none (a futex), or a look every 0.2-2 ms where
        futexes are missing. Thread-safe (any thread may sleep on it)."""
        pause = self.slice_s if timeout is None else min(self.slice_s, timeout)
        counters, waiters, expected = self.counters, self.waiters, self.expected
        if interrupt is not None:
            counters = [*counters, interrupt[0]]
            waiters = [*waiters, interrupt[1]]
            expected = [*expected, interrupt[2]]
        if not counters:
            if pause > 0:
                time.sleep(pause)
            return False
        return _notify.wait(counters, waiters, expected, pause)


class Fetcher:
    """The fetch state of one consumer's assigned partitions, and the fetch step.

    ``offsets`` is the group's committed-offset store (None without a group): read to
    resolve positions, never written. Not thread-safe.
    """

    def __init__(self, backend: Backend, offsets: OffsetStore | None, *,
                 auto_offset_reset: str = "earliest",
                 key_deserializer: str | Deserializer | None = None,
                 value_deserializer: str | Deserializer | None = None,
                 fetch_max_bytes: int = DEFAULT_FETCH_MAX_BYTES,
                 isolation_level: str = "read_uncommitted",
                 group_id: str | None = None) -> None:
        if isolation_level not in ISOLATION_LEVELS:
            raise InvalidConfigError(f"isolation_level must be 'read_uncommitted' or "
                                     f"'read_committed', not {isolation_level!r}")
        if auto_offset_reset not in RESETS:
            raise InvalidConfigError(f"auto_offset_reset must be 'earliest', 'latest' or "
                                     f"'none', not {auto_offset_reset!r}")
        check_int("fetch_max_bytes", fetch_max_bytes, 1)
        self._backend = backend
        self._offsets = offsets
        self._reset = auto_offset_reset
        self._key_des = deserializer(key_deserializer)
        self._value_des = deserializer(value_deserializer)
        self._keys = column_function(self._key_des)
        self._values = column_function(self._value_des)
        self._fetch_max_bytes = fetch_max_bytes
        self.records_fetched = 0        # records returned by fetch, since creation
        self.offset_resets = 0          # positions reset for being out of range
        self._warned_resets = 0         # offset_resets when the last warning was logged
        self._warn_after: dict[TopicPartition, float] = {}   # monotonic s, per partition
        self._parts: dict[TopicPartition, PartitionFetch] = {}
        self._rr = 0                    # where the next fetch starts its round
        self._pending: SerializationError | None = None
        self._committed = isolation_level == "read_committed"
        self._group_id = group_id
        self._blocked = False           # the last fetch stopped at a last stable offset
        # The partitions a fetch reads (owned, not paused, topic not deleted), in
        # assignment order, and their notify counters; None: to be listed again (every
        # change of those three, or of the assignment, sets it so).
        self._ready: list[PartitionFetch] | None = None
        self._counters: list[_notify.Word] = []
        self._waiters: list[_notify.Word] = []
        # Some assigned partition's topic was found deleted (``deleted()`` says which).
        self.found_deleted = False

    def __repr__(self) -> str:
        return f"<Fetcher partitions={len(self._parts)}>"

    # -- assignment (the coordinator's calls) ----------------------------------------------

    def partition(self, tp: Any) -> PartitionBackend:
        """The backend partition of ``tp`` (any partition, assigned or not). Raises
        ``InvalidConfigError``, ``UnknownTopicError``, ``UnknownPartitionError``."""
        tp = check_tp(tp)
        return self._backend.partition(tp.topic, tp.partition)

    def add(self, tp: TopicPartition, owned: bool) -> None:
        """Start fetching ``tp`` (from a position resolved at its first read). A
        partition of a deleted topic is looked up afresh (the topic created again)."""
        part = self._parts.get(tp)
        if part is None or part.deleted is not None:
            self._parts[tp] = PartitionFetch(tp, self.partition(tp), owned, self._committed)
            self._changed()

    def remove(self, tp: TopicPartition) -> None:
        self._parts.pop(tp, None)
        self._changed()

    def clear(self) -> None:
        self._parts.clear()
        self._changed()

    def _changed(self) -> None:
        """The assignment, or whether a partition is ready, changed."""
        self._ready = None
        self.found_deleted = any(p.deleted is not None for p in self._parts.values())

    def _mark_deleted(self, part: PartitionFetch, exc: UnknownTopicError) -> None:
        part.deleted = exc
        self._changed()

    def own(self, tp: TopicPartition) -> None:
        """The consumer now owns ``tp``: read it from the offset its previous owner
        committed (resolved at the next read)."""
        part = self._parts[tp]
        part.owned = True
        part.position = None
        self._ready = None

    def assigned(self) -> set[TopicPartition]:
        return set(self._parts)

    def owned(self) -> set[TopicPartition]:
        return {tp for tp, p in self._parts.items() if p.owned}

    def deleted(self) -> dict[TopicPartition, UnknownTopicError]:
        """The assigned partitions whose topic a fetch found deleted, and the error."""
        return {tp: p.deleted for tp, p in self._parts.items() if p.deleted is not None}

    def waiting(self) -> bool:
        """True while some assigned partition is not owned yet."""
        return not all(p.owned for p in self._parts.values())

    # -- positions --------------------------------------------------------------------------

    def _part(self, tp: Any) -> PartitionFetch:
        part = self._parts.get(TopicPartition(*tp))
        if part is None:
            raise NotAssignedError(f"{tp} is not assigned to this consumer")
        return part

    def position(self, tp: TopicPartition) -> int:
        """The offset of the next record a fetch returns for ``tp`` (resolved now if not
        known yet: one read of the committed offsets and of the partition's head)."""
        part = self._part(tp)
        return part.position if part.position is not None else self._resolve(part)

    def positions(self) -> dict[TopicPartition, int]:
        """Known positions of the owned partitions: what a commit commits. O(partitions)."""
        return {tp: p.position for tp, p in self._parts.items()
                if p.owned and p.position is not None}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Read ``tp`` from ``offset`` next (outside the partition, ``auto_offset_reset``
        applies at the next read). Forgets a pending deserialization error."""
        check_int("offset", offset, 0)
        self._part(tp).position = offset
        self._pending = None

    def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        """Move ``partitions`` (default: all assigned) to their start offsets."""
        for tp in partitions or tuple(self._parts):
            part = self._part(tp)
            part.position = part.partition.start_offset
        self._pending = None

    def seek_to_end(self, *partitions: TopicPartition) -> None:
        """Move ``partitions`` (default: all assigned) to their end offsets."""
        for tp in partitions or tuple(self._parts):
            part = self._part(tp)
            part.position = part.partition.end_offset
        self._pending = None

    def pause(self, *partitions: TopicPartition) -> None:
        self._ready = None  # (first: a partition not assigned raises halfway)
        for tp in partitions:
            self._part(tp).paused = True

    def resume(self, *partitions: TopicPartition) -> None:
        self._ready = None
        for tp in partitions:
            self._part(tp).paused = False

    def paused(self) -> set[TopicPartition]:
        return {tp for tp, p in self._parts.items() if p.paused}

    def lag(self, stable: bool = False) -> dict[TopicPartition, int]:
        """End offset (``stable``: last stable offset) minus position, per assigned
        partition: a head read each (``stable``: a read from the position). A partition
        whose topic was deleted has no lag: it is left out (and marked, for the next
        poll to drop or raise, as a fetch would)."""
        out = {}
        for tp, part in sorted(self._parts.items()):
            if part.deleted is not None:
                continue
            try:
                position = part.position if part.position is not None \
                    else self._resolve(part)
                if stable:
                    view = part.view or CommittedView(part.partition)
                    end = view.last_stable_offset(position)
                else:
                    end = part.partition.end_offset
                out[tp] = max(0, end - position)
            except UnknownTopicError as exc:
                self._mark_deleted(part, exc)
        return out

    def last_stable_offsets(self, partitions: Iterable[TopicPartition]
                            ) -> dict[TopicPartition, int]:
        """The last stable offset of each of ``partitions``, found from the position
        (assigned partitions) or the start offset (others)."""
        out = {}
        for tp in partitions:
            tp = check_tp(tp)
            part = self._parts.get(tp)
            if part is not None:
                view = part.view or CommittedView(part.partition)
                position = part.position if part.position is not None else \
                    self._resolve(part)
            else:
                backend = self.partition(tp)
                view, position = CommittedView(backend), backend.start_offset
            out[tp] = view.last_stable_offset(position)
        return out

    def metrics(self) -> dict[str, int]:
        """Counters since creation, ``records_fetched`` and ``offset_resets`` (out of
        range positions and committed offsets reset), and now ``assigned_partitions``
        and ``records_lag_max`` (largest end offset minus position, over partitions
        whose position is known: Kafka's ``records-lag-max``). Cost: a head read per
        assigned partition; it resolves no position. Safe to call from another thread
        than the one that fetches (it only reads)."""
        # a tuple first: a scrape may call this from another thread while polls change
        # the assignment
        lags = [max(0, p.partition.end_offset - position)
                for p in tuple(self._parts.values())
                if (position := p.position) is not None]
        return {"records_fetched": self.records_fetched, "offset_resets": self.offset_resets,
                "assigned_partitions": len(self._parts), "records_lag_max": max(lags, default=0)}

    def _resolve(self, part: PartitionFetch) -> int:
        """The committed offset if it lies in the partition, else ``auto_offset_reset``
        (visibly, for a committed offset out of range: see ``_out_of_range``)."""
        start, end = part.partition.bounds()
        if self._offsets is not None:
            if self._group_id is not None and not self._backend.read_only:
                # Offsets a transaction decided to commit are committed first.
                self._backend.transactions().settle(self._group_id)
            committed = self._offsets.read().get(part.tp)
            if committed is not None:
                if start <= committed <= end:
                    part.position = committed
                    return committed
                return self._out_of_range(part, "committed offset", committed, start, end)
        return self._apply_reset(part, start, end)

    def _out_of_range(self, part: PartitionFetch, what: str, offset: int, start: int,
                      end: int) -> int:
        """``offset`` is not in ``[start, end]``: records were deleted under it
        (retention, ``delete_records``), or it lies beyond the end (a ``seek`` past it,
        a topic created again). Reset it by ``auto_offset_reset``, with a warning and a
        count in ``offset_resets``: records are skipped or read again, so it must not
        pass unseen."""
        self.offset_resets += 1
        position = self._apply_reset(part, start, end)
        # Retention deleting under a slow consumer may reset it at every fetch: one line
        # per partition per _WARN_EVERY_S, with the count of the resets in between.
        now = time.monotonic()
        if now >= self._warn_after.get(part.tp, 0.0):
            self._warn_after[part.tp] = now + _WARN_EVERY_S
            unlogged = self.offset_resets - self._warned_resets - 1
            self._warned_resets = self.offset_resets
            _logger.warning("%s %d of %s[%d] is out of range [%d, %d]; reset to %d "
                            "(auto_offset_reset=%r)%s", what, offset, part.tp.topic,
                            part.tp.partition, start, end, position, self._reset,
                            f"; {unlogged} other resets by this consumer since its "
                            "last warning"
                            if unlogged else "")
        return position

    def _apply_reset(self, part: PartitionFetch, start: int, end: int) -> int:
        if self._reset == "none":
            raise OffsetOutOfRangeError(
                f"no valid position for {part.tp.topic}[{part.tp.partition}] and "
                f"auto_offset_reset='none'", offset=part.position if part.position is not None
                else -1, start_offset=start, end_offset=end)
        part.position = start if self._reset == "earliest" else end
        return part.position

    # -- offset lookups (any partition) --------------------------------------------------

    def beginning_offsets(self, partitions: Iterable[TopicPartition]
                          ) -> dict[TopicPartition, int]:
        return {check_tp(tp): self.partition(tp).start_offset for tp in partitions}

    def end_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return {check_tp(tp): self.partition(tp).end_offset for tp in partitions}

    def offsets_for_times(self, timestamps: Mapping[TopicPartition, int]
                          ) -> dict[TopicPartition, int | None]:
        """Through each partition's time index: O(log n) each."""
        return {check_tp(tp): self.partition(tp).offset_for_time(ts)
                for tp, ts in timestamps.items()}

    # -- the fetch step -------------------------------------------------------------------

    def fetch(self, max_records: int, slice_s: float) -> list[Record] | Wait:
        """Records ready now (at least one), in offset order within a partition and fair
        across partitions, at most ``max_records``; or, when none is ready, a ``Wait``
        to sleep on for at most ``slice_s`` seconds.

        Raises the ``SerializationError`` of a record that failed to deserialize at the
        previous fetch (once; its position stays at it, so ``seek`` past it to skip it).
        Cost: a head read per ready partition, and a fetch and the records built from
        those that have records; no syscall when the fetch finds nothing new (the log's
        files are mapped).
        """
        if self._pending is not None:
            error, self._pending = self._pending, None
            raise error
        ready = self._ready
        if ready is None:
            ready = self._list_ready()
        if not ready:
            return Wait([], [], [], min(slice_s, _SLICE_NOTHING_READY_S))
        expected = list(map(_load, self._counters))
        self._blocked = False
        # The collector stays paused until the records are in the caller's hands (see
        # pause_gc): then a poll loop that drops them first never has them walked.
        paused = pause_gc(max_records)
        try:
            records = self._fetch(ready, max_records, expected)
        finally:
            if paused:
                gc.enable()
        if records:
            self.records_fetched += len(records)
            return records
        if self._pending is not None:
            error, self._pending = self._pending, None
            raise error
        if self._ready is not ready and any(p.deleted is not None for p in ready):
            return Wait([], [], [], 0.0)  # no sleep: the coordinator handles it first
        if self._blocked:  # look again soon whether the blocking transaction timed out
            slice_s = min(slice_s, _RESOLVE_EVERY_S)
        return Wait(self._counters, self._waiters, expected, slice_s)

    def _list_ready(self) -> list[PartitionFetch]:
        ready = self._ready = [p for p in self._parts.values()
                               if p.owned and not p.paused and p.deleted is None]
        self._counters = [p.counter for p in ready]
        self._waiters = [p.waiters for p in ready]
        return ready

    def _fetch(self, ready: list[PartitionFetch], max_records: int, counts: list[int]
               ) -> list[Record]:
        n = len(ready)
        start = self._rr % n
        order, marks = ((ready, counts) if start == 0 else
                        (ready[start:] + ready[:start], counts[start:] + counts[:start]))
        out: list[Record] = []
        share = max(1, max_records // n, min(MIN_SHARE, max_records // 4))
        hungry = []
        for i, part in enumerate(order):
            self._rr = start + i + 1  # the next fetch starts after the last one visited
            idle = part.idle
            if idle is not None and idle[0] == marks[i] and idle[1] == part.position:
                continue  # nothing was published since it was found drained
            got = self._fetch_partition(part, min(share, max_records - len(out)), marks[i])
            out.extend(got)
            if len(got) == share:
                hungry.append(part)
            if self._pending is not None or len(out) >= max_records:
                return out
        for part in hungry:  # room left: let partitions with more records fill it
            if len(out) >= max_records:
                break
            out.extend(self._fetch_partition(part, max_records - len(out), None))
            if self._pending is not None:
                break
        return out

    def _fetch_partition(self, part: PartitionFetch, want: int, mark: int | None
                         ) -> list[Record]:
        """Up to ``want`` records from the position; ``mark``: the notify count read
        before this fetch began (None: not known), remembered when nothing is new."""
        if want <= 0:
            return []
        try:
            position = part.position if part.position is not None else self._resolve(part)
            for attempt in range(_RESET_ATTEMPTS):
                try:
                    batches = part.partition.fetch(position, self._fetch_max_bytes, want)
                    break
                except OffsetOutOfRangeError as exc:
                    # Outside the partition (records deleted under the position, by any
                    # process, or a seek): auto_offset_reset. The start may move again
                    # before the fetch from there, so look again, a few times.
                    position = self._out_of_range(part, "position", position,
                                                  exc.start_offset, exc.end_offset)
                    if attempt == _RESET_ATTEMPTS - 1:
                        return []  # still moving: the next fetch goes on from the reset
            if not batches:
                if mark is not None:
                    part.idle = (mark, position)
                return []
            last = batches[-1].header  # (its next_offset, inline: one call less)
            resume = last.base_offset + last.last_offset_delta + 1
            if part.view is not None:
                kept = self._committed_batches(part, position, batches)
                if kept is None:
                    return []
                batches, resume = kept
                if not batches:
                    part.position = max(position, resume)
                    return []
            tp = part.tp
            try:
                records = records_from_batches(batches, position, tp.topic, tp.partition, want,
                                               self._keys, self._values)
            except DeserializeError:
                return self._salvage(batches, position, part, want)
            if not records or len(records) < want or records[-1].offset == _last_offset(batches):
                # Everything the batches hold from the position was returned: move past
                # their whole span, over gaps compaction left (else lag never reaches 0),
                # and over the markers and aborted batches read_committed dropped.
                part.position = resume
            else:
                part.position = records[-1].offset + 1
            return records
        except UnknownTopicError as exc:
            # Deleted (by this process or another): what was taken from the other
            # partitions is still returned; this one is skipped from now on.
            self._mark_deleted(part, exc)
            return []

    def _committed_batches(self, part: PartitionFetch, position: int,
                           batches: list[DecodedBatch]
                           ) -> tuple[list[DecodedBatch], int] | None:
        """read_committed: the batches to return records from, up to the last stable
        offset, and the offset after what was kept or dropped; None when the
        partition moved under the read (the next fetch resets the position)."""
        assert part.view is not None
        for _ in range(_HIDDEN_FETCHES):
            filtered = part.view.filter(batches, position)
            if filtered.blocked is not None:
                self._held(part, filtered.blocked)
                return filtered.batches, filtered.resume
            if filtered.batches or filtered.resume <= position:
                return filtered.batches, filtered.resume
            # Only markers and aborted records: read on, past them.
            position = part.position = filtered.resume
            try:
                batches = part.partition.fetch(position, self._fetch_max_bytes)
            except OffsetOutOfRangeError:
                return None
            if not batches:
                return [], position
        return [], position

    def _held(self, part: PartitionFetch, header: BatchHeader) -> None:
        """The partition's read stops at ``header``'s undecided transaction: every
        ``_RESOLVE_EVERY_S``, have it aborted if it timed out or nothing can end it."""
        self._blocked = True
        now = time.monotonic()
        if now < part.next_resolve or self._backend.read_only:
            return
        part.next_resolve = now + _RESOLVE_EVERY_S
        try:
            self._backend.transactions().resolve(part.tp.topic, part.tp.partition,
                                                 header.producer_id, header.producer_epoch)
        except EventLogError as exc:
            _logger.warning("could not look at the transaction holding %s[%d]: %s",
                            part.tp.topic, part.tp.partition, exc)

    def _salvage(self, batches: list[DecodedBatch], position: int, part: PartitionFetch,
                 want: int) -> list[Record]:
        """A record failed to deserialize: return the records before it, keep an error
        naming it for the next fetch, and leave the position at it."""
        raw = records_from_batches(batches, position, part.tp.topic, part.tp.partition, want)
        out, failed = salvage(raw, self._key_des, self._value_des)
        if out:
            part.position = out[-1].offset + 1
        if failed is not None:
            self._pending = serialization_error(*failed)
            part.position = failed[0].offset
        return out

    # -- invariants -------------------------------------------------------------------------

    def _check(self) -> None:
        """Assert the invariants of the fetch state. Tests call it after every change.
        Cost: O(partitions), no I/O."""
        assert self._reset in RESETS, self._reset
        assert type(self._fetch_max_bytes) is int and self._fetch_max_bytes >= 1
        assert type(self._rr) is int and self._rr >= 0, self._rr
        assert type(self.records_fetched) is int and self.records_fetched >= 0
        assert type(self.offset_resets) is int and self.offset_resets >= 0
        assert self.found_deleted == any(p.deleted is not None for p in self._parts.values())
        if self._ready is not None:
            assert self._ready == [p for p in self._parts.values()
                                   if p.owned and not p.paused and p.deleted is None]
            assert self._counters == [p.counter for p in self._ready]
        for tp, part in self._parts.items():
            assert type(tp) is TopicPartition and part.tp == tp, (tp, part.tp)
            assert type(tp.partition) is int and tp.partition >= 0, tp
            assert type(part.owned) is bool and type(part.paused) is bool, tp
            assert part.position is None or (type(part.position) is int
                                             and part.position >= 0), (tp, part.position)
            assert isinstance(part.counter, _notify.Word), tp
            assert isinstance(part.waiters, _notify.Word), tp
            assert (part.view is not None) == self._committed, tp
            if part.view is not None:
                part.view._check()
            assert part.idle is None or (type(part.idle[0]) is int
                                         and type(part.idle[1]) is int), (tp, part.idle)
            assert part.deleted is None or isinstance(part.deleted, UnknownTopicError), tp
        if self._pending is not None:
            error = self._pending
            assert isinstance(error, SerializationError)
            assert error.topic is not None and error.partition is not None
            pending = self._parts.get(TopicPartition(error.topic, error.partition))
            if pending is not None and pending.position is not None:
                # the position stays at the bad record until a seek forgets the error
                assert pending.position == error.offset, (pending.position, error.offset)


def _last_offset(batches: list[DecodedBatch]) -> int:
    for batch in batches[::-1]:  # (reversed() of named tuples types as Any)
        if batch.header.attributes & ATTR_CONTROL:
            continue
        offsets = batch.offsets()
        if offsets:
            return offsets[-1]
    return -1
