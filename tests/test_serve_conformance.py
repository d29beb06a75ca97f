"""Conformance: the same client scenarios against a real Apache Kafka broker and against
``eventlog serve``, comparing what the clients observe (offsets, records, errors,
watermarks, group assignments, committed offsets). Any difference is a bug here or a
limit documented in docs/kafka-protocol.md.

The broker is the session's ``kafka_broker`` (tests/kafka_broker.py; these tests carry
the ``kafka`` marker and skip where no broker can run). Like it, the server is run
with ``auto_create_topics=False``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import eventlog

confluent_kafka = pytest.importorskip("confluent_kafka")
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic  # noqa: E402

Scenario = Callable[[str, str], dict[str, Any]]


@pytest.fixture
def both(kafka_broker, eventlog_log) -> Iterator[Callable[[Scenario], None]]:
    """``both(scenario)``: run ``scenario(bootstrap, topic)`` on the broker and on
    eventlog serve, and assert the observations are equal."""
    with eventlog.serve(eventlog_log, auto_create_topics=False) as server:
        def run(scenario: Scenario) -> None:
            topic = f"conf-{uuid.uuid4().hex[:10]}"
            on_kafka = scenario(kafka_broker.bootstrap_servers, topic)
            on_eventlog = scenario(server.bootstrap_servers, topic)
            assert on_eventlog == on_kafka
        yield run


def _create(bootstrap: str, topic: str, partitions: int, **config: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1, config=config)])[topic].result(30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # a broker's topic needs a moment to get leaders
        md = admin.list_topics(topic, timeout=10).topics[topic]
        if md.error is None and len(md.partitions) == partitions and all(
                p.leader >= 0 for p in md.partitions.values()):
            return
        time.sleep(0.1)
    raise AssertionError(f"topic {topic} never became ready")


def _consume_all(bootstrap: str, topic: str, partitions: int, expected: int) -> list[tuple]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"x-{uuid.uuid4()}",
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out = []
    deadline = time.monotonic() + 30
    try:
        while len(out) < expected and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is not None and m.error() is None:
                out.append((m.partition(), m.offset(), m.key(), m.value(), m.headers(),
                            m.timestamp()))
    finally:
        c.close()
    return sorted(out)


def _produce_keyed(bootstrap: str, topic: str, n: int, **conf: Any) -> list[tuple[int, int]]:
    p = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2", **conf})
    reports: list[tuple[int, int]] = []

    def done(err: Any, msg: Any) -> None:
        assert err is None, err
        reports.append((msg.partition(), msg.offset()))
    for i in range(n):
        p.produce(topic, value=b"value-%d" % i, key=b"key-%d" % (i % 7),
                  headers=[("i", b"%d" % i)], timestamp=1_700_000_000_000 + 10 * i,
                  on_delivery=done)
    assert p.flush(30) == 0
    return sorted(reports)


def test_produce_and_consume_observe_the_same(both):
    def scenario(bootstrap: str, topic: str) -> dict[str, Any]:
        _create(bootstrap, topic, 3)
        deliveries = _produce_keyed(bootstrap, topic, 40, **{"compression.type": "lz4"})
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": "w"})
        try:
            marks = [c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                     for p in range(3)]
        finally:
            c.close()
        return {"deliveries": deliveries, "records": _consume_all(bootstrap, topic, 3, 40),
                "watermarks": marks}
    both(scenario)


def test_idempotent_producer_observes_the_same(both):
    def scenario(bootstrap: str, topic: str) -> dict[str, Any]:
        _create(bootstrap, topic, 2)
        deliveries = _produce_keyed(bootstrap, topic, 50, **{"enable.idempotence": True})
        return {"deliveries": deliveries, "records": _consume_all(bootstrap, topic, 2, 50)}
    both(scenario)


def test_offsets_for_times_and_delete_records_observe_the_same(both):
    def scenario(bootstrap: str, topic: str) -> dict[str, Any]:
        _create(bootstrap, topic, 1)
        _produce_keyed(bootstrap, topic, 10)
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": "t"})
        admin = AdminClient({"bootstrap.servers": bootstrap})
        try:
            found = []
            for ts in (0, 1_700_000_000_000, 1_700_000_000_005, 1_700_000_000_090,
                       1_800_000_000_000):
                (tp,) = c.offsets_for_times([TopicPartition(topic, 0, ts)], timeout=10)
                found.append(tp.offset)
            (fut,) = admin.delete_records([TopicPartition(topic, 0, 4)]).values()
            low = fut.result(30).low_watermark
            marks = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        finally:
            c.close()
        return {"by_time": found, "low": low, "watermarks": marks}
    both(scenario)


def _error_code(fn: Callable[[], Any]) -> int | None:
    try:
        fn()
    except KafkaException as exc:
        return int(exc.args[0].code())
    return None


def test_admin_errors_observe_the_same(both):
    def scenario(bootstrap: str, topic: str) -> dict[str, Any]:
        admin = AdminClient({"bootstrap.servers": bootstrap})
        _create(bootstrap, topic, 2)

        def create(name: str, n: int, rf: int, **config: str) -> Callable[[], Any]:
            return lambda: admin.create_topics([NewTopic(name, n, rf, config=config)]
                                               )[name].result(30)
        return {
            "exists": _error_code(create(topic, 1, 1)),
            "replication": _error_code(create(topic + "-rf", 1, 3)),
            "bad_config": _error_code(create(topic + "-cfg", 1, 1, **{"no.such": "1"})),
            "bad_value": _error_code(create(topic + "-val", 1, 1, **{"retention.ms": "x"})),
            "bad_name": _error_code(create("bad/name", 1, 1)),
            "fewer_partitions": _error_code(lambda: admin.create_partitions(
                [NewPartitions(topic, 1)])[topic].result(30)),
            "delete_unknown": _error_code(lambda: admin.delete_topics(
                [topic + "-none"])[topic + "-none"].result(30)),
        }
    both(scenario)


def test_consumer_errors_and_fresh_group_observe_the_same(both):
    def scenario(bootstrap: str, topic: str) -> dict[str, Any]:
        _create(bootstrap, topic, 1)
        _produce_keyed(bootstrap, topic, 3)
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{topic}",
                      "auto.offset.reset": "error", "enable.auto.commit": False})
        try:
            (fresh,) = c.committed([TopicPartition(topic, 0)], timeout=10)
            c.assign([TopicPartition(topic, 0, 100)])
            error = None
            deadline = time.monotonic() + 20
            while error is None and time.monotonic() < deadline:
                m = c.poll(0.2)
                if m is not None and m.error() is not None:
                    error = m.error().code()
        finally:
            c.close()
        return {"fresh_committed": fresh.offset, "out_of_range": error}
    both(scenario)
    assert KafkaError._AUTO_OFFSET_RESET  # the error the scenario expects on both sides


def test_group_assignment_and_commits_observe_the_same(both):
    def scenario(bootstrap: str, topic: str) -> dict[str, Any]:
        _create(bootstrap, topic, 4)
        deliveries = _produce_keyed(bootstrap, topic, 40)
        ends = [max((o + 1 for p, o in deliveries if p == i), default=0) for i in range(4)]
        group = f"grp-{topic}"
        conf = {"bootstrap.servers": bootstrap, "group.id": group,
                "auto.offset.reset": "earliest", "enable.auto.commit": False,
                "partition.assignment.strategy": "range", "session.timeout.ms": 6000,
                "heartbeat.interval.ms": 500}
        members = [Consumer(conf), Consumer(conf)]
        for m in members:
            m.subscribe([topic])

        def caught_up() -> bool:
            for m in members:
                for tp in m.position(m.assignment()):
                    if tp.offset != ends[tp.partition]:
                        return False
            return sorted(len(m.assignment()) for m in members) == [2, 2]
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not caught_up():
                for m in members:
                    m.poll(0.1)
            sizes = sorted(len(m.assignment()) for m in members)
            for m in members:
                if m.assignment():
                    m.commit(asynchronous=False)
            admin = AdminClient({"bootstrap.servers": bootstrap})
            from confluent_kafka import ConsumerGroupTopicPartitions
            (fut,) = admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(group)]).values()
            committed = sorted((tp.partition, tp.offset)
                               for tp in fut.result(30).topic_partitions)
            (desc,) = admin.describe_consumer_groups([group]).values()
            d = desc.result(30)
            state = (str(d.state), len(d.members), d.partition_assignor)
        finally:
            for m in members:
                m.close()
        return {"sizes": sizes, "committed": committed, "ends": ends, "state": state}
    both(scenario)


def test_kafka_python_client_observes_the_same(both):
    kafka = pytest.importorskip("kafka")

    def scenario(bootstrap: str, topic: str) -> dict[str, Any]:
        _create(bootstrap, topic, 2)
        p = kafka.KafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True,
                                compression_type="gzip")
        mds = [p.send(topic, value=b"v%d" % i, key=b"k%d" % (i % 3), partition=i % 2,
                      timestamp_ms=1_700_000_000_000 + i).get(30) for i in range(20)]
        p.close()
        c = kafka.KafkaConsumer(bootstrap_servers=bootstrap, group_id=f"kp-{topic}",
                                auto_offset_reset="earliest", enable_auto_commit=False)
        tps = [kafka.TopicPartition(topic, i) for i in range(2)]
        try:
            fresh = [c.committed(tp) for tp in tps]
            c.assign(tps)
            records = []
            deadline = time.monotonic() + 30
            while len(records) < 20 and time.monotonic() < deadline:
                for msgs in c.poll(timeout_ms=500).values():
                    records += [(m.partition, m.offset, m.key, m.value, m.timestamp)
                                for m in msgs]
            c.commit()
            observed = {
                "delivered": sorted((m.partition, m.offset) for m in mds),
                "records": sorted(records),
                "fresh": fresh,
                "committed": [c.committed(tp) for tp in tps],
                "beginning": sorted((tp.partition, o) for tp, o in
                                    c.beginning_offsets(tps).items()),
                "end": sorted((tp.partition, o) for tp, o in c.end_offsets(tps).items()),
                "by_time": sorted((tp.partition, None if o is None else o.offset)
                                  for tp, o in c.offsets_for_times(
                                      dict.fromkeys(tps, 1_700_000_000_010)).items()),
            }
        finally:
            c.close()
        return observed
    both(scenario)
