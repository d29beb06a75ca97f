"""An embedded log against a local broker: one run, one Apache Kafka broker, the same
records, four ways to keep an event log on this machine.

    python benchmarks/bench_broker.py [--records 100000] [--repeat 5] [--latency 1500]
                                      [--no-broker] [--plot FILE.png] [--out FILE]

The comparison a user makes when choosing between a log embedded in the application
and a broker next to it. The peers, each with the settings a user who takes the
defaults gets:

- **confluent-kafka on a Kafka broker**: a single-node KRaft broker on loopback
  (``tests/kafka_broker.py``: Kafka's own jars, Java 17+), started with the heap and
  collector of Kafka's ``kafka-server-start.sh`` (1 GiB, G1); the client's defaults
  (``acks=all``, ``linger.ms=5``, no compression, no idempotence);
- **eventlog embedded**: ``eventlog.open(directory)``, defaults (``fsync="interval"``,
  ``linger_ms=5``);
- **eventlog on Kafka**: ``eventlog.open("kafka://...")`` on the same broker, defaults;
- **confluent-kafka through eventlog serve**: the Kafka wire-protocol server in a
  process of its own on a log directory (``eventlog serve``, defaults; started by
  ``bench_serve.eventlog_process_target``), the client's defaults as above.

A record is acknowledged once it is in the page cache on every side (the broker's log
flush policy is the OS's; eventlog's ``fsync="interval"`` also syncs every second), so
all survive a crash of the application's process and none an OS crash.

Every workload starts from the same ~100-byte dicts (``_harness.sample_dicts``) and pays
for msgpack both ways; one partition everywhere:

- produce: ``produce()``/``send()`` per record, then ``flush()``, into a fresh topic,
  by a producer that has sent and flushed one record before (so it is connected, as a
  long-lived producer is); timed from the first send to the end of the flush;
- consume: 500 records at a time (eventlog's default ``max_poll_records``;
  ``consume(500)`` on confluent-kafka), each value decoded, from the start of a topic
  written once before; no group (the partition assigned). Timed from the topic's
  first record (a warm-up) to the last: a long-running consumer's rate. The time from
  creating the consumer to that first record is reported beside it, as what a
  consumer's start costs;
- latency: one record at a time, 0.5 ms apart, each sent alone and flushed, carrying
  ``time.monotonic_ns()``; a consumer blocked in its poll in another thread of the same
  process notes when it arrives. The same method for all four, each warmed up first
  by 200 such records, not counted;
- CPU: user + system seconds of every thread of this process and of the server
  process over each timed produce and consume, per record: what each way costs in
  cores, and a figure that other jobs on a shared machine hardly move.

Repeats are interleaved (each round runs every peer, starting one later each round);
throughputs are medians of the rounds, latency percentiles are over the samples of all
rounds. A peer that cannot run here (no Java 17+ or Maven for the broker, no
confluent-kafka, ``--no-broker``) is reported as not measured.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import msgpack
from _harness import Result, command_line, freeze_inputs, interleave, report, sample_dicts, table

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import eventlog

BROKER = "confluent-kafka on a Kafka broker"
EMBEDDED = "eventlog embedded"
ON_KAFKA = "eventlog on Kafka (kafka://)"
SERVE = "confluent-kafka through eventlog serve"
PEERS = (BROKER, EMBEDDED, ON_KAFKA, SERVE)
# KAFKA_HEAP_OPTS and KAFKA_JVM_PERFORMANCE_OPTS of Kafka's own start scripts.
KAFKA_SCRIPT_JVM = ["-Xmx1G", "-Xms1G", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
                    "-XX:InitiatingHeapOccupancyPercent=35",
                    "-XX:+ExplicitGCInvokesConcurrent", "-Djava.awt.headless=true"]
POLL_RECORDS = 500          # eventlog's default max_poll_records, for both clients
LATENCY_GAP_S = 0.0005
LATENCY_WARMUP = 200        # records, per peer, before the measured rounds
LATENCY_DEADLINE_S = 120.0  # a sample that never arrives fails the run, not hangs it
PERCENTILES = (0.5, 0.9, 0.99)


@dataclass
class Peer:
    """How one peer runs each workload (``_harness.interleave`` workloads: each takes a
    scratch directory, yields the start time, and tears down after the yield)."""

    produce: Callable[[str], Iterator[float]]   # every record into a fresh topic
    consume: Callable[[str], Iterator[float]]   # every record of a topic written once
    latency: Callable[[int], list[float]]       # seconds, one sample per record
    first_record_s: list[float]  # per consume run: from creating the consumer to it
    cpu: CpuMeter                # CPU use of the timed spans of produce and consume


class CpuMeter:
    """CPU seconds (user + system, every thread) of this process and of the server
    process (the broker's JVM, ``eventlog serve``; none when embedded) over each timed
    span, read from ``os.times`` and ``/proc/PID/stat`` (Linux; elsewhere the
    server's share is not measured)."""

    def __init__(self, server_pid: int | None) -> None:
        self.server_pid = server_pid
        self.spans: dict[str, list[tuple[float, float, float | None]]] = {}
        self._begun = (0.0, 0.0, None)

    def _server_s(self) -> float | None:
        if self.server_pid is None:
            return None
        try:
            with open(f"/proc/{self.server_pid}/stat") as fh:
                fields = fh.read().rpartition(")")[2].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def start(self) -> float:
        """Begin a span; return its start on ``time.perf_counter``'s clock."""
        times = os.times()
        self._begun = (time.perf_counter(), times.user + times.system, self._server_s())
        return self._begun[0]

    def stop(self, workload: str) -> None:
        """End the span begun last: ``workload``'s (wall, client, server) seconds."""
        times = os.times()
        wall, client, server = self._begun
        server_now = self._server_s()
        self.spans.setdefault(workload, []).append((
            time.perf_counter() - wall, times.user + times.system - client,
            None if server is None or server_now is None else server_now - server))

    def us_per_record(self, workload: str, records: int) -> tuple[float, float | None]:
        """Median CPU microseconds per record in ``workload``'s spans: (this process,
        the server). Unlike a rate, CPU time hardly moves when other jobs take turns
        on the cores."""
        spans = self.spans[workload]
        client = statistics.median(c for _, c, _ in spans) / records * 1e6
        servers = [s for _, _, s in spans if s is not None]
        if len(servers) < len(spans):
            return client, None
        return client, statistics.median(servers) / records * 1e6


def client_peer(bootstrap: str, dicts: list[dict[str, Any]], server_pid: int | None
                ) -> Peer:
    """confluent-kafka, its defaults, on a Kafka-protocol endpoint (broker or serve)."""
    from bench_serve import create
    from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

    cpu = CpuMeter(server_pid)

    def produce_into(topic: str, metered: bool = True) -> Iterator[float]:
        producer = Producer({"bootstrap.servers": bootstrap})
        producer.produce(topic, msgpack.packb(None))   # connected before the clock
        producer.flush(60)
        send, packb, poll = producer.produce, msgpack.packb, producer.poll
        start = cpu.start()
        for i, d in enumerate(dicts):
            while True:
                try:
                    send(topic, packb(d))
                    break
                except BufferError:  # librdkafka's queue is full: let it drain
                    poll(0.001)
            if i % 1000 == 0:
                poll(0)
        if producer.flush(120) != 0:
            raise RuntimeError(f"records to {bootstrap} left undelivered")
        if metered:
            cpu.stop("produce")
        yield start

    def consumer(topic: str) -> Any:
        # A group id is required even to read an assigned partition; nothing joins it.
        # Nothing committed, as by eventlog's Consumer without a group.
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex,
                      "enable.auto.commit": False})
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        return c

    filled = create(bootstrap)
    for _ in produce_into(filled, metered=False):
        pass
    first_record_s: list[float] = []

    def consume(_: str) -> Iterator[float]:
        unpackb, got, n = msgpack.unpackb, 0, len(dicts)
        created = time.perf_counter()
        c = consumer(filled)
        while not _arrived(c.poll(1)):   # the warm-up record the topic starts with
            pass
        start = cpu.start()
        first_record_s.append(start - created)
        while got < n:
            for message in c.consume(POLL_RECORDS, timeout=1):
                if message.error() is None:
                    unpackb(message.value())
                    got += 1
        cpu.stop("consume")
        yield start
        c.close()

    def latency(count: int) -> list[float]:
        topic = create(bootstrap)
        c = consumer(topic)
        producer = Producer({"bootstrap.servers": bootstrap})
        producer.produce(topic, msgpack.packb(None))   # connected and fetching first
        producer.flush(60)
        while not _arrived(c.poll(1)):
            pass
        samples: list[float] = []

        def receive() -> None:
            deadline = time.monotonic() + LATENCY_DEADLINE_S
            while len(samples) < count and time.monotonic() < deadline:
                message = c.poll(1)
                if _arrived(message):
                    samples.append((time.monotonic_ns() - msgpack.unpackb(message.value()))
                                   / 1e9)

        def send() -> None:
            producer.produce(topic, msgpack.packb(time.monotonic_ns()))
            producer.flush(60)

        _one_at_a_time(receive, send, count)
        c.close()
        return _complete(samples, count, bootstrap)

    return Peer(lambda _: produce_into(create(bootstrap)), consume, latency,
                first_record_s, cpu)


