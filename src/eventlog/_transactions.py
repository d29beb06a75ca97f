"""The transactional side of one ``Producer``: its state machine, as Kafka's
``TransactionManager``.

States: ``uninitialized`` -> (``init_transactions``) ``ready`` -> (``begin``)
``in_transaction`` -> (``commit`` / ``abort``) ``ready`` ...; a failed send turns
``in_transaction`` into ``abortable`` (only ``abort`` leads on); being fenced, into
``fenced`` (nothing leads on); ``close`` into ``closed``. A commit or abort that fails
after its decision is written leaves ``decided_commit`` / ``decided_abort``: calling
the same end again finishes it, the other end raises. Calls in the wrong state
raise ``TransactionError``.

The protocol steps themselves (state files, markers, offsets) are the coordinator's
(``_txn_coordinator``); this room decides when to call them: a partition joins the
transaction from ``Sender.write`` (``before_write``) just before the transaction's
first batch to it, and fencing is noticed at every call by comparing the state file's
stamp with the one this producer last wrote (a small file read), and by every partition,
which refuses batches of an older epoch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from ._fetcher import check_tp
from ._group import validate_group_id
from ._txn_state import PREPARE_ABORT, PREPARE_COMMIT, validate_transactional_id
from ._types import TopicPartition
from .config import check_int
from .errors import (
    ClosedError,
    InvalidConfigError,
    ProducerFencedError,
    TransactionError,
)

if TYPE_CHECKING:
    from ._accumulator import Sender
    from ._txn_coordinator import TransactionCoordinator

__all__ = ["MAX_TRANSACTION_TIMEOUT_MS", "TransactionManager"]

_logger = logging.getLogger("eventlog")

MAX_TRANSACTION_TIMEOUT_MS = 900_000   # Kafka's transaction.max.timeout.ms default
_EXPIRY_CHECK_S = 1.0                  # begin looks for timed-out transactions this often

UNINITIALIZED, READY, IN_TRANSACTION = "uninitialized", "ready", "in_transaction"
COMMITTING, ABORTABLE, FENCED, CLOSED = "committing", "abortable", "fenced", "closed"
# An end that failed after its decision was written (say, a full disk while writing a
# marker): only the decided end may be called again, to finish it.
DECIDED_COMMIT, DECIDED_ABORT = "decided_commit", "decided_abort"


class TransactionManager:
    """The transaction state of one transactional producer. Thread-safe."""

    def __init__(self, coordinator: TransactionCoordinator, transactional_id: object,
                 timeout_ms: object, sender: Sender,
                 flush: Callable[[float | None], None]) -> None:
        self.transactional_id = validate_transactional_id(transactional_id)
        check_int("transaction_timeout_ms", timeout_ms, 1, MAX_TRANSACTION_TIMEOUT_MS)
        assert isinstance(timeout_ms, int)
        self.timeout_ms = timeout_ms
        self._coordinator = coordinator
        self._sender = sender
        self._flush = flush
        self._lock = threading.RLock()
        # before_write and record_error run in writing threads (the linger thread)
        # while commit holds _lock and waits for their batches in flush: they take
        # only this one.
        self._write_lock = threading.Lock()
        self.state = UNINITIALIZED
        self.producer_id = -1
        self.epoch = -1
        self._stamp = (0, 0)
        self._partitions: set[tuple[str, int]] = set()
        self._offsets: dict[str, dict[TopicPartition, int]] = {}
        self._error: BaseException | None = None
        self._next_expiry_check = 0.0

    def __repr__(self) -> str:
        return (f"<TransactionManager {self.transactional_id!r} {self.state} "
                f"pid={self.producer_id} epoch={self.epoch}>")

    # -- checks ------------------------------------------------------------------------

    def _expect(self, *states: str, action: str) -> None:
        if self.state in states:
            return
        if self.state == CLOSED:
            raise ClosedError("the producer is closed")
        if self.state == FENCED:
            raise ProducerFencedError(f"transactional_id {self.transactional_id!r}: this "
                                      "producer was fenced by a newer one")
        hint = {UNINITIALIZED: "call init_transactions() first",
                READY: "no transaction is open (call begin_transaction() first)",
                IN_TRANSACTION: "a transaction is open already",
                ABORTABLE: f"a send of this transaction failed ({self._error!r}): "
                           "call abort_transaction()",
                COMMITTING: "the transaction is being committed",
                DECIDED_COMMIT: "the transaction was decided to commit (its end failed "
                                "after that): call commit_transaction() to finish it",
                DECIDED_ABORT: "the transaction was decided to abort (its end failed "
                               "after that): call abort_transaction() to finish it",
                }.get(self.state, self.state)
        raise TransactionError(f"cannot {action}: {hint}")

    def _check_fenced(self) -> None:
        """Raise ``ProducerFencedError`` if another producer (or a timeout) took the
        id over. Cost: a read of the state file's slots (8 KiB), and a parse when it changed."""
        store = self._coordinator.store
        stamp = store.stamp(self.transactional_id)
        if stamp != self._stamp:
            try:
                self._coordinator.current(self.transactional_id, self.producer_id, self.epoch)
            except ProducerFencedError:
                self.state = FENCED
                raise
            self._stamp = stamp

    def _fenced(self, exc: ProducerFencedError) -> ProducerFencedError:
        self.state = FENCED
        return exc

    # -- the calls ---------------------------------------------------------------------

    def init(self) -> None:
        """``init_transactions``: fence older producers of the id, finish what they
        left, take the new epoch."""
        with self._lock:
            self._expect(UNINITIALIZED, READY, action="init_transactions")
            pid, epoch, stamp = self._coordinator.init(self.transactional_id, self.timeout_ms)
            self.producer_id, self.epoch, self._stamp = pid, epoch, stamp
            self._sender.set_transactional(self, pid)
            self.state = READY

    def begin(self) -> None:
        with self._lock:
            self._expect(READY, action="begin_transaction")
            self._check_fenced()
            now = time.monotonic()
            if now >= self._next_expiry_check:  # somebody's dead transaction, timed out
                self._next_expiry_check = now + _EXPIRY_CHECK_S
                self._coordinator.expire_all()
                self._check_fenced()
            self._partitions.clear()
            self._offsets.clear()
            self._error = None
            self.state = IN_TRANSACTION

    def check_send(self) -> None:
        """A ``send`` may go on only inside an open transaction of a live producer."""
        if self.state != IN_TRANSACTION:
            self._expect(IN_TRANSACTION, action="send outside a transaction")
        self._check_fenced()

    def before_write(self, key: tuple[str, int]) -> tuple[int, int]:
        """``Sender.write`` is about to append a batch to partition ``key``: add the
        partition to the transaction first (durably); returns (producer id, epoch)."""
        with self._write_lock:
            if self.state not in (IN_TRANSACTION, COMMITTING, ABORTABLE):
                self._expect(IN_TRANSACTION, action="write a transactional batch")
            if key not in self._partitions:
                try:
                    self._stamp = self._coordinator.add_partitions(
                        self.transactional_id, self.producer_id, self.epoch, [key],
                        self.timeout_ms)
                except ProducerFencedError as exc:
                    raise self._fenced(exc) from None
                self._partitions.add(key)
            return self.producer_id, self.epoch

    def record_error(self, exc: BaseException) -> None:
        """A batch of the open transaction failed: it can only be aborted now."""
        with self._write_lock:
            if isinstance(exc, ProducerFencedError):
                self.state = FENCED
            elif self.state in (IN_TRANSACTION, COMMITTING):
                self._error = self._error or exc
                if self.state == IN_TRANSACTION:
                    self.state = ABORTABLE

    def send_offsets(self, offsets: Mapping[TopicPartition, int], group_id: object) -> None:
        """``send_offsets_to_transaction``: commit ``offsets`` for ``group_id`` with the
        transaction."""
        if not isinstance(offsets, Mapping):
            raise InvalidConfigError("offsets must be a mapping of TopicPartition to offset")
        group = validate_group_id(group_id)
        checked = {}
        for tp, offset in offsets.items():
            check_int("offset", offset, 0)
            checked[check_tp(tp)] = offset
        with self._lock:
            self._expect(IN_TRANSACTION, action="send_offsets_to_transaction")
            self._check_fenced()
            self._offsets.setdefault(group, {}).update(checked)

    def commit(self, timeout: float | None) -> None:
        with self._lock:
            if self.state == DECIDED_COMMIT:
                self._end(commit=True)
                return
            self._expect(IN_TRANSACTION, action="commit_transaction")
            self._check_fenced()
            self.state = COMMITTING
            try:
                self._flush(timeout)
            except TimeoutError:
                self.state = IN_TRANSACTION  # nothing decided: the call may be repeated
                raise
            if self.state == FENCED:
                raise ProducerFencedError(f"transactional_id {self.transactional_id!r}: "
                                          "this producer was fenced by a newer one")
            if self._error is not None:
                self.state = ABORTABLE
                raise TransactionError("cannot commit: a send of this transaction failed "
                                       f"({self._error!r}); call abort_transaction()"
                                       ) from self._error
            self._end(commit=True)

    def abort(self, timeout: float | None = None) -> None:
        with self._lock:
            if self.state == DECIDED_ABORT:
                self._end(commit=False)
                return
            self._expect(IN_TRANSACTION, ABORTABLE, action="abort_transaction")
            self.state = COMMITTING
            try:
                self._flush(timeout)   # what is pending is written, then aborted
            except TimeoutError:
                self.state = ABORTABLE
                raise
            if self.state == FENCED:
                raise ProducerFencedError(f"transactional_id {self.transactional_id!r}: "
                                          "this producer was fenced by a newer one")
            self._end(commit=False)

    def _end(self, commit: bool) -> None:
        try:
            self._stamp = self._coordinator.end(
                self.transactional_id, self.producer_id, self.epoch, commit,
                self._offsets if commit else {})
        except ProducerFencedError as exc:
            raise self._fenced(exc) from None
        except Exception as exc:
            self.state = self._after_failed_end()
            if self.state != READY:
                raise
            # Every step took effect, and what failed came after (the fsync of the
            # directory after the last state write, say): it is ended. A repeat of the
            # last step is harmless, should it not have reached the disk.
            _logger.warning("transactional_id %r: the transaction ended, but its last "
                            "state write reported: %s", self.transactional_id, exc)
            return
        self._partitions.clear()
        self._offsets.clear()
        self.state = READY

    def _after_failed_end(self) -> str:
        """The state after an end that raised: decided (the state file says so), or
        still open, and then abortable."""
        try:
            state = self._coordinator.store.read(self.transactional_id)
        except Exception:   # unreadable now: the safe assumption is undecided
            return ABORTABLE
        if state is not None and state.producer_id == self.producer_id and \
                state.epoch == self.epoch:
            if state.state == PREPARE_COMMIT:
                return DECIDED_COMMIT
            if state.state == PREPARE_ABORT:
                return DECIDED_ABORT
            if not state.open:    # completed after all (by whoever came in between)
                self._partitions.clear()
                self._offsets.clear()
                return READY
        elif state is not None:
            return FENCED
        return ABORTABLE

    def close(self) -> None:
        """Abort an open transaction (best effort), then refuse every call."""
        with self._lock:
            if self.state in (DECIDED_COMMIT, DECIDED_ABORT):
                try:   # finish what was decided; a successor would do it otherwise
                    self._end(commit=self.state == DECIDED_COMMIT)
                except Exception:  # noqa: S110
                    pass
            if self.state in (IN_TRANSACTION, ABORTABLE):
                try:
                    self.abort()
                except Exception:  # noqa: S110 - a successor or the timeout aborts it
                    pass
            self.state = CLOSED

    def in_transaction(self) -> bool:
        return self.state in (IN_TRANSACTION, ABORTABLE, COMMITTING, DECIDED_COMMIT,
                              DECIDED_ABORT)
