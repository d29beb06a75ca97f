"""Open and recovery time as the log grows: after a clean close, and after kill -9.

    python benchmarks/bench_open.py [--sizes 1000,10000,100000,1000000] [--huge]
                                    [--repeat 5] [--crash-repeat 3] [--out FILE]

One topic with one partition (default settings: 64 MiB segments) holds ``N`` ~100-byte
msgpack records, appended in batches of 1000. For each ``N``, the time from
``eventlog.open(path)`` to having read the newest record (``open``, ``topic``,
``partition``, ``read(end_offset - 1)``), in this process, page cache warm:

- **clean**: the log was closed cleanly (median of ``--repeat`` opens);
- **after kill -9**: a child process opened the log, appended 1000 records and was
  killed with SIGKILL; the open is the first after the crash, so it runs recovery (the
  head written during this boot is trusted: only bytes past the published end are
  looked at);
- **after kill -9 + reboot**: a child process wrote all ``N`` records with
  ``fsync="never"`` (no fsync since the topic was created) and was killed; then each
  partition head is made to look as if it had been written before an OS restart (the
  way tests/test_recovery.py simulates one), so recovery must validate every batch after
  the last durable point: the worst case.

``--huge`` adds 10M records (about 1 GiB of segments, a few minutes); it is off by
default because of the disk space and time it takes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from _harness import command_line, freeze_inputs, report, sample_records, table

import eventlog
from eventlog._head import FLAG_CLEAN, Head

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
BATCH = 1000

# A writer that reports when its records are appended, then waits to be killed.
WRITER = """
import sys, time
sys.path.insert(0, sys.argv[1])
from _harness import sample_records
import eventlog
path, count, create = sys.argv[2], int(sys.argv[3]), sys.argv[4] == "create"
pool = sample_records(10_000)
log = eventlog.open(path, fsync="never")
p = (log.create_topic("t") if create else log.topic("t")).partition(0)
for start in range(0, count, 1000):
    i = start % 10_000
    p.append(pool[i:i + min(1000, count - start)])
print("written", flush=True)
time.sleep(600)
"""


def append_records(path: str, pool: list[bytes], count: int) -> None:
    with eventlog.open(path, fsync="never") as log:
        p = (log.topic("t") if "t" in log else log.create_topic("t")).partition(0)
        for start in range(0, count, BATCH):
            i = start % len(pool)
            p.append(pool[i:i + min(BATCH, count - start)])


def write_and_kill(path: str, count: int, create: bool) -> None:
    """Run WRITER in a child process and SIGKILL it once its records are appended."""
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, BENCH, path, str(count), "create" if create else "-"],
        stdout=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        if line.strip() != "written":
            raise RuntimeError(f"writer child failed (exit {proc.wait()})")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()


def simulate_reboot(path: str) -> None:
    """Make every partition head look as if written before an OS restart."""
    topics = os.path.join(path, "topics")
    for topic in os.listdir(topics):
        for part in os.listdir(os.path.join(topics, topic)):
            head_path = os.path.join(topics, topic, part, "head")
            if not os.path.exists(head_path):
                continue
            head = Head(head_path)
            try:
                st = head.read()
                head.publish(st._replace(boot_id=st.boot_id ^ 0xFFFF,
                                         flags=st.flags & ~FLAG_CLEAN))
            finally:
                head.close()


def timed_open(path: str, expect: int) -> float:
    """Seconds from open() to holding the newest record; the close is not timed."""
    start = time.perf_counter()
    log = eventlog.open(path)
    p = log.topic("t").partition(0)
    newest = p.read(p.end_offset - 1)
    elapsed = time.perf_counter() - start
    assert p.end_offset >= expect and len(newest) == 1
    log.close()
    return elapsed


def stored(path: str) -> tuple[int, int]:
    """(bytes of stored batches, segments) of the partition."""
    with eventlog.open(path) as log:
        part = log.describe_topic("t").partitions[0]
        return part.size_bytes, part.segments


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000,1000000",
                        help="comma-separated record counts")
    parser.add_argument("--huge", action="store_true", help="also 10M records (~1 GiB)")
    parser.add_argument("--repeat", type=int, default=5, help="clean opens per size")
    parser.add_argument("--crash-repeat", type=int, default=3,
                        help="crashes per size and kind (each a child process)")
    parser.add_argument("--out")
    args = parser.parse_args()
    sizes = sorted({int(s) for s in args.sizes.split(",")} |
                   ({10_000_000} if args.huge else set()))
    pool = sample_records(10_000)
    freeze_inputs()

    tmp = tempfile.mkdtemp(prefix="eventlog-bench-open-")
    grown = os.path.join(tmp, "grown")   # grows from size to size
    rows, data = [], {"sizes": [], "clean_s": [], "crash_s": [], "reboot_s": [],
                      "log_bytes": []}
    try:
        have = 0
        for n in sizes:
            append_records(grown, pool, n - have)
            have = n
            clean = [timed_open(grown, have) for _ in range(args.repeat)]
            crash = []
            for _ in range(args.crash_repeat):
                write_and_kill(grown, BATCH, create=False)
                have += BATCH
                crash.append(timed_open(grown, have))
            reboot = []
            for i in range(args.crash_repeat):
                fresh = os.path.join(tmp, f"reboot-{n}-{i}")
                write_and_kill(fresh, n, create=True)
                simulate_reboot(fresh)
                reboot.append(timed_open(fresh, n))
                shutil.rmtree(fresh, ignore_errors=True)
            size, segments = stored(grown)
            medians = [statistics.median(clean), statistics.median(crash),
                       statistics.median(reboot)]
            rows.append((f"{n:,}", f"{size / 2**20:.1f}", f"{segments}",
                         *(f"{m * 1e3:.2f}" for m in medians)))
            data["sizes"].append(n)
            data["log_bytes"].append(size)
            for key, m in zip(("clean_s", "crash_s", "reboot_s"), medians, strict=True):
                data[key].append(m)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    first, last = data["clean_s"][0], data["clean_s"][-1]
    body = (
        "One partition, default 64 MiB segments, ~100-byte records; page cache warm. "
        f"Clean: median of {args.repeat} opens; after kill -9: median of "
        f"{args.crash_repeat} crashes each. Milliseconds from `eventlog.open()` to "
        "holding the newest record.\n\n"
        + table(rows, ("records", "MiB stored", "segments", "clean open, ms", "after kill -9, ms",
                       "after kill -9 + reboot, ms"))
        + f"\n\nClean open at {sizes[-1]:,} records vs at {sizes[0]:,}: "
          f"{last / first:.2f}x.\n")
    report("Open and recovery time vs log size", command_line(), body, args.out, data)


if __name__ == "__main__":
    main()
