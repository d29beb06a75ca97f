"""_coordinator: assignment modes, group membership and ownership, listener order,
fenced and automatic commits.

Unit tests on real log directories (no storage mocks); ``_check()`` of the
coordinator, its fetcher and its group member after every change.
"""

from __future__ import annotations

import inspect
import threading
import time

import msgpack
import pytest

import eventlog
from eventlog import TopicPartition as TP
from eventlog._coordinator import Coordinator, RebalanceListener
from eventlog._fetcher import Wait


def check(coordinator):
    coordinator._check()
    coordinator.fetcher._check()
    if coordinator._member is not None:
        coordinator._member._check()


def poll(coordinator, max_records=500):
    """One poll step: the coordinator's, then the fetcher's; [] when it would wait."""
    got = coordinator.fetcher.fetch(max_records, coordinator.poll())
    check(coordinator)
    return [] if isinstance(got, Wait) else got


def until(condition, *coordinators, timeout=10):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        for coordinator in coordinators:
            poll(coordinator, 1)
        time.sleep(0.01)


@pytest.fixture
def orders(log):
    """Topic 'orders', 4 partitions of 10 records each."""
    log.create_topic("orders", partitions=4)
    for p in range(4):
        log.topic("orders").partition(p).append([msgpack.packb(i) for i in range(10)])
    return log


def coordinator(log, **options):
    made = Coordinator(log.backend, **options)
    check(made)
    return made


def test_consumer_and_coordinator_options_have_the_same_defaults():
    consumer = inspect.signature(eventlog.Consumer).parameters
    for name, parameter in inspect.signature(Coordinator).parameters.items():
        if name in consumer:
            assert consumer[name].default == parameter.default, name


def test_without_a_group_a_subscription_reads_every_partition_and_added_ones(orders):
    c = coordinator(orders)
    c.subscribe(["orders"])
    check(c)
    assert c.fetcher.assigned() == c.fetcher.owned() == {TP("orders", p) for p in range(4)}
    assert len(poll(c)) == 40
    orders.topic("orders").add_partitions(1)
    until(lambda: TP("orders", 4) in c.fetcher.assigned(), c)   # re-read every second
    with pytest.raises(eventlog.CommitFailedError, match="no group_id"):
        c.commit()
    assert c.committed(TP("orders", 0)) is None
    c.close()
    check(c)
    assert c.fetcher.assigned() == set()


def test_bad_subscriptions_change_nothing(orders):
    c = coordinator(orders)
    c.assign([TP("orders", 1)])
    for bad in ([], ["nope"], ["bad/name"]):
        with pytest.raises((eventlog.InvalidConfigError, eventlog.UnknownTopicError,
                            eventlog.InvalidTopicError)):
            c.subscribe(bad)
        check(c)
        assert c.fetcher.assigned() == {TP("orders", 1)}
    with pytest.raises(eventlog.UnknownPartitionError):
        c.assign([TP("orders", 9)])
    check(c)


def test_assign_subscribe_unsubscribe_in_any_order_keep_the_invariants(orders):
    c = coordinator(orders, group_id="g", enable_auto_commit=False)
    c.assign([TP("orders", 0), TP("orders", 1)])
    check(c)
    assert c.fetcher.owned() == {TP("orders", 0), TP("orders", 1)}
    c.commit({TP("orders", 0): 3})                      # manual assignment: not fenced
    c.subscribe(["orders"])
    check(c)
    assert c.fetcher.owned() == {TP("orders", p) for p in range(4)}
    assert c.fetcher.position(TP("orders", 0)) == 3    # from the commit
    c.assign([TP("orders", 2)])
    check(c)
    assert c.subscription() == set() and c.fetcher.assigned() == {TP("orders", 2)}
    c.unsubscribe()
    check(c)
    assert c.fetcher.assigned() == set()
    c.close()


def test_two_members_share_the_partitions_and_never_own_one_both(orders):
    a = coordinator(orders, group_id="g", enable_auto_commit=False)
    a.subscribe(["orders"])
    assert a.fetcher.owned() == {TP("orders", p) for p in range(4)}
    b = coordinator(orders, group_id="g", enable_auto_commit=False)
    b.subscribe(["orders"])
    check(b)

    def split():
        assert not a.fetcher.owned() & b.fetcher.owned()    # at every instant
        return len(a.fetcher.owned()) == len(b.fetcher.owned()) == 2
    until(split, a, b)
    assert a.fetcher.owned() | b.fetcher.owned() == {TP("orders", p) for p in range(4)}
    a.close()
    until(lambda: len(b.fetcher.owned()) == 4, b)
    b.close()


