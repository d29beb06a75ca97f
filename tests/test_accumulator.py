"""The accumulator and the one write path, against a real log directory.

Every ``Sender`` here appends through the ``LocalBackend`` of an open ``Log`` to real
``PartitionLog``s (idempotence included), and every test reads what was stored back
from the partition. Faults are layered over the real storage: a real ENOSPC from
``tests.faults``, or ``FaultyBackend``, which only raises or blocks before delegating.

Every test calls ``Accumulator._check()`` after its mutations; the state machine at the
end mixes them at random, one fresh log directory per example.
"""

from __future__ import annotations

import errno
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import eventlog
from eventlog import ClosedError, LogDirectoryError
from eventlog._accumulator import (
    Accumulator,
    BatchMetadata,
    BatchResult,
    Columns,
    Sender,
    TopicInfo,
)
from eventlog._format import encode_batch
from eventlog._partitioner import StickyPartitioner
from eventlog._records import record_size
from tests.faults import FILE_OPERATIONS, SYNCS, FaultyOS, injected

CLOCK_MS = 1_000_000   # the log's clock: the log append time of "la" records


class FaultyPartition:
    """The real ``PartitionLog`` of a partition, behind the faults its ``FaultyBackend``
    holds for it: ``gate`` blocks an append until set, ``fail`` raises before it.
    Whatever gets through is the real append."""

    def __init__(self, faults: FaultyBackend, topic: str, partition: int) -> None:
        self._faults = faults
        self._key = (topic, partition)
        self._real = faults.backend.partition(topic, partition)

    def append(self, batch):
        gate = self._faults.gate.get(self._key)
        if gate is not None:
            gate.wait()
        error = self._faults.fail.get(self._key)
        if error is not None:
            raise error
        return self._real.append(batch)

    def __getattr__(self, name: str):
        return getattr(self._real, name)


class FaultyBackend:
    """A real ``LocalBackend`` whose partitions come wrapped in ``FaultyPartition``."""

    def __init__(self, backend) -> None:
        self.backend = backend
        self.fail: dict[tuple[str, int], BaseException] = {}
        self.gate: dict[tuple[str, int], threading.Event] = {}

    def partition(self, topic: str, partition: int) -> FaultyPartition:
        return FaultyPartition(self, topic, partition)

    def __getattr__(self, name: str):
        return getattr(self.backend, name)


class Harness:
    """An open log with topic "t" (4 partitions) and "la" (3, log append time), and
    the accumulators made over it (closed, then the log, at the end)."""

    def __init__(self, path: Path | str) -> None:
        self.log = eventlog.open(path, clock=lambda: CLOCK_MS)
        self.log.create_topic("t", partitions=4)
        self.log.create_topic("la", partitions=3, timestamp_type="log_append_time")
        self.backend = self.log.backend
        self.faults = FaultyBackend(self.backend)
        self.accumulators: list[Accumulator] = []

    def make(self, linger_s: float = 60.0, batch_bytes: int = 1000,
             producer_id: int | None = None, faulty: bool = False) -> Accumulator:
        backend = self.faults if faulty else self.backend
        acc = Accumulator(Sender(backend, producer_id), batch_bytes, linger_s)
        self.accumulators.append(acc)
        return acc

    def batches(self, topic: str, partition: int):
        """The decoded batches stored in the real partition."""
        return self.backend.partition(topic, partition).fetch(0, 1 << 20)

    def values(self, topic: str, partition: int) -> list[bytes | None]:
        return [v for b in self.batches(topic, partition) for v in b.values]

    def records(self, topic: str, partition: int):
        return list(self.log.topic(topic).partition(partition).read(0, max_records=10**6))

    def close(self) -> None:
        for acc in self.accumulators:
            acc.close(5, ClosedError("closed"))
        self.log.close()


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path / "log")
    try:
        yield harness
    finally:
        harness.close()


def add(acc: Accumulator, topic: str, partition: int, value: bytes | None,
        key: bytes | None = None, headers=None, ts: int = 1, hot=None):
    with acc.lock:
        return acc.append(topic, partition, value, key, headers, ts,
                          record_size(key, value, headers), hot)