def _child_pid(word: bytes) -> int | None:
    """The pid of a child of this process with ``word`` in its command line (Linux)."""
    me = os.getpid()
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rpartition(")")[2].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                command = fh.read().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == me and word in command:
            return int(entry)
    return None


def _arrived(message: Any) -> bool:
    return message is not None and message.error() is None


def log_peer(log: eventlog.Log, dicts: list[dict[str, Any]], server_pid: int | None
             ) -> Peer:
    """eventlog's Producer and Consumer, their defaults, on ``log`` (a directory or
    ``kafka://``)."""
    cpu = CpuMeter(server_pid)

    def new_topic() -> str:
        name = f"bench-{uuid.uuid4().hex[:10]}"
        log.create_topic(name, partitions=1)
        return name

    def produce_into(topic: str, metered: bool = True) -> Iterator[float]:
        producer = eventlog.Producer(log)
        producer.send(topic, None)   # connected (on kafka://) before the clock
        producer.flush()
        send = producer.send
        start = cpu.start()
        for d in dicts:
            send(topic, d)
        producer.flush()
        if metered:
            cpu.stop("produce")
        yield start
        producer.close()

    filled = new_topic()
    for _ in produce_into(filled, metered=False):
        pass
    first_record_s: list[float] = []

    def consume(_: str) -> Iterator[float]:
        got, n = 0, len(dicts)
        created = time.perf_counter()
        consumer = eventlog.Consumer(log, filled)
        while not consumer.poll(timeout=1, max_records=1):  # the warm-up record
            pass
        start = cpu.start()
        first_record_s.append(start - created)
        while got < n:
            got += len(consumer.poll(timeout=1))
        cpu.stop("consume")
        yield start
        consumer.close()

    def latency(count: int) -> list[float]:
        topic = new_topic()
        consumer = eventlog.Consumer(log, topic)
        producer = eventlog.Producer(log)
        producer.send(topic, None)   # connected and fetching first
        producer.flush()
        while not consumer.poll(timeout=1):
            pass
        samples: list[float] = []

        def receive() -> None:
            deadline = time.monotonic() + LATENCY_DEADLINE_S
            while len(samples) < count and time.monotonic() < deadline:
                for record in consumer.poll(timeout=1):
                    samples.append((time.monotonic_ns() - record.value) / 1e9)

        def send() -> None:
            producer.send(topic, time.monotonic_ns())
            producer.flush()

        _one_at_a_time(receive, send, count)
        producer.close()
        consumer.close()
        return _complete(samples, count, repr(log))

    return Peer(lambda _: produce_into(new_topic()), consume, latency, first_record_s,
                cpu)


