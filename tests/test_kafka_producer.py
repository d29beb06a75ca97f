"""The Kafka producer's own paths on a real broker: each record of a ``send_batch``
gets its own delivery report (``_kafka/_batch.py``), whoever places it (librdkafka's
sticky and murmur2 partitioners, or eventlog's xxhash), the broker's timestamps on a
``LogAppendTime`` topic, a broker's refusal raised for the first failed record, and
the futures of ``send`` made without an ``__init__`` (``future_class``)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import eventlog
from eventlog._partitioner import PARTITIONERS
from eventlog.serde import serializer

pytest.importorskip("confluent_kafka")
pytestmark = pytest.mark.kafka


@pytest.fixture
def kafka_log(kafka_broker: Any) -> Iterator[eventlog.Log]:
    with eventlog.open(f"kafka://{kafka_broker.bootstrap_servers}") as log:
        yield log


def name(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def read_all(log: eventlog.Log, topic: str, count: int) -> list[eventlog.Record]:
    got: list[eventlog.Record] = []
    with eventlog.Consumer(log, topic) as consumer:
        for _ in range(200):
            got += consumer.poll(timeout=0.5)
            if len(got) >= count:
                break
    assert len(got) == count
    return got


@pytest.mark.parametrize("placement", ["keyless", "xxhash", "murmur2", "mixed"])
def test_send_batch_reports_where_each_record_landed(kafka_log, placement):
    topic = name()
    kafka_log.create_topic(topic, partitions=3)
    count = 3000
    values = [f"v{i}" for i in range(count)]
    keys = None if placement == "keyless" else \
        [None if placement == "mixed" and i % 3 else f"k{i % 50}" for i in range(count)]
    partitioner = "murmur2" if placement == "murmur2" else "xxhash"
    # librdkafka's sticky partitioner keeps keyless records on one partition for
    # sticky.partitioning.linger.ms (10 ms), whatever the batch size: a batch sent
    # within it would land on one partition. 0 places each keyless record at random.
    with eventlog.Producer(kafka_log, partitioner=partitioner, batch_bytes=4096,
                           kafka_config={"sticky.partitioning.linger.ms": 0}) as producer:
        md = producer.send_batch(topic, values, keys=keys)
        single = producer.send(topic, "after", key=None if keys is None else keys[0])
        after = single.result(timeout=30)
    stored = {(r.partition, r.offset): r for r in read_all(kafka_log, topic, count + 1)}
    assert len(md) == count
    for i, value in enumerate(values):
        record = stored[(md[i].partition, md[i].offset)]
        assert record.value == value
        assert md[i].timestamp_ms == record.timestamp_ms
    assert stored[(after.partition, after.offset)].value == "after"
    if keys is not None:
        # where eventlog's partitioner puts each key (murmur2: Java's placement, which
        # librdkafka's murmur2_random partitioner gave)
        pack, hashed = serializer(None), PARTITIONERS[partitioner]
        assert [p for p, k in zip(md.partitions(), keys, strict=True) if k is not None] \
            == [hashed(topic, pack(k), 3) for k in keys if k is not None]
    if placement != "xxhash" and placement != "murmur2":
        # keyless records: where librdkafka placed each (at random, as set above)
        assert len({p for p, k in zip(md.partitions(), keys or [None] * count,
                                       strict=True) if k is None}) > 1


def test_send_batch_on_a_log_append_time_topic_reports_the_brokers_timestamps(kafka_log):
    topic = name()
    kafka_log.create_topic(topic, partitions=2, timestamp_type="log_append_time")
    with eventlog.Producer(kafka_log) as producer:
        md = producer.send_batch(topic, list(range(500)), timestamps_ms=1_000)
    records = {(r.partition, r.offset): r for r in read_all(kafka_log, topic, 500)}
    for m in md:
        record = records[(m.partition, m.offset)]
        assert record.timestamp_ms == m.timestamp_ms != 1_000
        assert str(record.timestamp_type) == "LogAppendTime"


def test_send_batch_stamps_records_without_a_timestamp_with_the_time_of_the_call(kafka_log):
    topic = name()
    kafka_log.create_topic(topic)
    with eventlog.Producer(kafka_log) as producer:
        md = producer.send_batch(topic, list(range(10)))
        given = producer.send_batch(topic, list(range(3)), timestamps_ms=[5, 6, 7])
    assert len({m.timestamp_ms for m in md}) == 1
    assert [m.timestamp_ms for m in given] == [5, 6, 7]
    assert [r.timestamp_ms for r in read_all(kafka_log, topic, 13)] == \
        [md[0].timestamp_ms] * 10 + [5, 6, 7]


def test_a_batch_the_broker_refuses_raises_and_send_futures_fail_alike(kafka_log):
    topic = name()
    kafka_log.create_topic(topic, partitions=1)
    with eventlog.Producer(kafka_log, value_serializer="bytes") as producer:
        producer.send(topic, b"ok").result(timeout=30)   # the 1 MB limit is now cached
        kafka_log.alter_topic(topic, max_message_bytes=200)
        with pytest.raises(eventlog.RecordTooLargeError, match="record 0 to topic"):
            producer.send_batch(topic, [b"x" * 1000] * 5)
        future = producer.send(topic, b"y" * 1000)
        with pytest.raises(eventlog.RecordTooLargeError):
            future.result(timeout=30)
        assert isinstance(future.exception(), eventlog.RecordTooLargeError)
    assert kafka_log.topic(topic).partition(0).end_offset == 1


def test_a_record_no_one_waits_for_is_delivered_by_the_background_thread(kafka_log):
    # No flush(), no result(), fewer sends than a sender's own serving interval: only
    # the delivery thread (_delivery.py) can run the callback, after a flush() just
    # told it to stay out of the way.
    topic = name()
    kafka_log.create_topic(topic)
    with eventlog.Producer(kafka_log) as producer:
        producer.send(topic, "first")
        producer.flush()
        delivered = threading.Event()
        future = producer.send(topic, "alone")
        future.add_done_callback(lambda f: delivered.set())
        assert delivered.wait(60)
        assert future.done() and future.result(timeout=0).offset == 1


def test_futures_resolve_and_call_back_from_other_threads(kafka_log):
    topic = name()
    kafka_log.create_topic(topic, partitions=2)
    results: dict[int, list[Any]] = {}
    with eventlog.Producer(kafka_log) as producer:
        def sender(n: int) -> None:
            futures = [producer.send(topic, (n, i)) for i in range(300)]
            called: list[Any] = []
            futures[-1].add_done_callback(called.append)
            results[n] = [f.result(timeout=30) for f in futures] + called
        threads = [threading.Thread(target=sender, args=(n,)) for n in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        pending = producer.send(topic, "last")
        assert "KafkaFuture" in repr(pending) and topic in repr(pending)
        producer.flush()
        assert pending.done() and "done" in repr(pending)
    assert sorted(results) == [0, 1, 2]
    for got in results.values():
        *metadata, called = got
        assert len(metadata) == 300 and called.done()
        assert len({(m.partition, m.offset) for m in metadata}) == 300
    records = read_all(kafka_log, topic, 901)
    assert sorted(tuple(r.value) for r in records if r.value != "last") == \
        sorted((n, i) for n in range(3) for i in range(300))
    ends = kafka_log.topic(topic)
    assert sum(ends.partition(p).end_offset for p in range(2)) == 901


def test_delivered_batch_fills_in_what_librdkafka_reports(kafka_broker, kafka_log):
    # _batch.DeliveredBatch under a raw confluent-kafka producer: real delivery
    # reports, records placed by librdkafka (-1) on a topic of three partitions
    from functools import partial

    from confluent_kafka import Producer as RawProducer

    from eventlog._kafka._batch import DeliveredBatch

    topic = name()
    kafka_log.create_topic(topic, partitions=3)
    raw = RawProducer({"bootstrap.servers": kafka_broker.bootstrap_servers,
                       "linger.ms": 1, "batch.size": 512})
    batch = DeliveredBatch(300, -1, 1_234, log_append_time=False)
    for i in range(300):
        raw.produce(topic, f"r{i}".encode(), None, -1, partial(batch.report, i), None, 1_234)
    assert raw.flush(30) == 0
    batch._check()
    md = batch.metadata(topic)
    assert len(set(md.partitions())) > 1
    with eventlog.Consumer(kafka_log, topic, value_deserializer="bytes") as consumer:
        got: dict[tuple[int, int], bytes] = {}
        for _ in range(100):
            got.update({(r.partition, r.offset): r.value for r in consumer.poll(0.5)})
            if len(got) == 300:
                break
    assert [got[(m.partition, m.offset)] for m in md] == [f"r{i}".encode() for i in range(300)]
    assert {m.timestamp_ms for m in md} == {1_234}