def test_records_wait_in_one_batch_per_partition_until_drained(h):
    acc = h.make()
    futures = [add(acc, "t", i % 2, b"v%d" % i)[0] for i in range(6)]
    acc._check()
    assert acc.pending_records() == 6 and not any(f.done() for f in futures)
    assert h.values("t", 0) == h.values("t", 1) == []     # nothing stored yet
    acc.drain("t", 1)
    acc._check()
    assert h.values("t", 1) == [b"v1", b"v3", b"v5"]
    assert len(h.batches("t", 1)) == 1                      # one batch for the three
    assert [f.result().offset for f in futures[1::2]] == [0, 1, 2]
    assert not futures[0].done() and h.values("t", 0) == []
    futures[0].result()                     # waiting drains its batch
    acc._check()
    assert h.values("t", 0) == [b"v0", b"v2", b"v4"]
    assert [f.result().offset for f in futures[0::2]] == [0, 1, 2]
    assert acc.pending_records() == 0


def test_a_batch_is_due_at_batch_bytes_or_at_once_without_linger(h):
    acc = h.make(batch_bytes=10)
    assert add(acc, "t", 0, b"x" * 4)[1] is False
    assert add(acc, "t", 0, b"x" * 6)[1] is True    # 10 bytes: full
    eager = h.make(linger_s=0)
    assert add(eager, "t", 1, b"x")[1] is True
    acc._check()
    eager._check()
    assert h.values("t", 0) == h.values("t", 1) == []   # due, not drained by append


def test_keys_and_headers_join_a_keyless_batch_back_filled(h):
    acc = h.make()
    add(acc, "t", 0, b"a")
    add(acc, "t", 0, b"b", key=b"k")
    add(acc, "t", 0, b"c", headers=[("h", b"1")])
    acc._check()
    acc.flush()
    (batch,) = h.batches("t", 0)
    assert batch.values == [b"a", b"b", b"c"]
    assert batch.keys == [None, b"k", None]
    assert batch.header_column() == [[], [], [("h", b"1")]]
    assert [(r.offset, r.key, r.value, r.headers) for r in h.records("t", 0)] == [
        (0, None, b"a", []), (1, b"k", b"b", []), (2, None, b"c", [("h", b"1")])]


def test_the_hot_entry_lives_until_its_batch_is_drained(h):
    acc = h.make()
    sticky = StickyPartitioner(lambda n: 0)
    info = TopicInfo(100, 4, 256)
    p, cursor = sticky.place("t", 4, 1, 1000)
    add(acc, "t", p, b"x", hot=(info, cursor))
    assert acc.hot["t"][0].partition == p
    acc._check()
    add(acc, "t", p, b"y", key=b"k")       # a key: the batch is no longer plain
    acc._check()
    assert not acc.hot["t"][0].plain
    acc.drain("t", p)
    assert acc.hot["t"] == (None, info, cursor)  # drained: the records are not kept
    acc._check()                                 # alive, the placement is
    (batch,) = h.batches("t", p)
    assert batch.values == [b"x", b"y"] and batch.keys == [None, b"k"]


def test_reopen_opens_the_next_batch_where_the_cursor_points_while_it_has_room(h):
    acc = h.make(batch_bytes=10)
    sticky = StickyPartitioner(lambda n: 2)
    info = TopicInfo(100, 4, 256)
    p, cursor = sticky.place("t", 4, 1, 10)
    add(acc, "t", p, b"x", hot=(info, cursor))
    acc.drain("t", p)
    with acc.lock:
        batch = acc.reopen("t", info, cursor)
    assert batch is not None and batch.partition == p == 2 and batch.plain
    assert acc.hot["t"] == (batch, info, cursor)
    add(acc, "t", p, b"y")                   # (send adds its record at once)
    acc._check()
    with acc.lock:
        assert acc.reopen("t", info, cursor) is None   # one is pending there already
    acc.drain("t", p)
    cursor.filled = 10                                 # the block is full: move on
    with acc.lock:
        assert acc.reopen("t", info, cursor) is None
    acc._check()
    assert [b.values for b in h.batches("t", p)] == [[b"x"], [b"y"]]


