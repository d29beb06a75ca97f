"""Consumer: polling, fairness, seeking, deserializers, commits, wake-up, admin.

What runs where: the tests that take ``filled`` (a topic of ``any_log``: 4 partitions
of 250 records) or ``any_log`` run on a log directory and on the session's Kafka
broker; groups on Kafka are Kafka's (its coordinator, its rebalances), so those tests
wait for a rebalance by polling until it is done rather than for a fixed number of
polls. ``local_only`` tests say why: the local fetcher's and group member's own
machinery (ownership locks, the log's clock), offsets written into the sidecar file,
a damaged segment file.
"""

from __future__ import annotations

import collections
import resource
import threading
import time

import pytest

import eventlog
from eventlog import (
    ClosedError,
    CommitFailedError,
    Consumer,
    GroupNotEmptyError,
    InvalidConfigError,
    InvalidGroupError,
    NotAssignedError,
    OffsetOutOfRangeError,
    Producer,
    SerializationError,
    TopicPartition,
    UnknownGroupError,
    UnknownTopicError,
)
from eventlog._offsets import OffsetStore
from tests.conftest import is_kafka, spawn_python, unique_name

TP = TopicPartition
local_only = pytest.mark.local_only


@pytest.fixture
def topic():
    return unique_name("orders")


@pytest.fixture
def filled(any_log, topic):
    """``topic`` with 4 partitions of 250 records each: value = [partition, i]."""
    any_log.create_topic(topic, partitions=4)
    with Producer(any_log) as producer:
        for p in range(4):
            producer.send_batch(topic, [[p, i] for i in range(250)], partition=p)
    return any_log


def drain(consumer, expected, timeout=10):
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < expected and time.monotonic() < deadline:
        out.extend(consumer.poll(timeout=0.2))
        check(consumer)
    return out


