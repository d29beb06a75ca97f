"""Consumer groups across real processes: joins, leaves, kill -9, exclusivity, commits.

What runs where: the assignors and ``ResetTarget`` are pure functions of both
backends; member processes joining, leaving and dying by ``kill -9`` run on a log
directory and on the session's Kafka broker; the rest is the local group machinery
(the offsets sidecar file) and is ``local_only``. Kafka's groups also run in
tests/test_consumer.py and tests/test_backends.py, and under a broker killed with
``kill -9`` in tests/test_kafka_failover.py.
"""

from __future__ import annotations

import collections
import os
import random
import signal
import time
from typing import Any

import pytest

import eventlog
from eventlog import TopicPartition
from eventlog._group import assign_range, assign_roundrobin, assign_sticky
from eventlog._offsets import OffsetStore
from tests.conftest import complete_json_lines, soak, spawn_python, unique_name

TP = TopicPartition
local_only = pytest.mark.local_only

# -- assignors ------------------------------------------------------------------------


def test_range_assignor_matches_kafka():
    members = {"a": ["t"], "b": ["t"], "c": ["t"]}
    out = assign_range(members, {"t": 7}, {})
    assert out == {"a": [TP("t", 0), TP("t", 1), TP("t", 2)],
                   "b": [TP("t", 3), TP("t", 4)], "c": [TP("t", 5), TP("t", 6)]}


def test_roundrobin_assignor_respects_subscriptions():
    members = {"a": ["t", "u"], "b": ["t"]}
    out = assign_roundrobin(members, {"t": 3, "u": 2}, {})
    assert sorted(out["a"] + out["b"]) == sorted([TP("t", i) for i in range(3)] +
                                                  [TP("u", i) for i in range(2)])
    # Kafka's RoundRobinAssignor: a circular iterator over sorted members that skips
    # members not subscribed to the partition's topic.
    assert out == {"a": [TP("t", 0), TP("t", 2), TP("u", 0), TP("u", 1)], "b": [TP("t", 1)]}


def test_sticky_assignor_is_balanced_and_moves_little():
    everything = {TP("t", i) for i in range(12)}
    first = assign_sticky({"a": ["t"], "b": ["t"], "c": ["t"]}, {"t": 12}, {})
    assert sorted(map(len, first.values())) == [4, 4, 4]
    second = assign_sticky({"a": ["t"], "b": ["t"], "c": ["t"], "d": ["t"]}, {"t": 12}, first)
    assert sorted(map(len, second.values())) == [3, 3, 3, 3]
    moved = sum(1 for m in "abc" for tp in second[m] if tp not in first[m]) + len(second["d"])
    assert moved == 3                       # only what the newcomer needs
    third = assign_sticky({"a": ["t"], "d": ["t"]}, {"t": 12}, second)
    assert set(third["a"]) >= set(second["a"]) and set(third["d"]) >= set(second["d"])
    assert set(third["a"]) | set(third["d"]) == everything


# -- the offsets sidecar ------------------------------------------------------------------

@local_only("the group's offsets sidecar file")
def test_damaged_commit_records_fall_back_to_the_last_good_commit(tmp_path):
    path = str(tmp_path / "g.offsets")
    store = OffsetStore(path, fsync=False)
    tp = TP("t", 0)
    for i in range(1, 6):
        store.commit({tp: i * 10}, 0)
    assert OffsetStore(path, False).read() == {tp: 50}
    data = bytearray(open(path, "rb").read())
    last = data.rfind(b"EvOc")
    data[last + 20] ^= 0xFF                      # damage the newest record
    open(path, "wb").write(data)
    assert OffsetStore(path, False).read() == {tp: 40}
    middle = data.find(b"EvOc", data.find(b"EvOc") + 1)
    data[middle + 2] ^= 0xFF                     # and the marker of an older one
    open(path, "wb").write(data)
    assert OffsetStore(path, False).read() == {tp: 40}
    with open(path, "ab") as fh:
        fh.write(b"EvOc\x10\x00")                # a torn append at the end
    store = OffsetStore(path, False)
    store.commit({tp: 60}, 0)                    # cuts the torn tail, then appends
    assert OffsetStore(path, False).read() == {tp: 60}


@local_only("the group's offsets sidecar file")
def test_the_sidecar_compacts_itself(tmp_path):
    path = str(tmp_path / "g.offsets")
    store = OffsetStore(path, fsync=False)
    for i in range(2100):
        store.commit({TP("t", i % 3): i}, 0)
    assert os.path.getsize(path) < 200 * 30
    assert OffsetStore(path, False).read() == {TP("t", 0): 2097, TP("t", 1): 2098,
                                               TP("t", 2): 2099}


COMMITTER = """
import sys, eventlog
path = sys.argv[1]
with eventlog.open(path) as log:
    c = eventlog.Consumer(log, group_id="crash", enable_auto_commit=False)
    c.assign([eventlog.TopicPartition("t", 0)])
    i = int(sys.argv[2])
    while True:
        i += 1
        c.commit({eventlog.TopicPartition("t", 0): i})
        print(i, flush=True)
"""


