"""Log compaction: latest value per key, tombstones, offsets, crash-safe swaps."""

from __future__ import annotations

import os
import random
import shutil
import signal
import tempfile
import time

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import eventlog
from tests.conftest import SOAK, run_python, soak, spawn_python


class Clock:
    def __init__(self, now=1_000_000):
        self.now = now

    def __call__(self):
        return self.now


def scan(part):
    """key -> (offset, value) of the last record of each key, reading from the start;
    also checks that offsets only increase."""
    latest = {}
    last = -1
    for r in part.read(part.start_offset, max_records=10**7, max_bytes=1 << 30):
        assert r.offset > last
        last = r.offset
        if r.key is not None:
            latest[r.key] = (r.offset, r.value)
    return latest


def put(part, key, value, clock=None):
    offset = part.append([value], keys=[key])
    if clock is not None:
        clock.now += 1
    return offset


def test_compaction_keeps_the_latest_value_of_each_key(log_dir):
    with eventlog.open(log_dir, segment_bytes=300) as log:
        p = log.create_topic("t", cleanup_policy="compact",
                             min_cleanable_dirty_ratio=1.0).partition(0)
        offsets = {}
        for round_ in range(10):
            for k in range(5):
                offsets[b"k%d" % k] = put(p, b"k%d" % k, b"v%d-%d" % (k, round_))
        before = len(p.read(0, max_records=10**6))
        removed = log.compact()
        after = p.read(0, max_records=10**6)
        assert removed > 0 and len(after) == before - removed
        latest = scan(p)
        assert {k: v for k, (_, v) in latest.items()} == {b"k%d" % k: b"v%d-9" % k
                                                           for k in range(5)}
        assert {k: o for k, (o, _) in latest.items()} == offsets   # offsets preserved
        assert p.end_offset == 50
        p._log._check()
        assert log.check().ok


def test_tombstones_go_after_delete_retention_ms(log_dir):
    clock = Clock()
    with eventlog.open(log_dir, clock=clock, segment_bytes=200) as log:
        p = log.create_topic("t", cleanup_policy="compact", delete_retention_ms=1000,
                             min_cleanable_dirty_ratio=1.0).partition(0)
        put(p, b"a", b"1", clock)
        put(p, b"b", b"1", clock)
        put(p, b"a", None, clock)              # delete a
        for i in range(10):
            put(p, b"c", b"%d" % i, clock)     # push the tombstone into a sealed segment
        log.compact()
        latest = scan(p)
        assert latest[b"a"][1] is None         # the tombstone is still visible
        clock.now += 2000
        log.compact()
        latest = scan(p)
        assert b"a" not in latest              # now it is gone
        assert latest[b"b"][1] == b"1" and latest[b"c"][1] == b"9"


def test_min_compaction_lag_and_keyless_records(log_dir):
    clock = Clock()
    with eventlog.open(log_dir, clock=clock, segment_bytes=200) as log:
        p = log.create_topic("t", cleanup_policy="compact", min_compaction_lag_ms=500,
                             min_cleanable_dirty_ratio=1.0).partition(0)
        p.append([b"no key"])
        for i in range(10):
            put(p, b"k", b"%d" % i, clock)
        assert log.compact() == 0              # everything is younger than the lag
        clock.now += 1000
        assert log.compact() > 0
        values = [(r.key, r.value) for r in p.read(0, max_records=100)]
        assert (None, b"no key") in values     # keyless records are never compacted away


def test_compaction_runs_at_roll_once_dirty_enough(log_dir):
    with eventlog.open(log_dir, segment_bytes=300) as log:
        p = log.create_topic("t", cleanup_policy="compact",
                             min_cleanable_dirty_ratio=0.5).partition(0)
        for i in range(300):
            put(p, b"k%d" % (i % 3), b"%d" % i)
        assert len(p.read(0, max_records=10**6)) < 150
        assert {k: v for k, (_, v) in scan(p).items()} == {b"k0": b"297", b"k1": b"298",
                                                           b"k2": b"299"}


def test_a_compacted_topic_read_through_a_consumer_sees_every_latest_value(log_dir):
    with eventlog.open(log_dir, segment_bytes=400) as log:
        log.create_topic("users", partitions=2, cleanup_policy="compact")
        with eventlog.Producer(log) as producer:
            for i in range(500):
                producer.send("users", {"version": i}, key=f"user-{i % 20}")
        log.compact()
        with eventlog.Consumer(log, "users", consumer_timeout_ms=300) as consumer:
            latest = {r.key: r.value for r in consumer}
        assert latest == {f"user-{k}": {"version": 480 + k} for k in range(20)}


class CompactionModel(RuleBasedStateMachine):
    """Random puts, deletes, rolls, compactions and reopens against a dict."""

    def __init__(self):
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="eventlog-compaction-")
        self.clock = Clock()
        self.log = eventlog.open(self.dir, clock=self.clock, segment_bytes=250)
        self.p = self.log.create_topic("t", cleanup_policy="compact",
                                       delete_retention_ms=50,
                                       min_cleanable_dirty_ratio=0.3).partition(0)
        self.model: dict[bytes, bytes | None] = {}

    def teardown(self):
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(key=st.integers(0, 6), value=st.binary(min_size=1, max_size=40))
    def put(self, key, value):
        k = b"%d" % key
        put(self.p, k, value, self.clock)
        self.model[k] = value

    @rule(key=st.integers(0, 6))
    def delete(self, key):
        k = b"%d" % key
        put(self.p, k, None, self.clock)
        self.model[k] = None

    @rule()
    def roll(self):
        self.p.roll()

    @rule(advance=st.integers(0, 200))
    def compact(self, advance):
        self.clock.now += advance
        self.log.compact()

    @rule()
    def reopen(self):
        self.log.close()
        self.log = eventlog.open(self.dir, clock=self.clock)
        self.p = self.log.topic("t").partition(0)

    @invariant()
    def every_key_has_its_latest_value(self):
        latest = scan(self.p)
        for key, value in self.model.items():
            if value is None:
                assert key not in latest or latest[key][1] is None
            else:
                assert latest[key][1] == value, key
        assert set(latest) <= set(self.model)
        self.p._log._check()