def first_poll(consumer, max_records=None, timeout=30):
    """The first non-empty poll (on Kafka a group join or the first fetch takes a
    moment; a local consumer has records at its first poll)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if records := consumer.poll(timeout=0.5, max_records=max_records):
            return records
    return []


def check(consumer):
    """The invariants of a local consumer's coordinator, fetcher and group member (a
    consumer on Kafka leaves that state to librdkafka)."""
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is None:
        return
    coordinator._check()
    coordinator.fetcher._check()
    if coordinator._member is not None:
        coordinator._member._check()


def owned(consumer):
    """The partitions a consumer owns (a local group member may wait for a previous
    owner; on Kafka a member owns what it is assigned)."""
    check(consumer)
    fetcher = getattr(consumer, "_fetcher", None)
    return set(consumer.assignment()) if fetcher is None else fetcher.owned()


def test_poll_returns_records_in_order_per_partition(filled, topic):
    with Consumer(filled, topic) as consumer:
        records = drain(consumer, 1000)
    assert len(records) == 1000
    per = collections.defaultdict(list)
    for r in records:
        per[r.partition].append(r.offset)
        assert r.value == [r.partition, r.offset]
    assert all(offsets == list(range(250)) for offsets in per.values())


def test_poll_is_fair_across_partitions(filled, topic):
    with Consumer(filled, topic) as consumer:
        first = first_poll(consumer, max_records=100)
        polls = [first]
        while sum(map(len, polls)) < 1000:
            polls.append(first_poll(consumer, max_records=100))
    assert all(0 < len(records) <= 100 for records in polls)
    if is_kafka(filled):
        # librdkafka hands over a fetch partition by partition: one poll may hold one
        # partition, and the polls of the first fetch hold them all
        # (docs/kafka-backend.md)
        assert {r.partition for records in polls for r in records} == {0, 1, 2, 3}
        return
    counts = collections.Counter(r.partition for r in first)
    assert len(first) == 100
    assert set(counts) == {0, 1, 2, 3} and min(counts.values()) >= 20


@local_only("the local fetcher's turns over partitions")
def test_with_many_partitions_polls_take_turns(log):
    log.create_topic("wide", partitions=40)
    with Producer(log) as producer:
        for p in range(40):
            producer.send_batch("wide", list(range(50)), partition=p)
    with Consumer(log, "wide") as consumer:
        polls = [consumer.poll(timeout=1, max_records=160) for _ in range(4)]
    visited = [collections.Counter(r.partition for r in records) for records in polls]
    # 16 records from each of 10 partitions per poll (not 4 from each of 40), and each
    # poll goes on where the previous one stopped, so four polls visit every partition
    assert all(set(c.values()) == {16} and len(c) == 10 for c in visited)
    assert set().union(*visited) == set(range(40))


def test_iteration_blocks_and_ends_after_consumer_timeout(filled, topic):
    # (on Kafka the first fetch alone may take longer than 300 ms)
    idle_ms = 3000 if is_kafka(filled) else 300
    with Consumer(filled, topic, consumer_timeout_ms=idle_ms) as consumer:
        assert len(list(consumer)) == 1000


def test_pause_and_resume(filled, topic):
    with Consumer(filled, topic) as consumer:
        consumer.pause(TP(topic, 0), TP(topic, 1))
        assert consumer.paused() == {TP(topic, 0), TP(topic, 1)}
        got = drain(consumer, 500, timeout=3)
        assert {r.partition for r in got} == {2, 3}
        consumer.resume(TP(topic, 0))
        got = drain(consumer, 250, timeout=3)
        assert {r.partition for r in got} == {0}


def test_seek_position_and_offsets(filled, topic):
    tp = TP(topic, 2)
    with Consumer(filled) as consumer:
        consumer.assign([tp])
        assert consumer.assignment() == {tp}
        assert consumer.position(tp) == 0
        consumer.seek(tp, 200)
        assert [r.offset for r in consumer.poll(timeout=1)] == list(range(200, 250))
        assert consumer.position(tp) == 250
        consumer.seek_to_beginning(tp)
        assert consumer.position(tp) == 0
        consumer.seek_to_end()
        assert consumer.position(tp) == 250
        assert consumer.lag() == {tp: 0}
        consumer.seek(tp, 240)
        assert consumer.lag() == {tp: 10}
        assert consumer.beginning_offsets([tp]) == {tp: 0}
        assert consumer.end_offsets([tp, TP(topic, 0)]) == {tp: 250, TP(topic, 0): 250}
        with pytest.raises(NotAssignedError):
            consumer.position(TP(topic, 0))
        with pytest.raises(InvalidConfigError):
            consumer.seek(tp, -1)


def test_offsets_for_times(any_log):
    log, t = any_log, unique_name()
    log.create_topic(t)
    with Producer(log) as producer:
        producer.send_batch(t, ["a", "b", "c"], timestamps_ms=[100, 200, 300])
    with Consumer(log) as consumer:
        tp = TP(t, 0)
        assert consumer.offsets_for_times({tp: 150}) == {tp: 1}
        assert consumer.offsets_for_times({tp: 301}) == {tp: None}


def test_deserializers_mirror_serializers(any_log):
    log, t = any_log, unique_name()
    log.create_topic(t)
    with Producer(log, value_serializer="json", key_serializer="str") as producer:
        producer.send(t, {"a": 1}, key="k").result()
    with Consumer(log, t, value_deserializer="json", key_deserializer="str") as consumer:
        (r,) = first_poll(consumer)
    assert (r.key, r.value) == ("k", {"a": 1})
    with Consumer(log, t, value_deserializer=lambda b: bytes(b).upper()) as consumer:
        assert first_poll(consumer)[0].value == b'{"A":1}'


def test_undeserializable_record_names_itself_and_can_be_skipped(any_log):
    log, t = any_log, unique_name()
    log.create_topic(t)
    with Producer(log, value_serializer="bytes") as producer:
        producer.send_batch(t, [b'{"ok":1}', b"not json", b'{"ok":3}'])
    with Consumer(log, t, value_deserializer="json") as consumer:
        first = first_poll(consumer)
        assert [r.value for r in first] == [{"ok": 1}]
        with pytest.raises(SerializationError) as info:
            consumer.poll(timeout=1)
        err = info.value
        assert (err.topic, err.partition, err.offset) == (t, 0, 1)
        assert "offset 1" in str(err)
        assert consumer.position(TP(t, 0)) == 1
        consumer.seek(TP(t, 0), err.offset + 1)
        assert [r.value for r in first_poll(consumer)] == [{"ok": 3}]


@local_only("the local decoder's pause of the garbage collector")
def test_poll_pauses_the_collector_only_while_it_builds_records(log):
    import gc

    log.create_topic("t")
    with Producer(log) as producer:
        producer.send_batch("t", [{"i": i, "tags": [i]} for i in range(10_000)])
        producer.send("t", "bad", partition=0)  # not a dict: the deserializer refuses it
    seen: list[bool] = []

    def strict(data):
        value = eventlog.serde.deserializer("msgpack")(data)
        seen.append(gc.isenabled())
        if not isinstance(value, dict):
            raise ValueError("not a dict")
        return value

    was = gc.isenabled()
    collections_seen = [0]

    def count(phase, info):
        if phase == "start":
            collections_seen[0] += 1

    gc.enable()
    gc.callbacks.append(count)
    try:
        with Consumer(log, "t", group_id="g", value_deserializer=strict) as consumer:
            got = 0
            while got < 10_000:  # a loop that drops each batch once handled
                got += len(consumer.poll(timeout=1))
            assert gc.isenabled()
            # 20 polls of 500 records, 1,500 containers each: without the pause (or
            # with the collector back on while the records were alive) there would be
            # a collection per poll.
            assert collections_seen[0] < 5
            with pytest.raises(SerializationError):
                consumer.poll(timeout=1)
            assert gc.isenabled()  # back on after a failed poll too
            assert seen and not any(seen)  # paused while the values were decoded
            gc.disable()
            consumer.seek(TP("t", 0), 0)
            assert len(consumer.poll(timeout=1)) == 500
            assert not gc.isenabled()  # the user's setting stands
    finally:
        gc.callbacks.remove(count)
        if was:
            gc.enable()
        else:
            gc.disable()


def test_without_group_reads_everything_and_commit_raises(filled, topic):
    with Consumer(filled, topic) as consumer:
        assert len(consumer.assignment()) == 4
        drain(consumer, 1000)
        with pytest.raises(CommitFailedError, match="no group_id"):
            consumer.commit()
        assert consumer.committed(TP(topic, 0)) is None
        filled.topic(topic).add_partitions(1)
        filled.topic(topic).refresh()
        with Producer(filled) as producer:
            producer.send(topic, "new", partition=4).result()
        # (a group-less consumer on Kafka looks for new partitions every 5 s)
        got = drain(consumer, 1, timeout=15)
        assert [(r.partition, r.value) for r in got] == [(4, "new")]


def test_unsubscribe_stops_reading_and_assign_takes_over(filled, topic):
    with Consumer(filled, topic, group_id=unique_name("u"), enable_auto_commit=False) as c:
        assert first_poll(c)
        assert c.subscription() == {topic}
        c.unsubscribe()
        assert c.assignment() == set() and c.subscription() == set()
        assert c.poll(timeout=0.2) == []
        c.assign([TP(topic, 3)])
        got = drain(c, 250)
        assert [r.offset for r in got] == list(range(250))
        assert {r.partition for r in got} == {3}


def test_commit_and_resume_from_committed(filled, topic):
    group = unique_name("g")
    with Consumer(filled, topic, group_id=group, enable_auto_commit=False) as consumer:
        got = first_poll(consumer, max_records=100)
        consumer.commit()
        positions = {tp: consumer.position(tp) for tp in consumer.assignment()}
        assert {consumer.committed(tp) for tp in positions} == set(positions.values())
        # an explicit offset at or before the position read from: the next member
        # reads partition 3 again from there (on Kafka the first poll may hold no
        # record of partition 3 at all: then its position is 0)
        rewind = min(7, positions[TP(topic, 3)])
        consumer.commit({TP(topic, 3): rewind})
        assert consumer.committed(TP(topic, 3)) == rewind
    assert len(got) == 100
    with Consumer(filled, topic, group_id=group, enable_auto_commit=False) as again:
        rest = drain(again, 1000 - 100 + positions[TP(topic, 3)] - rewind)
    seen = {(r.partition, r.offset) for r in got} | {(r.partition, r.offset) for r in rest}
    assert len(seen) == 1000


def test_auto_commit_commits_only_what_the_application_received(filled, topic):
    group = unique_name("auto")
    consumer = Consumer(filled, topic, group_id=group, auto_commit_interval_ms=1)
    received = first_poll(consumer, max_records=40)
    assert len(received) == 40
    time.sleep(0.01)
    consumer.pause(*consumer.assignment())    # nothing more is returned...
    committed: dict = {}
    deadline = time.monotonic() + 10
    while not committed and time.monotonic() < deadline:
        # ...and the next poll commits what came before (on Kafka it sends the
        # commit without waiting: the group's offsets show it a moment later)
        assert consumer.poll(timeout=0.05) == []
        committed = filled.group_offsets(group) if group in filled.groups() else {}
    got = collections.Counter(r.partition for r in received)
    assert {tp.partition: off for tp, off in committed.items() if off} == dict(got)
    assert sum(committed.values()) == 40   # never more than what was returned
    consumer.resume(*consumer.assignment())
    assert len(first_poll(consumer, max_records=1)) == 1
    consumer.close()                                 # close commits the positions
    assert sum(filled.group_offsets(group).values()) == 41


def test_commit_async_runs_in_order_and_calls_back(filled, topic):
    calls = []
    with Consumer(filled, topic, group_id=unique_name("a"), enable_auto_commit=False
                  ) as consumer:
        first_poll(consumer)
        futures = [consumer.commit_async({TP(topic, 0): i},
                                         callback=lambda off, err: calls.append((off, err)))
                   for i in range(1, 6)]
        for f in futures:
            f.result(timeout=5)
        assert consumer.committed(TP(topic, 0)) == 5
    assert [c[0][TP(topic, 0)] for c in calls] == [1, 2, 3, 4, 5]
    assert all(c[1] is None for c in calls)


@local_only("a committed offset written straight into the group's sidecar file")
@pytest.mark.parametrize("reset, expected", [("earliest", 0), ("latest", 250)])
def test_committed_offset_out_of_range_uses_auto_offset_reset(filled, topic, reset, expected):
    OffsetStore(str(filled.path) + "/groups/r.offsets", False).commit(
        {TP(topic, 0): 9999}, 0)
    with Consumer(filled, group_id="r", auto_offset_reset=reset) as consumer:
        consumer.assign([TP(topic, 0)])
        assert consumer.position(TP(topic, 0)) == expected


def test_auto_offset_reset_none_raises(filled, topic):
    with Consumer(filled, group_id=unique_name("n"), auto_offset_reset="none") as consumer:
        consumer.assign([TP(topic, 0)])
        with pytest.raises(OffsetOutOfRangeError):
            for _ in range(60):   # at once locally; at the first fetch on Kafka
                consumer.poll(timeout=0 if not is_kafka(filled) else 0.5)


def test_seek_beyond_the_end_resets_on_read(filled, topic):
    with Consumer(filled, auto_offset_reset="earliest") as consumer:
        consumer.assign([TP(topic, 1)])
        consumer.seek(TP(topic, 1), 5000)
        assert first_poll(consumer)[0].offset == 0


# -- wake-up --------------------------------------------------------------------------

def test_blocked_poll_wakes_on_an_append_in_this_process(any_log):
    log, t = any_log, unique_name()
    log.create_topic(t, partitions=3)
    with Consumer(log, t) as consumer, Producer(log) as producer:
        consumer.poll(timeout=0)
        timer = threading.Timer(0.3, lambda: producer.send(t, "hi", partition=2).result())
        timer.start()
        start = time.monotonic()
        records = consumer.poll(timeout=30)
        elapsed = time.monotonic() - start
        timer.join()
    assert [r.value for r in records] == ["hi"]
    assert elapsed < 5   # woke by the append, long before the 30 s timeout


def test_blocked_poll_wakes_on_an_append_in_another_process(any_log):
    log, t = any_log, unique_name()
    log.create_topic(t, partitions=2)
    with Consumer(log, t) as consumer:
        consumer.poll(timeout=0)
        writer = spawn_python("""