def test_a_full_batch_does_not_become_hot(h):
    acc = h.make(batch_bytes=2)
    sticky = StickyPartitioner(lambda n: 0)
    p, cursor = sticky.place("t", 1, 2, 2)
    _, due = add(acc, "t", p, b"xy", hot=(TopicInfo(100, 1, 1), cursor))
    assert due and "t" not in acc.hot
    acc._check()
    acc.drain("t", p)
    assert h.values("t", p) == [b"xy"]


def test_callbacks_run_after_the_partition_is_released_and_may_send_again(h):
    acc = h.make()
    seen = []
    again_futures = []

    def again(future):
        seen.append(future.result().offset)
        if len(seen) == 1:
            again_futures.append(add(acc, "t", 0, b"second")[0])
            acc.drain("t", 0)              # would deadlock under a plain lock

    f = add(acc, "t", 0, b"first")[0]
    f.add_done_callback(again)
    f.add_done_callback(lambda fut: 1 / 0)   # logged, breaks nothing
    acc.drain("t", 0)
    assert seen == [0]
    assert h.values("t", 0) == [b"first", b"second"]
    assert again_futures[0].result().offset == 1
    late = []
    f.add_done_callback(late.append)         # already done: runs at once
    assert late == [f]
    acc._check()


def test_the_linger_thread_drains_due_batches(h):
    acc = h.make(linger_s=0.02)
    deadline = time.monotonic() + 5
    g = add(acc, "t", 2, b"y")[0]
    while not g.done():
        assert time.monotonic() < deadline, "linger never drained the batch"
        time.sleep(0.005)
    assert h.values("t", 2) == [b"y"] and g.result().offset == 0
    acc.close(5, ClosedError("closed"))
    acc._check()


def test_flush_with_a_timeout_waits_for_the_linger_thread_and_gives_up(h):
    acc = h.make(faulty=True)
    gate = h.faults.gate[("t", 0)] = threading.Event()
    try:
        f = add(acc, "t", 0, b"x")[0]
        with pytest.raises(TimeoutError):
            acc.flush(timeout=0.1)
        with pytest.raises(TimeoutError):
            f.result(timeout=0.1)
        assert h.values("t", 0) == []          # the append is held at the gate
    finally:
        gate.set()
    acc.flush(timeout=5)
    assert f.result().offset == 0
    assert h.values("t", 0) == [b"x"]
    acc._check()


def test_close_fails_what_is_still_pending(h):
    acc = h.make()
    f = add(acc, "t", 0, b"x")[0]
    acc.close(1, ClosedError("closed before append"))
    assert isinstance(f.exception(), ClosedError)
    assert acc.pending_records() == 0 and not acc.hot
    acc._check()
    assert h.backend.partition("t", 0).end_offset == 0   # never stored


def test_a_failed_write_reaches_the_futures_counts_errors_and_consumes_no_sequence(h):
    # A real ENOSPC: the "lost" batch does not fit the active segment, and creating
    # the next one fails (fsyncs are spared, or the log would turn read-only).
    h.log.create_topic("s", partitions=1, segment_bytes=1024)
    h.log.topic("s").partition(0).append([b"f" * 600])
    acc = h.make(producer_id=7)
    f = add(acc, "s", 0, b"l" * 600)[0]
    with injected(FaultyOS(1, "ENOSPC", only=FILE_OPERATIONS - SYNCS)) as fault:
        acc.drain("s", 0)
    assert fault.triggered is not None
    assert isinstance(f.exception(), LogDirectoryError)
    assert f.exception().errno == errno.ENOSPC
    a = add(acc, "s", 0, b"a")[0]
    b = add(acc, "s", 0, b"b")[0]
    acc.drain("s", 0)
    c = add(acc, "s", 0, b"c")[0]
    acc.drain("s", 0)
    batches = h.batches("s", 0)
    assert [(x.header.producer_id, x.header.base_sequence) for x in batches] == [
        (-1, -1), (7, 0), (7, 2)]
    assert h.values("s", 0) == [b"f" * 600, b"a", b"b", b"c"]
    assert [x.result().offset for x in (a, b, c)] == [1, 2, 3]
    assert h.backend.partition("s", 0).last_sequence(7) == 2
    m = acc.sender.metrics()
    assert m == {"records_sent": 3, "bytes_sent": m["bytes_sent"], "batches_sent": 2,
                 "errors": 1, "duplicates": 0}
    acc._check()


