"""Exactly-once consume-transform-produce across kill -9: worker processes in a group
read ``in``, write ``out`` and commit their input offsets in one transaction each;
they are killed at random instants, over and over, while a producer feeds the input.
The read_committed output must hold every input's result exactly once, and the
group's committed offsets must end at the input's end offsets."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

import eventlog
from eventlog import TopicPartition
from tests.conftest import ROOT, soak

WORKER = r"""
import sys, time, eventlog
from eventlog import TopicPartition
log = eventlog.open(sys.argv[1])
consumer = eventlog.Consumer(log, "in", group_id="pipe", enable_auto_commit=False,
                             isolation_level="read_committed", session_timeout_ms=2000,
                             heartbeat_interval_ms=100)
producer = eventlog.Producer(log, transactional_id="worker-" + sys.argv[2],
                             transaction_timeout_ms=5000, linger_ms=0)
producer.init_transactions()
print("up", flush=True)
while True:
    records = consumer.poll(timeout=0.2, max_records=7)
    if not records:
        continue
    with producer.transaction():
        nexts = {}
        for r in records:
            producer.send("out", {"input": r.value, "by": sys.argv[2]}, key=r.key)
            time.sleep(0.003)   # the work: a kill often lands inside a transaction
            nexts[TopicPartition(r.topic, r.partition)] = r.offset + 1
        producer.send_offsets_to_transaction(nexts, "pipe")
"""

FEEDER = r"""
import sys, time, eventlog
log = eventlog.open(sys.argv[1])
total = int(sys.argv[2])
with eventlog.Producer(log, linger_ms=0) as p:
    for i in range(total):
        p.send("in", i, key=i)
        if i % 5 == 4:
            p.flush()
            time.sleep(0.05)
print("fed", flush=True)
"""


def _start(code: str, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    env.pop("EVENTLOG_TXN_CRASH_AT", None)
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _committed_output(log) -> list[int]:
    with eventlog.Consumer(log, "out", isolation_level="read_committed") as c:
        out = []
        while batch := c.poll(timeout=0.3, max_records=10_000):
            out.extend(r.value["input"] for r in batch)
        return out


@pytest.mark.parametrize("workers", [1, 3])
def test_pipeline_is_exactly_once_across_kill_9(tmp_path, workers):
    rng = random.Random(workers)
    path = str(tmp_path / "log")
    with eventlog.open(path) as log:
        log.create_topic("in", partitions=3)
        log.create_topic("out", partitions=2)
    total = 300 * soak(1)
    procs = {k: _start(WORKER, path, str(k)) for k in range(workers)}
    feeder = _start(FEEDER, path, str(total))
    kills = 0
    try:
        deadline = time.monotonic() + 60 * soak(1)
        while (kills < soak(5) * workers or feeder.poll() is None) \
                and time.monotonic() < deadline:
            time.sleep(rng.uniform(0.1, 0.7))
            k = rng.randrange(workers)
            procs[k].send_signal(signal.SIGKILL)
            procs[k].wait()
            kills += 1
            procs[k] = _start(WORKER, path, str(k))
        assert feeder.wait(timeout=60) == 0, feeder.stderr.read() if feeder.stderr else ""
        with eventlog.open(path) as log:
            ends = {TopicPartition("in", p): log.topic("in").partition(p).end_offset
                    for p in range(3)}
            done = time.monotonic() + 60
            while time.monotonic() < done:
                committed = log.group_offsets("pipe") if "pipe" in log.groups() else {}
                if committed == ends:
                    break
                time.sleep(0.2)
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        if feeder.poll() is None:
            feeder.kill()
            feeder.wait()
    with eventlog.open(path) as log:
        for k in range(workers):   # what the last kills left open is aborted here
            with eventlog.Producer(log, transactional_id=f"worker-{k}") as p:
                p.init_transactions()
        assert log.group_offsets("pipe") == ends
        output = _committed_output(log)
        counts = Counter(output)
        assert sorted(counts) == list(range(total)), "an input has no result"
        assert max(counts.values()) == 1, [v for v, n in counts.items() if n > 1][:10]
        unfiltered = eventlog.Consumer(log, "out")
        raw = []
        while batch := unfiltered.poll(timeout=0.3, max_records=10_000):
            raw.extend(batch)
        unfiltered.close()
        assert len(raw) >= len(output)
    assert kills >= soak(5) * workers
