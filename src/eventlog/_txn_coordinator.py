"""The transaction protocol over a log directory: Kafka's transaction coordinator, run
by whichever process needs a step of it.

Every step holds the transactional id's lock (``TransactionStore.locked``) from
reading the state to writing the next one, so steps of one id never interleave, in
any process. The steps (docs/transactions.md has the crash table):

- ``init``: finish what the id's previous producer left (``_finish``: an open
  transaction is aborted, a decided one completed), bump the epoch (a new producer id
  once the epoch is exhausted) and write ``Empty``. The bumped epoch fences the
  previous producer everywhere: the state refuses it, and so does every partition
  that has seen a marker of the new epoch.
- ``add_partitions``: before a transaction's first record reaches a partition, the
  partition joins the state (``Ongoing``, fsynced), so the state always names every
  partition a transaction may have written.
- ``end``: ``PrepareCommit`` / ``PrepareAbort`` (fsynced: the decision), then a marker
  in each partition, the offsets of a commit, and ``CompleteCommit`` /
  ``CompleteAbort``. Every step may be repeated: a partition refuses a marker it
  already holds, and offsets committed twice are the same offsets. Every state write
  is fsynced, the last one too: a state file replaced without an fsync may come back
  torn after a power loss, and then the id's producer id and epoch would be lost.
- ``expire`` / ``resolve``: the same ``_finish`` for a transaction that timed out or
  whose producer died, run by a blocked reader, a producer or the CLI.

``EVENTLOG_TXN_CRASH_AT=N`` makes the process ``os._exit`` at the N-th step boundary
(``crash_point``): the tests kill a commit or abort between every two of its writes.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from ._control import encode_marker
from ._txn_state import (
    COMPLETE_ABORT,
    COMPLETE_COMMIT,
    EMPTY,
    MAX_EPOCH,
    ONGOING,
    PREPARE_ABORT,
    PREPARE_COMMIT,
    TransactionStore,
    TxnState,
)
from ._types import TopicPartition
from .errors import (
    ProducerFencedError,
    TransactionError,
    UnknownPartitionError,
    UnknownTopicError,
)

if TYPE_CHECKING:
    from ._offsets import OffsetStore
    from ._partition import PartitionLog

__all__ = ["TransactionCoordinator", "crash_point"]

_logger = logging.getLogger("eventlog")

_crash_at = int(os.environ.get("EVENTLOG_TXN_CRASH_AT", "0") or 0)
_steps = 0


def crash_point() -> None:
    """A step boundary of the protocol: with ``EVENTLOG_TXN_CRASH_AT=N``, the N-th one
    in this process exits at once (as ``kill -9`` would: no cleanup). O(1)."""
    global _steps
    if _crash_at:
        _steps += 1
        if _steps == _crash_at:
            os._exit(86)


def new_producer_id() -> int:
    return int.from_bytes(os.urandom(8), "little") >> 1


class TransactionCoordinator:
    """The protocol steps for the transactional ids of one log directory.
    Thread-safe and process-safe (each step under the id's lock)."""

    def __init__(self, store: TransactionStore,
                 partition: Callable[[str, int], PartitionLog],
                 offset_store: Callable[[str], OffsetStore], clock: Callable[[], int],
                 sync_markers: bool) -> None:
        self.store = store
        self._partition = partition
        self._offset_store = offset_store
        self._clock = clock
        self._sync_markers = sync_markers

    # -- the producer's steps ------------------------------------------------------------

    def init(self, tid: str, timeout_ms: int) -> tuple[int, int, tuple[int, int]]:
        """Fence the id's previous producer and finish its transaction; return the new
        (producer id, epoch) and the state's stamp."""
        with self.store.locked(tid):
            state = self.store.read(tid)
            if state is not None:
                state = self._finish(state, bump=True)
            if state is None or state.epoch >= MAX_EPOCH:
                pid, epoch = new_producer_id(), 0
            else:
                pid, epoch = state.producer_id, state.epoch + 1
            new = TxnState(tid, pid, epoch, EMPTY, timeout_ms=timeout_ms,
                           updated_ms=self._clock())
            stamp = self.store.write(new)
            crash_point()
        return pid, epoch, stamp

    def current(self, tid: str, pid: int, epoch: int) -> TxnState:
        """The id's state, if ``(pid, epoch)`` is still its producer; else
        ``ProducerFencedError``. One file read."""
        state = self.store.read(tid)
        if state is None or state.producer_id != pid or state.epoch != epoch:
            raise ProducerFencedError(
                f"transactional_id {tid!r}: producer id {pid} epoch {epoch} was fenced "
                "(a newer producer called init_transactions, or its transaction timed out "
                "and was aborted)")
        return state

    def add_partitions(self, tid: str, pid: int, epoch: int,
                       partitions: Iterable[tuple[str, int]], timeout_ms: int
                       ) -> tuple[int, int]:
        """Make the open transaction name ``partitions`` (durably, before any record of
        it is appended there); returns the state's new stamp."""
        with self.store.locked(tid):
            state = self.current(tid, pid, epoch)
            if state.state in (PREPARE_COMMIT, PREPARE_ABORT):
                raise TransactionError(f"transactional_id {tid!r} is being completed")
            now = self._clock()
            if not state.open:
                state = state.but(state=ONGOING, partitions=(), offsets=(), start_ms=now,
                                  timeout_ms=timeout_ms)
            merged = tuple(sorted(set(state.partitions) | {(t, p) for t, p in partitions}))
            stamp = self.store.write(state.but(partitions=merged, updated_ms=now))
            crash_point()
            return stamp

    def end(self, tid: str, pid: int, epoch: int, commit: bool,
            offsets: Mapping[str, Mapping[TopicPartition, int]]) -> tuple[int, int]:
        """Commit (with ``offsets``: group -> partition -> next offset) or abort the
        open transaction; returns the state's new stamp."""
        with self.store.locked(tid):
            state = self.current(tid, pid, epoch)
            if state.state in (PREPARE_COMMIT, PREPARE_ABORT):
                self._finish(state, bump=False)  # an interrupted end: finish it
                return self.store.stamp(tid)
            rows = tuple(sorted((g, tp.topic, tp.partition, off)
                                for g, offs in offsets.items() for tp, off in offs.items()))
            if not state.open and not (commit and rows):
                return self.store.stamp(tid)  # nothing was sent: nothing to decide
            decided = state.but(state=PREPARE_COMMIT if commit else PREPARE_ABORT,
                                offsets=rows if commit else (),
                                partitions=state.partitions if state.open else (),
                                start_ms=state.start_ms if state.open else self._clock(),
                                updated_ms=self._clock())
            self.store.write(decided)
            crash_point()
            self._complete(decided)
            return self.store.stamp(tid)

    # -- recovery ---------------------------------------------------------------------

    def expire(self, tid: str, force: bool = False) -> bool:
        """Abort the id's open transaction if it is older than its timeout (or
        ``force``: ``eventlog transactions abort``), completing a decided one; True if
        something was done. Fences the producer (the epoch is bumped)."""
        with self.store.locked(tid):
            state = self.store.read(tid)
            if state is None:
                return False
            if not state.open:
                if force and state.epoch < MAX_EPOCH:  # fence it all the same
                    self.store.write(state.but(epoch=state.epoch + 1,
                                               updated_ms=self._clock()))
                return force
            if state.state == ONGOING and not force and \
                    self._clock() - state.start_ms <= state.timeout_ms:
                return False
            self._finish(state, bump=True)
            return True

    def expire_all(self) -> int:
        """``expire`` every id whose transaction timed out; returns how many."""
        states, _ = self.store.scan()
        now = self._clock()
        return sum(self.expire(s.transactional_id) for s in states
                   if s.open and now - s.start_ms > s.timeout_ms)

    def settle(self, group_id: str) -> int:
        """Before a consumer of ``group_id`` reads its committed offsets: finish every
        transaction that decided to commit offsets of the group but has not yet (as
        Kafka's stable offset fetch, KIP-447). Waits for a live committer (its lock),
        completes a dead one's. Without it, a consumer taking over a partition from a
        worker killed between the decision and the offsets would read the old offset
        and redo work whose results are committed. Returns how many it finished.
        Cost: a directory listing, and a read of each state file if any exists."""
        states, _ = self.store.scan()
        done = 0
        for state in states:
            if state.state in (PREPARE_COMMIT, PREPARE_ABORT) and \
                    any(row[0] == group_id for row in state.offsets):
                with self.store.locked(state.transactional_id):
                    current = self.store.read(state.transactional_id)
                    if current is not None and current.state in (PREPARE_COMMIT,
                                                                  PREPARE_ABORT):
                        self._finish(current, bump=False)
                        done += 1
        return done

    def resolve(self, topic: str, partition: int, pid: int, epoch: int) -> bool:
        """A reader of ``topic[partition]`` is blocked by an open transaction of producer
        id ``pid``: abort it if it timed out or nothing can ever end it (no state names
        it there); returns True if a marker may have been written."""
        states, _ = self.store.scan()
        owner = next((s for s in states if s.producer_id == pid), None)
        if owner is not None:
            with self.store.locked(owner.transactional_id):
                state = self.store.read(owner.transactional_id)
                if state is not None and state.producer_id == pid:
                    if state.open and (topic, partition) in state.partitions:
                        if state.state == ONGOING and \
                                self._clock() - state.start_ms <= state.timeout_ms:
                            return False  # alive and in time: the reader waits
                        self._finish(state, bump=True)
                        return True
                    # No transaction of this id may still end it there: an orphan.
                    self._marker(topic, partition, pid, max(epoch, state.epoch), False)
                    return True
        self._marker(topic, partition, pid, epoch, False)
        return True

    def _finish(self, state: TxnState, bump: bool) -> TxnState:
        """Complete a decided transaction, or abort an open one (with ``bump``, at a
        new epoch, fencing its producer). Caller holds the lock."""
        if state.state == ONGOING:
            epoch = state.epoch + 1 if bump and state.epoch < MAX_EPOCH else state.epoch
            state = state.but(state=PREPARE_ABORT, epoch=epoch, offsets=(),
                              updated_ms=self._clock())
            self.store.write(state)
            crash_point()
        if state.state in (PREPARE_COMMIT, PREPARE_ABORT):
            return self._complete(state)
        return state

    def _complete(self, state: TxnState) -> TxnState:
        commit = state.state == PREPARE_COMMIT
        written: list[PartitionLog] = []
        for topic, partition in state.partitions:
            plog = self._marker(topic, partition, state.producer_id, state.epoch, commit)
            if plog is not None:
                written.append(plog)
            crash_point()
        if self._sync_markers:
            for plog in written:
                plog.sync()
        if commit:
            groups: dict[str, dict[TopicPartition, int]] = defaultdict(dict)
            for group, topic, partition, offset in state.offsets:
                groups[group][TopicPartition(topic, partition)] = offset
            now = self._clock()
            for group, offsets in groups.items():
                self._offset_store(group).commit(offsets, now, member=state.transactional_id)
                crash_point()
        done = state.but(state=COMPLETE_COMMIT if commit else COMPLETE_ABORT,
                         updated_ms=self._clock())
        self.store.write(done)
        crash_point()
        return done

    def _marker(self, topic: str, partition: int, pid: int, epoch: int, commit: bool
                ) -> PartitionLog | None:
        try:
            plog = self._partition(topic, partition)
        except (UnknownTopicError, UnknownPartitionError):
            return None  # deleted since: nothing there to decide
        try:
            plog.append(encode_marker(pid, epoch, commit, self._clock()))
        except ProducerFencedError:
            # The partition has seen a newer epoch of this producer id: a later
            # incarnation decided it already.
            _logger.info("marker for producer id %d epoch %d in %s[%d] superseded",
                         pid, epoch, topic, partition)
        return plog