def test_duplicates_resolve_to_the_offsets_stored_the_first_time(h):
    part = h.log.topic("t").partition(0)
    part.append([b"before%d" % i for i in range(40)])        # offsets 0..39
    first = h.make(producer_id=1)                            # an earlier run of producer 1
    stored = [add(first, "t", 0, v)[0] for v in (b"a", b"b")]
    first.flush()
    assert [f.result().offset for f in stored] == [40, 41]
    part.append([b"other"] * 3)                              # 42..44, not producer 1
    acc = h.make(producer_id=1)                              # sequences from 0 again
    futures = [add(acc, "t", 0, v)[0] for v in (b"a", b"b", b"c")]
    acc.flush()
    assert [f.result().offset for f in futures] == [40, 41, 45]
    m = acc.sender.metrics()
    assert (m["duplicates"], m["records_sent"], m["batches_sent"]) == (2, 1, 1)
    assert h.values("t", 0) == [*(b"before%d" % i for i in range(40)), b"a", b"b",
                                *[b"other"] * 3, b"c"]       # a and b stored once
    acc._check()


def test_write_columns_goes_after_pending_records_in_chunks(h):
    acc = h.make()
    add(acc, "t", 0, b"first")
    values = [b"%04d" % i for i in range(100)]
    columns = Columns(values, None, None, 5, [4] * 100)
    out = []
    acc.write_columns("t", 0, range(100), columns, 40, out)   # about 8 records a chunk
    batches = h.batches("t", 0)
    assert batches[0].values == [b"first"]
    assert sum(b.header.record_count for b in batches[1:]) == 100
    assert max(b.header.record_count for b in batches[1:]) <= 10
    assert h.values("t", 0) == [b"first", *values]
    meta = BatchMetadata("t", 100, out)
    assert meta.offsets() == list(range(1, 101)) and meta[0].timestamp_ms == 5
    assert {r.timestamp_ms for r in h.records("t", 0)[1:]} == {5}
    gathered = Columns(values, values, [None] * 100, list(range(100)), [8] * 100)
    out = []
    acc.write_columns("t", 1, [5, 3, 9], gathered, 1 << 20, out)
    (batch,) = h.batches("t", 1)
    assert batch.values == [b"0005", b"0003", b"0009"]
    assert batch.keys == [b"0005", b"0003", b"0009"]
    assert list(batch.timestamps()) == [5, 3, 9]
    assert BatchMetadata("t", 10, out)[3].timestamp_ms == 3
    acc._check()


def test_write_columns_raises_the_first_error(h):
    acc = h.make(faulty=True)
    h.faults.fail[("t", 0)] = LogDirectoryError(errno.EIO, "EIO")
    with pytest.raises(LogDirectoryError):
        acc.write_columns("t", 0, range(3), Columns([b"a"] * 3, None, None, 0, [1] * 3),
                          1 << 20, [])
    assert acc.sender.metrics()["errors"] == 3
    assert h.backend.partition("t", 0).end_offset == 0
    del h.faults.fail[("t", 0)]             # the partition is looked up afresh, and works
    out = []
    acc.write_columns("t", 0, range(3), Columns([b"a"] * 3, None, None, 0, [1] * 3),
                      1 << 20, out)
    assert BatchMetadata("t", 3, out).offsets() == [0, 1, 2]
    assert h.values("t", 0) == [b"a"] * 3
    acc._check()


def test_batch_metadata_lays_out_duplicates_and_log_append_times(h):
    la = h.log.topic("la")
    la.partition(2).append([b"."] * 7)
    la.partition(0).append([b"."] * 100)
    columns = Columns([b"r0", b"r1", b"r2", b"r3"], None, None, 10, [2] * 4)
    first = h.make(producer_id=1)           # stores records 1 and 0 at offsets 7 and 8
    first.write_columns("la", 2, [1, 0], columns, 1 << 20, [])
    again = h.make(producer_id=1)           # a second run: both duplicates
    out = []
    again.write_columns("la", 2, [1, 0], columns, 1 << 20, out)
    again.write_columns("la", 0, range(2, 4), columns, 1 << 20, out)
    assert out[0][2:4] == (-1, [7, 8])      # nothing appended; the stored offsets
    meta = BatchMetadata("la", 4, out)
    assert meta.partitions() == [2, 2, 0, 0]
    assert meta.offsets() == [8, 7, 100, 101]
    assert [m.timestamp_ms for m in meta] == [10, 10, CLOCK_MS, CLOCK_MS]  # log time wins
    assert meta[-1] == meta[3] and len(meta[1:3]) == 2
    with pytest.raises(IndexError):
        meta[4]
    assert h.values("la", 2) == [b"."] * 7 + [b"r1", b"r0"]   # stored once
    assert [(r.offset, r.value, r.timestamp_ms) for r in h.records("la", 0)[100:]] == [
        (100, b"r2", CLOCK_MS), (101, b"r3", CLOCK_MS)]
    assert again.sender.metrics()["duplicates"] == 2
    again._check()


