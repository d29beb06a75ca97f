"""Scaling with the number of partitions and the number of producer processes.

    python benchmarks/bench_scaling.py [--records 200000] [--partitions 1,4,16,64]
                                       [--processes 1,2,3,4] [--repeat 5]
                                       [--process-repeat N] [--latency 500]
                                       [--idle 1,64,256,1024] [--out FILE]

Partitions: one topic with P partitions; ~100-byte msgpack dicts keyed by user (10,000
distinct keys, so every partition gets records), sent with ``send()`` + ``flush()`` and
with ``send_batch()``, then read back by one ``Consumer`` (default settings, in a
group). Repeats of the different P are interleaved. The sends are timed in steady
state: before the clock starts each partition has taken one record since the log was
opened, because the first write to a partition after an open durably clears its
clean-shutdown mark (one fsync of its head, a few ms each: see docs/durability.md);
``send_batch()`` is also timed as the very first write after the open, which pays
those fsyncs, one per partition.

Latency by partitions: one record at a time (``send()`` + ``flush()``, keyed, 0.5 ms
apart) to a topic of P partitions, read by a consumer thread blocked in ``poll()`` on
all P (a group member).

Producer processes: K processes share the ``--records`` between them, each sending its
share with ``send()`` + ``flush()`` (``fsync="never"``) into a topic of 4 partitions:
either each process to its own partition (``partition=k % 4``), or all of them to
partition 0 (they take turns on its writer lock). Each process builds its records,
reports ready, and starts on a common signal; the throughput is all records over the
time from the signal to the last process done. The machine's core count bounds it.

Idle partitions: a log holding one topic of N empty partitions, opened by a fresh
process: the time of ``eventlog.open()``, of a group ``Consumer`` on the topic and its
first ``poll(timeout=0)`` (which maps every partition's head), and the process's
resident memory and open file descriptors after it, against the same for N = 1.
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
import threading
import time

from _harness import Result, command_line, freeze_inputs, interleave, report, sample_dicts, table
from bench_consumer import consumer_poll

import eventlog

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)


def _touch_partitions(producer: eventlog.Producer, partitions: int, topic: str = "t"
                      ) -> None:
    """One record to each partition: the first write after an open pays a head fsync."""
    for p in range(partitions):
        producer.send(topic, None, partition=p)
    producer.flush()


def keyed_send(dicts, partitions: int):
    def run(tmp: str):
        with eventlog.open(tmp, fsync="never") as log:
            log.create_topic("t", partitions=partitions)
            producer = eventlog.Producer(log)
            _touch_partitions(producer, partitions)
            send = producer.send
            start = time.perf_counter()
            for d in dicts:
                send("t", d, key=d["user"])
            producer.flush()
            yield start
            producer.close()
    return run


def keyed_batch(dicts, partitions: int, first_write: bool = False):
    keys = [d["user"] for d in dicts]

    def run(tmp: str):
        with eventlog.open(tmp, fsync="never") as log:
            log.create_topic("t", partitions=partitions)
            producer = eventlog.Producer(log)
            if not first_write:
                _touch_partitions(producer, partitions)
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


def latency_by_partitions(path: str, partitions: int, count: int) -> list[float]:
    """Seconds from ``send()`` to the consumer thread holding the record, one record at
    a time (``send()`` + ``flush()``, keyed, 0.5 ms apart) over ``partitions``."""
    samples: list[float] = []
    with eventlog.open(path, fsync="never") as log:
        log.create_topic("lat", partitions=partitions)
        consumer = eventlog.Consumer(log, "lat", group_id="latency")
        consumer.poll(timeout=0)
        ready = threading.Event()

        def consume() -> None:
            ready.set()
            while len(samples) < count:
                for record in consumer.poll(timeout=1):
                    if record.value is not None:  # (not one of _touch_partitions')
                        samples.append((time.monotonic_ns() - record.value) / 1e9)

        thread = threading.Thread(target=consume)
        thread.start()
        ready.wait()
        with eventlog.Producer(log) as producer:
            _touch_partitions(producer, partitions, "lat")
            for i in range(count):
                time.sleep(0.0005)
                producer.send("lat", time.monotonic_ns(), key=i)
                producer.flush()
        thread.join()
        consumer.close()
    return samples


IDLE = """
import json, os, sys, time
t0 = time.perf_counter()
import eventlog
t1 = time.perf_counter()
log = eventlog.open(sys.argv[1])
t2 = time.perf_counter()
consumer = eventlog.Consumer(log, "idle", group_id="idle")
consumer.poll(timeout=0)
t3 = time.perf_counter()
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(json.dumps({"open_s": t2 - t1, "consumer_s": t3 - t2,
                  "rss_kib": int(status["VmRSS"].split()[0]),
                  "fds": len(os.listdir("/proc/self/fd"))}))