def _one_at_a_time(receive: Callable[[], None], send: Callable[[], None], count: int
                   ) -> None:
    thread = threading.Thread(target=receive, name="latency-consumer")
    thread.start()
    for _ in range(count):
        time.sleep(LATENCY_GAP_S)
        send()
    thread.join()


def _complete(samples: list[float], count: int, where: str) -> list[float]:
    if len(samples) < count:
        raise RuntimeError(f"{where}: {count - len(samples)} of {count} latency records "
                           f"did not arrive within {LATENCY_DEADLINE_S:.0f} s")
    return samples


def percentiles(samples: list[float]) -> list[float]:
    """p50, p90, p99 and max of ``samples``, in microseconds."""
    s = sorted(samples)
    return [s[min(len(s) - 1, int(q * len(s)))] * 1e6 for q in PERCENTILES] + [s[-1] * 1e6]


def start_peers(stack: ExitStack, dicts: list[dict[str, Any]], no_broker: bool
                ) -> tuple[dict[str, Peer], dict[str, str]]:
    """Start every peer that can run here (closed by ``stack``); say why the others
    cannot."""
    peers: dict[str, Peer] = {}
    missing: dict[str, str] = {}
    directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="eventlog-bench-"))
    peers[EMBEDDED] = log_peer(stack.enter_context(eventlog.open(directory)), dicts, None)
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        for name in (BROKER, ON_KAFKA, SERVE):
            missing[name] = "confluent-kafka is not installed (pip install -e '.[test]')"
        return peers, missing
    from bench_serve import eventlog_process_target
    from tests.kafka_broker import KafkaCluster, unavailable_reason

    reason = "--no-broker" if no_broker else unavailable_reason()
    if reason is None:
        cluster = stack.enter_context(KafkaCluster(nodes=1, jvm_options=KAFKA_SCRIPT_JVM))
        bootstrap = cluster.bootstrap_servers
        jvm = cluster.nodes[0].process
        pid = None if jvm is None else jvm.pid
        peers[BROKER] = client_peer(bootstrap, dicts, pid)
        peers[ON_KAFKA] = log_peer(
            stack.enter_context(eventlog.open(f"kafka://{bootstrap}")), dicts, pid)
    else:
        missing[BROKER] = missing[ON_KAFKA] = reason
    bootstrap = stack.enter_context(eventlog_process_target())
    peers[SERVE] = client_peer(bootstrap, dicts, _child_pid(b"serve"))
    return {name: peers[name] for name in PEERS if name in peers}, missing