@local_only("kill -9 during a commit to the sidecar file")
def test_kill_during_commit_leaves_old_or_new_value(log_dir):
    with eventlog.open(log_dir) as log:
        log.create_topic("t")
        with eventlog.Producer(log) as producer:   # room for every commit (at most the end)
            producer.send_batch("t", [None] * soak(400_000))
    rng = random.Random(11)
    last_seen = 0
    for _ in range(soak(15)):
        child = spawn_python(COMMITTER, str(log_dir), str(last_seen), stdout=-1)
        time.sleep(rng.uniform(0.15, 0.5))
        os.kill(child.pid, signal.SIGKILL)
        out, _ = child.communicate()
        acked = [int(x) for x in out.split()]
        with eventlog.open(log_dir) as log:
            # killed before its first commit, the child may not have made the group yet
            offsets = log.group_offsets("crash") if "crash" in log.groups() else {}
            committed = offsets.get(TP("t", 0), 0)
        if acked:
            assert committed in (acked[-1], acked[-1] + 1), (committed, acked[-3:])
        else:
            assert committed >= last_seen
        last_seen = committed


# -- members in several processes -----------------------------------------------------

MEMBER = """
import json, os, sys, time, eventlog
path, name, events_path, stop_path, strategy, topic, group, session_ms = sys.argv[1:9]
events = open(events_path, "a", buffering=1)

def note(*event):
    events.write(json.dumps([time.monotonic(), name, *event]) + "\\n")

with eventlog.open(path) as log:
    holder = []

    class Listener(eventlog.RebalanceListener):
        def on_assigned(self, partitions):
            note("acquire", sorted(partitions))

        def on_revoked(self, partitions):
            c = holder[0]
            c.commit({tp: c.position(tp) for tp in partitions})
            note("release", sorted(partitions))

        def on_lost(self, partitions):
            note("release", sorted(partitions))

    c = eventlog.Consumer(log, group_id=group, enable_auto_commit=False,
                          session_timeout_ms=int(session_ms), heartbeat_interval_ms=100,
                          partition_assignment_strategy=strategy, listener=Listener())
    holder.append(c)
    c.subscribe([topic])
    note("started")
    while not os.path.exists(stop_path):
        records = c.poll(timeout=0.05)
        if records:
            note("records", [[r.partition, r.offset] for r in records])
            c.commit()
    c.close()
    note("closed")
"""

PRODUCER = """
import sys, time, eventlog
path, total, topic = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with eventlog.open(path) as log, eventlog.Producer(log, linger_ms=2) as p:
    for i in range(total):
        p.send(topic, i, key=i % 50)
        if i % 100 == 0:
            time.sleep(0.01)
"""


def _taken_after(events: list[Any], kill_time: float) -> dict[int, bool]:
    """For each partition m2 held when it was killed: whether another member has
    acquired it since."""
    held: set[int] = set()
    for t, name, kind, *rest in events:
        if name == "m2" and t <= kill_time and kind in ("acquire", "release"):
            partitions = {p for _topic, p in rest[0]}
            held = held | partitions if kind == "acquire" else held - partitions
    taken = {p for t, name, kind, *rest in events if kind == "acquire" and name != "m2"
             and t >= kill_time for _topic, p in rest[0]}
    return {p: p in taken for p in held}