def test_a_batch_result_without_duplicates_counts_from_its_base_offset(h):
    part = h.backend.partition("t", 0)
    h.log.topic("t").partition(0).append([b"."] * 10)
    result = BatchResult("t", 0, threading.Lock())
    result.finish(part.append(encode_batch([b"a", b"b", b"c"])), None)
    assert [result.offset_of(i) for i in range(3)] == [10, 11, 12]
    assert [(r.offset, r.value) for r in h.records("t", 0)[10:]] == [
        (10, b"a"), (11, b"b"), (12, b"c")]


class AccumulatorModel(RuleBasedStateMachine):
    """Random appends, drains and flushes over two topics of a fresh log; the real
    partitions must end up with exactly the records added, in order, at the offsets
    their futures give, and ``_check`` must hold."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="eventlog-accumulator-")
        self.log = eventlog.open(Path(self.dir) / "log", fsync="never")
        for topic in "ab":
            self.log.create_topic(topic, partitions=3)
        self.backend = self.log.backend
        self.acc = Accumulator(Sender(self.backend, None), 50, 60.0)
        self.sticky = StickyPartitioner(lambda n: 0)
        self.info = {"a": TopicInfo(1000, 3, 10**9), "b": TopicInfo(1000, 3, 10**9)}
        self.sent: dict[tuple[str, int], list[tuple[bytes | None, bytes | None]]] = {}
        self.futures = []

    @rule(topic=st.sampled_from("ab"), size=st.integers(0, 30), keyed=st.booleans(),
          headers=st.booleans())
    def send(self, topic, size, keyed, headers):
        value = b"x" * size if size else None
        key = b"k" if keyed else None
        hdrs = [("h", b"v")] if headers else None
        hot = None
        if keyed:
            p = 1
        else:
            p, cursor = self.sticky.place(topic, 3, record_size(key, value, hdrs), 50)
            hot = (self.info[topic], cursor) if not hdrs else None
        future, due = add(self.acc, topic, p, value, key, hdrs, hot=hot)
        self.sent.setdefault((topic, p), []).append((key, value))
        self.futures.append(((topic, p, len(self.sent[(topic, p)]) - 1), future))
        if due:
            self.acc.drain(topic, p)

    @rule(topic=st.sampled_from("ab"), partition=st.integers(0, 2))
    def drain(self, topic, partition):
        self.acc.drain(topic, partition)
        assert all(f.done() for (t, p, _), f in self.futures if (t, p) == (topic, partition))

    @rule()
    def flush(self):
        self.acc.flush()
        assert all(f.done() for _, f in self.futures)

    @invariant()
    def consistent(self):
        self.acc._check()
        self.sticky._check()

    def teardown(self):
        try:
            self.acc.flush()
            for (topic, p), sent in self.sent.items():
                batches = self.backend.partition(topic, p).fetch(0, 1 << 20)
                stored = [kv for b in batches for kv in zip(b.key_column(), b.values)]
                assert stored == sent
            for (topic, p, index), future in self.futures:
                assert future.result()[:3] == (topic, p, index)
            self.acc._check()
        finally:
            self.acc.close(1, ClosedError("closed"))
            self.log.close()
            shutil.rmtree(self.dir, ignore_errors=True)


AccumulatorModel.TestCase.settings = settings(max_examples=60, stateful_step_count=40,
                                              deadline=None)
test_accumulator_model = AccumulatorModel.TestCase