def measure(peers: dict[str, Peer], n: int, repeat: int, latency_count: int
            ) -> tuple[dict[str, Result], dict[str, Result], dict[str, list[float]]]:
    """Throughput results (produce, consume) and latency samples of every peer, each
    workload's rounds interleaved across the peers."""
    produced = {name: Result(name, n) for name in peers}
    interleave(produced, [(name, peer.produce) for name, peer in peers.items()], repeat)
    consumed = {name: Result(name, n) for name in peers}
    interleave(consumed, [(name, peer.consume) for name, peer in peers.items()], repeat)
    samples: dict[str, list[float]] = {name: [] for name in peers}
    per_round = max(1, latency_count // repeat)
    order = list(peers)
    for peer in peers.values():  # untimed: the broker's JIT warms up, as in service
        peer.latency(min(per_round, LATENCY_WARMUP))
    for round_ in range(repeat):
        shift = round_ % len(order)
        for name in order[shift:] + order[:shift]:
            samples[name] += peers[name].latency(per_round)
    return produced, consumed, samples


def plot(path: str, data: dict[str, Any]) -> None:
    """Write the figure of ``data`` (this script's report data) to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from _plots import peers_figure

    fig = peers_figure(plt, data)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _cpu(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--latency", type=int, default=1500,
                        help="latency samples per peer, spread over the repeats")
    parser.add_argument("--no-broker", action="store_true",
                        help="start no Kafka broker: embedded and serve only")
    parser.add_argument("--plot", help="write a PNG of the figures here")
    parser.add_argument("--out")
    args = parser.parse_args()
    n = args.records
    dicts = sample_dicts(n)
    freeze_inputs()
    with ExitStack() as stack:
        peers, missing = start_peers(stack, dicts, args.no_broker)
        produced, consumed, samples = measure(peers, n, args.repeat, args.latency)
    data: dict[str, Any] = {
        "records": n, "produce": {name: r.rate for name, r in produced.items()},
        "consume": {name: r.rate for name, r in consumed.items()},
        "first_record_ms": {name: statistics.median(peer.first_record_s) * 1e3
                            for name, peer in peers.items()},
        "latency_us": {name: percentiles(s) for name, s in samples.items()},
        "cpu_us_per_record": {
            name: {w: peer.cpu.us_per_record(w, n) for w in ("produce", "consume")}
            for name, peer in peers.items()},
        "missing": missing}
    rows = []
    for name in PEERS:
        if name in missing:
            rows.append((name, f"not measured: {missing[name]}", "", "", "", "", "", ""))
            continue
        rows.append((name, f"{data['produce'][name]:,.0f}", f"{data['consume'][name]:,.0f}",
                     f"{data['first_record_ms'][name]:,.1f}",
                     *(f"{v:,.0f}" for v in data["latency_us"][name])))
    per_round = max(1, args.latency // args.repeat)
    body = (f"{n:,} msgpack dicts of about 100 bytes, one partition, default settings "
            f"on every side; throughput: medians of {args.repeat} interleaved runs; "
            f"latency: {per_round * args.repeat:,} records per peer one at a time, "
            f"{LATENCY_GAP_S * 1e3:g} ms apart, each flushed alone, read by a consumer "
            "in another thread of the same process (percentiles over all rounds).\n\n"
            + table(rows, ("peer", "produce records/s", "consume records/s",
                           "consumer's first record ms", "latency p50 µs", "p90 µs",
                           "p99 µs", "max µs")))
    if EMBEDDED in data["produce"] and len(data["produce"]) > 1:
        base = EMBEDDED
        body += "\n\nAgainst eventlog embedded:\n\n" + table(
            [(name, f"{data['produce'][name] / data['produce'][base]:.2f}x",
              f"{data['consume'][name] / data['consume'][base]:.2f}x",
              f"{data['latency_us'][name][0] / data['latency_us'][base][0]:.1f}x")
             for name in data["produce"] if name != base],
            ("peer", "produce", "consume", "latency p50"))
    body += ("\n\nCPU per record while producing and consuming, microseconds (user + "
             "system, every thread, medians; the server is the broker's JVM or the "
             "`eventlog serve` process; embedded, there is none):\n\n" + table(
                 [(name, *(_cpu(v) for w in ("produce", "consume")
                           for v in data["cpu_us_per_record"][name][w]))
                  for name in data["cpu_us_per_record"]],
                 ("peer", "produce: this process", "produce: server",
                  "consume: this process", "consume: server")))
    if args.plot:
        plot(args.plot, data)
        body += f"\n\nPlot: `{args.plot}`.\n"
    report("An embedded log against a local Kafka broker", command_line(), body, args.out,
           data)


if __name__ == "__main__":
    main()
