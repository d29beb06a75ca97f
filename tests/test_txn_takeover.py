"""A group member that takes over the input partitions of a transactional worker killed
during its commit starts where the worker's transaction leaves the group: after the
decision to commit, at the offsets it moved (it never redoes committed work); before it,
at the old offsets (the aborted work is redone). Kill at every step of the commit."""

from __future__ import annotations

import os
import subprocess
import sys

import eventlog
from eventlog import TopicPartition
from tests.conftest import ROOT

WORKER = r"""
import sys, eventlog
from eventlog import TopicPartition
log = eventlog.open(sys.argv[1])
consumer = eventlog.Consumer(log, "in", group_id="pipe", enable_auto_commit=False,
                             isolation_level="read_committed")
producer = eventlog.Producer(log, transactional_id="worker", linger_ms=0)
producer.init_transactions()
records = []
while len(records) < 6:
    records.extend(consumer.poll(timeout=1))
producer.begin_transaction()
for r in records:
    producer.send("out", r.value * 10)
producer.send_offsets_to_transaction({TopicPartition("in", 0): 6}, "pipe")
print("ready", flush=True)
producer.commit_transaction()
print("done", flush=True)
"""


def _run_worker(path, step: int) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), EVENTLOG_TXN_CRASH_AT=str(step))
    return subprocess.run([sys.executable, "-c", WORKER, str(path)], capture_output=True,
                          text=True, timeout=60, env=env)


def test_a_new_owner_never_redoes_a_decided_commit(tmp_path):
    outcomes = []
    for step in range(1, 40):
        path = tmp_path / f"step-{step}"
        with eventlog.open(path) as log:
            log.create_topic("in")
            log.create_topic("out")
            with eventlog.Producer(log) as feed:
                for i in range(6):
                    feed.send("in", i)
        proc = _run_worker(path, step)
        assert proc.returncode in (0, 86), proc.stderr
        with eventlog.open(path) as log:
            # The successor worker, before its producer recovers anything: what does
            # the group hand it to do?
            with eventlog.Consumer(log, "in", group_id="pipe", enable_auto_commit=False,
                                   isolation_level="read_committed") as successor:
                redo = []
                while batch := successor.poll(timeout=0.5):
                    redo.extend(r.value for r in batch)
            with eventlog.Producer(log, transactional_id="worker") as producer:
                producer.init_transactions()   # finishes whatever the kill left
            with eventlog.Consumer(log, "out", isolation_level="read_committed") as c:
                done = []
                while batch := c.poll(timeout=0.3):
                    done.extend(r.value // 10 for r in batch)
            assert sorted(done + redo) == list(range(6)), (step, done, redo)
            if done:
                assert log.group_offsets("pipe") == {TopicPartition("in", 0): 6}
                outcomes.append("committed")
            else:
                outcomes.append("redone")
        if "done" in proc.stdout:
            break
    else:
        raise AssertionError("the commit never completed")
    assert "redone" in outcomes and "committed" in outcomes, outcomes
