"""``eventlog bench``: a quick throughput check on this machine.

Runs the producer's two paths (``send()`` and ``send_batch()``) and the consumer's
``poll()`` over a temporary log directory (removed afterwards), each a few times,
and reports the best run of each: records per second and MiB per second of stored
batches. It takes a few seconds; ``benchmarks/`` in the source tree holds the
thorough benchmarks, with raw-file baselines and percentiles.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from .. import __version__
from .. import open as open_log
from ..config import FSYNC_MODES
from ..consumer import Consumer
from ..log import Log
from ..producer import Producer
from ._common import positive_int
from ._output import table, write_json

AddParser = Callable[..., argparse.ArgumentParser]


def register(add: AddParser) -> None:
    bench = add("bench", help="a quick throughput check on this machine",
                description="Measure producer and consumer throughput on a temporary log "
                            "directory (removed afterwards) and print the best of a few "
                            "runs. Takes a few seconds.", log=False)
    bench.add_argument("--records", "-n", type=positive_int, default=100_000,
                       help="records per run (default: 100000)")
    bench.add_argument("--runs", type=positive_int, default=3,
                       help="runs of each workload; the best is reported (default: 3)")
    bench.add_argument("--dir", metavar="DIR",
                       help="create the temporary log in DIR, e.g. on the disk to measure "
                            "(default: the system's temporary directory)")
    bench.add_argument("--fsync", choices=FSYNC_MODES, default="never",
                       help="the log's fsync mode (default: never, to measure the code "
                            "rather than the disk)")
    bench.set_defaults(func=run_bench)


def _orders(n: int) -> list[dict[str, Any]]:
    return [{"order_id": i, "customer": f"customer-{i % 1000:04d}", "amount": i * 0.25,
             "items": ["book", "pen"], "note": "deliver before noon"} for i in range(n)]


def _raw(n: int) -> list[bytes]:
    return [b"%08d" % i + b"x" * 92 for i in range(n)]


class _Bench:
    """One temporary log, one fresh topic per run."""

    def __init__(self, log: Log, records: int) -> None:
        self.log = log
        self.records = records
        self.orders = _orders(records)
        self.raw = _raw(records)
        self.runs = 0

    def topic(self) -> str:
        self.runs += 1
        name = f"bench-{self.runs}"
        self.log.create_topic(name)
        return name

    def size(self, topic: str) -> int:
        return self.log.describe_topic(topic).size_bytes

    def send(self) -> tuple[float, str]:
        topic = self.topic()
        with Producer(self.log) as producer:
            start = time.perf_counter()
            for order in self.orders:
                producer.send(topic, order)
            producer.flush()
            return time.perf_counter() - start, topic

    def send_batch(self, raw: bool) -> tuple[float, str]:
        topic = self.topic()
        with Producer(self.log, value_serializer="bytes" if raw else "msgpack") as producer:
            values: list[Any] = self.raw if raw else self.orders
            start = time.perf_counter()
            producer.send_batch(topic, values)
            return time.perf_counter() - start, topic

    def poll(self, topic: str, raw: bool) -> float:
        with Consumer(self.log, topic,
                      value_deserializer="bytes" if raw else "msgpack") as consumer:
            start = time.perf_counter()
            seen = 0
            while seen < self.records:
                seen += len(consumer.poll(timeout=1.0, max_records=10_000))
            return time.perf_counter() - start


def _best(runs: int, fn: Callable[[], tuple[float, str]]) -> tuple[float, str]:
    return min((fn() for _ in range(runs)), key=lambda r: r[0])


def run_bench(args: argparse.Namespace) -> int:
    """``bench``: five workloads, best of ``--runs`` each."""
    n = args.records
    base = tempfile.mkdtemp(prefix="eventlog-bench-", dir=args.dir)
    results: list[dict[str, Any]] = []
    try:
        with open_log(os.path.join(base, "log"), fsync=args.fsync) as log:
            bench = _Bench(log, n)

            def record(workload: str, seconds: float, stored_bytes: int) -> None:
                results.append({"workload": workload, "records": n,
                                "seconds": round(seconds, 4),
                                "records_per_s": round(n / seconds) if seconds else None,
                                "mib_per_s": round(stored_bytes / seconds / 2**20, 1)
                                if seconds else None})

            seconds, dicts = _best(args.runs, bench.send)
            record("send() + flush(), msgpack dicts", seconds, bench.size(dicts))
            seconds, topic = _best(args.runs, lambda: bench.send_batch(False))
            record("send_batch(), msgpack dicts", seconds, bench.size(topic))
            seconds, raw = _best(args.runs, lambda: bench.send_batch(True))
            record("send_batch(), 100-byte values", seconds, bench.size(raw))
            seconds = min(bench.poll(dicts, False) for _ in range(args.runs))
            record("poll(), msgpack dicts", seconds, bench.size(dicts))
            seconds = min(bench.poll(raw, True) for _ in range(args.runs))
            record("poll(), 100-byte values", seconds, bench.size(raw))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    machine = {"eventlog": __version__, "python": platform.python_version(),
               "platform": f"{platform.system()} {platform.machine()}",
               "cpus": os.cpu_count(), "fsync": args.fsync, "runs": args.runs}
    if args.json:
        write_json({**machine, "results": results}, sys.stdout)
        return 0
    out = sys.stdout
    out.write(f"eventlog {__version__}, Python {machine['python']}, {machine['platform']}, "
              f"{machine['cpus']} CPUs, fsync={args.fsync}; best of {args.runs} runs\n\n")
    table(["WORKLOAD", "RECORDS", "SECONDS", "RECORDS/S", "MiB/S"],
          [[r["workload"], r["records"], f"{r['seconds']:.3f}",
            f"{r['records_per_s']:,}" if r["records_per_s"] else "-", r["mib_per_s"]]
           for r in results], out)
    return 0
