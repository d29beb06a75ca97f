"""Unmodified Kafka clients against ``eventlog serve``: round trips per client and codec,
idempotent producers, headers and timestamps, offsets by time, watermarks, topic admin.

Every test checks both sides: what the Kafka client observes, and what the eventlog
log directory holds (the same bytes, at the offsets the client was told)."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

import eventlog

confluent_kafka = pytest.importorskip("confluent_kafka")
kafka = pytest.importorskip("kafka")
aiokafka = pytest.importorskip("aiokafka")

from confluent_kafka import Consumer as CKConsumer  # noqa: E402
from confluent_kafka import Producer as CKProducer  # noqa: E402
from confluent_kafka import TopicPartition as CKTopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, ConfigResource, NewPartitions, NewTopic  # noqa: E402

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


def _stored(log: eventlog.Log, topic: str, partition: int = 0) -> list[eventlog.Record]:
    return list(log.topic(topic).partition(partition).read(0))


def _ck_consume(bootstrap: str, topic: str, count: int, partition: int = 0,
                timeout: float = 20.0) -> list:
    c = CKConsumer({"bootstrap.servers": bootstrap, "group.id": f"r-{uuid.uuid4()}",
                    "enable.auto.commit": False})
    c.assign([CKTopicPartition(topic, partition, 0)])
    out = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < count and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            assert m.error() is None, m.error()
            out.append(m)
    finally:
        c.close()
    return out


@pytest.mark.parametrize("codec", CODECS)
def test_confluent_round_trip(eventlog_kafka, eventlog_log, codec):
    eventlog_log.create_topic("orders")
    p = CKProducer({"bootstrap.servers": eventlog_kafka, "compression.type": codec,
                    "linger.ms": 5})
    sent = [(f"k{i}".encode(), f"value {i}".encode() * (i + 1), 1_700_000_000_000 + i * 7,
             [("trace", f"t{i}".encode()), ("dup", b"1"), ("dup", b"2")]) for i in range(50)]
    reports = []
    for key, value, ts, headers in sent:
        p.produce("orders", value=value, key=key, timestamp=ts, headers=headers, partition=0,
                  on_delivery=lambda err, msg: reports.append((err, msg.offset())))
    assert p.flush(20) == 0
    assert [err for err, _ in reports] == [None] * 50
    assert sorted(o for _, o in reports) == list(range(50))

    got = _ck_consume(eventlog_kafka, "orders", 50)
    assert [(m.offset(), m.key(), m.value(), m.timestamp()[1], m.headers()) for m in got] \
        == [(i, k, v, ts, h) for i, (k, v, ts, h) in enumerate(sent)]
    assert all(m.timestamp()[0] == confluent_kafka.TIMESTAMP_CREATE_TIME for m in got)
    stored = _stored(eventlog_log, "orders")
    assert [(r.offset, r.key, r.value, r.timestamp_ms, r.headers) for r in stored] \
        == [(i, k, v, ts, h) for i, (k, v, ts, h) in enumerate(sent)]


@pytest.mark.parametrize("codec", [None, "gzip", "snappy", "lz4", "zstd"])
def test_kafka_python_round_trip_idempotent(eventlog_kafka, eventlog_log, codec):
    eventlog_log.create_topic("t", partitions=2)
    p = kafka.KafkaProducer(bootstrap_servers=eventlog_kafka, compression_type=codec,
                            enable_idempotence=True, linger_ms=5)
    futures = [p.send("t", value=b"v%d" % i, key=b"key", headers=[("h", b"%d" % i)],
                      timestamp_ms=1_600_000_000_000 + i) for i in range(30)]
    mds = [f.get(20) for f in futures]
    p.close()
    part = mds[0].partition
    assert {m.partition for m in mds} == {part}  # same key, same partition
    assert [m.offset for m in mds] == list(range(30))
    stored = _stored(eventlog_log, "t", part)
    assert [(r.value, r.headers, r.timestamp_ms) for r in stored] \
        == [(b"v%d" % i, [("h", b"%d" % i)], 1_600_000_000_000 + i) for i in range(30)]
    header = eventlog_log.backend.partition("t", part).fetch(0, 1 << 20)[0].header
    assert header.producer_id >= 0 and header.base_sequence == 0  # stored as idempotent

    c = kafka.KafkaConsumer(bootstrap_servers=eventlog_kafka, auto_offset_reset="earliest")
    c.assign([kafka.TopicPartition("t", part)])
    got = []
    deadline = time.monotonic() + 20
    while len(got) < 30 and time.monotonic() < deadline:
        for msgs in c.poll(timeout_ms=200).values():
            got += [(m.offset, m.key, m.value, m.headers) for m in msgs]
    c.close()
    assert got == [(i, b"key", b"v%d" % i, [("h", b"%d" % i)]) for i in range(30)]


def test_aiokafka_round_trip_and_group_commit(eventlog_kafka, eventlog_log):
    eventlog_log.create_topic("a", partitions=3)

    async def main():
        p = aiokafka.AIOKafkaProducer(bootstrap_servers=eventlog_kafka,
                                      compression_type="lz4", enable_idempotence=True)
        await p.start()
        try:
            mds = [await p.send_and_wait("a", b"x%d" % i, key=b"k%d" % (i % 5))
                   for i in range(40)]
        finally:
            await p.stop()
        c = aiokafka.AIOKafkaConsumer("a", bootstrap_servers=eventlog_kafka, group_id="aio",
                                      auto_offset_reset="earliest")
        await c.start()
        seen = []
        try:
            while len(seen) < 40:
                batch = await asyncio.wait_for(c.getmany(timeout_ms=500), 20)
                for msgs in batch.values():
                    seen.extend((m.partition, m.offset, m.value) for m in msgs)
            await c.commit()
        finally:
            await c.stop()
        return mds, seen

    mds, seen = asyncio.run(main())
    assert sorted(seen) == sorted((m.partition, m.offset, b"x%d" % i) for i, m in enumerate(mds))
    ends = {eventlog.TopicPartition("a", p.id): p.end_offset
            for p in eventlog_log.topic("a").partitions}
    assert eventlog_log.group_offsets("aio") == {tp: e for tp, e in ends.items() if e}
    assert sum(eventlog_log.group_lag("aio").values()) == 0


def test_confluent_idempotent_producer(eventlog_kafka, eventlog_log):
    eventlog_log.create_topic("idem", partitions=3)
    p = CKProducer({"bootstrap.servers": eventlog_kafka, "enable.idempotence": True,
                    "linger.ms": 2})
    for i in range(300):
        p.produce("idem", value=b"%d" % i, key=b"%d" % (i % 7))
    assert p.flush(20) == 0
    total = 0
    for part in eventlog_log.topic("idem").partitions:
        batches = eventlog_log.backend.partition("idem", part.id).fetch(0, 1 << 24)
        assert all(b.header.producer_id >= 0 for b in batches)
        total += part.end_offset
    assert total == 300
    values = sorted(int(r.value) for part in eventlog_log.topic("idem").partitions
                    for r in part.read(0))
    assert values == list(range(300))


def test_offsets_for_times_watermarks_and_delete_records(eventlog_kafka, eventlog_log):
    eventlog_log.create_topic("ts")
    p = CKProducer({"bootstrap.servers": eventlog_kafka})
    for i, ts in enumerate([1000, 2000, 3000, 4000]):
        p.produce("ts", value=b"%d" % i, timestamp=ts, partition=0)
    assert p.flush(10) == 0
    c = CKConsumer({"bootstrap.servers": eventlog_kafka, "group.id": "q"})
    try:
        assert c.get_watermark_offsets(CKTopicPartition("ts", 0), timeout=10) == (0, 4)
        for ts, offset in [(0, 0), (1500, 1), (2000, 1), (4000, 3)]:
            (found,) = c.offsets_for_times([CKTopicPartition("ts", 0, ts)], timeout=10)
            assert found.offset == offset
        later = c.offsets_for_times([CKTopicPartition("ts", 0, 9999)], timeout=10)
        assert later[0].offset in (-1, 4)  # librdkafka reports "none" as the end (-1)

        admin = AdminClient({"bootstrap.servers": eventlog_kafka})
        fut = admin.delete_records([CKTopicPartition("ts", 0, 2)])
        (result,) = fut.values()
        assert result.result().low_watermark == 2
        assert eventlog_log.topic("ts").partition(0).start_offset == 2
        assert c.get_watermark_offsets(CKTopicPartition("ts", 0), timeout=10) == (2, 4)
    finally:
        c.close()


def test_log_append_time_topic(eventlog_kafka, eventlog_log):
    admin = AdminClient({"bootstrap.servers": eventlog_kafka})
    fs = admin.create_topics([NewTopic("lat", 1, 1,
                                       config={"message.timestamp.type": "LogAppendTime"})])
    fs["lat"].result(10)
    assert eventlog_log.topic("lat").config.timestamp_type == "log_append_time"
    p = CKProducer({"bootstrap.servers": eventlog_kafka})
    p.produce("lat", value=b"x", timestamp=5)
    assert p.flush(10) == 0
    (m,) = _ck_consume(eventlog_kafka, "lat", 1)
    kind, ts = m.timestamp()
    assert kind == confluent_kafka.TIMESTAMP_LOG_APPEND_TIME
    assert ts == _stored(eventlog_log, "lat")[0].timestamp_ms != 5


def test_admin_topics_configs_partitions(eventlog_kafka, eventlog_log):
    admin = AdminClient({"bootstrap.servers": eventlog_kafka})
    fs = admin.create_topics([NewTopic("x", 2, 1, config={"retention.ms": "60000",
                                                          "cleanup.policy": "compact"}),
                              NewTopic("y", 1, 3),
                              NewTopic("z", 1, 1, config={"no.such.config": "1"})])
    fs["x"].result(10)
    with pytest.raises(confluent_kafka.KafkaException) as info:
        fs["y"].result(10)
    assert info.value.args[0].code() == confluent_kafka.KafkaError.INVALID_REPLICATION_FACTOR
    with pytest.raises(confluent_kafka.KafkaException) as info:
        fs["z"].result(10)
    assert info.value.args[0].code() == confluent_kafka.KafkaError.INVALID_CONFIG
    assert eventlog_log.topics() == ["x"]
    config = eventlog_log.topic("x").config
    assert (config.retention_ms, config.cleanup_policy) == (60000, "compact")

    with pytest.raises(confluent_kafka.KafkaException) as info:
        admin.create_topics([NewTopic("x", 1, 1)])["x"].result(10)
    assert info.value.args[0].code() == confluent_kafka.KafkaError.TOPIC_ALREADY_EXISTS

    (res,) = admin.describe_configs([ConfigResource("topic", "x")]).values()
    entries = res.result(10)
    assert entries["retention.ms"].value == "60000"
    assert entries["cleanup.policy"].value == "compact"
    assert entries["segment.bytes"].value == str(config.segment_bytes)
    assert entries["retention.ms"].is_default is False

    admin.create_partitions([NewPartitions("x", 5)])["x"].result(10)
    assert eventlog_log.topic("x").num_partitions == 5
    md = admin.list_topics(timeout=10)
    assert len(md.topics["x"].partitions) == 5
    host, port = eventlog_kafka.rsplit(":", 1)
    assert [(b.host, b.port) for b in md.brokers.values()] == [(host, int(port))]

    admin.delete_topics(["x"])["x"].result(10)
    assert "x" not in eventlog_log
    with pytest.raises(confluent_kafka.KafkaException) as info:
        admin.delete_topics(["x"])["x"].result(10)
    assert info.value.args[0].code() == confluent_kafka.KafkaError.UNKNOWN_TOPIC_OR_PART


def test_auto_create_on_metadata(eventlog_kafka, eventlog_log):
    p = CKProducer({"bootstrap.servers": eventlog_kafka, "acks": 1})
    p.produce("fresh", value=b"first")
    assert p.flush(20) == 0
    assert "fresh" in eventlog_log
    assert [r.value for r in _stored(eventlog_log, "fresh")] == [b"first"]


def test_kafka_python_admin_and_list_groups(eventlog_kafka, eventlog_log):
    admin = kafka.KafkaAdminClient(bootstrap_servers=eventlog_kafka)
    try:
        admin.create_topics([kafka.admin.NewTopic("k", 2, 1)])
        assert "k" in admin.list_topics()
        c = kafka.KafkaConsumer("k", bootstrap_servers=eventlog_kafka, group_id="kg",
                                auto_offset_reset="earliest", consumer_timeout_ms=1500)
        list(c)
        c.commit({kafka.TopicPartition("k", 0): kafka.OffsetAndMetadata(0, "", -1)})
        c.close()
        assert {"group_id": "kg", "protocol_type": "consumer"} in admin.list_groups()
        offsets = admin.list_group_offsets("kg")["kg"]
        assert offsets[kafka.TopicPartition("k", 0)].offset == 0
        assert eventlog_log.group_offsets("kg")[eventlog.TopicPartition("k", 0)] == 0
        assert admin.describe_groups(["kg"])["kg"]["group_state"] == "Empty"
        assert admin.describe_groups(["nope"])["nope"]["group_state"] == "Dead"
    finally:
        admin.close()
