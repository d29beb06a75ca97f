"""Crashes: producers and consumers killed with kill -9 at random points, under every
fsync mode, 200 cycles by default (EVENTLOG_SOAK=50 runs 10,000); and crashes in the
middle of recovery itself.

After every kill: no acknowledged record is missing, no record is present that was
never written, and no record is stored twice (the producers are idempotent and each
new process replays its producer id's records from the start). Consumers commit only
what they processed; at the end the group has seen every record at least once.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import threading
import time

import eventlog
from eventlog.serde import deserializer
from tests.conftest import run_python, soak, spawn_python
from tests.faults import crash, rebooted

STATS = {"cycles": 0, "kills": 0, "records_checked": 0}
unpack = deserializer("msgpack")
RECORDS_PER_ID = 400
IDS = (11, 12, 13)

PRODUCER = """
import sys, eventlog
path, fsync, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
with eventlog.open(path, fsync=fsync, fsync_interval_ms=5) as log:
    producer = eventlog.Producer(log, producer_id=pid, linger_ms=1, batch_bytes=500)
    for i in range(int(sys.argv[4])):
        producer.send("t", "%d:%d" % (pid, i), key=i % 5)
        if i % 25 == 24:
            producer.flush()
            print(i, flush=True)          # acknowledged: everything up to i is stored
    producer.close()
    print(int(sys.argv[4]) - 1, flush=True)
"""

CONSUMER = """
import sys, eventlog
path = sys.argv[1]
with eventlog.open(path) as log:
    c = eventlog.Consumer(log, "t", group_id="g", enable_auto_commit=False,
                          heartbeat_interval_ms=50)
    while True:
        records = c.poll(timeout=0.05)
        for r in records:
            print(r.partition, r.offset, r.value, flush=False)
        if records:
            sys.stdout.flush()
            c.commit()
"""


def _reader(proc, sink):
    for line in proc.stdout:
        if line.endswith("\n"):  # a process killed while writing leaves a partial line
            sink.append(line.strip())


def test_kill_9_producers_and_consumers_at_random_points(log_dir):
    rng = random.Random(int(os.environ.get("EVENTLOG_SEED", "42")))
    with eventlog.open(log_dir) as log:
        log.create_topic("t", partitions=3, segment_bytes=2048)
    acked = {pid: -1 for pid in IDS}
    consumed: list[tuple[int, int, str]] = []
    modes = ("never", "interval", "always")
    # 100 cycles by default (about 25 s on 2 cores: every producer id and fsync mode
    # is killed 30-odd times); EVENTLOG_SOAK=N runs N times as many
    for cycle in range(soak(100)):
        pid = IDS[cycle % len(IDS)]
        fsync = modes[cycle % 3]
        producer = spawn_python(PRODUCER, str(log_dir), fsync, str(pid),
                                str(RECORDS_PER_ID), stdout=-1, stderr=-1)
        consumer = spawn_python(CONSUMER, str(log_dir), stdout=-1, stderr=-1)
        out_p: list[str] = []
        out_c: list[str] = []
        readers = [threading.Thread(target=_reader, args=(producer, out_p)),
                   threading.Thread(target=_reader, args=(consumer, out_c))]
        for t in readers:
            t.start()
        time.sleep(rng.uniform(0.05, 0.35))
        first, second = (producer, consumer) if rng.random() < 0.5 else (consumer, producer)
        os.kill(first.pid, signal.SIGKILL)
        time.sleep(rng.uniform(0, 0.05))
        os.kill(second.pid, signal.SIGKILL)
        for proc in (producer, consumer):
            proc.wait()
        for t in readers:
            t.join()
        producer.stderr.close()
        consumer.stderr.close()
        if out_p:
            acked[pid] = max(acked[pid], int(out_p[-1]))
        for line in out_c:
            part, offset, value = line.split(" ", 2)
            consumed.append((int(part), int(offset), value))
        STATS["kills"] += 2
        with eventlog.open(log_dir) as log:
            seen: dict[int, list[int]] = {p: [] for p in IDS}
            ends = {}
            for part in log.topic("t").partitions:
                ends[part.id] = part.end_offset
                for r in part.read(0, max_records=10**6, max_bytes=1 << 30):
                    p, i = map(int, unpack(r.value).split(":"))  # only records written
                    assert p in IDS and 0 <= i < RECORDS_PER_ID
                    seen[p].append(i)
                    STATS["records_checked"] += 1
            for p in IDS:
                assert len(seen[p]) == len(set(seen[p])), f"cycle {cycle}: duplicates of {p}"
                assert set(range(acked[p] + 1)) <= set(seen[p]), \
                    f"cycle {cycle}: lost acknowledged records of producer {p}"
            committed_offsets = log.group_offsets("g") if "g" in log.groups() else {}
            for tp, committed in committed_offsets.items():   # (killed before joining)
                assert committed <= ends[tp.partition]
        STATS["cycles"] += 1
    # At the end the group reads everything: at-least-once with what it consumed.
    with eventlog.open(log_dir) as log:
        total = sum(p.end_offset for p in log.topic("t").partitions)
        with eventlog.Consumer(log, "t", group_id="g", consumer_timeout_ms=500) as c:
            rest = [(r.partition, r.offset) for r in c]
        everything = {(p, o) for p, o, _ in consumed} | set(rest)
        assert len(everything) == total
        for part, offset, value in consumed:                  # consumers returned only
            record = log.topic("t").partition(part).read(offset, max_records=1)[0]
            assert unpack(record.value) == value


RECOVERER = """
import os, sys, eventlog
from eventlog import _head
_head._boot_id = _head.current_boot_id() ^ 0xBEEF     # as after an OS restart
crash_at = int(sys.argv[2])
calls = [0]
for name in ("replace", "rename", "unlink", "pwrite", "write", "fsync", "fdatasync",
             "ftruncate"):
    real = getattr(os, name)
    def crashing(*args, _real=real, **kwargs):
        calls[0] += 1
        if calls[0] == crash_at:
            os._exit(137)
        return _real(*args, **kwargs)
    setattr(os, name, crashing)
