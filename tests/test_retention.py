"""Retention by time and size, delete_records, and readers of deleted segments."""

from __future__ import annotations

import os
import time

import pytest

import eventlog
from eventlog import Consumer, OffsetOutOfRangeError, Producer, TopicPartition
from tests.conftest import spawn_python


class Clock:
    def __init__(self, now=1_000_000):
        self.now = now

    def __call__(self):
        return self.now


def segments(part):
    return sorted(int(n[:20]) for n in os.listdir(part._log.directory) if n.endswith(".log"))


def fill(part, count, clock=None, start=0):
    for i in range(start, start + count):
        part.append([b"%06d" % i])
        if clock is not None:
            clock.now += 10


def test_retention_by_time_deletes_old_sealed_segments(log_dir):
    clock = Clock()
    with eventlog.open(log_dir, clock=clock, segment_bytes=256) as log:
        p = log.create_topic("t", retention_ms=1000).partition(0)
        fill(p, 30, clock)                       # 30 records over 300 ms
        assert p.start_offset == 0
        first_segments = segments(p)
        assert len(first_segments) > 5
        clock.now += 1000                         # the oldest ones are now too old
        fill(p, 5, clock, start=30)               # rolls run retention
        assert p.start_offset > 0
        assert segments(p)[0] == p.start_offset
        assert next(r.value for r in p.read(p.start_offset, max_records=100)) == \
            b"%06d" % p.start_offset
        with pytest.raises(OffsetOutOfRangeError):
            p.read(0)
        clock.now += 10_000
        assert log.enforce_retention() >= 1       # on demand
        assert segments(p) == [p._log.state().active_base]  # the active one stays
        p._log._check()


def test_retention_by_size(log_dir):
    with eventlog.open(log_dir, segment_bytes=300) as log:
        p = log.create_topic("t", retention_bytes=1000).partition(0)
        fill(p, 200)
        size = log.describe_topic("t").partitions[0].size_bytes
        assert size <= 1000 + 300                 # at most one segment over the limit
        assert p.end_offset == 200 and p.start_offset > 0
        p._log._check()


def test_compact_only_topics_are_not_subject_to_retention(log_dir):
    clock = Clock()
    with eventlog.open(log_dir, clock=clock, segment_bytes=256) as log:
        p = log.create_topic("t", retention_ms=1, cleanup_policy="compact").partition(0)
        fill(p, 30, clock)
        clock.now += 10_000
        assert log.enforce_retention() == 0
        assert p.start_offset == 0


def test_a_consumer_below_the_new_start_applies_auto_offset_reset(log_dir):
    clock = Clock()
    with eventlog.open(log_dir, clock=clock, segment_bytes=256) as log:
        p = log.create_topic("t", retention_ms=100).partition(0)
        fill(p, 10, clock)
        consumer = Consumer(log, group_id="slow", auto_offset_reset="earliest",
                            value_deserializer="bytes")
        consumer.assign([TopicPartition("t", 0)])
        assert len(consumer.poll(timeout=1, max_records=2)) == 2
        clock.now += 10_000
        fill(p, 10, clock, start=10)
        log.enforce_retention()
        start = p.start_offset
        assert start > 2
        records = consumer.poll(timeout=1)
        assert records[0].offset == start   # reset to the new start, no error
        consumer.close()


def test_delete_records(log_dir):
    with eventlog.open(log_dir, segment_bytes=256) as log:
        p = log.create_topic("t").partition(0)
        fill(p, 40)
        before = segments(p)
        assert log.delete_records(("t", 0), 25) == 25
        assert p.start_offset == 25
        assert [r.value for r in p.read(25, max_records=1)] == [b"000025"]
        with pytest.raises(OffsetOutOfRangeError):
            p.read(24)
        after = segments(p)
        assert after[0] <= 25 and len(after) < len(before)
        assert log.delete_records(("t", 0), 10) == 25     # never moves backwards
        with pytest.raises(OffsetOutOfRangeError):
            log.delete_records(("t", 0), 41)
        assert log.delete_records(("t", 0), 40) == 40    # everything: the log is empty
        assert p.read(40) == []
        p.append([b"next"])
        assert [r.offset for r in p.read(40)] == [40]
    with eventlog.open(log_dir) as log:                   # survives reopen
        assert log.topic("t").partition(0).start_offset == 40


HOLDER = """
import sys, os, time, eventlog
path, flag = sys.argv[1], sys.argv[2]
with eventlog.open(path) as log:
    p = log.topic("t").partition(0)
    first = p.read(0, max_records=5)          # maps the first segment
    print("mapped", first[0].value.decode(), flush=True)
    while not os.path.exists(flag):
        time.sleep(0.01)
    try:
        p.read(5)
        print("read-after-delete-succeeded")
    except eventlog.OffsetOutOfRangeError as exc:
        print("out-of-range", exc.start_offset)
    c = eventlog.Consumer(log, auto_offset_reset="earliest", value_deserializer="bytes")
    c.assign([eventlog.TopicPartition("t", 0)])
    got = c.poll(timeout=2)
    print("consumer-from", got[0].offset, flush=True)
"""


def test_deleting_a_segment_another_process_has_mapped(log_dir, tmp_path):
    with eventlog.open(log_dir, segment_bytes=256) as log:
        p = log.create_topic("t", retention_bytes=600).partition(0)
        fill(p, 10)
        flag = tmp_path / "deleted"
        holder = spawn_python(HOLDER, str(log_dir), str(flag), stdout=-1, stderr=-1)
        assert holder.stdout.readline().split() == ["mapped", "000000"]
        fill(p, 60, start=10)                      # retention deletes the first segments
        assert p.start_offset > 10
        flag.touch()
        out, err = holder.communicate(timeout=60)
        assert holder.returncode == 0, err         # no SIGBUS, no crash
        lines = out.split("\n")
        assert lines[0] == f"out-of-range {p.start_offset}"
        assert lines[1] == f"consumer-from {p.start_offset}"


def test_background_maintenance_thread(log_dir):
    clock = Clock()
    with eventlog.open(log_dir, clock=clock, segment_bytes=256,
                       maintenance_interval_ms=20) as log:
        p = log.create_topic("t", retention_ms=50).partition(0)
        fill(p, 20, clock)
        clock.now += 10_000
        deadline = time.monotonic() + 10
        while p.start_offset == 0:
            assert time.monotonic() < deadline, "the maintenance thread never ran"
            time.sleep(0.02)
    with pytest.raises(eventlog.InvalidConfigError):
        eventlog.open(log_dir, maintenance_interval_ms=0)


def test_producers_keep_working_while_retention_runs(log_dir):
    with eventlog.open(log_dir, segment_bytes=512) as log:
        log.create_topic("t", partitions=2, retention_bytes=2000)
        with Producer(log, batch_bytes=200) as producer:
            for i in range(2000):
                producer.send("t", i, key=i % 10)
        for part in log.topic("t").partitions:
            part._log._check()
            assert part.end_offset > 0 and part.start_offset > 0
