"""Transactions over Kafka's wire protocol: confluent-kafka's transactional producer
against ``eventlog serve``, read back by Kafka clients and eventlog consumers with
read_committed; eventlog's transactional Producer read by a Kafka client; fencing
between the two with one transactional id; a consume-transform-produce loop.

Each test checks both sides: what the Kafka client observes and what the log holds."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import uuid

import pytest

import eventlog
from eventlog import TopicPartition

confluent_kafka = pytest.importorskip("confluent_kafka")

from confluent_kafka import Consumer as CKConsumer  # noqa: E402
from confluent_kafka import KafkaException  # noqa: E402
from confluent_kafka import Producer as CKProducer  # noqa: E402
from confluent_kafka import TopicPartition as CKTopicPartition  # noqa: E402


def _txn_producer(bootstrap: str, tid: str, **conf: object) -> CKProducer:
    p = CKProducer({"bootstrap.servers": bootstrap, "transactional.id": tid,
                    "linger.ms": 1, **conf})
    p.init_transactions(15)
    return p


def _ck_read(bootstrap: str, topic: str, until_eof: bool = True, partition: int = 0,
             isolation: str = "read_committed", timeout: float = 15.0) -> list:
    """Every message of ``topic[partition]`` up to the end a consumer sees."""
    c = CKConsumer({"bootstrap.servers": bootstrap, "group.id": f"r-{uuid.uuid4()}",
                    "enable.auto.commit": False, "isolation.level": isolation,
                    "enable.partition.eof": True})
    c.assign([CKTopicPartition(topic, partition, 0)])
    out = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error() is not None:
                if m.error().code() == confluent_kafka.KafkaError._PARTITION_EOF:
                    break
                raise AssertionError(m.error())
            out.append(m)
    finally:
        c.close()
    return out


def _el_read_committed(log: eventlog.Log, topic: str, expect: int) -> list[bytes]:
    c = eventlog.Consumer(log, isolation_level="read_committed",
                          value_deserializer="bytes")
    c.assign([TopicPartition(topic, 0)])
    c.seek(TopicPartition(topic, 0), 0)
    out: list[bytes] = []
    deadline = time.monotonic() + 10
    try:
        while len(out) < expect and time.monotonic() < deadline:
            out += [r.value for r in c.poll(timeout=0.2)]
        out += [r.value for r in c.poll(timeout=0.2)]   # nothing more follows
    finally:
        c.close()
    return out


def test_committed_and_aborted_transactions_as_read_committed_sees_them(
        eventlog_kafka, eventlog_log):
    eventlog_log.create_topic("t")
    p = _txn_producer(eventlog_kafka, "tx-1")
    p.begin_transaction()
    for i in range(5):
        p.produce("t", key=b"k", value=f"c1-{i}".encode())
    p.commit_transaction(15)
    p.begin_transaction()
    for i in range(3):
        p.produce("t", value=f"a-{i}".encode())
    p.flush(10)
    p.abort_transaction(15)
    p.begin_transaction()
    p.produce("t", value=b"c2")
    p.commit_transaction(15)

    committed = [f"c1-{i}".encode() for i in range(5)] + [b"c2"]
    assert [m.value() for m in _ck_read(eventlog_kafka, "t")] == committed
    # read_uncommitted sees the aborted records too, and never a marker
    assert [m.value() for m in _ck_read(eventlog_kafka, "t", isolation="read_uncommitted")] \
        == [*committed[:5], b"a-0", b"a-1", b"a-2", b"c2"]
    assert _el_read_committed(eventlog_log, "t", len(committed)) == committed
    # the log: 9 records and 3 markers, the offsets the client was told
    assert eventlog_log.topic("t").partition(0).end_offset == 12
    p.flush(5)


def test_an_open_transaction_holds_read_committed_at_its_first_offset(
        eventlog_kafka, eventlog_log):
    eventlog_log.create_topic("t")
    with eventlog.Producer(eventlog_log, value_serializer="bytes") as plain:
        plain.send("t", value=b"before")
        plain.flush()
    p = _txn_producer(eventlog_kafka, "tx-open")
    p.begin_transaction()
    p.produce("t", value=b"pending")
    p.flush(10)
    assert [m.value() for m in _ck_read(eventlog_kafka, "t")] == [b"before"]
    c = CKConsumer({"bootstrap.servers": eventlog_kafka, "group.id": "lso",
                    "isolation.level": "read_committed"})
    try:
        low, high = c.get_watermark_offsets(CKTopicPartition("t", 0), timeout=10)
        assert (low, high) == (0, 1)   # the high watermark a read_committed client sees: the LSO
    finally:
        c.close()
    p.commit_transaction(15)
    assert [m.value() for m in _ck_read(eventlog_kafka, "t")] == [b"before", b"pending"]


def test_eventlog_transactions_reach_a_read_committed_kafka_consumer(
        eventlog_kafka, eventlog_log):
    eventlog_log.create_topic("t")
    with eventlog.Producer(eventlog_log, transactional_id="el-tx",
                           value_serializer="bytes") as p:
        p.init_transactions()
        p.begin_transaction()
        p.send("t", value=b"one")
        p.send("t", value=b"two")
        p.commit_transaction()
        p.begin_transaction()
        p.send("t", value=b"dropped")
        p.abort_transaction()
        p.begin_transaction()
        p.send("t", value=b"three")
        p.commit_transaction()
    assert [m.value() for m in _ck_read(eventlog_kafka, "t")] == [b"one", b"two", b"three"]


def test_kafka_client_and_eventlog_producer_fence_each_other(eventlog_kafka, eventlog_log):
    eventlog_log.create_topic("t")
    ck = _txn_producer(eventlog_kafka, "shared")
    ck.begin_transaction()
    ck.produce("t", value=b"ck-open")
    ck.flush(10)
    # An eventlog producer takes the id over: the client's open transaction is aborted.
    el = eventlog.Producer(eventlog_log, transactional_id="shared", value_serializer="bytes")
    el.init_transactions()
    with pytest.raises(KafkaException) as info:
        ck.commit_transaction(15)
    assert info.value.args[0].fatal()
    el.begin_transaction()
    el.send("t", value=b"el")
    el.commit_transaction()
    # ...and a new Kafka client takes it back: the eventlog producer is fenced.
    ck2 = _txn_producer(eventlog_kafka, "shared")
    with pytest.raises(eventlog.errors.ProducerFencedError):
        el.begin_transaction()
    el.close()
    ck2.begin_transaction()
    ck2.produce("t", value=b"ck2")
    ck2.commit_transaction(15)
    assert [m.value() for m in _ck_read(eventlog_kafka, "t")] == [b"el", b"ck2"]
    assert _el_read_committed(eventlog_log, "t", 2) == [b"el", b"ck2"]


def test_consume_transform_produce_commits_group_offsets_with_the_output(
        eventlog_kafka, eventlog_log):
    eventlog_log.create_topic("in")
    eventlog_log.create_topic("out")
    with eventlog.Producer(eventlog_log, value_serializer="bytes") as feed:
        for i in range(10):
            feed.send("in", value=str(i).encode())
        feed.flush()
    c = CKConsumer({"bootstrap.servers": eventlog_kafka, "group.id": "ctp",
                    "enable.auto.commit": False, "auto.offset.reset": "earliest",
                    "isolation.level": "read_committed"})
    c.subscribe(["in"])
    p = _txn_producer(eventlog_kafka, "ctp-1")
    seen = 0
    aborted_once = False
    deadline = time.monotonic() + 30
    try:
        while seen < 10 and time.monotonic() < deadline:
            msgs = c.consume(num_messages=4, timeout=0.5)
            if not msgs:
                continue
            p.begin_transaction()
            for m in msgs:
                assert m.error() is None
                p.produce("out", value=b"x" + m.value())
            if not aborted_once:   # the first batch is aborted, then redone
                aborted_once = True
                p.abort_transaction(15)
                c.seek(CKTopicPartition("in", 0, msgs[0].offset()))
                continue
            p.send_offsets_to_transaction(c.position(c.assignment()),
                                          c.consumer_group_metadata(), 15)
            p.commit_transaction(15)
            seen += len(msgs)
    finally:
        c.close()
    assert seen == 10
    assert eventlog_log.group_offsets("ctp") == {TopicPartition("in", 0): 10}
    out = [m.value() for m in _ck_read(eventlog_kafka, "out")]
    assert out == [b"x" + str(i).encode() for i in range(10)]


def _start_server(log_dir, env_extra: dict[str, str] | None = None):
    env = {**os.environ, **(env_extra or {})}
    proc = subprocess.Popen([sys.executable, "-m", "eventlog", "--log", str(log_dir), "serve",
                             "--port", "0"], stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stderr.readline()
    match = re.search(r"listening on (127\.0\.0\.1:\d+)", line)
    assert match, line
    return proc, match.group(1)


def _stop(proc) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(30)


def test_server_killed_in_a_transaction_the_next_init_aborts_it(tmp_path):
    log_dir = tmp_path / "log"
    with eventlog.open(log_dir) as log:
        log.create_topic("t")
    proc, bootstrap = _start_server(log_dir)
    try:
        p = _txn_producer(bootstrap, "dies")
        p.begin_transaction()
        p.produce("t", value=b"kept")
        p.commit_transaction(15)
        p.begin_transaction()
        p.produce("t", value=b"lost")
        p.flush(10)
        os.kill(proc.pid, signal.SIGKILL)   # in the middle of the transaction
        proc.wait(30)
    finally:
        _stop(proc)
    proc, bootstrap = _start_server(log_dir)
    try:
        assert [m.value() for m in _ck_read(bootstrap, "t")] == [b"kept"]   # held at the LSO
        again = _txn_producer(bootstrap, "dies")       # aborts the one left open
        assert [m.value() for m in _ck_read(bootstrap, "t")] == [b"kept"]
        again.begin_transaction()
        again.produce("t", value=b"after")
        again.commit_transaction(15)
        assert [m.value() for m in _ck_read(bootstrap, "t")] == [b"kept", b"after"]
    finally:
        _stop(proc)
    with eventlog.open(log_dir) as log:
        assert _el_read_committed(log, "t", 2) == [b"kept", b"after"]
        assert [r.value for r in log.topic("t").partition(0).read(0)] == \
            [b"kept", b"lost", b"after"]   # (the markers take offsets, not records)


def test_server_killed_after_the_commit_decision_the_next_init_completes_it(tmp_path):
    log_dir = tmp_path / "log"
    with eventlog.open(log_dir) as log:
        log.create_topic("t")
    # steps: init (1), AddPartitionsToTxn (2), the PrepareCommit write (3): exit there
    proc, bootstrap = _start_server(log_dir, {"EVENTLOG_TXN_CRASH_AT": "3"})
    try:
        p = _txn_producer(bootstrap, "decided")
        p.begin_transaction()
        p.produce("t", value=b"decided")
        with pytest.raises(KafkaException):
            p.commit_transaction(3)
        assert proc.wait(30) == 86
    finally:
        _stop(proc)
    with eventlog.open(log_dir) as log:   # decided, and no marker yet
        state = log.backend.transactions().store.read("decided")
        assert state is not None and state.state == "PrepareCommit"
        assert log.topic("t").partition(0).end_offset == 1
    proc, bootstrap = _start_server(log_dir)
    try:
        # The read_committed reader held by it completes the decided commit (as an
        # eventlog consumer would); a new producer of the id would have, too.
        assert [m.value() for m in _ck_read(bootstrap, "t")] == [b"decided"]
        again = _txn_producer(bootstrap, "decided")
        again.begin_transaction()
        again.produce("t", value=b"next")
        again.commit_transaction(15)
        assert [m.value() for m in _ck_read(bootstrap, "t")] == [b"decided", b"next"]
    finally:
        _stop(proc)


def test_kafka_python_and_aiokafka_read_committed_skip_aborted_records(eventlog_kafka,
                                                                       eventlog_log):
    kafka = pytest.importorskip("kafka")
    aiokafka = pytest.importorskip("aiokafka")
    eventlog_log.create_topic("t")
    with eventlog.Producer(eventlog_log, transactional_id="mixed",
                           value_serializer="bytes") as p:
        p.init_transactions()
        for values, commit in (([b"a", b"b"], True), ([b"x"], False), ([b"c"], True)):
            p.begin_transaction()
            for v in values:
                p.send("t", value=v)
            p.commit_transaction() if commit else p.abort_transaction()
    expected = [b"a", b"b", b"c"]

    kc = kafka.KafkaConsumer(bootstrap_servers=eventlog_kafka,
                             isolation_level="read_committed", auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=3000)
    kc.assign([kafka.TopicPartition("t", 0)])
    try:
        assert [m.value for m in kc] == expected
    finally:
        kc.close()

    async def read_aiokafka() -> list[bytes]:
        c = aiokafka.AIOKafkaConsumer(bootstrap_servers=eventlog_kafka,
                                      isolation_level="read_committed",
                                      auto_offset_reset="earliest", enable_auto_commit=False)
        await c.start()
        try:
            c.assign([aiokafka.TopicPartition("t", 0)])
            out: list[bytes] = []
            deadline = time.monotonic() + 10
            while len(out) < len(expected) and time.monotonic() < deadline:
                batch = await c.getmany(timeout_ms=500)
                out += [m.value for ms in batch.values() for m in ms]
            return out
        finally:
            await c.stop()
    assert asyncio.run(read_aiokafka()) == expected


def test_kafka_python_transactional_producer(eventlog_kafka, eventlog_log):
    kafka = pytest.importorskip("kafka")
    eventlog_log.create_topic("t")
    p = kafka.KafkaProducer(bootstrap_servers=eventlog_kafka, transactional_id="kp")
    try:
        p.init_transactions()
        p.begin_transaction()
        p.send("t", b"one")
        p.commit_transaction()
        p.begin_transaction()
        p.send("t", b"gone")
        p.abort_transaction()
    finally:
        p.close()
    assert [m.value() for m in _ck_read(eventlog_kafka, "t")] == [b"one"]
    assert _el_read_committed(eventlog_log, "t", 1) == [b"one"]


def test_a_kafka_clients_timed_out_transaction_is_aborted_for_its_readers(
        eventlog_kafka, eventlog_log):
    eventlog_log.create_topic("t")
    p = _txn_producer(eventlog_kafka, "slow", **{"transaction.timeout.ms": 1000})
    p.begin_transaction()
    p.produce("t", value=b"too late")
    p.flush(10)
    time.sleep(1.2)    # past its timeout: the reader held by it has it aborted
    assert _ck_read(eventlog_kafka, "t", timeout=10) == []
    lso = eventlog.Consumer(eventlog_log, isolation_level="read_committed")
    try:
        tp = TopicPartition("t", 0)
        assert lso.last_stable_offsets([tp]) == {tp: 2}   # the record and its abort marker
    finally:
        lso.close()
    with pytest.raises(KafkaException):
        p.commit_transaction(10)


def test_offsets_decided_before_a_crash_are_what_the_group_fetches_next(tmp_path):
    log_dir = tmp_path / "log"
    with eventlog.open(log_dir) as log:
        log.create_topic("in")
        log.create_topic("out")
        with eventlog.Producer(log, value_serializer="bytes") as feed:
            for i in range(3):
                feed.send("in", value=str(i).encode())
    # steps: init (1), AddPartitionsToTxn (2), the PrepareCommit write (3): exit there
    proc, bootstrap = _start_server(log_dir, {"EVENTLOG_TXN_CRASH_AT": "3"})
    try:
        p = _txn_producer(bootstrap, "worker")
        p.begin_transaction()
        p.produce("out", value=b"result")
        p.send_offsets_to_transaction([CKTopicPartition("in", 0, 3)],
                                      _group_metadata(bootstrap, "workers"), 15)
        with pytest.raises(KafkaException):
            p.commit_transaction(3)
        assert proc.wait(30) == 86
    finally:
        _stop(proc)
    proc, bootstrap = _start_server(log_dir)
    try:
        c = CKConsumer({"bootstrap.servers": bootstrap, "group.id": "workers"})
        try:   # the decided commit is completed before the group's offsets are read
            (tp,) = c.committed([CKTopicPartition("in", 0)], timeout=10)
            assert tp.offset == 3
        finally:
            c.close()
        assert [m.value() for m in _ck_read(bootstrap, "out")] == [b"result"]
    finally:
        _stop(proc)


def _group_metadata(bootstrap: str, group: str):
    c = CKConsumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        return c.consumer_group_metadata()
    finally:
        c.close()
