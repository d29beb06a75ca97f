"""Multi-process stress: several producer processes, several consumer groups of several
member processes each, members killed with kill -9 at random and replaced, while the
producers write. Every acknowledged record is consumed at least once by every group,
offsets are contiguous in every partition, and no partition is ever owned by two live
members of a group."""

from __future__ import annotations

import collections
import os
import random
import signal
import time

import eventlog
from eventlog import TopicPartition
from tests.conftest import complete_json_lines, soak, spawn_python

MEMBER = """
import json, os, sys, time, eventlog
path, group, name, events_path, stop_path = sys.argv[1:6]
events = open(events_path, "a", buffering=1)

def note(*event):
    events.write(json.dumps([time.monotonic(), group, name, *event]) + "\\n")

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
                          heartbeat_interval_ms=100, session_timeout_ms=2000,
                          partition_assignment_strategy="sticky", listener=Listener())
    holder.append(c)
    c.subscribe(["t"])
    while not os.path.exists(stop_path):
        records = c.poll(timeout=0.05)
        if records:
            note("records", [[r.partition, r.offset, r.value] for r in records])
            c.commit()
    c.close()
"""

PRODUCER = """
import sys, time, eventlog
path, tag, stop_path = sys.argv[1], sys.argv[2], sys.argv[3]
import os
with eventlog.open(path) as log, eventlog.Producer(log, linger_ms=2) as p:
    i = 0
    while not os.path.exists(stop_path):
        p.send("t", "%s-%d" % (tag, i), key=i % 11)
        i += 1
        if i % 50 == 0:
            p.flush()
            print(i, flush=True)     # acknowledged: records 0..i-1 of this producer
            time.sleep(0.005)
    p.flush()
    print(i, flush=True)
"""


def test_producers_and_groups_with_members_killed_at_random(log_dir, tmp_path):
    rng = random.Random(9)
    with eventlog.open(log_dir) as log:
        log.create_topic("t", partitions=6, segment_bytes=8192)
    events = tmp_path / "events.jsonl"
    stop_producers = tmp_path / "stop-producers"
    stop_members = tmp_path / "stop-members"
    groups = ("g1", "g2")
    members = {}
    kills = {}
    counter = [0]

    def start_member(group):
        counter[0] += 1
        name = f"{group}-m{counter[0]}"
        members[name] = (group, spawn_python(MEMBER, str(log_dir), group, name, str(events),
                                             str(stop_members)))

    producers = [spawn_python(PRODUCER, str(log_dir), tag, str(stop_producers), stdout=-1)
                 for tag in ("a", "b", "c")]
    for group in groups:
        for _ in range(3):
            start_member(group)
    deadline = time.monotonic() + 3.0 * min(soak(1), 20)
    while time.monotonic() < deadline:
        time.sleep(rng.uniform(0.2, 0.5))
        alive = [n for n, (_, proc) in members.items() if proc.poll() is None]
        victim = rng.choice(alive)
        group, proc = members[victim]
        kills[victim] = time.monotonic()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        start_member(group)
    stop_producers.touch()
    acked = {}
    for tag, proc in zip(("a", "b", "c"), producers, strict=True):
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        acked[tag] = int(out.split()[-1])
    with eventlog.open(log_dir) as log:               # let both groups catch up
        ends = {TopicPartition("t", p.id): p.end_offset for p in log.topic("t").partitions}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if all(all(log.group_offsets(g).get(tp, 0) >= end for tp, end in ends.items())
                   for g in groups):
                break
            time.sleep(0.1)
        # offsets are contiguous in every partition, and hold exactly what was written
        written = collections.Counter()
        for part in log.topic("t").partitions:
            records = part.read(0, max_records=10**7, max_bytes=1 << 30)
            assert [r.offset for r in records] == list(range(part.end_offset))
            for r in records:
                written[eventlog.serde.deserializer("msgpack")(r.value)] += 1
    stop_members.touch()
    for name, (_, proc) in members.items():
        if name not in kills:
            assert proc.wait(timeout=60) == 0, name
    for tag, count in acked.items():
        for i in range(count):
            assert written[f"{tag}-{i}"] == 1, f"{tag}-{i}"   # no loss, no duplicate

    lines = complete_json_lines(events)
    for group in groups:
        consumed = {v for t, g, n, kind, *rest in lines if g == group and kind == "records"
                    for _, _, v in rest[0]}
        missing = [v for v in written if v not in consumed]
        assert not missing, f"group {group} never saw {missing[:5]}"
        # exclusivity: ownership intervals of one partition never overlap
        intervals = collections.defaultdict(list)
        since = {}
        for t, g, name, kind, *rest in lines:
            if g != group or kind not in ("acquire", "release"):
                continue
            for _, p in rest[0]:
                if kind == "acquire":
                    since[(name, p)] = t
                else:
                    intervals[p].append((since.pop((name, p)), t, name))
        for (name, p), t0 in since.items():
            intervals[p].append((t0, kills.get(name, float("inf")), name))
        for p, spans in intervals.items():
            spans.sort()
            for (_, b1, n1), (a2, _, n2) in zip(spans, spans[1:]):
                assert a2 >= b1, f"{group}: partition {p} owned by {n1} and {n2} at once"
