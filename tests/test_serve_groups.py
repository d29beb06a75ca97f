"""Consumer groups of Kafka clients on ``eventlog serve``: the coordinator's state machine
and Kafka's error codes, and real consumer processes splitting partitions, one killed
with ``kill -9`` and its partitions moving, their commits visible in eventlog."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

import eventlog
from eventlog._kafka_wire import _errors as E
from eventlog._kafka_wire._group_coordinator import GroupCoordinator

from .kafka_wire import wait_until

pytest.importorskip("crc32c")


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def coordinator():
    stopping = threading.Event()
    clock = _Clock()
    c = GroupCoordinator(stopping, clock=clock, min_session_timeout_ms=1000)
    c.clock = clock  # type: ignore[attr-defined]
    yield c
    c._check()
    stopping.set()
    c.stop()


def _join(c, member_id="", *, meta=b"m", session_ms=10_000, rebalance_ms=5_000, v4=True):
    return c.join("g", member_id, None, session_ms, rebalance_ms, "consumer",
                  [("range", meta)], "client", "127.0.0.1", require_member_id=v4)


def _in_thread(fn, *args, **kwargs):
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("r", fn(*args, **kwargs)))
    t.start()
    return t, out


def test_first_join_needs_a_member_id_then_forms_generation_one(coordinator):
    r = _join(coordinator)
    assert r["error_code"] == E.MEMBER_ID_REQUIRED and r["member_id"]
    m1 = r["member_id"]
    r = _join(coordinator, m1)
    assert (r["error_code"], r["generation_id"], r["leader"], r["protocol_name"]) \
        == (0, 1, m1, "range")
    assert [m["member_id"] for m in r["members"]] == [m1]
    coordinator._check()
    assert coordinator.sync("g", 1, m1, [(m1, b"assignment")]) \
        == {"error_code": 0, "assignment": b"assignment"}
    assert coordinator.heartbeat("g", 1, m1) == 0
    assert coordinator.heartbeat("g", 0, m1) == E.ILLEGAL_GENERATION
    assert coordinator.heartbeat("g", 1, "stranger") == E.UNKNOWN_MEMBER_ID
    assert _join(coordinator, "stranger")["error_code"] == E.UNKNOWN_MEMBER_ID
    assert coordinator.check_commit("g", 1, m1) == 0
    assert coordinator.check_commit("g", 7, m1) == E.ILLEGAL_GENERATION
    assert coordinator.check_commit("g", -1, "") == E.UNKNOWN_MEMBER_ID  # group is not empty
    assert coordinator.check_commit("other", -1, "") == 0                # standalone commit


def test_bad_joins(coordinator):
    assert _join(coordinator, session_ms=10)["error_code"] == E.INVALID_SESSION_TIMEOUT
    assert coordinator.join("", "", None, 10_000, 1, "consumer", [("range", b"")], "c", "h",
                            True)["error_code"] == E.INVALID_GROUP_ID
    m1 = _join(coordinator, v4=False)["member_id"]
    r = coordinator.join("g", "", None, 10_000, 1000, "consumer", [("roundrobin", b"")], "c",
                         "h", False)
    assert r["error_code"] == E.INCONSISTENT_GROUP_PROTOCOL
    assert m1


def test_a_second_member_triggers_a_rebalance(coordinator):
    m1 = _join(coordinator, v4=False)["member_id"]
    coordinator.sync("g", 1, m1, [(m1, b"all")])
    t, out = _in_thread(_join, coordinator, v4=False)        # waits for m1 to rejoin
    wait_until(lambda: coordinator.heartbeat("g", 1, m1) == E.REBALANCE_IN_PROGRESS,
               what="the rebalance to start")
    assert coordinator.sync("g", 1, m1, [])["error_code"] == E.REBALANCE_IN_PROGRESS
    r1 = _join(coordinator, m1, v4=False)
    t.join(10)
    r2 = out["r"]
    assert r1["generation_id"] == r2["generation_id"] == 2
    assert r1["leader"] == m1 and len(r1["members"]) == 2 and r2["members"] == []
    m2 = r2["member_id"]
    t, out = _in_thread(coordinator.sync, "g", 2, m2, [])   # waits for the leader
    assert coordinator.sync("g", 2, m1, [(m1, b"a"), (m2, b"b")])["assignment"] == b"a"
    t.join(10)
    assert out["r"] == {"error_code": 0, "assignment": b"b"}
    coordinator._check()
    snap = coordinator.snapshot("g")
    assert snap is not None and snap.state == "Stable"
    assert sorted(m["member_assignment"] for m in snap.members) == [b"a", b"b"]


def test_session_expiry_and_leave_rebalance(coordinator):
    m1 = _join(coordinator, v4=False)["member_id"]
    coordinator.sync("g", 1, m1, [(m1, b"x")])
    coordinator.clock.now += 11  # past the 10 s session, no heartbeat
    coordinator.expire()
    coordinator._check()
    snap = coordinator.snapshot("g")
    assert snap is not None and (snap.state, snap.members) == ("Empty", [])
    assert coordinator.heartbeat("g", 1, m1) == E.UNKNOWN_MEMBER_ID
    m2 = _join(coordinator, v4=False)["member_id"]
    assert coordinator.leave("g", [m2, "ghost"]) == [0, E.UNKNOWN_MEMBER_ID]
    assert coordinator.snapshot("g").state == "Empty"


def test_a_member_that_does_not_rejoin_is_dropped_at_the_rebalance_timeout(coordinator):
    m1 = _join(coordinator, v4=False, rebalance_ms=2000)["member_id"]
    coordinator.sync("g", 1, m1, [(m1, b"x")])
    t, out = _in_thread(_join, coordinator, v4=False, rebalance_ms=2000)
    wait_until(lambda: coordinator.snapshot("g").state == "PreparingRebalance",
               what="the rebalance")
    coordinator.clock.now += 3  # m1 never rejoins within the rebalance timeout
    coordinator.expire()
    t.join(10)
    assert out["r"]["generation_id"] == 2 and out["r"]["leader"] == out["r"]["member_id"]
    assert coordinator.heartbeat("g", 2, m1) == E.UNKNOWN_MEMBER_ID


_WORKER = textwrap.dedent("""
    import json, os, sys
    from confluent_kafka import Consumer
    bootstrap, state = sys.argv[1], sys.argv[2]
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "workers",
                  "session.timeout.ms": 2000, "heartbeat.interval.ms": 250,
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    def publish(parts):
        with open(state + ".tmp", "w") as f:
            json.dump(sorted(p.partition for p in parts), f)
        os.rename(state + ".tmp", state)
    c.subscribe(["jobs"], on_assign=lambda c, ps: publish(ps),
                on_revoke=lambda c, ps: publish([]))
    while True:
        m = c.poll(0.1)
        if m is not None and m.error() is None:
            c.commit(message=m, asynchronous=False)
