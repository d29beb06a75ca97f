"""An embedded log against a local broker: eventlog against confluent-kafka on a real
Apache Kafka broker on this machine, the same records, in one run.

    python benchmarks/bench_broker.py [--records 100000] [--repeat 3] [--latency 1000]
                                      [--plot FILE.png] [--out FILE]

The comparison a user makes when choosing between an embedded log and a broker next
to the application. A single-node KRaft broker starts on loopback
(``tests/kafka_broker.py``: Kafka's own jars, Java 17+); every workload starts from the
same ~100-byte dicts (``_harness.sample_dicts``) and pays for msgpack both ways.
Durability alike: the broker acknowledges (``acks=all``, one replica) once a record
is in its page cache, and eventlog runs with ``fsync="never"``: both survive a crash
of the application's process, neither an OS crash.

- produce: confluent-kafka ``produce()`` per record then ``flush()`` (``linger.ms=5``,
  ``batch.size=128 KiB``, its defaults otherwise), against eventlog ``send()`` +
  ``flush()`` (``linger_ms=5``, ``batch_bytes=128 KiB``, the defaults);
- consume: confluent-kafka ``consume(500)`` and ``msgpack.unpackb`` of each value, the
  partition assigned (a new group's first join waits 3 s on a broker), against
  eventlog ``Consumer.poll()``, defaults, a group member (joined before the clock);
- latency: one record at a time, 0.5 ms apart, ``produce()`` + ``flush()`` against
  ``send()`` + ``flush()``, read by a consumer blocked in its poll in another thread.

Repeats of the workloads are interleaved; figures are medians. Without Java or
confluent-kafka the report says why nothing was measured.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
import uuid
from typing import Any

import msgpack
from _harness import Result, command_line, freeze_inputs, interleave, report, sample_dicts, table

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import eventlog

PRODUCER = {"acks": "all", "linger.ms": 5, "batch.size": 128 * 1024}


def _topic(admin: Any, name: str) -> str:
    from confluent_kafka.admin import NewTopic

    admin.create_topics([NewTopic(name, 1)])[name].result(timeout=60)
    return name


def kafka_produce(bootstrap: str, admin: Any, dicts: list[dict[str, Any]]):
    from confluent_kafka import Producer

    def run(_: str):
        topic = _topic(admin, f"p-{uuid.uuid4().hex[:8]}")
        producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER})
        produce, packb, poll = producer.produce, msgpack.packb, producer.poll
        start = time.perf_counter()
        for i, d in enumerate(dicts):
            while True:
                try:
                    produce(topic, packb(d))
                    break
                except BufferError:  # librdkafka's queue is full: let it drain
                    poll(0.001)
            if i % 1000 == 0:
                poll(0)
        assert producer.flush(60) == 0
        yield start
    return run


def eventlog_produce(dicts: list[dict[str, Any]]):
    def run(tmp: str):
        with eventlog.open(tmp, fsync="never") as log:
            log.create_topic("t")
            producer = eventlog.Producer(log)
            send = producer.send
            start = time.perf_counter()
            for d in dicts:
                send("t", d)
            producer.flush()
            yield start
            producer.close()
    return run


def kafka_consume(bootstrap: str, topic: str, n: int):
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    def run(_: str):
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex,
                             "auto.offset.reset": "earliest", "enable.partition.eof": False})
        unpackb, got = msgpack.unpackb, 0
        start = time.perf_counter()
        # Assigned, not subscribed: a broker holds a new group's first join for
        # group.initial.rebalance.delay.ms (3 s), which is no part of throughput.
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        while got < n:
            for message in consumer.consume(500, timeout=1):
                if message.error() is None:
                    unpackb(message.value())
                    got += 1
        yield start
        consumer.close()
    return run


def eventlog_consume(path: str, n: int):
    def run(_: str):
        with eventlog.open(path) as log:
            consumer = eventlog.Consumer(log, "t", group_id=uuid.uuid4().hex)
            start = time.perf_counter()
            got = 0
            while got < n:
                got += len(consumer.poll(timeout=1))
            yield start
            consumer.close()
    return run


def kafka_latency(bootstrap: str, admin: Any, count: int) -> list[float]:
    from confluent_kafka import Consumer, Producer

    topic = _topic(admin, f"lat-{uuid.uuid4().hex[:8]}")
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex,
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER})
    producer.produce(topic, msgpack.packb(None))  # joins the group before timing
    producer.flush(30)
    while consumer.poll(1) is None:
        pass
    samples: list[float] = []

    def consume() -> None:
        while len(samples) < count:
            message = consumer.poll(1)
            if message is not None and message.error() is None:
                samples.append((time.monotonic_ns() - msgpack.unpackb(message.value())) / 1e9)

    thread = threading.Thread(target=consume)
    thread.start()
    for _ in range(count):
        time.sleep(0.0005)
        producer.produce(topic, msgpack.packb(time.monotonic_ns()))
        producer.flush(30)
    thread.join()
    consumer.close()
    return samples


def eventlog_latency(path: str, count: int) -> list[float]:
    samples: list[float] = []
    with eventlog.open(path, fsync="never") as log:
        log.create_topic("lat")
        consumer = eventlog.Consumer(log, "lat", group_id="latency")
        consumer.poll(timeout=0)

        def consume() -> None:
            while len(samples) < count:
                for record in consumer.poll(timeout=1):
                    samples.append((time.monotonic_ns() - record.value) / 1e9)

        thread = threading.Thread(target=consume)
        thread.start()
        with eventlog.Producer(log) as producer:
            for _ in range(count):
                time.sleep(0.0005)
                producer.send("lat", time.monotonic_ns())
                producer.flush()
        thread.join()
        consumer.close()
    return samples


def _pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))]


def plot(path: str, rates: dict[str, float], latency: dict[str, list[float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    names = list(rates)
    colors = ["tab:blue" if n.startswith("eventlog") else "tab:orange" for n in names]
    left.barh(names[::-1], [rates[n] / 1e6 for n in names[::-1]], color=colors[::-1])
    left.set_xlabel("M records/s (blue: eventlog, orange: Kafka)")
    left.set_title("Throughput")
    labels = ["p50", "p90", "p99"]
    width = 0.8 / len(latency)
    for i, (name, samples) in enumerate(latency.items()):
        xs = [x + i * width for x in range(len(labels))]
        right.bar(xs, [_pct(samples, q) * 1e6 for q in (0.5, 0.9, 0.99)], width,
                  label=name, color="tab:blue" if name.startswith("eventlog") else
                  "tab:orange")
    right.set_xticks([x + width * (len(latency) - 1) / 2 for x in range(len(labels))], labels)
    right.set_yscale("log")
    right.set_ylabel("microseconds (log scale)")
    right.set_title("Latency, one record at a time")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--latency", type=int, default=1000, help="latency samples")
    parser.add_argument("--plot", help="write a PNG of the figures here")
    parser.add_argument("--out")
    args = parser.parse_args()
    title = "An embedded log against a local Kafka broker"
    try:
        import confluent_kafka  # noqa: F401
        from tests.kafka_broker import KafkaCluster, unavailable_reason
        reason = unavailable_reason()
    except ImportError as exc:
        reason = f"not measured: {exc}"
    if reason is not None:
        report(title, command_line(), f"Not measured: {reason}.\n", args.out,
               {"missing": reason})
        return
    from confluent_kafka.admin import AdminClient

    n = args.records
    dicts = sample_dicts(n)
    freeze_inputs()
    with KafkaCluster(nodes=1) as cluster:
        bootstrap = cluster.bootstrap_servers
        admin = AdminClient({"bootstrap.servers": bootstrap})
        results = {name: Result(name, n) for name in (
            "Kafka: confluent-kafka produce() + flush()", "eventlog: send() + flush()",
            "Kafka: confluent-kafka consume() + unpackb", "eventlog: Consumer.poll()")}
        interleave(results, [
            ("Kafka: confluent-kafka produce() + flush()", kafka_produce(bootstrap, admin, dicts)),
            ("eventlog: send() + flush()", eventlog_produce(dicts))], args.repeat)
        topic = _topic(admin, "consume")  # written once, read by every consume run
        from confluent_kafka import Producer

        filler = Producer({"bootstrap.servers": bootstrap, **PRODUCER})
        for d in dicts:
            while True:
                try:
                    filler.produce(topic, msgpack.packb(d))
                    break
                except BufferError:
                    filler.poll(0.001)
        assert filler.flush(60) == 0
        del filler  # (a live client keeps reconnecting after the broker stops)
        tmp = tempfile.mkdtemp(prefix="eventlog-bench-broker-")
        log_path = os.path.join(tmp, "log")
        for _ in eventlog_produce(dicts)(log_path):
            pass
        interleave(results, [
            ("Kafka: confluent-kafka consume() + unpackb", kafka_consume(bootstrap, topic, n)),
            ("eventlog: Consumer.poll()", eventlog_consume(log_path, n))], args.repeat)
        latency = {"Kafka: confluent-kafka": kafka_latency(bootstrap, admin, args.latency),
                   "eventlog embedded": eventlog_latency(os.path.join(tmp, "lat"),
                                                         args.latency)}
    rates = {name: r.rate for name, r in results.items()}
    rows = [(name, f"{rate / 1e6:.3f}") for name, rate in rates.items()]
    lat_rows = [(name, *(f"{_pct(s, q) * 1e6:.0f}" for q in (0.5, 0.9, 0.99)),
                 f"{max(s) * 1e6:.0f}") for name, s in latency.items()]
    produce_x = rates["eventlog: send() + flush()"] / \
        rates["Kafka: confluent-kafka produce() + flush()"]
    consume_x = rates["eventlog: Consumer.poll()"] / \
        rates["Kafka: confluent-kafka consume() + unpackb"]
    body = (f"{n} msgpack dicts per run; medians of {args.repeat} interleaved runs; one "
            "partition; a single-node broker on loopback.\n\n"
            + table(rows, ("workload", "M records/s"))
            + f"\n\neventlog against the broker: produce {produce_x:.1f}x, consume "
              f"{consume_x:.1f}x.\n\nProduce-to-consume latency, {args.latency} records "
              "one at a time, 0.5 ms apart (flush after each), consumer in another "
              "thread, microseconds:\n\n"
            + table(lat_rows, ("client", "p50", "p90", "p99", "max")))
    if args.plot:
        plot(args.plot, rates, latency)
        body += f"\n\nPlot: `{args.plot}`.\n"
    report(title, command_line(), body, args.out,
           {"rates": rates, "latency_us": {k: [_pct(s, q) * 1e6 for q in (0.5, 0.9, 0.99)]
                                           for k, s in latency.items()}})


if __name__ == "__main__":
    main()
