"""The public API on both backends: a log directory and a real Apache Kafka broker.

Every test here takes ``any_log`` (tests/conftest.py), once a local log and once
``eventlog.open("kafka://...")`` on the session's broker (tests/kafka_broker.py), and
asserts the same behaviour of ``Log``, ``Producer``, ``Consumer`` and ``aio`` on both:
a tour of the whole public surface, the Kafka habits (client ids, patterns, listener
names, ``timeout_ms``) included. The other test modules use the same fixture for their
own public-API tests (test_producer, test_consumer, test_transactions, test_lag,
test_log, test_admin); each module's docstring says what runs where, and tests of what
only a directory has carry ``local_only("why")``. Topic and group names are unique per
test (``unique_name``): the broker lives for the whole session. Tests of what only the
Kafka backend has say so in their name (``_on_kafka``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

import eventlog
from eventlog import TopicPartition as TP
from eventlog.aio import AIOConsumer, AIOProducer
from tests.conftest import drain, unique_name

pytest.importorskip("confluent_kafka")


@pytest.fixture
def kafka_log(kafka_broker: Any) -> Iterator[eventlog.Log]:
    with eventlog.open(f"kafka://{kafka_broker.bootstrap_servers}") as log:
        yield log


# -- administration ---------------------------------------------------------------------


def test_topics_are_created_listed_found_and_deleted(any_log):
    topic = unique_name()
    created = any_log.create_topic(topic, partitions=3, retention_ms=3_600_000,
                                   cleanup_policy="compact", max_message_bytes=200_000)
    assert created.name == topic and topic in any_log and topic in any_log.topics()
    t = any_log.topic(topic)
    assert t.num_partitions == 3 and [p.id for p in t.partitions] == [0, 1, 2]
    assert (t.config.retention_ms, t.config.cleanup_policy,
            t.config.max_message_bytes) == (3_600_000, "compact", 200_000)
    with pytest.raises(eventlog.TopicExistsError):
        any_log.create_topic(topic)
    with pytest.raises(eventlog.InvalidTopicError):
        any_log.create_topic("bad/name")
    t.add_partitions(2)
    assert any_log.topic(topic).num_partitions == 5
    any_log.delete_topic(topic)
    assert topic not in any_log
    with pytest.raises(eventlog.UnknownTopicError):
        any_log.topic(topic)


def test_partition_offsets_follow_what_was_produced(any_log):
    topic = unique_name()
    any_log.create_topic(topic, partitions=2)
    with eventlog.Producer(any_log) as producer:
        for i in range(7):
            producer.send(topic, i, partition=1)
    p1 = any_log.topic(topic).partition(1)
    assert (p1.start_offset, p1.end_offset) == (0, 7)
    assert any_log.topic(topic).partition(0).end_offset == 0
    with pytest.raises(eventlog.UnknownPartitionError):
        any_log.topic(topic).partition(2)


def test_group_admin_offsets_lag_reset_and_delete(any_log):
    topic, group = unique_name(), unique_name("g")
    any_log.create_topic(topic, partitions=2)
    with eventlog.Producer(any_log) as producer:
        producer.send_batch(topic, list(range(10)), partition=0)
        producer.send_batch(topic, list(range(4)), partition=1)
    with eventlog.Consumer(any_log, topic, group_id=group, enable_auto_commit=False) as c:
        assert len(drain(c, 14)) == 14
        c.commit({TP(topic, 0): 6, TP(topic, 1): 4})
    assert group in any_log.groups()
    assert any_log.group_offsets(group) == {TP(topic, 0): 6, TP(topic, 1): 4}
    assert any_log.group_lag(group) == {TP(topic, 0): 4, TP(topic, 1): 0}
    assert any_log.reset_group_offsets(group, to_earliest=True) == \
        {TP(topic, 0): 0, TP(topic, 1): 0}
    assert any_log.group_offsets(group) == {TP(topic, 0): 0, TP(topic, 1): 0}
    assert any_log.reset_group_offsets(group, shift_by=3, dry_run=True) == \
        {TP(topic, 0): 3, TP(topic, 1): 3}
    any_log.delete_group(group)
    assert group not in any_log.groups()


# -- producer ------------------------------------------------------------------------------


def test_futures_give_topic_partition_offset_and_timestamp(any_log):
    topic = unique_name()
    any_log.create_topic(topic, partitions=1)
    with eventlog.Producer(any_log) as producer:
        futures = [producer.send(topic, {"n": i}, timestamp_ms=1_700_000_000_000 + i)
                   for i in range(5)]
        producer.flush()
        assert all(f.done() for f in futures)
        done: list[Any] = []
        futures[0].add_done_callback(done.append)
        assert done == [futures[0]]
        got = [f.result(timeout=30) for f in futures]
    assert [(m.topic, m.partition, m.offset, m.timestamp_ms) for m in got] == \
        [(topic, 0, i, 1_700_000_000_000 + i) for i in range(5)]


def test_keys_hash_alike_and_murmur2_lands_where_java_clients_put_keys(any_log):
    topic = unique_name()
    any_log.create_topic(topic, partitions=5)
    keys = [f"user-{i}".encode() for i in range(40)]
    with eventlog.Producer(any_log, key_serializer="bytes", partitioner="murmur2") as p:
        got = [p.send(topic, 1, key=k).result(timeout=30).partition for k in keys]
    # Java's DefaultPartitioner: toPositive(murmur2(key)) % partitions
    assert got == [(eventlog.producer.murmur2(k) & 0x7FFFFFFF) % 5 for k in keys]
    with eventlog.Producer(any_log) as p:
        again = {p.send(topic, i, key="same").result(timeout=30).partition for i in range(5)}
    assert len(again) == 1


def test_values_keys_headers_round_trip_through_serializers(any_log):
    topic = unique_name()
    any_log.create_topic(topic)
    values = [None, True, 3, 2.5, "text", b"\x00bytes", [1, "a"], {"nested": {"k": [1]}}]
    with eventlog.Producer(any_log) as producer:
        for v in values:
            producer.send(topic, v, key={"k": 1}, headers=[("trace", b"abc"), ("e", b"")])
    with eventlog.Consumer(any_log, topic) as consumer:
        records = drain(consumer, len(values))
    assert [r.value for r in records] == values
    assert {r.key["k"] for r in records} == {1}
    assert records[0].headers == [("trace", b"abc"), ("e", b"")]
    other = unique_name()
    any_log.create_topic(other)
    with eventlog.Producer(any_log, value_serializer="json") as producer:
        producer.send(other, {"json": [1, 2]})
    with eventlog.Consumer(any_log, other, value_deserializer="bytes") as raw:
        assert json.loads(drain(raw, 1)[0].value) == {"json": [1, 2]}


def test_bad_records_raise_at_send_and_write_nothing(any_log):
    topic = unique_name()
    any_log.create_topic(topic, max_message_bytes=1000)
    with eventlog.Producer(any_log) as producer:
        with pytest.raises(eventlog.RecordTooLargeError):
            producer.send(topic, b"x" * 2000)
        with pytest.raises(eventlog.SerializationError):
            producer.send(topic, object())
        with pytest.raises(eventlog.InvalidRecordError):
            producer.send(topic, 1, headers=[("k", "not bytes")])
        with pytest.raises(eventlog.UnknownTopicError):
            producer.send(unique_name("missing"), 1)
        with pytest.raises(eventlog.InvalidRecordError):
            producer.send(topic, 1, partition=3)
        producer.flush()
    assert any_log.topic(topic).partition(0).end_offset == 0
    producer.close()
    with pytest.raises(eventlog.ClosedError):
        producer.send(topic, 1)


def test_send_batch_returns_where_each_record_went(any_log):
    topic = unique_name()
    any_log.create_topic(topic, partitions=3)
    with eventlog.Producer(any_log) as producer:
        md = producer.send_batch(topic, [f"v{i}" for i in range(30)],
                                 keys=[f"k{i % 4}" for i in range(30)])
        single = [producer.send(topic, "x", key=f"k{i}").result(timeout=30).partition
                  for i in range(4)]
    assert len(md) == 30
    assert [md[i].partition for i in range(4)] == single
    per_partition: dict[int, list[int]] = {}
    for m in md:
        per_partition.setdefault(m.partition, []).append(m.offset)
    assert all(offs == sorted(offs) for offs in per_partition.values())


def test_auto_create_topics_creates_on_first_send(any_log, tmp_path):
    topic = unique_name()
    if isinstance(any_log, eventlog.Log) and any_log.path.startswith("kafka://"):
        log = eventlog.open(any_log.path, auto_create_topics=True)
    else:
        log = eventlog.open(tmp_path / "auto", auto_create_topics=True)
    with log, eventlog.Producer(log) as producer:
        assert producer.send(topic, 1).result(timeout=30).offset == 0
        assert topic in log


# -- consumer ------------------------------------------------------------------------------


def test_poll_seek_position_lag_and_offsets_for_times(any_log):
    topic = unique_name()
    any_log.create_topic(topic, partitions=1)
    tp = TP(topic, 0)
    with eventlog.Producer(any_log) as producer:
        producer.send_batch(topic, list(range(10)),
                            timestamps_ms=[1_000_000 + 10 * i for i in range(10)])
    with eventlog.Consumer(any_log, group_id=unique_name("g"), enable_auto_commit=False) as c:
        c.assign([tp])
        assert c.assignment() == {tp}
        assert [r.value for r in drain(c, 10)] == list(range(10))
        assert c.position(tp) == 10 and c.lag() == {tp: 0}
        c.seek(tp, 4)
        assert c.position(tp) == 4
        assert [r.offset for r in drain(c, 6)] == [4, 5, 6, 7, 8, 9]
        assert c.offsets_for_times({tp: 1_000_035}) == {tp: 4}
        assert c.offsets_for_times({tp: 9_000_000}) == {tp: None}
        assert c.beginning_offsets([tp]) == {tp: 0} and c.end_offsets([tp]) == {tp: 10}
        c.seek_to_beginning(tp)
        assert c.position(tp) == 0 and c.lag() == {tp: 10}
        c.seek_to_end()
        assert c.position(tp) == 10
        assert c.poll(timeout=0.2) == []


def test_pause_and_resume(any_log):
    topic = unique_name()
    any_log.create_topic(topic, partitions=2)
    with eventlog.Producer(any_log) as producer:
        for p in (0, 1):
            producer.send_batch(topic, [p] * 5, partition=p)
    with eventlog.Consumer(any_log, topic) as c:
        c.pause(TP(topic, 0))
        assert c.paused() == {TP(topic, 0)}
        got = drain(c, 5, timeout=10)
        assert {r.partition for r in got} == {1} and len(got) == 5
        assert c.poll(timeout=0.5) == []
        c.resume(TP(topic, 0))
        assert {r.partition for r in drain(c, 5)} == {0}


def test_commit_committed_and_resume_from_the_commit(any_log):
    topic, group = unique_name(), unique_name("g")
    any_log.create_topic(topic)
    tp = TP(topic, 0)
    with eventlog.Producer(any_log) as producer:
        producer.send_batch(topic, list(range(8)))
    with eventlog.Consumer(any_log, topic, group_id=group, enable_auto_commit=False) as c:
        assert c.committed(tp) is None
        got = drain(c, 8)
        assert len(got) == 8
        c.commit({tp: 5})
        assert c.committed(tp) == 5
    with eventlog.Consumer(any_log, topic, group_id=group) as again:
        assert drain(again, 3)[0].offset == 5
        again.commit_async().result(timeout=30)
        assert again.committed(tp) == 8
    with eventlog.Consumer(any_log, topic) as no_group:
        assert len(drain(no_group, 8)) == 8
        with pytest.raises(eventlog.CommitFailedError):
            no_group.commit()


def test_auto_commit_on_close_commits_what_was_returned(any_log):
    topic, group = unique_name(), unique_name("g")
    any_log.create_topic(topic)
    with eventlog.Producer(any_log) as producer:
        producer.send_batch(topic, list(range(6)))
    with eventlog.Consumer(any_log, topic, group_id=group) as c:
        assert len(drain(c, 6)) == 6
    assert any_log.group_offsets(group) == {TP(topic, 0): 6}


def test_a_bad_record_raises_with_its_offset_and_can_be_skipped(any_log):
    topic = unique_name()
    any_log.create_topic(topic)
    with eventlog.Producer(any_log, value_serializer="bytes") as producer:
        for v in (b"\xa1a", b"\xc1", b"\xa1c"):  # 0xc1 is never valid msgpack
            producer.send(topic, v)
    with eventlog.Consumer(any_log, group_id=unique_name("g")) as c:
        c.assign([TP(topic, 0)])
        first: list[Any] = []
        with pytest.raises(eventlog.SerializationError) as info:
            for _ in range(40):
                first += c.poll(timeout=0.5)
        assert [r.value for r in first] == ["a"]
        assert (info.value.partition, info.value.offset) == (0, 1)
        c.seek(TP(topic, 0), 2)
        assert [r.value for r in drain(c, 1)] == ["c"]


# -- groups ---------------------------------------------------------------------------------


class Recorder(eventlog.RebalanceListener):
    """Replays the callbacks: ``owned`` is what the listener was told it owns."""

    def __init__(self) -> None:
        self.owned: set[TP] = set()
        self.calls = 0

    def on_assigned(self, partitions: set[TP]) -> None:
        self.owned |= partitions
        self.calls += 1

    def on_revoked(self, partitions: set[TP]) -> None:
        self.owned -= partitions
        self.calls += 1


def test_group_members_share_partitions_and_take_over_from_commits(any_log):
    topic, group = unique_name(), unique_name("g")
    any_log.create_topic(topic, partitions=4)
    with eventlog.Producer(any_log) as producer:
        for p in range(4):
            producer.send_batch(topic, [f"{p}-{i}" for i in range(5)], partition=p)
    listener = Recorder()
    # a commits what it read whenever partitions are taken from it (auto-commit), so
    # a rebalance never makes it read a record twice
    a = eventlog.Consumer(any_log, topic, group_id=group, listener=listener,
                          session_timeout_ms=6000, heartbeat_interval_ms=500)
    b = eventlog.Consumer(any_log, topic, group_id=group, enable_auto_commit=False,
                          session_timeout_ms=6000, heartbeat_interval_ms=500)
    try:
        import time

        deadline = time.monotonic() + 60
        seen: dict[str, Any] = {}
        while time.monotonic() < deadline:
            for r in a.poll(timeout=0.2) + b.poll(timeout=0.2):
                seen[r.value] = r
            if len(a.assignment()) == 2 and len(b.assignment()) == 2 and len(seen) == 20:
                break
        assert a.assignment() | b.assignment() == {TP(topic, p) for p in range(4)}
        assert not a.assignment() & b.assignment()
        assert len(seen) == 20
        # the listener heard of every partition a gained and lost
        assert listener.owned == a.assignment()
        b_parts = b.assignment()
        b.commit({tp: 2 for tp in b_parts})
        b.close(autocommit=False)
        deadline = time.monotonic() + 60
        again: list[Any] = []
        while time.monotonic() < deadline and len(a.assignment()) < 4:
            again += a.poll(timeout=0.2)
        assert a.assignment() == {TP(topic, p) for p in range(4)} == listener.owned
        again += drain(a, 3 * len(b_parts) - len(again), timeout=20)
        # b's partitions resume from b's commits; a rebalance may hand a's own
        # partitions back to it too (Kafka's eager protocol revokes everything), and a
        # then resumes from what it committed (at least once, as in Kafka)
        from_b = [r for r in again if TP(topic, r.partition) in b_parts]
        assert sorted(r.value for r in from_b) == sorted(
            f"{tp.partition}-{i}" for tp in b_parts for i in range(2, 5))
    finally:
        a.close()
        b.close()


# -- asyncio --------------------------------------------------------------------------------


def test_asyncio_producer_and_consumer(any_log):
    topic, group = unique_name(), unique_name("g")
    any_log.create_topic(topic, partitions=2)

    async def main() -> list[Any]:
        async with AIOProducer(any_log) as producer:
            mds = [await producer.send(topic, i, key=str(i)) for i in range(10)]
            assert sorted(m.offset for m in mds if m.partition == 0) == \
                list(range(sum(m.partition == 0 for m in mds)))
        async with AIOConsumer(any_log, topic, group_id=group,
                               enable_auto_commit=False) as consumer:
            got: list[Any] = []
            while len(got) < 10:
                got += await consumer.poll(timeout=5)
            await consumer.commit()
            assert sorted(r.value for r in got) == list(range(10))
            return got

    asyncio.run(main())
    assert sum(any_log.group_offsets(group).values()) == 10


# -- the Kafka habits of the API: client_id, patterns, timeout_ms, timestamp types ---------


def test_client_id_names_producers_and_group_members(any_log):
    topic, group = unique_name(), unique_name("g")
    any_log.create_topic(topic)
    with eventlog.Producer(any_log, client_id="orders-app") as producer:
        assert producer.client_id == "orders-app"
        assert producer.metrics()["client_id"] == "orders-app"
        producer.send(topic, 1)
    with eventlog.Consumer(any_log, topic, group_id=group, client_id="orders-reader") as c:
        assert c.client_id == "orders-reader"
        assert len(drain(c, 1)) == 1
        metrics = c.metrics()
        assert (metrics["client_id"], metrics["group_id"]) == ("orders-reader", group)
        assert (metrics["records_consumed"], metrics["records_lag"]) == (1, 0)
        members = any_log.describe_group(group).members
        assert [m.client_id for m in members] == ["orders-reader"]
    for bad in ("", "x" * 256, 7):
        with pytest.raises(eventlog.InvalidConfigError):
            eventlog.Producer(any_log, client_id=bad)
        with pytest.raises(eventlog.InvalidConfigError):
            eventlog.Consumer(any_log, client_id=bad)


@pytest.mark.parametrize("grouped", [True, False], ids=["group", "no-group"])
def test_a_pattern_subscription_reads_matching_topics_and_later_ones(any_log, grouped):
    prefix = unique_name("p")
    any_log.create_topic(f"{prefix}-a")
    any_log.create_topic(f"{prefix}-b")
    any_log.create_topic(f"{prefix}x-c")  # matches the prefix, not the whole pattern
    group = unique_name("g") if grouped else None
    with eventlog.Producer(any_log) as producer:
        for topic in (f"{prefix}-a", f"{prefix}-b", f"{prefix}x-c"):
            producer.send(topic, topic)
        with eventlog.Consumer(any_log, group_id=group) as c:
            with pytest.raises(eventlog.InvalidConfigError):
                c.subscribe(pattern="(")
            with pytest.raises(eventlog.InvalidConfigError):
                c.subscribe([f"{prefix}-a"], pattern=f"{prefix}-.*")
            c.subscribe(pattern=f"{prefix}-.*")
            assert c.subscription() == {f"{prefix}-a", f"{prefix}-b"}
            assert sorted(r.value for r in drain(c, 2)) == [f"{prefix}-a", f"{prefix}-b"]
            any_log.create_topic(f"{prefix}-late")
            producer.send(f"{prefix}-late", "late").result(timeout=30)
            got: list[Any] = []
            deadline = time.monotonic() + 60
            while "late" not in got and time.monotonic() < deadline:
                got += [r.value for r in c.poll(timeout=0.5)]
            got += [r.value for r in c.poll(timeout=0.5)]
            assert f"{prefix}-late" in c.subscription()
            # (In a group on Kafka the new topic rebalances it: the eager protocol
            # revokes every partition, committing what was read, and assigns them again.)
            assert got == ["late"]


def test_group_members_with_a_pattern_share_the_partitions_and_read_each_record_once(
        any_log):
    prefix = unique_name("p")
    topic, group = f"{prefix}-jobs", unique_name("g")
    any_log.create_topic(topic, partitions=4)
    members = [eventlog.Consumer(any_log, group_id=group) for _ in range(2)]
    try:
        for member in members:
            member.subscribe(pattern=f"{prefix}-.*")
        seen: dict[int, list[Any]] = {0: [], 1: []}
        deadline = time.monotonic() + 60
        while True:   # until the group settled: each member a share, no partition twice
            for i, member in enumerate(members):
                seen[i] += member.poll(timeout=0.2)
            first, second = (m.assignment() for m in members)
            if first and second and not first & second and len(first | second) == 4:
                break
            assert time.monotonic() < deadline, (first, second)
        with eventlog.Producer(any_log) as producer:
            for n in range(40):
                producer.send(topic, n, partition=n % 4)
        # past a few of the local group's refreshes and the Kafka consumer's 5 s one
        until = time.monotonic() + 6
        while time.monotonic() < until or len(seen[0]) + len(seen[1]) < 40:
            for i, member in enumerate(members):
                seen[i] += member.poll(timeout=0.2)
            assert time.monotonic() < deadline + 60
        assert sorted(r.value for r in seen[0] + seen[1]) == list(range(40))
        owned = [{r.partition for r in seen[i]} for i in (0, 1)]
        assert owned[0] and owned[1] and not owned[0] & owned[1]
        assert not members[0].assignment() & members[1].assignment()
    finally:
        for member in members:
            member.close()


def test_listeners_with_kafka_python_names_and_confluent_callbacks(any_log):
    topic = unique_name()
    any_log.create_topic(topic)
    with eventlog.Producer(any_log) as producer:
        producer.send(topic, "x")
    assigned: list[Any] = []

    class KafkaPythonListener:  # no eventlog base class: kafka-python's method names
        def on_partitions_assigned(self, partitions: Any) -> None:
            assigned.append(("kafka-python", sorted(partitions)))

        def on_partitions_revoked(self, partitions: Any) -> None:
            pass

    def on_assign(consumer: Any, partitions: Any) -> None:
        assigned.append(("confluent", list(partitions)))

    for how in ({"listener": KafkaPythonListener()}, {"on_assign": on_assign}):
        with eventlog.Consumer(any_log, group_id=unique_name("g")) as c:
            c.subscribe([topic], **how)
            assert len(drain(c, 1)) == 1
    assert assigned == [("kafka-python", [TP(topic, 0)]), ("confluent", [TP(topic, 0)])]
    with eventlog.Consumer(any_log, group_id=unique_name("g")) as c, \
            pytest.raises(eventlog.InvalidConfigError):
        c.subscribe([topic], listener=object())


def test_poll_takes_timeout_ms_instead_of_seconds(any_log):
    topic = unique_name()
    any_log.create_topic(topic)
    with eventlog.Producer(any_log) as producer:
        producer.send(topic, "x")
    with eventlog.Consumer(any_log, topic) as c:
        got: list[Any] = []
        for _ in range(60):
            got += c.poll(timeout_ms=500)
            if got:
                break
        assert [r.value for r in got] == ["x"]
        assert c.poll(timeout_ms=0) == []
        with pytest.raises(eventlog.InvalidConfigError):
            c.poll(timeout=2.0, timeout_ms=100)
        with pytest.raises(eventlog.InvalidConfigError):
            c.poll(timeout_ms=-1)


def test_records_say_who_set_their_timestamp(any_log):
    producer_time, log_time = unique_name(), unique_name()
    any_log.create_topic(producer_time)
    any_log.create_topic(log_time, timestamp_type="log_append_time")
    with eventlog.Producer(any_log) as producer:
        producer.send(producer_time, "x", timestamp_ms=1_000_000)
        producer.send(log_time, "y", timestamp_ms=1_000_000)
    with eventlog.Consumer(any_log, producer_time, log_time) as c:
        got = {r.topic: r for r in drain(c, 2)}
    assert got[producer_time].timestamp_type == eventlog.TimestampType.CREATE_TIME
    assert got[producer_time].timestamp_ms == 1_000_000
    assert got[log_time].timestamp_type == eventlog.TimestampType.LOG_APPEND_TIME
    assert got[log_time].timestamp_ms > 1_000_000
    assert str(got[log_time].timestamp_type) == "LogAppendTime"


def test_transactions_commit_and_abort_under_read_committed(any_log):
    topic, group = unique_name(), unique_name("g")
    any_log.create_topic(topic)
    tp = TP(topic, 0)
    with eventlog.Producer(any_log, transactional_id=unique_name("txn")) as producer, \
            eventlog.Consumer(any_log, isolation_level="read_committed") as c:
        with pytest.raises(eventlog.TransactionError):
            producer.commit_transaction()
        producer.init_transactions()
        with producer.transaction():
            producer.send(topic, "committed")
            producer.send_offsets_to_transaction({tp: 1}, group)
        # offsets 0 (the record) and 1 (its commit marker); an open one from 2
        producer.begin_transaction()
        producer.send(topic, "open")
        producer.flush()  # in the partition, not yet decided
        c.assign([tp])
        assert [r.value for r in drain(c, 1)] == ["committed"]
        assert c.poll(timeout=1.0) == []
        assert c.last_stable_offsets([tp]) == {tp: 2}
        assert c.lag(stable=True)[tp] < c.lag()[tp]
        producer.abort_transaction()
        with pytest.raises(RuntimeError), producer.transaction():
            producer.send(topic, "aborted too")
            producer.flush()
            raise RuntimeError("abort")
        assert c.poll(timeout=1.0) == []
        assert c.lag(stable=True) == c.lag()
        end = c.last_stable_offsets([tp])[tp]
        assert end == any_log.topic(topic).partition(0).end_offset
    assert any_log.group_offsets(group) == {tp: 1}
    with eventlog.Consumer(any_log, topic, isolation_level="read_uncommitted") as c:
        assert [r.value for r in drain(c, 3)] == ["committed", "open", "aborted too"]


# -- what only a Kafka cluster has, or lacks ----------------------------------------------------


def test_storage_calls_are_unsupported_on_kafka_with_a_reason(kafka_log):
    topic = unique_name()
    kafka_log.create_topic(topic)
    part = kafka_log.topic(topic).partition(0)
    for call in (kafka_log.check, kafka_log.compact, kafka_log.enforce_retention,
                 kafka_log.flush, kafka_log.metrics, lambda: kafka_log.group_status("g"),
                 lambda: part.append([b"x"]), lambda: part.read(0), part.roll,
                 lambda: kafka_log.backend.partition(topic, 0),
                 kafka_log.backend.transactions):
        with pytest.raises(eventlog.UnsupportedOperationError, match="Kafka cluster: "):
            call()
    with pytest.raises(eventlog.UnsupportedOperationError, match="replication"):
        eventlog.open(kafka_log.path, fsync="always")


def test_retention_given_or_not_reaches_the_broker_as_documented_on_kafka(kafka_log,
                                                                         kafka_broker):
    from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource

    forever, given, unset = unique_name(), unique_name(), unique_name()
    kafka_log.create_topic(forever, retention_ms=None)
    kafka_log.create_topic(given, retention_ms=3_600_000, retention_bytes=None)
    kafka_log.create_topic(unset)
    admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap_servers})

    def configs(topic: str) -> dict[str, Any]:
        resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
        entries = admin.describe_configs([resource])[resource].result(timeout=30)
        return {name: (entry.value, entry.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value)
                for name, entry in entries.items()}

    assert configs(forever)["retention.ms"] == ("-1", True)
    assert configs(given)["retention.ms"] == ("3600000", True)
    assert configs(given)["retention.bytes"] == ("-1", True)
    # not given: no topic config, the cluster's own default (the test broker's is -1,
    # tests/kafka_broker.py says why)
    assert configs(unset)["retention.ms"] == ("-1", False)
    assert kafka_log.topic(forever).config.retention_ms is None
    assert kafka_log.topic(given).config.retention_ms == 3_600_000


def test_an_unreachable_cluster_raises_broker_unavailable_on_kafka():
    from tests.kafka_broker import free_port

    with pytest.raises(eventlog.BrokerUnavailableError):
        eventlog.open(f"kafka://127.0.0.1:{free_port()}", request_timeout_ms=1500)
    with pytest.raises(eventlog.InvalidConfigError):
        eventlog.open("kafka://no-port")


def test_records_pending_at_interpreter_exit_are_flushed(any_log):
    from tests.conftest import run_python

    topic = unique_name()
    any_log.create_topic(topic)
    run_python("import sys, eventlog\n"
               "log = eventlog.open(sys.argv[1])\n"
               "p = eventlog.Producer(log, linger_ms=60_000)\n"
               "for i in range(10):\n"
               "    p.send(sys.argv[2], i)\n", any_log.path, topic)
    assert any_log.topic(topic).partition(0).end_offset == 10