import sys, time, eventlog
time.sleep(0.5)
with eventlog.open(sys.argv[1]) as log, eventlog.Producer(log) as p:
    p.send(sys.argv[2], "from afar", partition=1).result()
""", str(log.path), t)
        start = time.monotonic()
        records = consumer.poll(timeout=30)
        elapsed = time.monotonic() - start
        writer.wait(30)
    assert [r.value for r in records] == ["from afar"]
    assert elapsed < 10


def test_an_idle_consumer_does_not_spin(any_log):
    log, t = any_log, unique_name()
    log.create_topic(t, partitions=4)
    with Consumer(log, t, group_id=unique_name("idle")) as consumer:
        deadline = time.monotonic() + 30
        while not consumer.assignment() and time.monotonic() < deadline:
            consumer.poll(timeout=0.1)   # until it joined the group
        before = resource.getrusage(resource.RUSAGE_SELF)
        start = time.monotonic()
        assert consumer.poll(timeout=1.5) == []
        wall = time.monotonic() - start
        after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert cpu < 0.2 * wall, f"an idle poll used {cpu:.3f} s of CPU in {wall:.2f} s"


# -- groups in one process ------------------------------------------------------------

def test_group_members_split_partitions_and_take_over_on_close(filled, topic):
    group = unique_name("g")
    a = Consumer(filled, topic, group_id=group, enable_auto_commit=False)
    b = Consumer(filled, topic, group_id=group, enable_auto_commit=False)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        a.poll(timeout=0.05, max_records=1)
        b.poll(timeout=0.05, max_records=1)
        owned_a, owned_b = owned(a), owned(b)
        if len(owned_a) == 2 and len(owned_b) == 2:
            break
    assert owned_a | owned_b == {TP(topic, p) for p in range(4)}
    assert not owned_a & owned_b
    a.commit()
    a.close()
    # everything not committed by a reaches b (on Kafka b's own partitions too are
    # revoked and assigned again, and read again from their start: no commit of b's)
    rest: set = set()
    deadline = time.monotonic() + 30
    while len(rest) < 1000 - 2 and time.monotonic() < deadline:
        rest |= {(r.partition, r.offset) for r in b.poll(timeout=0.2)}
    b.close()
    assert len(rest) >= 1000 - 2
    assert {p for p, _ in rest} == {0, 1, 2, 3}


def test_rebalance_listener_order(filled, topic):
    events = []

    class Listener(eventlog.RebalanceListener):
        def __init__(self, name, consumer_ref):
            self.name, self.ref = name, consumer_ref

        def on_revoked(self, partitions):
            consumer = self.ref[0]
            consumer.commit({tp: consumer.position(tp) for tp in partitions})
            events.append((self.name, "revoked", sorted(partitions)))

        def on_assigned(self, partitions):
            events.append((self.name, "assigned", sorted(partitions)))

    group = unique_name("l")
    ref_a: list = []
    a = Consumer(filled, group_id=group, enable_auto_commit=False,
                 listener=Listener("a", ref_a))
    ref_a.append(a)
    a.subscribe([topic])
    first_poll(a)
    assert events[0] == ("a", "assigned", [TP(topic, p) for p in range(4)])
    ref_b: list = []
    b = Consumer(filled, group_id=group, enable_auto_commit=False,
                 listener=Listener("b", ref_b))
    ref_b.append(b)
    b.subscribe([topic])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (
            ("a", "revoked") in [(n, k) for n, k, _ in events]
            and ("b", "assigned") in [(n, k) for n, k, _ in events]):
        a.poll(timeout=0.02, max_records=1)
        b.poll(timeout=0.02, max_records=1)
    kinds = [(n, k) for n, k, _ in events]
    assert kinds.index(("a", "revoked")) < kinds.index(("b", "assigned"))
    revoked = next(p for n, k, p in events if (n, k) == ("a", "revoked"))
    assert filled.group_offsets(group).keys() >= set(revoked)  # committed in on_revoked
    a.close()
    b.close()


@local_only("the local group member's ownership locks while it is stuck")
def test_a_stuck_member_is_evicted_and_cannot_commit(filled, topic):
    """A member that stops polling is removed from the group after
    max_poll_interval_ms: its commits are refused (fencing). It keeps the ownership
    locks while it is stuck, so nobody else reads its partitions until it polls again
    (then it notices, releases them, and rejoins) or dies."""
    lost = []

    class Lost(eventlog.RebalanceListener):
        def on_lost(self, partitions):
            lost.append(set(partitions))

    zombie = Consumer(filled, topic, group_id="z", enable_auto_commit=False,
                      max_poll_interval_ms=300, heartbeat_interval_ms=50, listener=Lost())
    zombie.poll(timeout=0.2, max_records=1)
    other = Consumer(filled, topic, group_id="z", enable_auto_commit=False,
                     max_poll_interval_ms=300, heartbeat_interval_ms=50)
    deadline = time.monotonic() + 10
    while len(other.assignment()) < 4 and time.monotonic() < deadline:  # zombie idles
        other.poll(timeout=0.05, max_records=1)
    held_by_zombie = owned(zombie)
    assert len(other.assignment()) == 4 and held_by_zombie
    assert not owned(other) & held_by_zombie                           # never two owners
    with pytest.raises(CommitFailedError, match="no longer in group"):
        zombie.commit()
    zombie.poll(timeout=0.1)              # wakes up: partitions lost, locks released
    assert lost == [held_by_zombie]
    zombie.close()
    deadline = time.monotonic() + 10
    while owned(other) != other.assignment() and time.monotonic() < deadline:
        other.poll(timeout=0.05, max_records=1)
    assert len(other.assignment()) == 4 and owned(other) == other.assignment()
    other.close()


def test_static_member_gets_its_partitions_back_without_a_rebalance(filled, topic):
    group, revoked_from_b = unique_name("s"), []

    class B(eventlog.RebalanceListener):
        def on_revoked(self, partitions):
            revoked_from_b.append(set(partitions))

    def member(instance, listener=None):
        return Consumer(filled, topic, group_id=group, group_instance_id=instance,
                        session_timeout_ms=60_000, enable_auto_commit=False,
                        listener=listener)

    a, b = member("worker-1"), member("worker-2", B())
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (
            a.assignment() and b.assignment() and not a.assignment() & b.assignment()
            and len(a.assignment() | b.assignment()) == 4):
        a.poll(timeout=0.01, max_records=1)
        b.poll(timeout=0.01, max_records=1)
    before = filled.describe_group(group)
    mine, theirs, settled = set(a.assignment()), set(b.assignment()), len(revoked_from_b)
    a.close()
    a = member("worker-1")
    deadline = time.monotonic() + 30
    while not a.assignment() and time.monotonic() < deadline:
        a.poll(timeout=0.1, max_records=1)
    b.poll(timeout=0.1, max_records=1)
    after = filled.describe_group(group)
    assert set(a.assignment()) == mine
    assert set(b.assignment()) == theirs and len(revoked_from_b) == settled  # no rebalance
    assert after.generation == before.generation   # (Kafka's describe reports 0)
    a.close()
    b.close()


def test_invalid_options_and_names(any_log):
    log, t = any_log, unique_name()
    log.create_topic(t)
    for kwargs in ({"auto_offset_reset": "middle"}, {"max_poll_records": 0},
                   {"partition_assignment_strategy": "random"},
                   {"group_instance_id": "x"}):
        with pytest.raises(InvalidConfigError):
            Consumer(log, t, **kwargs)
    for bad in ("../g", "", "a/b", "x" * 300):
        with pytest.raises(InvalidGroupError):
            Consumer(log, t, group_id=bad)
    with pytest.raises(UnknownTopicError):
        Consumer(log, unique_name("nope"))
    consumer = Consumer(log, t)
    consumer.close()
    with pytest.raises(ClosedError):
        consumer.poll()
    with pytest.raises(TypeError):
        Consumer("not a log")


# -- administration -------------------------------------------------------------------

def test_group_admin(filled, topic):
    billing = unique_name("billing")
    with Consumer(filled, topic, group_id=billing, enable_auto_commit=False) as c:
        drain(c, 1000, timeout=30)
        c.commit({TP(topic, 0): 100, TP(topic, 1): 250})
        assert billing in filled.groups()
        d = filled.describe_group(billing)
        assert d.state == "Stable" and len(d.members) == 1 and d.members[0].alive
        assert sorted(d.members[0].assignment) == [TP(topic, p) for p in range(4)]
        with pytest.raises(GroupNotEmptyError):
            filled.reset_group_offsets(billing, to_earliest=True)
        with pytest.raises(GroupNotEmptyError):
            filled.delete_group(billing)
    assert filled.group_offsets(billing)[TP(topic, 0)] == 100
    assert filled.group_lag(billing)[TP(topic, 0)] == 150
    assert filled.describe_group(billing).state == "Empty"
    tp0 = TP(topic, 0)
    assert filled.reset_group_offsets(billing, to_earliest=True, dry_run=True)[tp0] == 0
    assert filled.group_offsets(billing)[tp0] == 100
    assert filled.reset_group_offsets(billing, shift_by=-30)[tp0] == 70
    assert filled.reset_group_offsets(billing, to_offset=10**9)[tp0] == 250
    assert filled.reset_group_offsets(billing, to_latest=True)[TP(topic, 1)] == 250
    new = filled.reset_group_offsets(billing, [topic], to_timestamp_ms=0)
    assert new == {TP(topic, p): 0 for p in range(4)}
    with pytest.raises(InvalidConfigError):
        filled.reset_group_offsets(billing, to_earliest=True, to_latest=True)
    filled.delete_group(billing)
    assert billing not in filled.groups()
    with pytest.raises(UnknownGroupError):
        filled.group_offsets(billing)


def test_committed_offset_below_the_log_start_uses_auto_offset_reset(filled, topic):
    tp, group = TP(topic, 0), unique_name("old")
    with Consumer(filled, group_id=group, enable_auto_commit=False) as consumer:
        consumer.assign([tp])
        consumer.commit({tp: 10})
    filled.delete_records(tp, 100)     # as retention does: the start moves past 10
    with Consumer(filled, group_id=group) as consumer:
        consumer.assign([tp])
        assert consumer.position(tp) == 100
        assert first_poll(consumer)[0].offset == 100


@local_only("a damaged batch in a segment file")
def test_good_records_before_a_corrupt_batch_are_returned_first(log):
    log.create_topic("t")
    p = log.topic("t").partition(0)
    with Producer(log, linger_ms=0) as producer:
        for i in range(5):
            producer.send("t", i, partition=0).result()
    plog = p._log
    segment = plog._segments[0]
    positions = [pos for pos, _ in segment.headers(0, plog.state().active_position)]
    mm = segment.mapping(positions[3] + 70)
    mm[positions[3] + 66] ^= 0xFF         # damage the 4th batch
    with Consumer(log, "t") as consumer:
        first = consumer.poll(timeout=1)
        assert [r.value for r in first] == [0, 1, 2]
        with pytest.raises(eventlog.CorruptRecordError):
            consumer.poll(timeout=1)
    mm[positions[3] + 66] ^= 0xFF


@local_only("session timeouts on the log's clock (a ManualClock); Kafka's are the broker's")
def test_a_static_member_keeps_its_own_session_timeout(log_dir):
    from eventlog.testing import ManualClock

    clock = ManualClock()
    with eventlog.open(log_dir, clock=clock) as log:
        log.create_topic("t", partitions=2)
        static = Consumer(log, "t", group_id="s", group_instance_id="w1",
                          session_timeout_ms=60_000, heartbeat_interval_ms=10)
        other = Consumer(log, "t", group_id="s", session_timeout_ms=10_000,
                         heartbeat_interval_ms=10)
        for _ in range(10):
            static.poll(timeout=0.01)
            other.poll(timeout=0.01)
        reserved = set(static.assignment())
        static.close()
        clock.advance(20_000)        # past the other's timeout, not past the static one's
        for _ in range(5):
            other.poll(timeout=0.01)
        assert not set(other.assignment()) & reserved
        clock.advance(50_000)        # now past 60 s: its partitions move on
        for _ in range(5):
            other.poll(timeout=0.01)
        assert set(other.assignment()) >= reserved
        other.close()
