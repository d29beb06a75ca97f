"""A/B of two source trees on issue 16's ratios, the runs alternated.

    git archive integ src | tar -x -C /tmp/before
    python benchmarks/bench_ab.py --before /tmp/before/src [--rounds 3] [--records 200000]

Each round runs, in a fresh process per tree (``PYTHONPATH`` set to the tree, before
then after): ``Consumer.poll()`` (defaults, a group) against the tight raw read loop of
``bench_consumer.py`` (medians of 3 each), and a keyed ``send_batch()`` into 64
partitions against one (``bench_scaling.py``'s workload, medians of 5). It prints each
round's ratios, so a slower moment of the machine shows as one odd round, not as a
difference between the trees. Not run by ``run_all.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)

ONE_ROUND = """
import json, os, statistics, sys, tempfile, time
sys.path.insert(0, sys.argv[1])
import eventlog
assert eventlog.__file__.startswith(sys.argv[1]), eventlog.__file__
from _harness import freeze_inputs, sample_dicts, sample_records
from bench_consumer import _LEN, consumer_poll, raw_read
from bench_scaling import keyed_batch
n = int(sys.argv[2])
tmp = tempfile.mkdtemp(prefix="eventlog-bench-ab-")
records = sample_records(n)
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
dicts = sample_dicts(n)
freeze_inputs()

def raw_s():
    start = time.perf_counter()
    raw_read(raw_path, n)("")
    return time.perf_counter() - start

def poll_s():
    gen = consumer_poll(log_path, n)("")
    start = next(gen)
    end = time.perf_counter()
    for _ in gen:
        pass
    return end - start

def batch_s(partitions, i):
    gen = keyed_batch(dicts, partitions)(os.path.join(tmp, f"b{partitions}-{i}"))
    start = next(gen)
    end = time.perf_counter()
    for _ in gen:
        pass
    return end - start

raw = statistics.median(raw_s() for _ in range(3))
poll = statistics.median(poll_s() for _ in range(3))
one = statistics.median(batch_s(1, i) for i in range(5))
many = statistics.median(batch_s(64, i) for i in range(5))
print(json.dumps({"poll_vs_raw": raw / poll, "batch_64_vs_1": many / one,
                  "batch_64_ms": many * 1e3}))
"""


def one_round(tree: str, records: int) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([tree, BENCH]))
    out = subprocess.run([sys.executable, "-c", ONE_ROUND, tree, str(records)], env=env,
                         cwd=BENCH, capture_output=True, text=True, check=True).stdout
    got: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return got


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the src directory of the before tree")
    parser.add_argument("--after", default=os.path.join(ROOT, "src"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--records", type=int, default=200_000)
    args = parser.parse_args()
    print("| round | tree | poll() vs raw loop | keyed send_batch 64 vs 1 partitions | 64: ms |")
    print("|---|---|---|---|---|")
    for r in range(args.rounds):
        for name, tree in (("before", args.before), ("after", args.after)):
            got = one_round(tree, args.records)
            print(f"| {r + 1} | {name} | {got['poll_vs_raw']:.2f}x | "
                  f"{got['batch_64_vs_1']:.2f}x | {got['batch_64_ms']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