consumer.close()
log.close()
"""


def idle_partitions(path: str, partitions: int, repeat: int) -> dict[str, float]:
    """Medians over fresh processes: open time, consumer-and-first-poll time, RSS, fds,
    for a log of one topic of ``partitions`` empty partitions."""
    with eventlog.open(path, fsync="never") as log:
        log.create_topic("idle", partitions=partitions)
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))
    runs = [json.loads(subprocess.run([sys.executable, "-c", IDLE, path], env=env,
                                      capture_output=True, text=True,
                                      check=True).stdout)
            for _ in range(repeat)]
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def _pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--partitions", default="1,4,16,64")
    parser.add_argument("--processes", default="1,2,3,4")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--process-repeat", type=int, default=None,
                        help="repeats of the producer-process runs (default: --repeat)")
    parser.add_argument("--latency", type=int, default=500,
                        help="latency samples per partition count")
    parser.add_argument("--idle", default="1,64,256,1024",
                        help="partition counts of the idle-partitions runs")
    parser.add_argument("--out")
    args = parser.parse_args()
    n, repeat = args.records, args.repeat
    partition_counts = [int(p) for p in args.partitions.split(",")]
    process_counts = [int(p) for p in args.processes.split(",")]
    dicts = sample_dicts(n)
    freeze_inputs()

    runs, results = [], {}
    for p in partition_counts:
        for label, make in (("send", keyed_send), ("batch", keyed_batch),
                            ("first", lambda d, q: keyed_batch(d, q, first_write=True))):
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

        latency = {p: latency_by_partitions(os.path.join(tmp, f"lat{p}"), p, args.latency)
                   for p in partition_counts}
        idle_counts = [int(p) for p in args.idle.split(",")]
        idle = {p: idle_partitions(os.path.join(tmp, f"idle{p}"), p, max(1, repeat))
                for p in idle_counts}

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
    part_rows = [(f"{p}", *(f"{rate[f'{op} {p}'] / 1e6:.3f}"
                            for op in ("send", "batch", "first", "poll")),
                  f"{rate[f'batch {partition_counts[0]}'] / rate[f'batch {p}']:.2f}x",
                  f"{_pct(latency[p], 0.5) * 1e6:.0f}", f"{_pct(latency[p], 0.99) * 1e6:.0f}")
                 for p in partition_counts]
    base_idle = idle[idle_counts[0]]
    idle_rows = [(f"{p}", f"{idle[p]['open_s'] * 1e3:.1f}", f"{idle[p]['consumer_s'] * 1e3:.1f}",
                  f"{idle[p]['rss_kib'] / 1024:.1f}",
                  f"{(idle[p]['rss_kib'] - base_idle['rss_kib']) / max(1, p - idle_counts[0]):.0f}",
                  f"{idle[p]['fds']:.0f}")
                 for p in idle_counts]
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
                            "send_batch(), first write", "Consumer.poll()",
                            f"send_batch() time vs {partition_counts[0]}",
                            "latency p50 µs", "latency p99 µs"))
        + f"\n\n### Idle partitions (a fresh process opens a log of one topic with N "
          f"empty partitions; medians of {max(1, repeat)} processes)\n\n"
        + table(idle_rows, ("partitions", "eventlog.open() ms",
                            "group Consumer + first poll ms", "VmRSS MiB",
                            f"KiB per partition over {idle_counts[0]}", "open fds"))
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
        "first": [rate[f"first {p}"] for p in partition_counts],
        "latency_p50_us": [_pct(latency[p], 0.5) * 1e6 for p in partition_counts],
        "latency_p99_us": [_pct(latency[p], 0.99) * 1e6 for p in partition_counts],
        "idle": {str(p): v for p, v in idle.items()},
        "processes": process_counts,
        "own": [proc_rate[(k, False)] for k in process_counts],
        "shared": [proc_rate[(k, True)] for k in process_counts],
    }
    report("Scaling: partitions and producer processes", command_line(), body, args.out, data)


if __name__ == "__main__":
    main()