""")


def _assignments(paths):
    out = []
    for path in paths:
        try:
            with open(path) as f:
                out.append(json.load(f))
        except (FileNotFoundError, ValueError):
            out.append(None)
    return out


def test_three_consumer_processes_split_partitions_and_survive_a_kill(eventlog_log, tmp_path):
    pytest.importorskip("confluent_kafka")
    eventlog_log.create_topic("jobs", partitions=6)
    with eventlog.Producer(eventlog_log, value_serializer="bytes") as p:
        for i in range(120):
            p.send("jobs", b"%d" % i, partition=i % 6)
    with eventlog.serve(eventlog_log, group_min_session_timeout_ms=1000) as server:
        paths = [str(tmp_path / f"w{i}.json") for i in range(3)]
        procs = [subprocess.Popen([sys.executable, "-c", _WORKER, server.bootstrap_servers,
                                   path]) for path in paths]
        try:
            def split(alive):
                a = [x for i, x in enumerate(_assignments(paths)) if i in alive]
                return (all(x is not None and x for x in a)
                        and sorted(p for x in a for p in x) == list(range(6)))
            wait_until(lambda: split({0, 1, 2}), 60, "three workers sharing six partitions")
            assert sorted(map(len, _assignments(paths))) == [2, 2, 2]
            os.kill(procs[0].pid, signal.SIGKILL)
            procs[0].wait()
            wait_until(lambda: split({1, 2}), 60, "the killed worker's partitions to move")
            assert sorted(len(x) for x in _assignments(paths)[1:]) == [3, 3]
            tps = [eventlog.TopicPartition("jobs", i) for i in range(6)]
            wait_until(lambda: eventlog_log.group_offsets("workers") == dict.fromkeys(tps, 20),
                       60, "every record committed")
            assert sum(eventlog_log.group_lag("workers").values()) == 0
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()


def test_cooperative_sticky_rebalances(eventlog_kafka, eventlog_log):
    confluent_kafka = pytest.importorskip("confluent_kafka")
    eventlog_log.create_topic("coop", partitions=4)
    conf = {"bootstrap.servers": eventlog_kafka, "group.id": "coop",
            "partition.assignment.strategy": "cooperative-sticky",
            "session.timeout.ms": 6000, "heartbeat.interval.ms": 300}
    a = confluent_kafka.Consumer(conf)
    b = confluent_kafka.Consumer(conf)
    try:
        a.subscribe(["coop"])
        wait_until(lambda: a.poll(0.05) or len(a.assignment()) == 4, what="a to own all")
        b.subscribe(["coop"])

        def split():
            a.poll(0.05)
            b.poll(0.05)
            return sorted([len(a.assignment()), len(b.assignment())]) == [2, 2]
        wait_until(split, what="an incremental 2/2 split")
        assert {tp.partition for tp in a.assignment()} | {tp.partition for tp in b.assignment()} \
            == {0, 1, 2, 3}
        b.close()
        wait_until(lambda: a.poll(0.05) or len(a.assignment()) == 4,
                   what="a to take the partitions back")
    finally:
        a.close()
