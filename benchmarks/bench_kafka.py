"""eventlog on a real Kafka broker against confluent-kafka used directly, on the same
broker, the same records and the same client settings; eventlog embedded for scale.

    python benchmarks/bench_kafka.py [--records 200000] [--repeat 3] [--out FILE]
                                     [--bootstrap HOST:PORT]

Starts a single-node Apache Kafka broker on loopback (tests/kafka_broker.py: Kafka's
jars from Maven Central, cached; Java 17+), or uses the one at ``--bootstrap``. Every
workload starts from the same ~100-byte dicts (``_harness.sample_dicts``) and pays for
msgpack, both ways, with a reused ``msgpack.Packer`` (what eventlog's serializer is).

Producers (``acks=all``, ``linger.ms=5``, ``batch.size=128 KiB`` given to both sides,
no compression, idempotence on (eventlog turns it on with ``acks=all``), one
partition, a fresh topic per run, one record sent and flushed first so that each producer is
connected and has its producer id; timed from the next send to the end of ``flush``):

- confluent-kafka ``produce()`` with a delivery callback per record, serving reports
  with ``poll(0)`` every 1,000 records: the baseline of the target. It is the
  like-for-like one: eventlog's futures (and ``send_batch``'s offsets) tell each
  record's fate, and the raw client learns it only from a callback, which librdkafka
  calls once per record. Its arguments go by position, the cheapest way to call
  ``produce()`` (confluent-kafka parses keywords by looking up every optional name:
  about 400 ns a call), which is how eventlog calls it;
- the same with keyword arguments (``on_delivery=``), as confluent-kafka's own
  examples write it; with ``flush()`` after every 10,000 records (what ``send_batch``
  of 10,000 must do, since it returns their offsets); and without a callback (the
  price of being told nothing);
- eventlog ``Producer.send()`` + ``flush()`` and ``send_batch()`` of 10,000 records on
  ``kafka://``;
- eventlog ``send()`` + ``flush()`` on a log directory (``fsync="never"``).

Consumers (one partition written once before the timed runs; timed from the first
poll until every record is decoded):

- confluent-kafka ``consume(1000)`` + ``msgpack.unpackb`` per value, and the same
  reading every field a ``Record`` carries (topic, partition, offset, timestamp, key
  and value decoded, headers): the raw client doing the consumer's work, the baseline
  of the target (each accessor of a librdkafka message is a C call of its own);
- eventlog ``Consumer.poll()`` on ``kafka://`` and on a log directory.

The target (issue 15): eventlog on Kafka within 15% of the raw client's throughput
(``send``, ``send_batch`` and ``poll``: ratio >= 0.85 to their baselines).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

import msgpack
from _harness import Result, command_line, freeze_inputs, interleave, report, sample_dicts, table

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from tests.kafka_broker import KafkaCluster, unavailable_reason

import eventlog

# eventlog's producer with acks="all" turns idempotence on (docs/kafka-backend.md), so
# the raw client does too, and both are given the same batch.size
SETTINGS = {"acks": "all", "linger.ms": 5, "batch.size": 128 * 1024,
            "compression.type": "none", "enable.idempotence": True}
TARGET = 0.85
RAW = "confluent-kafka produce() + callback"   # the baseline of the target
BATCH = 10_000          # records per send_batch call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out")
    parser.add_argument("--bootstrap", help="a running broker to use (default: start one)")
    args = parser.parse_args()
    values = sample_dicts(args.records)
    freeze_inputs()
    if args.bootstrap:
        run(args.bootstrap, values, args)
        return
    reason = unavailable_reason()
    if reason:
        sys.exit(reason)
    with KafkaCluster(1, heap_mb=1024, jvm_options=["-Xmx1g", "-Xms1g", "-XX:+UseG1GC"]) \
            as cluster:
        run(cluster.bootstrap_servers, values, args)


def run(bootstrap: str, values: list[dict[str, Any]], args: argparse.Namespace) -> None:
    from confluent_kafka import Consumer, Producer
    from confluent_kafka import TopicPartition as KTP

    n = len(values)
    kafka = eventlog.open(f"kafka://{bootstrap}")
    local_dir = tempfile.mkdtemp(prefix="eventlog-bench-kafka-")
    local = eventlog.open(local_dir, fsync="never")
    raw_config = {"bootstrap.servers": bootstrap, **SETTINGS}

    def fresh(log: eventlog.Log) -> str:
        topic = f"bench-{uuid.uuid4().hex[:10]}"
        log.create_topic(topic, partitions=1)
        return topic

    def raw_produce(callback: bool, by_position: bool = True, flush_every: int = 0) -> Any:
        def workload(_tmp: str) -> Iterator[float]:
            topic = fresh(kafka)
            producer = Producer(raw_config)
            acked = [0]

            def on_delivery(err: Any, msg: Any) -> None:
                if err is None:
                    acked[0] += 1

            pack = msgpack.Packer(autoreset=True).pack
            produce, poll = producer.produce, producer.poll
            produce(topic, pack(values[0]))  # connected, with its producer id: warm
            producer.flush()
            start = time.perf_counter()
            for i, value in enumerate(values):
                data = pack(value)
                while True:
                    try:
                        if not callback:
                            produce(topic, data)
                        elif by_position:  # (topic, value, key, partition, callback)
                            produce(topic, data, None, -1, on_delivery)
                        else:
                            produce(topic, data, on_delivery=on_delivery)
                        break
                    except BufferError:
                        poll(0.05)
                if flush_every and i % flush_every == flush_every - 1:
                    producer.flush()
                elif i % 1000 == 0:
                    poll(0)
            producer.flush()
            yield start
            assert not callback or acked[0] == n
        return workload

    def eventlog_send(log: eventlog.Log) -> Any:
        def workload(_tmp: str) -> Iterator[float]:
            topic = fresh(log)
            with eventlog.Producer(log, batch_bytes=SETTINGS["batch.size"]) as producer:
                send = producer.send
                send(topic, values[0])  # connected, with its producer id: warm
                producer.flush()
                start = time.perf_counter()
                for value in values:
                    send(topic, value)
                producer.flush()
                yield start
        return workload

    def eventlog_send_batch(_tmp: str) -> Iterator[float]:
        topic = fresh(kafka)
        with eventlog.Producer(kafka, batch_bytes=SETTINGS["batch.size"]) as producer:
            producer.send(topic, values[0])  # connected, with its producer id: warm
            producer.flush()
            start = time.perf_counter()
            for i in range(0, n, BATCH):
                producer.send_batch(topic, values[i:i + BATCH])
            yield start

    writers = {
        RAW: raw_produce(True),
        "confluent-kafka produce() + callback, keyword arguments": raw_produce(True, False),
        "confluent-kafka produce() + callback, flush() per 10,000":
            raw_produce(True, flush_every=BATCH),
        "confluent-kafka produce(), no callback": raw_produce(False),
        "eventlog on Kafka send() + flush()": eventlog_send(kafka),
        "eventlog on Kafka send_batch()": eventlog_send_batch,
        "eventlog embedded send() + flush()": eventlog_send(local),
    }
    results = {name: Result(name, n) for name in writers}
    interleave(results, list(writers.items()), args.repeat)

    # readers: one topic on each backend, written once
    kafka_topic, local_topic = fresh(kafka), fresh(local)
    for log, topic in ((kafka, kafka_topic), (local, local_topic)):
        with eventlog.Producer(log) as producer:
            producer.send_batch(topic, values)

    def raw_consume(_tmp: str) -> Iterator[float]:
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex,
                             "enable.auto.commit": False})
        consumer.assign([KTP(kafka_topic, 0, 0)])
        unpackb = msgpack.unpackb
        got = 0
        start = time.perf_counter()
        while got < n:
            for msg in consumer.consume(1000, 1.0):
                if msg.error() is None:
                    unpackb(msg.value())
                    got += 1
        yield start
        consumer.close()

    def raw_consume_records(_tmp: str) -> Iterator[float]:
        # the same work as a Consumer: every field of a Record, key and value decoded
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex,
                             "enable.auto.commit": False})
        consumer.assign([KTP(kafka_topic, 0, 0)])
        unpackb = msgpack.unpackb
        out: list[Any] = []
        start = time.perf_counter()
        while len(out) < n:
            for msg in consumer.consume(1000, 1.0):
                if msg.error() is None:
                    key, value, headers = msg.key(), msg.value(), msg.headers()
                    out.append((msg.topic(), msg.partition(), msg.offset(),
                                msg.timestamp()[1], key if key is None else unpackb(key),
                                value if value is None else unpackb(value),
                                headers or []))
        yield start
        consumer.close()

    def eventlog_consume(log: eventlog.Log, topic: str) -> Any:
        def workload(_tmp: str) -> Iterator[float]:
            with eventlog.Consumer(log, topic, max_poll_records=10_000) as consumer:
                got = 0
                start = time.perf_counter()
                while got < n:
                    got += len(consumer.poll(timeout=1.0))
                yield start
        return workload

    readers = {
        "confluent-kafka consume() + unpackb": raw_consume,
        "confluent-kafka consume(), every Record field": raw_consume_records,
        "eventlog on Kafka Consumer.poll()": eventlog_consume(kafka, kafka_topic),
        "eventlog embedded Consumer.poll()": eventlog_consume(local, local_topic),
    }
    read_results = {name: Result(name, n) for name in readers}
    interleave(read_results, list(readers.items()), args.repeat)
    kafka.close()
    local.close()

    raw_w = results[RAW].rate
    raw_kw = results["confluent-kafka produce() + callback, keyword arguments"].rate
    raw_r = read_results["confluent-kafka consume(), every Record field"].rate
    rows = [(name, f"{r.rate:,.0f}", f"{r.rate / raw_w:.2f}", f"{r.rate / raw_kw:.2f}")
            for name, r in results.items()]
    body = ("### Producing\n\n"
            + table(rows, ("writer", "records/s", "vs raw + callback",
                           "vs raw + callback, keywords"))
            + "\n\n### Consuming\n\n"
            + table([(name, f"{r.rate:,.0f}", f"{r.rate / raw_r:.2f}")
                     for name, r in read_results.items()],
                    ("reader", "records/s", "vs raw, every field"))
            + "\n\n")
    send, batch = results["eventlog on Kafka send() + flush()"].rate, \
        results["eventlog on Kafka send_batch()"].rate
    poll_ratio = read_results["eventlog on Kafka Consumer.poll()"].rate / raw_r
    ratios = {"send_ratio": send / raw_w, "send_batch_ratio": batch / raw_w,
              "send_ratio_keywords": send / raw_kw, "send_batch_ratio_keywords": batch / raw_kw,
              "poll_ratio": poll_ratio}

    def verdict(*values: float) -> str:
        return "met" if min(values) >= TARGET else "NOT met"

    body += (f"Target: eventlog on Kafka within 15% of confluent-kafka (ratio >= {TARGET}). "
             f"Against produce() by position: send {send / raw_w:.2f}, send_batch "
             f"{batch / raw_w:.2f} — {verdict(send / raw_w, batch / raw_w)}; against "
             f"produce() with keywords: send {send / raw_kw:.2f}, send_batch "
             f"{batch / raw_kw:.2f} — {verdict(send / raw_kw, batch / raw_kw)}; poll "
             f"{poll_ratio:.2f} — {verdict(poll_ratio)}.\n")
    report("eventlog on Kafka against confluent-kafka", command_line(), body, args.out, ratios)


if __name__ == "__main__":
    main()
