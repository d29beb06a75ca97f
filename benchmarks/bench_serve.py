"""confluent-kafka through ``eventlog serve``, side by side with a real Kafka broker.

    python benchmarks/bench_serve.py [--records 100000] [--repeat 3] [--latency 500]
                                     [--no-kafka]

- produce: confluent-kafka's Producer sends ``--records`` 100-byte records (linger 5 ms,
  lz4 off: uncompressed) to one partition and flushes; records/s;
- consume: a Consumer assigned that partition from offset 0 reads them all back;
- latency: one record at a time (produce, then flush), carrying the time it was sent; a
  consumer long-polling in another thread notes when it arrives; median, p90, p99
  (``--latency`` records in all, spread over the repeats).

Each repeat runs every target in turn (the load of a shared machine then falls on all
alike); the figures are medians over the repeats.

The server runs twice: in this process (threads), as ``eventlog.serve`` does in a test,
where it shares the GIL with the client's Python; and as ``eventlog serve`` in a
process of its own, as the broker runs. The broker is a real Apache Kafka node
(tests/kafka_broker.py; skipped with ``--no-kafka`` or when no Java/Maven is available,
and the report says so).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from _harness import command_line, report, table
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

import eventlog

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_STAMP = struct.Struct(">d")


@contextmanager
def eventlog_target() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="eventlog-bench-serve-") as tmp, \
            eventlog.open(tmp) as log, eventlog.serve(log) as server:
        yield server.bootstrap_servers


@contextmanager
def eventlog_process_target() -> Iterator[str]:
    """``eventlog serve`` in a process of its own, as a deployment (or a CI job) runs it:
    the server's Python and the client's do not share a GIL."""
    with tempfile.TemporaryDirectory(prefix="eventlog-bench-serve-") as tmp:
        proc = subprocess.Popen([sys.executable, "-m", "eventlog", "--log", tmp, "serve",
                                 "--port", "0"], stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stderr is not None
            match = re.search(r"listening on (\S+)", proc.stderr.readline())
            assert match, "eventlog serve did not start"
            yield match.group(1)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)


@contextmanager
def kafka_target() -> Iterator[str]:
    sys.path.insert(0, ROOT)
    from tests import kafka_broker
    reason = kafka_broker.unavailable_reason()
    if reason is not None:
        raise RuntimeError(reason)
    with kafka_broker.KafkaCluster(1) as cluster:
        yield cluster.bootstrap_servers


def create(bootstrap: str) -> str:
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(60)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        md = admin.list_topics(topic, timeout=10).topics[topic]
        if md.error is None and md.partitions and md.partitions[0].leader >= 0:
            break
        time.sleep(0.05)
    return topic


def produce(bootstrap: str, topic: str, n: int) -> float:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5,
                  "queue.buffering.max.messages": max(n, 100_000)})
    value = b"x" * 100
    start = time.perf_counter()
    for i in range(n):
        while True:
            try:
                p.produce(topic, value=value, key=b"%d" % (i % 1000), partition=0)
                break
            except BufferError:
                p.poll(0.01)
    assert p.flush(120) == 0
    return time.perf_counter() - start


def consume(bootstrap: str, topic: str, n: int) -> float:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"b-{uuid.uuid4()}",
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 0)])
    got = 0
    start = time.perf_counter()
    try:
        while got < n:
            msgs = c.consume(1000, 1.0)
            got += sum(1 for m in msgs if m.error() is None)
    finally:
        elapsed = time.perf_counter() - start
        c.close()
    return elapsed


def latency(bootstrap: str, topic: str, n: int) -> list[float]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"l-{uuid.uuid4()}",
                  "enable.auto.commit": False, "fetch.wait.max.ms": 500})
    c.assign([TopicPartition(topic, 0, 0)])
    lat: list[float] = []
    ready = threading.Event()

    def reader() -> None:
        ready.set()
        while len(lat) < n:
            m = c.poll(1.0)
            if m is not None and m.error() is None and len(m.value()) == _STAMP.size:
                lat.append(time.perf_counter() - _STAMP.unpack(m.value())[0])
    t = threading.Thread(target=reader)
    t.start()
    ready.wait()
    time.sleep(1.0)  # the consumer is long-polling before the first record
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    for _ in range(n):
        p.produce(topic, value=_STAMP.pack(time.perf_counter()), partition=0)
        p.flush(10)
        time.sleep(0.002)
    t.join(60)
    c.close()
    return lat


def run(targets: dict[str, str], args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Every repeat runs each target in turn, so that the load of a shared machine falls
    on all of them alike; medians over the repeats."""
    produce_s: dict[str, list[float]] = {name: [] for name in targets}
    consume_s: dict[str, list[float]] = {name: [] for name in targets}
    lat: dict[str, list[float]] = {name: [] for name in targets}
    for _ in range(args.repeat):
        for name, bootstrap in targets.items():
            topic = create(bootstrap)
            produce_s[name].append(produce(bootstrap, topic, args.records))
            consume_s[name].append(consume(bootstrap, topic, args.records))
            lat[name] += latency(bootstrap, create(bootstrap), args.latency // args.repeat)
    out = {}
    for name in targets:
        ls = sorted(lat[name])
        q = statistics.quantiles(ls, n=100) if len(ls) > 1 else ls * 99
        out[name] = {"produce_rps": args.records / statistics.median(produce_s[name]),
                     "consume_rps": args.records / statistics.median(consume_s[name]),
                     "lat_p50_ms": statistics.median(ls) * 1e3, "lat_p90_ms": q[89] * 1e3,
                     "lat_p99_ms": q[98] * 1e3}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--latency", type=int, default=500)
    parser.add_argument("--no-kafka", action="store_true")
    parser.add_argument("--out")
    args = parser.parse_args()
    notes = []
    with ExitStack() as stack:
        targets = {
            "eventlog serve": stack.enter_context(eventlog_process_target()),
            "eventlog serve, in the client's process": stack.enter_context(eventlog_target()),
        }
        if args.no_kafka:
            notes.append("Kafka broker: not measured (--no-kafka)")
        else:
            try:
                targets["Apache Kafka"] = stack.enter_context(kafka_target())
            except RuntimeError as exc:
                notes.append(f"Kafka broker: not measured ({exc})")
        results = run(targets, args)
    rows = [(name, f"{r['produce_rps']:,.0f}", f"{r['consume_rps']:,.0f}",
             f"{r['lat_p50_ms']:.2f}", f"{r['lat_p90_ms']:.2f}", f"{r['lat_p99_ms']:.2f}")
            for name, r in results.items()]
    body = table(rows, ("target", "produce records/s", "consume records/s",
                        "latency p50 ms", "p90 ms", "p99 ms"))
    if "Apache Kafka" in results:
        e, k = results["eventlog serve"], results["Apache Kafka"]
        body += (f"\n\neventlog serve / Kafka: produce {e['produce_rps'] / k['produce_rps']:.2f}"
                 f"x, consume {e['consume_rps'] / k['consume_rps']:.2f}x, p50 latency "
                 f"{e['lat_p50_ms'] / k['lat_p50_ms']:.2f}x")
    if notes:
        body += "\n\n" + "\n".join(f"- {n}" for n in notes)
    report(f"Kafka clients through eventlog serve ({args.records:,} records of 100 bytes)",
           command_line(), body, args.out, data=results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
