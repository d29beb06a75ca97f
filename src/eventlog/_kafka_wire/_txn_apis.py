"""Handlers of Kafka's transaction APIs: InitProducerId with a transactional id,
AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit, EndTxn; and the check that
Produce makes of a transactional batch.

Every step is the log's own transaction coordinator (``backend.transactions()``,
``_txn_coordinator``), the one eventlog's transactional ``Producer`` uses: the same
state file per transactional id, the same fencing (``init`` bumps the epoch and
finishes what the previous producer left), the same markers. So a Kafka client and
an eventlog ``Producer`` with one transactional id fence each other, and either may
recover the other's transaction.

The offsets of ``TxnOffsetCommit`` wait in memory (as an eventlog ``Producer``'s
``send_offsets_to_transaction`` does) until ``EndTxn`` hands them to the coordinator,
which writes them with the commit decision. If the server dies first, the
transaction is aborted by whoever next initializes the id (or by its timeout), and
the offsets go with it, as they should.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from .._group import validate_group_id
from .._transactions import MAX_TRANSACTION_TIMEOUT_MS
from .._txn_state import ONGOING, validate_transactional_id
from .._types import TopicPartition
from ..errors import EventLogError, InvalidConfigError, ProducerFencedError
from . import _errors as E
from ._broker import Broker
from ._server import RequestContext

__all__ = ["TxnHandlers"]

_EXPIRY_CHECK_S = 1.0


class _Pending:
    """What one producer incarnation (id, epoch) has sent for its open transaction."""

    __slots__ = ("epoch", "groups", "offsets", "producer_id")

    def __init__(self, producer_id: int, epoch: int) -> None:
        self.producer_id = producer_id
        self.epoch = epoch
        self.groups: set[str] = set()
        self.offsets: dict[str, dict[TopicPartition, int]] = {}


class TxnHandlers:
    """The transaction APIs. Thread-safe."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._coordinator = broker.log.backend.transactions()
        self._lock = threading.Lock()
        self._pending: dict[str, _Pending] = {}
        self._next_expiry_check = 0.0

    def _expire(self) -> None:
        """Abort transactions that outlived their timeout (at most once a second):
        Kafka's coordinator does so on a timer, eventlog's producers on ``begin``."""
        now = time.monotonic()
        if now < self._next_expiry_check:
            return
        self._next_expiry_check = now + _EXPIRY_CHECK_S
        self._coordinator.expire_all()

    def _check(self, req: dict[str, Any]) -> tuple[str, int]:
        """Validate the request's (transactional id, producer id, epoch) against the
        id's state; returns (tid, error code)."""
        try:
            tid = validate_transactional_id(req["transactional_id"])
            self._coordinator.current(tid, req["producer_id"], req["producer_epoch"])
        except InvalidConfigError:
            return "", E.INVALID_REQUEST
        except EventLogError as exc:
            return "", E.code_for(exc)
        return tid, 0

    def _pending_for(self, tid: str, pid: int, epoch: int) -> _Pending:
        with self._lock:
            p = self._pending.get(tid)
            if p is None or p.producer_id != pid or p.epoch != epoch:
                p = self._pending[tid] = _Pending(pid, epoch)
            return p

    # -- the APIs ---------------------------------------------------------------------

    def init_producer_id(self, ctx: RequestContext, req: dict[str, Any]) -> dict[str, Any]:
        """InitProducerId with a transactional id: fence the id's previous producer,
        finish its transaction, answer the new (producer id, epoch)."""
        timeout = req["transaction_timeout_ms"]
        try:
            tid = validate_transactional_id(req["transactional_id"])
        except InvalidConfigError:
            return {"error_code": E.INVALID_REQUEST}
        if not 1 <= timeout <= MAX_TRANSACTION_TIMEOUT_MS:
            return {"error_code": E.INVALID_TRANSACTION_TIMEOUT}
        try:
            self._expire()
            pid, epoch, _ = self._coordinator.init(tid, timeout)
        except EventLogError as exc:
            return {"error_code": E.code_for(exc)}
        with self._lock:
            self._pending.pop(tid, None)
        return {"error_code": 0, "producer_id": pid, "producer_epoch": epoch}

    def add_partitions(self, ctx: RequestContext, req: dict[str, Any]) -> dict[str, Any]:
        """AddPartitionsToTxn: the partitions join the open transaction (durably),
        before any of its records reach them."""
        tid, code = self._check(req)
        wanted = [(t["name"], p) for t in req["topics"] for p in t["partitions"]]
        codes = dict.fromkeys(wanted, code)
        if not code:
            backend = self._broker.log.backend
            known = []
            for topic, index in wanted:
                try:
                    backend.partition(topic, index)
                    known.append((topic, index))
                except EventLogError as exc:
                    codes[(topic, index)] = E.code_for(exc)
            if len(known) == len(wanted):
                try:
                    self._expire()
                    self._coordinator.add_partitions(tid, req["producer_id"],
                                                     req["producer_epoch"], known,
                                                     self._timeout(tid))
                except EventLogError as exc:
                    codes = dict.fromkeys(wanted, E.code_for(exc))
            else:  # Kafka adds none when one fails: the others are OPERATION_NOT_ATTEMPTED
                codes = {tp: c or E.OPERATION_NOT_ATTEMPTED for tp, c in codes.items()}
        results = []
        for t in req["topics"]:
            results.append({"name": t["name"], "results": [
                {"partition_index": p, "error_code": codes[(t["name"], p)]}
                for p in t["partitions"]]})
        return {"results": results}

    def _timeout(self, tid: str) -> int:
        state = self._coordinator.store.read(tid)
        return state.timeout_ms if state is not None else MAX_TRANSACTION_TIMEOUT_MS

    def add_offsets(self, ctx: RequestContext, req: dict[str, Any]) -> dict[str, Any]:
        """AddOffsetsToTxn: the transaction will commit offsets of ``group_id``."""
        tid, code = self._check(req)
        if code:
            return {"error_code": code}
        try:
            group = validate_group_id(req["group_id"])
        except EventLogError:
            return {"error_code": E.INVALID_GROUP_ID}
        self._pending_for(tid, req["producer_id"], req["producer_epoch"]).groups.add(group)
        return {"error_code": 0}

    def txn_offset_commit(self, ctx: RequestContext, req: dict[str, Any]) -> dict[str, Any]:
        """TxnOffsetCommit: offsets to commit with the transaction (at ``EndTxn``)."""
        tid, code = self._check(req)
        group = req["group_id"]
        if not code:
            pending = self._pending_for(tid, req["producer_id"], req["producer_epoch"])
            if group not in pending.groups:   # AddOffsetsToTxn comes first, as in Kafka
                code = E.INVALID_TXN_STATE
            else:
                bad = [p for t in req["topics"] for p in t["partitions"]
                       if p["committed_offset"] < 0]
                if bad:
                    code = E.INVALID_COMMIT_OFFSET_SIZE
                else:
                    with self._lock:
                        offsets = pending.offsets.setdefault(group, {})
                        for t in req["topics"]:
                            for p in t["partitions"]:
                                offsets[TopicPartition(t["name"], p["partition_index"])] = \
                                    p["committed_offset"]
        topics = [{"name": t["name"], "partitions": [
            {"partition_index": p["partition_index"], "error_code": code}
            for p in t["partitions"]]} for t in req["topics"]]
        return {"topics": topics}

    def end_txn(self, ctx: RequestContext, req: dict[str, Any]) -> dict[str, Any]:
        """EndTxn: commit (with the offsets sent) or abort the open transaction."""
        tid, code = self._check(req)
        if code:
            return {"error_code": code}
        pid, epoch, commit = req["producer_id"], req["producer_epoch"], req["committed"]
        with self._lock:
            pending = self._pending.get(tid)
            offsets = pending.offsets if pending is not None and \
                pending.producer_id == pid and pending.epoch == epoch else {}
        try:
            self._coordinator.end(tid, pid, epoch, commit, offsets if commit else {})
        except EventLogError as exc:
            return {"error_code": E.code_for(exc)}
        with self._lock:
            if self._pending.get(tid) is pending:
                self._pending.pop(tid, None)
        return {"error_code": 0}

    # -- Produce's check ----------------------------------------------------------------

    def check_produce(self, tid: str | None, pid: int, epoch: int, topic: str,
                      partition: int) -> int:
        """The error code for a transactional batch of (``pid``, ``epoch``) to
        ``topic[partition]``, 0 if it may be appended: the id's current producer, with
        the partition added to its open transaction. One state file read."""
        if tid is None:
            return E.INVALID_TXN_STATE
        try:
            state = self._coordinator.current(tid, pid, epoch)
        except ProducerFencedError:
            return E.INVALID_PRODUCER_EPOCH
        except EventLogError as exc:
            return E.code_for(exc)
        if state.state != ONGOING or (topic, partition) not in state.partitions:
            return E.INVALID_TXN_STATE   # not added, or the transaction is being ended
        return 0