@pytest.mark.parametrize("strategy", ["range", "sticky"])
def test_members_join_leave_and_die_while_producers_write(any_address, tmp_path, strategy):
    """Member processes join, leave and one dies by kill -9 while a producer process
    writes: every record is consumed, no partition has two owners at once, and the dead
    member's partitions move on within its session timeout (on Kafka, the broker's
    smallest: 6 s, group.min.session.timeout.ms) and a hand-over (1 s; 3 s on Kafka)."""
    kafka = any_address.startswith("kafka://")
    topic, group = unique_name(), unique_name("workers")
    session_s = 6.0 if kafka else 3.0
    # How long after the session runs out the partitions may take to move: on a
    # directory the next member's poll takes them over; on Kafka the coordinator's
    # expiry check, then a JoinGroup and a SyncGroup round of every live member, which
    # took 7.3 s after the kill once, with the whole suite loading both cores.
    handover_s = 3.0 if kafka else 1.0
    with eventlog.open(any_address) as log:
        # (small segments on a directory: records cross segment files)
        log.create_topic(topic, partitions=6, **({} if kafka else {"segment_bytes": 16384}))
    events_path = tmp_path / "events.jsonl"
    stop_path = tmp_path / "stop"
    members = {}

    def start(name):
        members[name] = spawn_python(MEMBER, any_address, name, str(events_path),
                                     str(stop_path), strategy, topic, group,
                                     str(int(session_s * 1000)))

    total = 3000
    producer = None
    try:
        producer = spawn_python(PRODUCER, any_address, str(total), topic)
        for name in ("m1", "m2", "m3"):
            start(name)
        time.sleep(1.0)
        kill_time = time.monotonic()
        os.kill(members["m2"].pid, signal.SIGKILL)
        members["m2"].wait()
        time.sleep(0.5)
        start("m4")
        time.sleep(0.5)
        assert producer.wait(timeout=60) == 0
        with eventlog.open(any_address) as log:        # wait until the group caught up
            ends = {TP(topic, p.id): p.end_offset for p in log.topic(topic).partitions}
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    committed = log.group_offsets(group)
                except eventlog.UnknownGroupError:   # (a Kafka group shows once it committed)
                    committed = {}
                if all(committed.get(tp, 0) >= end for tp, end in ends.items()):
                    break
                time.sleep(0.1)
        # The records may all be committed before the killed member's session ran out
        # (6 s on Kafka): give its partitions the time to move on (checked below).
        while time.monotonic() < kill_time + session_s + handover_s and \
                not all(_taken_after(complete_json_lines(events_path), kill_time).values()):
            time.sleep(0.1)
        stop_path.touch()
        for name, proc in members.items():
            if name != "m2":
                assert proc.wait(timeout=60) == 0, name
    finally:   # on a failure too: no member or producer is left running
        stop_path.touch()
        for proc in [producer, *members.values()]:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()

    events = complete_json_lines(events_path)
    # 1. every record was consumed at least once by the group
    consumed = {(p, o) for e in events if e[2] == "records" for p, o in e[3]}
    expected = {(tp.partition, o) for tp, end in ends.items() for o in range(end)}
    assert sum(ends.values()) == total
    assert expected <= consumed
    # 2. no partition was ever owned by two members at once
    intervals = collections.defaultdict(list)
    open_since = {}
    for t, name, kind, *rest in events:
        if kind == "acquire":
            for _topic, p in rest[0]:
                open_since[(name, p)] = t
        elif kind == "release":
            for _topic, p in rest[0]:
                intervals[p].append((open_since.pop((name, p)), t, name))
    for (name, p), since in open_since.items():    # still held when killed
        end = kill_time if name == "m2" else float("inf")
        intervals[p].append((since, end, name))
    for p, spans in intervals.items():
        spans.sort()
        for (_a1, b1, n1), (a2, _b2, n2) in zip(spans, spans[1:]):
            assert a2 >= b1, f"partition {p} owned by {n1} and {n2} at once"
    # 3. the killed member's partitions moved on within session_timeout_ms
    held_by_m2 = {p for (name, p), _ in open_since.items() if name == "m2"}
    for p in held_by_m2:
        taken = [a for a, b, n in intervals[p] if n != "m2" and a >= kill_time]
        assert taken and min(taken) - kill_time < session_s + handover_s, \
            f"partition {p} stayed orphaned"


@local_only("the sidecar's commit records")
def test_a_commit_records_the_end_offsets_and_goes_ahead_without_one(tmp_path):
    """The consumer's commit path reads each partition's end offset for the history
    (group_status); a partition whose end cannot be read (its topic was deleted) is
    committed all the same, without a history entry."""
    with eventlog.open(tmp_path / "log") as log:
        log.create_topic("orders", partitions=2)
        log.create_topic("audit")
        log.topic("orders").partition(1).append([b"x"] * 7)
        with eventlog.Consumer(log, "orders", group_id="g",
                               enable_auto_commit=False) as member:
            member.poll(timeout=1)
            member.commit({TP("orders", 1): 3})        # a member: the fenced path
        consumer = eventlog.Consumer(log, group_id="g", enable_auto_commit=False)
        consumer.assign([TP("audit", 0)])
        log.delete_topic("audit")
        consumer.commit({TP("audit", 0): 0})
        consumer.close()
        store = OffsetStore(str(tmp_path / "log" / "groups" / "g.offsets"), fsync=False)
        offsets, history = store.read_history()
        assert offsets == {TP("orders", 1): 3, TP("audit", 0): 0}
        assert [(c.offset, c.end_offset) for c in history[TP("orders", 1)]] == [(3, 7)]
        assert TP("audit", 0) not in history
        store._check()


def test_reset_target_is_one_rule_for_both_backends():
    from eventlog._group_admin import ResetTarget

    assert ResetTarget(to_earliest=True).offset(3, 9, 5, None) == 3
    assert ResetTarget(to_latest=True).offset(3, 9, 5, None) == 9
    assert ResetTarget(to_offset=100).offset(3, 9, 5, None) == 9      # kept in range
    assert ResetTarget(to_timestamp_ms=1).offset(3, 9, 5, 7) == 7
    assert ResetTarget(to_timestamp_ms=1).offset(3, 9, 5, None) == 9  # nothing that late
    assert ResetTarget(shift_by=-4).offset(3, 9, 5, None) == 3
    assert ResetTarget(shift_by=2).offset(3, 9, None, None) == 5      # from the start
    for bad in ({}, {"to_earliest": True, "shift_by": 1}):
        with pytest.raises(eventlog.InvalidConfigError):
            ResetTarget(**bad)
    with pytest.raises(eventlog.InvalidConfigError):
        ResetTarget(to_offset="3")  # type: ignore[arg-type]