with eventlog.open(sys.argv[1]) as log:
    print(log.topic("t").partition(0).end_offset)
"""


def test_a_crash_during_recovery_then_recovery_again(tmp_path):
    """Recovery is idempotent, including when it is itself killed at any step."""
    template = tmp_path / "template"
    log = eventlog.open(template, fsync="always", segment_bytes=300)
    p = log.create_topic("t", segment_bytes=300).partition(0)
    for i in range(20):
        p.append([b"r%02d" % i])
    state = p._log.state()
    segment = p._log._segments[state.active_base].path
    position = state.active_position
    crash(log)
    with open(segment, "r+b") as fh:           # a torn tail after the durable point
        fh.seek(position)
        fh.write(b"EvLg" + os.urandom(80))
    expected = [b"r%02d" % i for i in range(20)]
    crash_at = 1
    while True:
        work = tmp_path / f"crash-{crash_at}"
        shutil.copytree(template, work)
        first = run_python(RECOVERER, str(work), str(crash_at), check=False)
        with rebooted(), eventlog.open(work) as log:   # recover again, from whatever was left
            q = log.topic("t").partition(0)
            assert [r.value for r in q.read(0, max_records=100)] == expected, crash_at
            assert log.check().ok
        shutil.rmtree(work)
        STATS["kills"] += first.returncode == 137
        if first.returncode == 0:
            assert first.stdout.strip() == "20"
            break
        assert first.returncode == 137, first.stderr
        crash_at += 1
    assert crash_at > 3


KILLED_BEFORE_INDEXING = """
import os, signal, sys, eventlog
from eventlog import _segment
calls = 0
index_batch = _segment.Segment.index_batch
def index_then_die(self, *args):
    global calls
    calls += 1
    if calls == int(sys.argv[2]):   # the batch is published, its index entry not yet
        os.kill(os.getpid(), signal.SIGKILL)
    index_batch(self, *args)
_segment.Segment.index_batch = index_then_die
with eventlog.open(sys.argv[1]) as log:
    partition = log.topic("events").partition(0)
    for i in range(1000):
        partition.append([b"event-%d" % i])
"""


def test_a_writer_killed_between_publish_and_index_leaves_a_log_that_checks_out(log_dir):
    # Every batch of 2,000 bytes or more gets an index entry (index_interval_bytes), so
    # the kill on the 60th leaves the active segment's index one entry short.
    with eventlog.open(log_dir) as log:
        log.create_topic("events", index_interval_bytes=1)
    proc = run_python(KILLED_BEFORE_INDEXING, str(log_dir), "60", check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    with eventlog.open(log_dir) as log:
        partition = log.topic("events").partition(0)
        assert partition.end_offset == 60    # published: acknowledged, and kept
        assert [r.value for r in partition.read(0, max_records=100)] == \
            [b"event-%d" % i for i in range(60)]
        assert partition.offset_for_time(0) == 0
        report = log.check()
        assert report.ok, report.problems
        partition.append([b"after"])         # the next writer indexes what was missing
        assert log.check().ok
        assert partition.read(59, max_records=2)[-1].value == b"after"
