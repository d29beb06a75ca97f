"""Administration of transactional ids (``kafka-transactions.sh``): list, describe, and
abort a hung transaction. ``Log.transactions``, ``Log.describe_transaction`` and
``Log.abort_transaction`` delegate here; the CLI's ``eventlog transactions`` uses them.
Reads the state files (``_txn_state``) and aborts through the coordinator's own
recovery step, so an abort is the same as a timeout's: markers in every partition the
transaction touched, and the producer fenced.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from ._txn_state import ONGOING, TxnState, validate_transactional_id
from ._types import TopicPartition
from .errors import UnknownTransactionalIdError

if TYPE_CHECKING:
    from ._txn_coordinator import TransactionCoordinator

__all__ = ["TransactionDescription", "abort", "describe", "list_all"]


class TransactionDescription(NamedTuple):
    """The state of one transactional id, as ``kafka-transactions.sh describe`` shows."""

    transactional_id: str
    producer_id: int
    producer_epoch: int
    state: str                          # Empty, Ongoing, PrepareCommit, ... (Kafka's)
    partitions: list[TopicPartition]    # touched by the open (or deciding) transaction
    start_ms: int                       # when the open transaction began (-1: none)
    timeout_ms: int
    updated_ms: int
    timed_out: bool                     # open for longer than timeout_ms at ``now_ms``


def _describe(state: TxnState, now_ms: int) -> TransactionDescription:
    return TransactionDescription(
        state.transactional_id, state.producer_id, state.epoch, state.state,
        [TopicPartition(t, p) for t, p in state.partitions] if state.open else [],
        state.start_ms if state.open else -1, state.timeout_ms, state.updated_ms,
        state.state == ONGOING and now_ms - state.start_ms > state.timeout_ms)


def list_all(coordinator: TransactionCoordinator, now_ms: int) -> list[TransactionDescription]:
    """Every transactional id with state, sorted. Cost: a read of each state file."""
    states, _ = coordinator.store.scan()
    return [_describe(s, now_ms) for s in states]


def describe(coordinator: TransactionCoordinator, transactional_id: str, now_ms: int
             ) -> TransactionDescription:
    """One id's state; ``UnknownTransactionalIdError`` without one."""
    tid = validate_transactional_id(transactional_id)
    state = coordinator.store.read(tid)
    if state is None:
        raise UnknownTransactionalIdError(f"no transactional id {tid!r} in this log")
    return _describe(state, now_ms)


def abort(coordinator: TransactionCoordinator, transactional_id: str, now_ms: int
          ) -> TransactionDescription:
    """Abort the id's open transaction now, whatever its age (completing one that was
    being committed), and fence its producer. Returns the state after."""
    describe(coordinator, transactional_id, now_ms)
    coordinator.expire(transactional_id, force=True)
    return describe(coordinator, transactional_id, now_ms)
