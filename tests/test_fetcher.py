"""_fetcher: the fetch step, positions, fairness, deserialization salvage, the Wait.

Unit tests on real log directories (no storage mocks); ``_check()`` after every change.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time

import msgpack
import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import eventlog
from eventlog import TopicPartition as TP
from eventlog._fetcher import MIN_SHARE, Fetcher, Wait

pack = msgpack.packb


def append(log, topic, partition, values):
    return log.topic(topic).partition(partition).append([pack(v) for v in values])


def fetcher_for(log, tps, owned=True, offsets=None, **options):
    fetcher = Fetcher(log.backend, offsets, **options)
    for tp in tps:
        fetcher.add(tp, owned=owned)
    fetcher._check()
    return fetcher


def fetch_all(fetcher, max_records=500):
    out = []
    while True:
        got = fetcher.fetch(max_records, 0.25)
        fetcher._check()
        if isinstance(got, Wait):
            return out
        assert 0 < len(got) <= max_records
        out.extend(got)


def test_a_fetch_takes_turns_and_gives_each_partition_at_least_min_share(log):
    log.create_topic("t", partitions=8)
    for p in range(8):
        append(log, "t", p, [[p, i] for i in range(100)])
    fetcher = fetcher_for(log, [TP("t", p) for p in range(8)])
    first = fetcher.fetch(4 * MIN_SHARE, 0.25)        # 8 partitions, yet 16 records each
    assert isinstance(first, list) and len(first) == 4 * MIN_SHARE
    assert [r.partition for r in first] == [p for p in range(4) for _ in range(MIN_SHARE)]
    second = fetcher.fetch(4 * MIN_SHARE, 0.25)
    assert {r.partition for r in second} == {4, 5, 6, 7}  # the next round starts after
    small = fetcher.fetch(8, 0.25)              # under 4 * MIN_SHARE: a quarter each
    assert [r.partition for r in small] == [0, 0, 1, 1, 2, 2, 3, 3]
    rest = fetch_all(fetcher)
    got = first + second + small + rest
    for p in range(8):
        assert [r.offset for r in got if r.partition == p] == list(range(100))
    assert all(r.value == [r.partition, r.offset] for r in got)


def test_room_left_goes_to_the_partitions_that_have_more(log):
    log.create_topic("t", partitions=4)
    append(log, "t", 0, list(range(300)))
    append(log, "t", 1, [0])
    fetcher = fetcher_for(log, [TP("t", p) for p in range(4)])
    got = fetcher.fetch(200, 0.25)
    assert len(got) == 200
    assert sum(r.partition == 1 for r in got) == 1


def test_with_nothing_new_the_wait_holds_the_counters_seen_before_the_fetch(log):
    log.create_topic("t", partitions=2)
    fetcher = fetcher_for(log, [TP("t", 0), TP("t", 1)])
    wait = fetcher.fetch(10, 0.25)
    assert isinstance(wait, Wait) and len(wait.counters) == 2 and wait.slice_s == 0.25
    append(log, "t", 1, ["late"])                # after the fetch, before the sleep
    start = time.monotonic()
    assert wait.sleep(10) is True                # returns at once: the counter moved
    assert time.monotonic() - start < 0.2
    assert [r.value for r in fetcher.fetch(10, 0.25)] == ["late"]
    fetcher._check()


def test_a_sleep_ends_on_an_append_from_another_thread_or_an_interrupt(log):
    import mmap

    from eventlog import _notify
    log.create_topic("t")
    fetcher = fetcher_for(log, [TP("t", 0)])
    wait = fetcher.fetch(10, 5.0)
    threading.Timer(0.05, append, (log, "t", 0, ["x"])).start()
    start = time.monotonic()
    assert wait.sleep(None) is True and time.monotonic() - start < 0.2
    fetch_all(fetcher)
    area = mmap.mmap(-1, mmap.PAGESIZE)
    word, waiters = _notify.Word(area, 0), _notify.Word(area, 4)
    wait = fetcher.fetch(10, 5.0)

    def interrupt():
        word.store(word.load() + 1)
        _notify.wake(word, waiters)
    threading.Timer(0.05, interrupt).start()
    start = time.monotonic()
    assert wait.sleep(5, (word, waiters, 0)) is True
    assert time.monotonic() - start < 0.2


def test_paused_and_unowned_partitions_are_not_read_and_nothing_ready_waits_briefly(log):
    log.create_topic("t", partitions=2)
    append(log, "t", 0, ["a"])
    append(log, "t", 1, ["b"])
    fetcher = fetcher_for(log, [TP("t", 0), TP("t", 1)], owned=False)
    wait = fetcher.fetch(10, 0.25)
    assert isinstance(wait, Wait) and wait.counters == [] and wait.slice_s == 0.02
    assert fetcher.waiting() and fetcher.positions() == {}
    fetcher.own(TP("t", 0))
    fetcher.own(TP("t", 1))
    fetcher.pause(TP("t", 1))
    fetcher._check()
    assert not fetcher.waiting() and fetcher.paused() == {TP("t", 1)}
    assert [r.value for r in fetcher.fetch(10, 0.25)] == ["a"]
    fetcher.resume(TP("t", 1))
    assert [r.value for r in fetcher.fetch(10, 0.25)] == ["b"]
    assert fetcher.positions() == {TP("t", 0): 1, TP("t", 1): 1}
    fetcher.remove(TP("t", 0))
    fetcher._check()
    assert fetcher.assigned() == {TP("t", 1)}
    with pytest.raises(eventlog.NotAssignedError):
        fetcher.position(TP("t", 0))


def test_a_position_resolves_to_the_committed_offset_else_auto_offset_reset(log):
    log.create_topic("t", partitions=3)
    for p in range(3):
        append(log, "t", p, list(range(10)))
    store = log.backend.offset_store("g")
    store.commit({TP("t", 0): 4, TP("t", 1): 99}, 0)     # 99 lies outside the partition
    earliest = fetcher_for(log, [TP("t", p) for p in range(3)], offsets=store)
    assert [earliest.position(TP("t", p)) for p in range(3)] == [4, 0, 0]
    latest = fetcher_for(log, [TP("t", p) for p in range(3)], offsets=store,
                         auto_offset_reset="latest")
    assert [latest.position(TP("t", p)) for p in range(3)] == [4, 10, 10]
    strict = fetcher_for(log, [TP("t", 1)], offsets=store, auto_offset_reset="none")
    with pytest.raises(eventlog.OffsetOutOfRangeError):
        strict.fetch(10, 0.25)
    earliest.own(TP("t", 0))              # a new owner reads its predecessor's commit
    store.commit({TP("t", 0): 7}, 0)
    assert earliest.position(TP("t", 0)) == 7
    earliest._check()


def test_a_position_out_of_range_at_a_fetch_resets(log):
    log.create_topic("t")
    append(log, "t", 0, list(range(5)))
    fetcher = fetcher_for(log, [TP("t", 0)])
    fetcher.seek(TP("t", 0), 1000)
    assert [r.offset for r in fetcher.fetch(10, 0.25)] == [0, 1, 2, 3, 4]
    fetcher.seek_to_beginning()
    assert fetcher.position(TP("t", 0)) == 0
    fetcher.seek_to_end(TP("t", 0))
    assert fetcher.position(TP("t", 0)) == 5 and fetcher.lag() == {TP("t", 0): 0}
    with pytest.raises(eventlog.InvalidConfigError):
        fetcher.seek(TP("t", 0), -1)
    fetcher._check()


def test_an_undeserializable_value_returns_those_before_it_then_raises_once(log):
    log.create_topic("raw")
    log.topic("raw").partition(0).append([b'{"n": 1}', b"oops", b'{"n": 3}'])
    fetcher = fetcher_for(log, [TP("raw", 0)], value_deserializer="json")
    assert [r.value for r in fetcher.fetch(10, 0.25)] == [{"n": 1}]
    fetcher._check()
    assert fetcher.position(TP("raw", 0)) == 1                # stays at the bad record
    with pytest.raises(eventlog.SerializationError) as failure:
        fetcher.fetch(10, 0.25)
    error = failure.value
    assert (error.topic, error.partition, error.offset) == ("raw", 0, 1)
    assert "partition 0 offset 1" in str(error) and "the value" in str(error)
    with pytest.raises(eventlog.SerializationError):          # found again, not skipped
        fetcher.fetch(10, 0.25)
    fetcher.seek(TP("raw", 0), error.offset + 1)
    fetcher._check()
    assert [r.value for r in fetcher.fetch(10, 0.25)] == [{"n": 3}]


def test_an_undeserializable_key_is_named_as_the_key(log):
    log.create_topic("k")
    log.topic("k").partition(0).append([pack(1), pack(2)], keys=[b'"a"', b"{"])
    fetcher = fetcher_for(log, [TP("k", 0)], key_deserializer="json")
    assert [(r.key, r.value) for r in fetcher.fetch(10, 0.25)] == [("a", 1)]
    with pytest.raises(eventlog.SerializationError, match="the key"):
        fetcher.fetch(10, 0.25)


def test_offset_lookups_of_any_partition_and_bad_names(log):
    log.create_topic("t", partitions=2)
    log.topic("t").partition(1).append([pack(i) for i in range(3)], timestamps_ms=[10, 20, 30])
    fetcher = fetcher_for(log, [])
    tps = [TP("t", 0), TP("t", 1)]
    assert fetcher.beginning_offsets(tps) == {TP("t", 0): 0, TP("t", 1): 0}
    assert fetcher.end_offsets(tps) == {TP("t", 0): 0, TP("t", 1): 3}
    assert fetcher.offsets_for_times({TP("t", 1): 15}) == {TP("t", 1): 1}
    with pytest.raises(eventlog.InvalidConfigError):
        fetcher.partition(("t", "0"))
    with pytest.raises(eventlog.UnknownTopicError):
        fetcher.add(TP("nope", 0), owned=True)
    with pytest.raises(eventlog.UnknownPartitionError):
        fetcher.add(TP("t", 5), owned=True)
    for bad in ({"auto_offset_reset": "middle"}, {"fetch_max_bytes": 0},
                {"value_deserializer": "nope"}):
        with pytest.raises(eventlog.InvalidConfigError):
            Fetcher(log.backend, None, **bad)
    fetcher._check()


class FetcherMachine(RuleBasedStateMachine):
    """A model of the fetch step on a real log with tiny segments: every record is
    returned once, in order per partition, whatever the mix of appends, fetch sizes,
    pauses, seeks and changes of assignment."""

    partitions = 3

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp()
        self.log = eventlog.open(self.dir)
        self.log.create_topic("t", partitions=self.partitions, segment_bytes=1024)
        self.fetcher = Fetcher(self.log.backend, None)
        self.ends = [0] * self.partitions
        self.next = {}              # the model's position of each assigned partition

    def teardown(self) -> None:
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(p=st.integers(0, partitions - 1), n=st.integers(1, 40))
    def append(self, p, n):
        append(self.log, "t", p, [[p, self.ends[p] + i] for i in range(n)])
        self.ends[p] += n

    @rule(p=st.integers(0, partitions - 1))
    def add(self, p):
        tp = TP("t", p)
        if tp not in self.next:
            self.fetcher.add(tp, owned=True)
            self.next[tp] = 0                      # earliest, no group

    @rule(p=st.integers(0, partitions - 1))
    def remove(self, p):
        self.fetcher.remove(TP("t", p))
        self.next.pop(TP("t", p), None)

    @precondition(lambda self: self.next)
    @rule(data=st.data())
    def pause_or_resume(self, data):
        tp = data.draw(st.sampled_from(sorted(self.next)))
        if tp in self.fetcher.paused():
            self.fetcher.resume(tp)
        else:
            self.fetcher.pause(tp)

    @precondition(lambda self: self.next)
    @rule(data=st.data())
    def seek(self, data):
        tp = data.draw(st.sampled_from(sorted(self.next)))
        offset = data.draw(st.integers(0, self.ends[tp.partition]))
        self.fetcher.seek(tp, offset)
        self.next[tp] = offset

    @rule(max_records=st.integers(1, 100))
    def fetch(self, max_records):
        got = self.fetcher.fetch(max_records, 0.25)
        ready = {tp for tp in self.next if tp not in self.fetcher.paused()
                 and self.next[tp] < self.ends[tp.partition]}
        if isinstance(got, Wait):
            assert not ready
            return
        assert 0 < len(got) <= max_records
        for record in got:
            tp = TP(record.topic, record.partition)
            assert tp in ready and record.offset == self.next[tp], (record, self.next)
            assert record.value == [record.partition, record.offset]
            self.next[tp] += 1

    @invariant()
    def holds(self):
        self.fetcher._check()
        assert self.fetcher.assigned() == set(self.next)
        known = self.fetcher.positions()
        assert all(known[tp] == self.next[tp] for tp in known)


TestFetcherMachine = FetcherMachine.TestCase


def test_a_pause_that_names_an_unassigned_partition_still_pauses_those_before_it(log):
    log.create_topic("t", partitions=2)
    append(log, "t", 0, [0, 1])
    append(log, "t", 1, [2])
    fetcher = fetcher_for(log, [TP("t", 0), TP("t", 1)])
    assert isinstance(fetcher.fetch(1, 0.25), list)   # the ready partitions are listed
    with pytest.raises(eventlog.NotAssignedError):
        fetcher.pause(TP("t", 0), TP("t", 9))
    fetcher._check()
    assert {r.partition for r in fetch_all(fetcher)} == {1}
    with pytest.raises(eventlog.NotAssignedError):
        fetcher.resume(TP("t", 0), TP("t", 9))
    fetcher._check()
    assert [r.offset for r in fetch_all(fetcher)] == [1]
