"""A stateful model of the transaction protocol (hypothesis): transactional producers
of two ids (and the zombies that successors fence), a plain producer, commits, aborts,
offsets, wrong-state calls and expiries, against a model of what each partition holds
and what read_committed may return up to its last stable offset."""

from __future__ import annotations

import shutil
import tempfile

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import eventlog
from eventlog import TopicPartition
from tests.conftest import soak

TIDS = ("a", "b")
PARTITIONS = 2


class TransactionModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="eventlog-txn-model-")
        self.log = eventlog.open(self.dir)
        self.log.create_topic("t", partitions=PARTITIONS)
        self.plain = eventlog.Producer(self.log, linger_ms=0)
        self.producers: dict[str, eventlog.Producer] = {}
        self.zombies: list[eventlog.Producer] = []
        self.open: dict[str, int] = {}        # tid -> transaction number, while open
        self.status: dict[int, str] = {}      # transaction number -> open/commit/abort
        self.next_txn = 0
        # per partition: (value, transaction number or None) in offset order
        self.entries: list[list[tuple[int, int | None]]] = [[] for _ in range(PARTITIONS)]
        self.pending_offsets: dict[str, int] = {}
        self.offsets: int | None = None
        self.counter = 0

    def teardown(self) -> None:
        for p in [*self.producers.values(), *self.zombies, self.plain]:
            try:
                p.close()
            except eventlog.EventLogError:
                pass
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _value(self) -> int:
        self.counter += 1
        return self.counter

    def _end_open(self, tid: str, outcome: str) -> None:
        number = self.open.pop(tid, None)
        if number is not None:
            self.status[number] = outcome

    @rule(tid=st.sampled_from(TIDS))
    def init(self, tid: str) -> None:
        old = self.producers.get(tid)
        if old is not None:
            self.zombies.append(old)
        producer = eventlog.Producer(self.log, transactional_id=tid, linger_ms=0)
        producer.init_transactions()
        self.producers[tid] = producer
        self._end_open(tid, "abort")          # the successor aborted what was open
        self.pending_offsets.pop(tid, None)

    @precondition(lambda self: self.producers)
    @rule(data=st.data())
    def begin(self, data: st.DataObject) -> None:
        tid = data.draw(st.sampled_from(sorted(self.producers)))
        producer = self.producers[tid]
        if tid in self.open:
            try:
                producer.begin_transaction()
                raise AssertionError("begin twice was accepted")
            except eventlog.TransactionError:
                return
        producer.begin_transaction()
        self.open[tid] = self.next_txn
        self.status[self.next_txn] = "open"
        self.next_txn += 1

    @precondition(lambda self: self.producers)
    @rule(data=st.data(), partition=st.integers(0, PARTITIONS - 1))
    def send(self, data: st.DataObject, partition: int) -> None:
        tid = data.draw(st.sampled_from(sorted(self.producers)))
        producer = self.producers[tid]
        value = self._value()
        if tid not in self.open:
            try:
                producer.send("t", value, partition=partition)
                raise AssertionError("a send outside a transaction was accepted")
            except eventlog.TransactionError:
                return
        producer.send("t", value, partition=partition).result()
        self.entries[partition].append((value, self.open[tid]))

    @rule(partition=st.integers(0, PARTITIONS - 1))
    def plain_send(self, partition: int) -> None:
        value = self._value()
        self.plain.send("t", value, partition=partition).result()
        self.entries[partition].append((value, None))

    @precondition(lambda self: self.open)
    @rule(data=st.data(), offset=st.integers(0, 1000))
    def send_offsets(self, data: st.DataObject, offset: int) -> None:
        tid = data.draw(st.sampled_from(sorted(self.open)))
        self.producers[tid].send_offsets_to_transaction({TopicPartition("in", 0): offset},
                                                        "g")
        self.pending_offsets[tid] = offset

    @precondition(lambda self: self.producers)
    @rule(data=st.data(), commit=st.booleans())
    def end(self, data: st.DataObject, commit: bool) -> None:
        tid = data.draw(st.sampled_from(sorted(self.producers)))
        producer = self.producers[tid]
        call = producer.commit_transaction if commit else producer.abort_transaction
        if tid not in self.open:
            try:
                call()
                raise AssertionError("an end without a transaction was accepted")
            except eventlog.TransactionError:
                return
        call()
        self._end_open(tid, "commit" if commit else "abort")
        offset = self.pending_offsets.pop(tid, None)
        if commit and offset is not None:
            self.offsets = offset

    @precondition(lambda self: self.zombies)
    @rule(partition=st.integers(0, PARTITIONS - 1))
    def zombie_is_fenced(self, partition: int) -> None:
        zombie = self.zombies[-1]
        for call in (lambda: zombie.send("t", -1, partition=partition),
                     zombie.commit_transaction, zombie.begin_transaction):
            try:
                call()
                raise AssertionError("a fenced producer was accepted")
            except (eventlog.ProducerFencedError, eventlog.TransactionError):
                pass

    @precondition(lambda self: self.open)
    @rule(data=st.data())
    def operator_aborts(self, data: st.DataObject) -> None:
        tid = data.draw(st.sampled_from(sorted(self.open)))
        self.log.abort_transaction(tid)
        self._end_open(tid, "abort")
        self.pending_offsets.pop(tid, None)
        self.zombies.append(self.producers.pop(tid))

    @invariant()
    def read_committed_returns_the_model(self) -> None:
        for partition in range(PARTITIONS):
            expected = []
            for value, number in self.entries[partition]:
                state = None if number is None else self.status[number]
                if state == "open":
                    break                 # the last stable offset
                if state in (None, "commit"):
                    expected.append(value)
            with eventlog.Consumer(self.log, isolation_level="read_committed") as c:
                c.assign([TopicPartition("t", partition)])
                got = []
                while batch := c.poll(timeout=0):
                    got.extend(r.value for r in batch)
            assert got == expected, (partition, got, expected)
        if self.offsets is not None:
            assert self.log.group_offsets("g") == {TopicPartition("in", 0): self.offsets}
        else:
            assert "g" not in self.log.groups() or self.log.group_offsets("g") == {}


TestTransactionModel = TransactionModel.TestCase
TestTransactionModel.settings = settings(max_examples=soak(60), stateful_step_count=30,
                                         deadline=None)
