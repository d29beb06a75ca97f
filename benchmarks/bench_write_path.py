"""A/B of two source trees on the write side of one record's latency, runs alternated.

    git -C /work/main archive main src | tar -x -C /tmp/before
    python benchmarks/bench_write_path.py --before /tmp/before/src [--rounds 5]

Each round runs, in a fresh process per tree (before, then after):

- ``send()`` + ``flush()`` of one record, warm, in one process (default producer,
  ``fsync="never"``: the loop of ``bench_consumer.one_record_costs`` without its
  consumer), median of ``--records``;
- ``PartitionBackend.append`` of an encoded one-record batch, the storage part of it;
- the cross-process breakdown of issue 16's latency: a producer process sends one
  record every 0.5 ms (``send()`` + ``flush()``, defaults) while a consumer process
  waits in ``poll(timeout=5)`` (defaults, a group). The producer stamps the start and
  end of ``send``, the call and return of the futex wake inside ``flush`` (that is,
  right after the head publish) and the return of ``flush``; the consumer stamps the
  return of its futex wait and of ``poll``. Medians of each stage, cold caches.

It prints one line per tree per round (a slower moment of the machine shows as one
odd round) and the medians over the rounds. Not run by ``run_all.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)

WARM = """
import json, statistics, sys, tempfile, time
sys.path.insert(0, sys.argv[1])
import eventlog
from eventlog._format import encode_batch
assert eventlog.__file__.startswith(sys.argv[1]), eventlog.__file__
count = int(sys.argv[2])
clock = time.perf_counter
sends, appends = [], []
with eventlog.open(tempfile.mkdtemp(), fsync="never") as log:
    log.create_topic("one")
    log.create_topic("raw")
    with eventlog.Producer(log) as producer:
        for _ in range(count):
            t0 = clock()
            producer.send("one", 1)
            producer.flush()
            sends.append(clock() - t0)
    part = log.backend.partition("raw", 0)
    batch = encode_batch([b"\\x01"], None, 1_700_000_000_000)
    for _ in range(count):
        t0 = clock()
        part.append(batch)
        appends.append(clock() - t0)
print(json.dumps({"send_flush_us": statistics.median(sends) * 1e6,
                  "append_us": statistics.median(appends) * 1e6}))
"""

PRODUCER = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
import eventlog
from eventlog import _notify
path, count = sys.argv[2], int(sys.argv[3])
now = time.monotonic_ns
woken = []
wake = _notify.wake
def stamped_wake(counter, waiters):
    start = now()
    wake(counter, waiters)
    woken.append((start, now()))
_notify.wake = stamped_wake
out = []
with eventlog.open(path, fsync="never") as log, eventlog.Producer(log) as producer:
    producer.send("lat", 0)
    producer.flush()
    time.sleep(0.5)
    for _ in range(count):
        time.sleep(0.0005)
        t0 = now()
        producer.send("lat", t0)
        t1 = now()
        producer.flush()
        t2 = now()
        out.append((t0, t1, woken[-1][0], woken[-1][1], t2))
print(json.dumps(out))
"""

CONSUMER = """
import json, os, subprocess, sys, tempfile, time
sys.path.insert(0, sys.argv[1])
import eventlog
from eventlog import _fetcher, _notify
count = int(sys.argv[2])
now = time.monotonic_ns
returns = []
wait = _notify.wait
def stamped_wait(*args, **kwargs):
    result = wait(*args, **kwargs)
    returns.append(now())
    return result
_notify.wait = _fetcher._notify.wait = stamped_wait
path = os.path.join(tempfile.mkdtemp(), "log")
got = {}
with eventlog.open(path, fsync="never") as log:
    log.create_topic("lat")
    with eventlog.Consumer(log, "lat", group_id="g") as consumer:
        consumer.poll(timeout=0)
        proc = subprocess.Popen([sys.executable, "-c", sys.argv[3], sys.argv[1], path,
                                 str(count)], stdout=subprocess.PIPE)
        while len(got) < count + 1:
            for record in consumer.poll(timeout=5):
                got[record.value] = (returns[-1] if returns else 0, now())
        out = json.loads(proc.communicate()[0])
assert returns, "the consumer never slept in _notify.wait: the stamps would be wrong"
stages = {"send": [], "flush until the wake": [], "the wake (futex syscall)": [],
          "flush after the wake": [], "wake to consumer's futex return": [],
          "futex return to poll return": [], "total": []}
for t0, t1, wake_start, wake_end, t2 in out:
    futex_return, polled = got[t0]
    for name, ns in zip(stages, (t1 - t0, wake_start - t1, wake_end - wake_start,
                                 t2 - wake_end, futex_return - wake_end,
                                 polled - futex_return, polled - t0), strict=True):
        stages[name].append(ns / 1e3)
print(json.dumps({name: sorted(v)[len(v) // 2] for name, v in stages.items()}))
"""


def run(code: str, *args: str) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=BENCH)
    out = subprocess.run([sys.executable, "-c", code, *args], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the src directory of the old tree")
    parser.add_argument("--after", default=os.path.join(ROOT, "src"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--records", type=int, default=5000, help="warm samples per round")
    parser.add_argument("--latency", type=int, default=1000,
                        help="cross-process samples per round")
    args = parser.parse_args()
    trees = {"before": os.path.abspath(args.before), "after": os.path.abspath(args.after)}
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    for i in range(args.rounds):
        for name, tree in trees.items():
            row = run(WARM, tree, str(args.records))
            row.update(run(CONSUMER, tree, str(args.latency), PRODUCER))
            rows[name].append(row)
            print(f"round {i + 1} {name:6s} " + "  ".join(
                f"{k} {v:.1f}" for k, v in row.items()), flush=True)
    print(f"\nmedians over {args.rounds} rounds (us):")
    print("| stage | before | after |\n|---|---|---|")
    for key in rows["before"][0]:
        medians = [statistics.median(r[key] for r in rows[name]) for name in trees]
        print(f"| {key} | {medians[0]:.1f} | {medians[1]:.1f} |")


if __name__ == "__main__":
    main()
