"""Scaling with the number of partitions and the number of producer processes.

    python benchmarks/bench_scaling.py [--records 200000] [--partitions 1,4,16,64]
                                       [--processes 1,2,4] [--repeat 5]
                                       [--process-repeat N] [--out FILE]

Partitions: one topic with P partitions; ~100-byte msgpack dicts keyed by user (10,000
distinct keys, so every partition gets records), sent with ``send()`` + ``flush()`` and
with ``send_batch()``, then read back by one ``Consumer`` (``max_poll_records=10_000``).
Repeats of the different P are interleaved.

Producer processes: K processes share the ``--records`` between them, each sending its
share with ``send()`` + ``flush()`` (``fsync="never"``) into a topic of 4 partitions:
either each process to its own partition (``partition=k % 4``), or all of them to
partition 0 (they take turns on its writer lock). Each process builds its records,
reports ready, and starts on a common signal; the throughput is all records over the
time from the signal to the last process done. The machine's core count bounds it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from _harness import Result, command_line, freeze_inputs, interleave, report, sample_dicts, table
from bench_consumer import consumer_poll

import eventlog

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)


def keyed_send(dicts, partitions: int):
    def run(tmp: str):
        with eventlog.open(tmp, fsync="never") as log:
            log.create_topic("t", partitions=partitions)
            producer = eventlog.Producer(log)
            send = producer.send
            start = time.perf_counter()
            for d in dicts:
                send("t", d, key=d["user"])
            producer.flush()
            yield start
            producer.close()
    return run


def keyed_batch(dicts, partitions: int):
    keys = [d["user"] for d in dicts]

    def run(tmp: str):
        with eventlog.open(tmp, fsync="never") as log:
            log.create_topic("t", partitions=partitions)
            producer = eventlog.Producer(log)
            start = time.perf_counter()
            producer.send_batch("t", dicts, keys=keys)
            yield start
            producer.close()
    return run


PRODUCER = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from _harness import freeze_inputs, sample_dicts
import eventlog
path, count, index, shared = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
dicts = sample_dicts(count, seed=index)
freeze_inputs()
partition = 0 if shared == "shared" else index % 4
with eventlog.open(path, fsync="never") as log:
    producer = eventlog.Producer(log)
    send = producer.send
    print("ready", flush=True)
    sys.stdin.readline()
    start = time.monotonic()
    for d in dicts:
        send("t", d, partition=partition)
    producer.flush()
    end = time.monotonic()
    producer.close()
print(json.dumps([start, end]), flush=True)
"""


def producer_processes(path: str, total: int, processes: int, shared: bool) -> float:
    """Records per second of ``processes`` producers sharing ``total`` records."""
    with eventlog.open(path, fsync="never") as log:
        log.create_topic("t", partitions=4)
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))
    share = total // processes
    procs = [subprocess.Popen(
        [sys.executable, "-c", PRODUCER, BENCH, path, str(share), str(k),
         "shared" if shared else "own"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        for k in range(processes)]
    try:
        for proc in procs:
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError("a producer process failed to start")
        go = time.monotonic()
        for proc in procs:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        ends = []
        for proc in procs:
            _, end = json.loads(proc.stdout.readline())
            ends.append(end)
    finally:
        for proc in procs:
            proc.stdin.close()
            proc.wait()
            proc.stdout.close()
    with eventlog.open(path) as log:
        stored = sum(p.end_offset for p in log.topic("t").partitions)
    assert stored == share * processes, (stored, share * processes)
    return share * processes / (max(ends) - go)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--partitions", default="1,4,16,64")
    parser.add_argument("--processes", default="1,2,4")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--process-repeat", type=int, default=None,
                        help="repeats of the producer-process runs (default: --repeat)")
    parser.add_argument("--out")
    args = parser.parse_args()
    n, repeat = args.records, args.repeat
    partition_counts = [int(p) for p in args.partitions.split(",")]
    process_counts = [int(p) for p in args.processes.split(",")]
    dicts = sample_dicts(n)
    freeze_inputs()

    runs, results = [], {}
    for p in partition_counts:
        for label, make in (("send", keyed_send), ("batch", keyed_batch)):
            name = f"{label} {p}"
            results[name] = Result(name, n)
            runs.append((name, make(dicts, p)))
    interleave(results, runs, repeat)

    tmp = tempfile.mkdtemp(prefix="eventlog-bench-scaling-")
    try:
        readers = []
        for p in partition_counts:
            path = os.path.join(tmp, f"p{p}")
            os.mkdir(path)
            for _ in keyed_batch(dicts, p)(path):
                pass
            results[f"poll {p}"] = Result(f"poll {p}", n)
            readers.append((f"poll {p}", consumer_poll(path, n)))
        interleave(results, readers, repeat)

        procs: dict[tuple[int, bool], list[float]] = {
            (k, shared): [] for k in process_counts for shared in (False, True)}
        for _ in range(args.process_repeat or repeat):
            for (k, shared), rates in procs.items():
                path = os.path.join(tmp, f"procs-{k}-{shared}")
                rates.append(producer_processes(path, n, k, shared))
                shutil.rmtree(path, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    rate = {name: r.rate for name, r in results.items()}
    part_rows = [(f"{p}", *(f"{rate[f'{op} {p}'] / 1e6:.3f}" for op in ("send", "batch", "poll")))
                 for p in partition_counts]
    proc_rate = {key: statistics.median(v) for key, v in procs.items()}
    one = proc_rate.get((1, False)) or next(iter(proc_rate.values()))
    proc_rows = [(f"{k}", f"{proc_rate[(k, False)] / 1e6:.3f}",
                  f"{proc_rate[(k, False)] / one:.2f}x",
                  f"{proc_rate[(k, True)] / 1e6:.3f}", f"{proc_rate[(k, True)] / one:.2f}x")
                 for k in process_counts]
    body = (
        f"{n} msgpack dicts per run, fsync=\"never\"; medians of {repeat} runs; M records/s."
        "\n\n### Partitions (keyed records, one producer, one consumer)\n\n"
        + table(part_rows, ("partitions", "send() + flush()", "send_batch()",
                            "Consumer.poll()"))
        + f"\n\n### Producer processes ({os.cpu_count()} cores; send() + flush(), "
          f"records shared between the processes; medians of "
          f"{args.process_repeat or repeat} runs)\n\n"
        + table(proc_rows, ("processes", "own partition each", "vs 1 process",
                            "all on partition 0", "vs 1 process")))
    data = {
        "partitions": partition_counts,
        "send": [rate[f"send {p}"] for p in partition_counts],
        "batch": [rate[f"batch {p}"] for p in partition_counts],
        "poll": [rate[f"poll {p}"] for p in partition_counts],
        "processes": process_counts,
        "own": [proc_rate[(k, False)] for k in process_counts],
        "shared": [proc_rate[(k, True)] for k in process_counts],
    }
    report("Scaling: partitions and producer processes", command_line(), body, args.out, data)


if __name__ == "__main__":
    main()