CompactionModel.TestCase.settings = settings(max_examples=25 * SOAK, stateful_step_count=40,
                                             deadline=None)
TestCompactionModel = CompactionModel.TestCase


COMPACTOR = """
import sys, eventlog
with eventlog.open(sys.argv[1]) as log:
    print("start", flush=True)
    log.compact()
"""


def _latest_values(log_dir):
    with eventlog.open(log_dir) as log:
        p = log.topic("t").partition(0)
        p._log._check()
        return {k: v for k, (_, v) in scan(p).items()}


def test_a_crash_during_compaction_loses_no_latest_value(log_dir):
    rng = random.Random(3)
    with eventlog.open(log_dir, segment_bytes=4096) as log:
        p = log.create_topic("t", cleanup_policy="compact",
                             min_cleanable_dirty_ratio=1.0).partition(0)
    cycles = soak(6)
    for cycle in range(cycles):
        with eventlog.open(log_dir) as log:       # new versions of every key
            p = log.topic("t").partition(0)
            for i in range(400):
                p.append([b"c%d-%d" % (cycle, i)], keys=[b"key%d" % (i % 40)])
        expected = {b"key%d" % k: b"c%d-%d" % (cycle, 360 + k) for k in range(40)}
        assert _latest_values(log_dir) == expected
        child = spawn_python(COMPACTOR, str(log_dir), stdout=-1)
        assert child.stdout.readline().strip() == "start"
        time.sleep(rng.uniform(0.0, 0.05))
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        child.stdout.close()
        assert _latest_values(log_dir) == expected    # after recovery
    run_python(COMPACTOR, str(log_dir))               # a full compaction still works
    assert _latest_values(log_dir) == expected


CRASH_AT = """
import os, sys, eventlog
path, crash_at = sys.argv[1], int(sys.argv[2])
calls = [0]
for name in ("replace", "rename", "unlink"):
    real = getattr(os, name)
    def crashing(*args, _real=real, **kwargs):
        calls[0] += 1
        if calls[0] == crash_at:
            os._exit(137)          # die right here, no cleanup, like kill -9
        return _real(*args, **kwargs)
    setattr(os, name, crashing)
with eventlog.open(path) as log:
    log.compact()
print("completed", calls[0])
"""


def test_a_crash_at_every_step_of_compaction_loses_no_latest_value(tmp_path):
    template = tmp_path / "template"
    with eventlog.open(template, segment_bytes=3000) as log:
        p = log.create_topic("t", cleanup_policy="compact",
                             min_cleanable_dirty_ratio=1.0).partition(0)
        for i in range(240):
            p.append([b"v%d" % i], keys=[b"key%d" % (i % 30)])
    expected = {b"key%d" % k: b"v%d" % (210 + k) for k in range(30)}
    crash_at = 1
    while True:
        work = tmp_path / f"crash-{crash_at}"
        shutil.copytree(template, work)
        done = run_python(CRASH_AT, str(work), str(crash_at), check=False)
        assert _latest_values(work) == expected, f"crash at file operation {crash_at}"
        with eventlog.open(work) as log:
            assert log.check().ok
        shutil.rmtree(work)
        if done.returncode == 0:
            break
        assert done.returncode == 137, done.stderr
        crash_at += 1
    assert crash_at > 10   # the compaction took many steps, each crashed once


def test_maybe_compact_runs_only_when_dirty_enough_and_never_waits_for_another_cleaner(
        log_dir):
    from eventlog._compaction import dirty_ratio, maybe_compact
    from eventlog.config import TopicConfig

    # the topic itself is not compacted (nothing runs at its rolls); the config passed
    # to maybe_compact says what to do
    compacted = TopicConfig(cleanup_policy="compact", min_cleanable_dirty_ratio=0.9)
    with eventlog.open(log_dir, segment_bytes=300) as log:
        p = log.create_topic("t").partition(0)
        plog = p._log
        assert maybe_compact(plog, compacted, 0) is None      # nothing sealed yet
        for i in range(60):
            put(p, b"k%d" % (i % 3), b"%d" % i)
        assert dirty_ratio(plog) == 1.0
        with plog.cleaner_lock():            # another cleaner at work: not waited for
            assert maybe_compact(plog, compacted, 0) is None
        assert maybe_compact(plog, TopicConfig(min_cleanable_dirty_ratio=0.0), 0) is None
        now = int(time.time() * 1000) + 1000   # every record older than the lag (0)
        result = maybe_compact(plog, compacted, now)
        assert result is not None and result.records_removed > 0
        assert dirty_ratio(plog) == 0.0
        assert maybe_compact(plog, compacted, now) is None        # clean now: not due
        plog._check()
        assert {k: v for k, (_, v) in scan(p).items()} == {b"k0": b"57", b"k1": b"58",
                                                           b"k2": b"59"}