def test_revoked_partitions_are_committed_before_on_revoked_and_before_the_new_owner(orders):
    events = []
    store = orders.backend.offset_store("g")

    class Listener(RebalanceListener):
        def __init__(self, name):
            self.name = name

        def on_revoked(self, partitions):
            # auto-commit ran first: the positions of what was returned are stored
            committed = store.read()
            events.append((self.name, "revoked", {tp: committed.get(tp) for tp in partitions}))

        def on_assigned(self, partitions):
            events.append((self.name, "assigned", set(partitions)))

    a = coordinator(orders, group_id="g", listener=Listener("a"))
    a.subscribe(["orders"])
    assert len(poll(a)) == 40
    b = coordinator(orders, group_id="g", enable_auto_commit=False, listener=Listener("b"))
    b.subscribe(["orders"])
    until(lambda: len(b.fetcher.owned()) == 2, a, b)
    kinds = [(name, kind) for name, kind, _ in events]
    assert kinds.index(("a", "revoked")) < kinds.index(("b", "assigned"), 1)
    revoked = next(p for name, kind, p in events if (name, kind) == ("a", "revoked"))
    assert revoked and all(offset == 10 for offset in revoked.values())
    assert all(b.fetcher.position(tp) == 10 for tp in b.fetcher.owned())
    a.close()
    b.close()


def test_commits_are_fenced_to_what_the_member_owns(orders):
    a = coordinator(orders, group_id="g", enable_auto_commit=False)
    a.subscribe(["orders"])
    b = coordinator(orders, group_id="g", enable_auto_commit=False)
    b.subscribe(["orders"])
    until(lambda: len(b.fetcher.owned()) == 2, a, b)
    theirs = next(iter(b.fetcher.owned()))
    with pytest.raises(eventlog.CommitFailedError, match="does not own"):
        a.commit({theirs: 1})
    b.commit({theirs: 1})
    assert b.committed(theirs) == 1
    with pytest.raises(eventlog.InvalidConfigError):
        b.commit({theirs: -1})
    a.close()
    b.close()


def test_a_removed_member_loses_its_partitions_and_rejoins(orders):
    lost = []

    class Lost(RebalanceListener):
        def on_lost(self, partitions):
            lost.append(set(partitions))

    zombie = coordinator(orders, group_id="z", enable_auto_commit=False,
                         max_poll_interval_ms=200, heartbeat_interval_ms=20, listener=Lost())
    zombie.subscribe(["orders"])
    other = coordinator(orders, group_id="z", enable_auto_commit=False,
                        max_poll_interval_ms=200, heartbeat_interval_ms=20)
    other.subscribe(["orders"])
    time.sleep(0.3)                                  # the zombie stops polling
    until(lambda: len(other.fetcher.assigned()) == 4, other)
    held = zombie.fetcher.owned()
    with pytest.raises(eventlog.CommitFailedError, match="no longer in group"):
        zombie.commit({next(iter(held)): 1})
    poll(zombie)                                     # notices: lost, released, rejoined
    assert lost == [held]
    zombie.close()
    until(lambda: other.fetcher.owned() == other.fetcher.assigned(), other)
    other.close()


def test_auto_commit_commits_the_positions_it_is_given(orders):
    given = {TP("orders", 0): 2}
    c = coordinator(orders, group_id="g", auto_commit_interval_ms=200,
                    positions=lambda: dict(given))
    c.subscribe(["orders"])
    assert len(poll(c)) == 40 and c.committed(TP("orders", 0)) is None   # not due yet
    time.sleep(0.25)
    poll(c)
    assert c.committed(TP("orders", 0)) == 2 and c.committed(TP("orders", 1)) is None
    given[TP("orders", 0)] = 5
    c.commit()
    assert c.committed(TP("orders", 0)) == 5
    given[TP("orders", 0)] = 7
    c.close()                                        # commits at close too
    assert orders.group_offsets("g") == {TP("orders", 0): 7}


def test_commit_async_commits_in_call_order_and_calls_back(orders):
    c = coordinator(orders, group_id="g", enable_auto_commit=False)
    c.subscribe(["orders"])
    done = []
    finished = threading.Event()

    def callback(offsets, error):
        done.append((offsets, error))
        if len(done) == 3:
            finished.set()
    futures = [c.commit_async({TP("orders", 0): n}, callback) for n in (1, 2, 3)]
    assert [f.result(timeout=10) for f in futures] == [{TP("orders", 0): n} for n in (1, 2, 3)]
    assert finished.wait(10) and [e for _, e in done] == [None] * 3
    assert c.committed(TP("orders", 0)) == 3
    failed = c.commit_async({("nope", 0): 1})
    with pytest.raises(eventlog.CommitFailedError):
        failed.result(timeout=10)
    c.close()


def test_invalid_options(log):
    for bad in ({"partition_assignment_strategy": "random"}, {"session_timeout_ms": 0},
                {"group_instance_id": "x"}, {"auto_offset_reset": "middle"}):
        with pytest.raises(eventlog.InvalidConfigError):
            Coordinator(log.backend, **bad)
    with pytest.raises(eventlog.InvalidGroupError):
        Coordinator(log.backend, group_id="a/b")
