"""Memory (RSS) of a process that reads a log far larger than it could load.

    python benchmarks/bench_rss.py [--sizes-mib 256,1024,3072] [--segment-mib 64]
                                   [--samples 50] [--out FILE]

For each size, a log of one topic with one partition is filled with ~100-byte records
(segments of ``--segment-mib``, by default eventlog's 64 MiB), then a fresh child
process reads it from the start with a ``Consumer`` (``value_deserializer="bytes"``,
``max_poll_records=10_000``), dropping the records as it goes, and samples its own
``/proc/self/status`` about ``--samples`` times: ``VmRSS`` (all resident pages),
``RssAnon`` (heap) and ``RssFile`` (resident pages of mapped segment files, which the
kernel can drop at any time; they are the page cache, counted in this process while it
has them mapped). A naive loader holding every record as a Python ``bytes`` would need
about 1.4x the log size in heap.

One size at a time is on disk; the largest default needs ~3 GiB free.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

from _harness import command_line, report, sample_records, table

import eventlog

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)

READER = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from _harness import memory_kib
import eventlog
path, total, samples = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
every = max(1, total // samples)
out = [dict(records=0, **memory_kib())]
start = time.perf_counter()
with eventlog.open(path) as log:
    consumer = eventlog.Consumer(log, "t", value_deserializer="bytes",
                                 max_poll_records=10_000)
    got, next_sample = 0, every
    while got < total:
        records = consumer.poll(timeout=5)
        if not records:
            raise SystemExit(f"no record after {got} of {total}")
        got += len(records)
        if got >= next_sample:
            out.append(dict(records=got, **memory_kib()))
            next_sample += every
    consumer.close()
elapsed = time.perf_counter() - start
print(json.dumps({"samples": out, "seconds": elapsed, "peak": memory_kib()["VmHWM"]}))
"""


def fill(path: str, target_bytes: int, segment_bytes: int) -> int:
    """Append ~100-byte records until the partition stores ``target_bytes``."""
    pool = sample_records(10_000)
    per_batch = sum(len(r) for r in pool[:1000])
    with eventlog.open(path, fsync="never") as log:
        p = log.create_topic("t", segment_bytes=segment_bytes).partition(0)
        count = 0
        while count * per_batch // 1000 < target_bytes:
            i = (count % 10_000)
            p.append(pool[i:i + 1000])
            count += 1000
        return count


def read_in_child(path: str, records: int, samples: int) -> dict:
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))
    out = subprocess.run([sys.executable, "-c", READER, BENCH, path, str(records),
                          str(samples)], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mib", default="256,1024,3072",
                        help="comma-separated log sizes in MiB of records")
    parser.add_argument("--segment-mib", type=int, default=64,
                        help="segment_bytes of the topic, in MiB (eventlog's default: 64)")
    parser.add_argument("--samples", type=int, default=50, help="RSS samples per read")
    parser.add_argument("--out")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes_mib.split(",")]
    rows, runs = [], []
    for mib in sizes:
        tmp = tempfile.mkdtemp(prefix="eventlog-bench-rss-")
        try:
            records = fill(tmp, mib << 20, args.segment_mib << 20)
            with eventlog.open(tmp) as log:
                stored = log.describe_topic("t").size_bytes
            got = read_in_child(tmp, records, args.samples)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        samples = got["samples"]
        start = samples[0]
        peak_anon = max(s.get("RssAnon", 0) for s in samples)
        peak_file = max(s.get("RssFile", 0) for s in samples)
        rows.append((f"{stored / 2**20:,.0f}", f"{records:,}",
                     f"{records / got['seconds'] / 1e6:.2f}",
                     f"{start['VmRSS'] / 1024:.0f}", f"{got['peak'] / 1024:.0f}",
                     f"{peak_anon / 1024:.0f}", f"{peak_file / 1024:.0f}"))
        runs.append({"log_bytes": stored, "records": records, "seconds": got["seconds"],
                     "peak_kib": got["peak"], "samples": samples})
    body = (
        f"One partition, {args.segment_mib} MiB segments. A fresh process reads the whole "
        "log with a Consumer; MiB of resident memory. "
        "`VmRSS` includes `RssFile`: resident pages of the memory-mapped segments (page "
        "cache the kernel reclaims under pressure), counted while mapped.\n\n"
        + table(rows, ("log MiB", "records", "M records/s", "VmRSS at start",
                       "VmRSS peak", "RssAnon peak", "RssFile peak"))
        + f"\n\nPeak VmRSS reading {rows[-1][0]} MiB vs {rows[0][0]} MiB: "
          f"{runs[-1]['peak_kib'] / runs[0]['peak_kib']:.2f}x.\n")
    report("Memory while reading a large log", command_line(), body, args.out, {"runs": runs})


if __name__ == "__main__":
    main()
