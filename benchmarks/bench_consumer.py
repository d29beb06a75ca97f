"""Consumer throughput, produce-to-consume latency, and the CPU use of an idle consumer.

    python benchmarks/bench_consumer.py [--records 200000] [--repeat 5] [--latency 2000]

- poll() throughput: ~100-byte msgpack dicts read back as Python objects, against a raw
  read loop over the same records in a length-prefixed file (read, unpack the length,
  msgpack.unpackb), in the same run;
- latency: a producer sends one record at a time (send().result()) carrying the
  CLOCK_MONOTONIC time; a consumer blocked in poll() measures when it gets it. Once with
  both in one process (two threads), once with the producer in another process;
- idle CPU: a consumer process blocked in poll() on an empty topic for 3 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time

import msgpack
from _harness import Result, command_line, freeze_inputs, measure, report, sample_records, table

import eventlog

_LEN = struct.Struct("<I")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def raw_read(path: str, n: int):
    def run(_: str) -> None:
        with open(path, "rb") as fh:
            data = fh.read()
        out, pos, end = [], 0, len(data)
        unpack, unpackb, append = _LEN.unpack_from, msgpack.unpackb, out.append
        while pos < end:
            (size,) = unpack(data, pos)
            pos += 4
            append(unpackb(data[pos:pos + size]))
            pos += size
        assert len(out) == n
    return run


def consumer_poll(log_path: str, n: int):
    def run(_: str):
        with eventlog.open(log_path) as log:
            consumer = eventlog.Consumer(log, "t", max_poll_records=10_000)
            start = time.perf_counter()
            got = 0
            while got < n:
                got += len(consumer.poll(timeout=1))
            yield start
            consumer.close()
    return run


def percentiles(samples: list[float]) -> tuple[str, ...]:
    s = sorted(samples)

    def pick(q: float) -> str:
        return f"{s[min(len(s) - 1, int(q * len(s)))] * 1e6:.0f}"

    return (pick(0.5), pick(0.9), pick(0.99), f"{s[-1] * 1e6:.0f}")


def latency_in_process(path: str, count: int) -> list[float]:
    samples: list[float] = []
    with eventlog.open(path, fsync="never") as log:
        log.create_topic("lat")
        consumer = eventlog.Consumer(log, "lat")
        ready = threading.Event()

        def consume() -> None:
            ready.set()
            while len(samples) < count:
                for record in consumer.poll(timeout=1):
                    samples.append(time.monotonic_ns() / 1e9 - record.value)

        thread = threading.Thread(target=consume)
        thread.start()
        ready.wait()
        with eventlog.Producer(log, linger_ms=0) as producer:
            for _ in range(count):
                producer.send("lat", time.monotonic_ns() / 1e9).result()
                time.sleep(0.0005)
        thread.join()
        consumer.close()
    return samples


PRODUCER = """
import sys, time, eventlog
with eventlog.open(sys.argv[1], fsync="never") as log:
    with eventlog.Producer(log, linger_ms=0) as producer:
        time.sleep(0.3)
        for _ in range(int(sys.argv[2])):
            producer.send("lat", time.monotonic_ns() / 1e9).result()
            time.sleep(0.0005)
"""


def latency_cross_process(path: str, count: int) -> list[float]:
    samples: list[float] = []
    with eventlog.open(path, fsync="never") as log:
        log.create_topic("lat")
        with eventlog.Consumer(log, "lat") as consumer:
            consumer.poll(timeout=0)
            env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))
            proc = subprocess.Popen([sys.executable, "-c", PRODUCER, path, str(count)],
                                    env=env)
            while len(samples) < count:
                for record in consumer.poll(timeout=5):
                    samples.append(time.monotonic_ns() / 1e9 - record.value)
            proc.wait()
    return samples


IDLE = """
import resource, sys, time, eventlog
with eventlog.open(sys.argv[1]) as log:
    c = eventlog.Consumer(log, "idle", group_id="idle")
    c.poll(timeout=0.2)
    r0 = resource.getrusage(resource.RUSAGE_SELF); t0 = time.monotonic()
    c.poll(timeout=float(sys.argv[2]))
    r1 = resource.getrusage(resource.RUSAGE_SELF); t1 = time.monotonic()
    cpu = r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime
    print(cpu / (t1 - t0))
    c.close()
"""


def idle_cpu(path: str, seconds: float) -> float:
    with eventlog.open(path) as log:
        log.create_topic("idle", partitions=8)
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))
    out = subprocess.run([sys.executable, "-c", IDLE, path, str(seconds)], env=env,
                         capture_output=True, text=True, check=True).stdout
    return float(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--latency", type=int, default=2000, help="latency samples")
    parser.add_argument("--out")
    args = parser.parse_args()
    n = args.records
    records = sample_records(n)
    size = sum(map(len, records)) / n
    tmp = tempfile.mkdtemp(prefix="eventlog-bench-consumer-")
    raw_path = os.path.join(tmp, "raw.log")
    with open(raw_path, "wb") as fh:
        for rec in records:
            fh.write(_LEN.pack(len(rec)) + rec)
    log_path = os.path.join(tmp, "log")
    with eventlog.open(log_path, fsync="never") as log:
        log.create_topic("t")
        with eventlog.Producer(log, value_serializer="bytes") as producer:
            producer.send_batch("t", records)
    del records
    freeze_inputs()
    raw = Result("raw read loop", n)
    polled = Result("Consumer.poll()", n)
    for _ in range(args.repeat):
        measure(raw, raw_read(raw_path, n), 1)
        measure(polled, consumer_poll(log_path, n), 1)
    in_proc = latency_in_process(os.path.join(tmp, "lat1"), args.latency)
    cross = latency_cross_process(os.path.join(tmp, "lat2"), args.latency)
    idle = idle_cpu(os.path.join(tmp, "idle"), 3.0)
    body = (
        f"{n} msgpack dicts of {size:.0f} bytes, deserialized to dicts.\n\n"
        + table([(raw.name, f"{raw.rate / 1e6:.2f}", "1.00x"),
                 (polled.name, f"{polled.rate / 1e6:.2f}", f"{polled.rate / raw.rate:.2f}x")],
                ("read", "M records/s", "vs raw read loop"))
        + f"\n\nProduce-to-consume latency, {args.latency} records sent one at a time "
          "(send().result(), fsync=\"never\"), microseconds:\n\n"
        + table([("same process (two threads)", *percentiles(in_proc)),
                 ("across processes", *percentiles(cross))],
                ("producer and consumer", "p50", "p90", "p99", "max"))
        + f"\n\nIdle consumer (8 partitions, blocked in poll for 3 s): "
          f"{idle * 100:.2f}% of one core.\n")
    report("Consumer: throughput, latency, idle CPU", command_line(), body, args.out)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
