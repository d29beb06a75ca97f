"""Producer: futures, batching, partitioning, serializers, errors, idempotence.

What runs where: every test of the public API takes ``orders`` (a 4-partition topic
of ``any_log``) or ``any_log`` and runs on a log directory and on the session's Kafka
broker, reading back through a ``Consumer`` (``read_all``). The tests marked
``local_only`` say why: the accumulator's batches, segment files, ``producer_id``
(Kafka assigns producer ids), several processes sharing one directory, ``kill -9``.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import threading
import time

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import eventlog
from eventlog import (
    ClosedError,
    InvalidConfigError,
    InvalidRecordError,
    OutOfOrderSequenceError,
    Producer,
    ProducerFencedError,
    RecordTooLargeError,
    SerializationError,
    UnknownTopicError,
)
from eventlog._format import encode_batch
from eventlog.producer import murmur2
from eventlog.serde import deserializer
from tests.conftest import is_kafka, read_all, run_python, soak, spawn_python, unique_name

unpack = deserializer("msgpack")
local_only = pytest.mark.local_only


def check(producer):
    """The local producer's pending-batch invariants (see Accumulator._check); a
    producer on Kafka hands its records to librdkafka, which has no such state."""
    accumulator = getattr(producer, "_accumulator", None)
    if accumulator is not None:
        accumulator._check()


def all_records(log, topic):
    """Every record of ``topic``, keys and values as stored (bytes)."""
    return read_all(log, topic, raw=True)


def local_records(log, topic):
    out = []
    for p in log.topic(topic).partitions:
        out.extend(p.read(0, max_records=10**7, max_bytes=1 << 30))
    return out


@pytest.fixture
def topic():
    return unique_name("orders")


@pytest.fixture
def orders(any_log, topic):
    any_log.create_topic(topic, partitions=4)
    return any_log


# -- futures and batching --------------------------------------------------------------

def test_futures_resolve_with_the_offsets_records_got(orders, topic):
    with Producer(orders) as producer:
        futures = [producer.send(topic, {"n": i}, key=f"k{i % 7}") for i in range(300)]
        producer.flush()
        metas = [f.result() for f in futures]
    by_offset = {(r.partition, r.offset): unpack(r.value)["n"]
                 for r in all_records(orders, topic)}
    assert len(by_offset) == 300
    for i, md in enumerate(metas):
        assert md.topic == topic
        assert by_offset[(md.partition, md.offset)] == i


def test_waiting_on_a_future_appends_its_batch_at_once(orders, topic):
    with Producer(orders, linger_ms=60_000) as producer:
        start = time.monotonic()
        md = producer.send(topic, "now").result(timeout=5)
        assert time.monotonic() - start < 2
        assert orders.topic(topic).partition(md.partition).end_offset == 1


def test_linger_appends_without_flush(orders, topic):
    with Producer(orders, linger_ms=20) as producer:
        future = producer.send(topic, "x", partition=2)
        deadline = time.monotonic() + 5
        while orders.topic(topic).partition(2).end_offset == 0:
            assert time.monotonic() < deadline, "linger never appended the batch"
            time.sleep(0.005)
        # the future completes just after the append is published
        assert future.result(timeout=5).offset == 0


@local_only("each batch appended as one batch in a segment file")
def test_records_are_batched_per_partition(orders, topic):
    with Producer(orders, linger_ms=60_000, batch_bytes=1000) as producer:
        for _i in range(100):
            producer.send(topic, b"x" * 90, partition=1)
        producer.flush()
        m = producer.metrics()
    assert m["records_sent"] == 100
    assert 9 <= m["batches_sent"] <= 12          # about 1000 bytes per batch
    assert m["records_per_batch"] >= 8
    headers = list(orders.topic(topic).partition(1)._log._segments[0].headers(
        0, orders.topic(topic).partition(1)._log.state().active_position))
    assert len(headers) == m["batches_sent"]      # each batch appended as one batch


def test_flush_and_close_drain_and_send_after_close_raises(orders, topic):
    producer = Producer(orders, linger_ms=60_000)
    futures = [producer.send(topic, i) for i in range(50)]
    check(producer)
    producer.close()
    check(producer)
    assert all(f.done() and f.exception() is None for f in futures)
    assert len(all_records(orders, topic)) == 50
    with pytest.raises(ClosedError):
        producer.send(topic, 1)
    with pytest.raises(ClosedError):
        producer.send_batch(topic, [1])
    producer.close()  # idempotent


def test_callbacks_run_once_when_done(orders, topic):
    seen = []
    with Producer(orders, linger_ms=60_000) as producer:
        f = producer.send(topic, "a")
        f.add_done_callback(lambda fut: seen.append(fut.result().offset))
        f.add_done_callback(lambda fut: 1 / 0)  # a failing callback breaks nothing
        producer.flush()
        f.add_done_callback(lambda fut: seen.append("late"))
    assert seen == [0, "late"] or seen == [f.result().offset, "late"]


@local_only("another process holding a partition's file lock")
def test_result_times_out_while_another_process_holds_the_partition(log_dir):
    with eventlog.open(log_dir) as log:
        log.create_topic("t")
        holder = spawn_python("""
import sys, time, eventlog
with eventlog.open(sys.argv[1]) as log:
    with log.topic("t").partition(0)._log._locked():
        print("locked", flush=True)
        time.sleep(600)
""", str(log_dir), stdout=-1)
        try:
            assert holder.stdout.readline().strip() == "locked"
            producer = Producer(log)
            future = producer.send("t", "x")
            with pytest.raises(TimeoutError):
                future.result(timeout=0.2)
        finally:
            os.kill(holder.pid, signal.SIGKILL)
            holder.wait()
        assert future.result(timeout=10).offset == 0
        producer.close()


def test_many_threads_share_one_producer(orders, topic):
    per_thread = 500
    with Producer(orders, linger_ms=2, batch_bytes=2000) as producer:
        def work(tag):
            for i in range(per_thread):
                producer.send(topic, [tag, i], key=f"t{tag}")

        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        check(producer)
    seen = collections.defaultdict(list)
    for r in all_records(orders, topic):
        tag, i = unpack(r.value)
        seen[tag].append(i)
    assert {t: v for t, v in seen.items()} == {t: list(range(per_thread)) for t in range(8)}


# -- partitioning -------------------------------------------------------------------------

def test_same_key_same_partition_and_keys_spread(orders, topic):
    with Producer(orders) as producer:
        metas = [producer.send(topic, i, key=f"user-{i % 1000}") for i in range(4000)]
        producer.flush()
        where = collections.defaultdict(set)
        for i, f in enumerate(metas):
            where[f"user-{i % 1000}"].add(f.result().partition)
    assert all(len(ps) == 1 for ps in where.values())
    counts = collections.Counter(next(iter(ps)) for ps in where.values())
    assert set(counts) == {0, 1, 2, 3}
    assert min(counts.values()) > 150   # 1000 keys over 4 partitions


def test_order_is_preserved_per_key(orders, topic):
    with Producer(orders, batch_bytes=300) as producer:
        for i in range(2000):
            producer.send(topic, i, key=f"k{i % 10}")
    per_key = collections.defaultdict(list)
    for r in sorted(all_records(orders, topic), key=lambda r: (r.partition, r.offset)):
        per_key[unpack(r.key)].append(unpack(r.value))
    for key, values in per_key.items():
        assert values == sorted(values), key


def test_murmur2_matches_kafka():
    # Kafka's UtilsTest.testMurmur2
    cases = {b"21": -973932308, b"foobar": -790332482,
             b"a-little-bit-long-string": -985981536,
             b"a-little-bit-longer-string": -1486304829,
             b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
             b"abc": 479470107}
    for data, expected in cases.items():
        assert murmur2(data) == expected


def test_murmur2_partitioner_puts_keys_where_kafka_would(orders, topic):
    with Producer(orders, partitioner="murmur2", key_serializer="str") as producer:
        for key in ("21", "foobar", "abc", "user-7"):
            md = producer.send(topic, "v", key=key).result()
            assert md.partition == (murmur2(key.encode()) & 0x7FFFFFFF) % 4


@local_only("keyless records change partition per batch_bytes; on Kafka librdkafka's "
            "sticky partitioner places them (docs/kafka-backend.md)")
def test_keyless_records_stick_to_a_partition_for_a_batch(orders, topic):
    with Producer(orders, linger_ms=60_000, batch_bytes=2000) as producer:
        futures = []
        for _ in range(200):
            futures.append(producer.send(topic, b"x" * 90))
            check(producer)
        producer.flush()
        partitions = [f.result().partition for f in futures]
    runs = [len(list(g)) for _, g in __import__("itertools").groupby(partitions)]
    assert min(runs[:-1]) >= 15                 # about batch_bytes of records per run
    assert set(partitions) == {0, 1, 2, 3}      # and they move around


def test_keyless_keyed_and_header_records_mix_in_one_pending_batch(any_log):
    # One partition: every record joins the same pending batch, whichever path sent it
    # (send()'s fast path for keyless records, the general one for the others).
    log, one = any_log, unique_name("one")
    log.create_topic(one)
    sends = [({}, "a"), ({}, "b"), ({"key": "k1"}, "c"), ({}, "d"),
             ({"headers": [("h", b"1")]}, "e"), ({}, "f"), ({"partition": 0}, "g"), ({}, "h")]
    with Producer(log, linger_ms=60_000) as producer:
        futures = []
        for extra, value in sends:
            futures.append(producer.send(one, value, **extra))
            check(producer)
        assert not any(f.done() for f in futures)  # all still pending, in one batch
        producer.flush()
        check(producer)
    assert [f.result().offset for f in futures] == list(range(len(sends)))
    records = all_records(log, one)
    assert [unpack(r.value) for r in records] == [value for _, value in sends]
    assert [r.key for r in records] == [None, None, msgpack.packb("k1"), None, None,
                                        None, None, None]
    assert [r.headers for r in records] == [[], [], [], [], [("h", b"1")], [], [], []]


@local_only("the accumulator's send fast path")
def test_a_flushed_batch_is_not_kept_by_the_send_fast_path(orders, topic):
    with Producer(orders, linger_ms=60_000) as producer:
        for _ in range(10):
            producer.send(topic, b"x" * 100)
        hot = producer._accumulator.hot
        assert topic in hot  # the fast path holds the pending batch...
        check(producer)
        producer.flush()
        assert hot[topic][0] is None  # ...and lets go of it once it is appended
        check(producer)


class _NeverHot(dict):  # type: ignore[type-arg]
    """An ``Accumulator.hot`` that keeps no entry: every send takes the general path."""

    def __setitem__(self, key, value):
        pass


def _run_sends(path, ops, fast):
    """Run ``ops`` with a producer (its fast path off unless ``fast``); return where
    every record went and the batches each partition holds."""
    with eventlog.open(path, fsync="never") as log:
        log.create_topic("t", partitions=3)
        with Producer(log, linger_ms=60_000, batch_bytes=64) as producer:
            producer._partitioner.sticky._start = lambda n: 0
            if not fast:
                producer._accumulator.hot = producer._hot = _NeverHot()
            futures = []
            for op, arg in ops:
                if op == "flush":
                    producer.flush()
                elif op == "keyless":
                    futures.append(producer.send("t", b"v" * arg))
                elif op == "keyed":
                    futures.append(producer.send("t", b"v", key=arg))
                elif op == "headers":
                    futures.append(producer.send("t", b"v", headers=[("h", b"1")]))
                elif op == "partition":
                    futures.append(producer.send("t", b"v", partition=arg))
                elif op == "unserializable":
                    with pytest.raises(SerializationError):
                        producer.send("t", object())
                else:
                    producer.send_batch("t", [b"b"] * arg)
                check(producer)
            producer.flush()
            placed = [(f.result().partition, f.result().offset) for f in futures]
        batches = [[(b.header.base_offset, len(b.values)) for b in
                    log.backend.partition("t", p).fetch(0, 1 << 20)] for p in range(3)]
    return placed, batches


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(st.tuples(st.just("keyless"), st.integers(0, 40)),
                          st.tuples(st.just("flush"), st.none()),
                          st.tuples(st.just("keyed"), st.sampled_from(["a", "b", "c"])),
                          st.tuples(st.just("headers"), st.none()),
                          st.tuples(st.just("unserializable"), st.none()),
                          st.tuples(st.just("partition"), st.integers(0, 2)),
                          st.tuples(st.just("batch"), st.integers(1, 30))),
                max_size=40))
def test_the_send_fast_path_places_and_batches_records_as_the_general_path(tmp_path_factory,
                                                                           ops):
    # Keyless sends take send()'s fast path, reopening the next batch after a flush;
    # with it off, each takes _send_general. Same partitions, offsets and batches.
    fast = _run_sends(tmp_path_factory.mktemp("fast"), ops, fast=True)
    general = _run_sends(tmp_path_factory.mktemp("general"), ops, fast=False)
    assert fast == general


@local_only("keyless records follow the accumulator's sticky partition; on Kafka "
            "librdkafka's sticky partitioner places them (docs/kafka-backend.md)")
def test_keyless_sends_follow_the_sticky_partition_through_bulk_sends_and_new_partitions(
        orders, topic):
    with Producer(orders, linger_ms=60_000, batch_bytes=512 << 10) as producer:
        first = [producer.send(topic, b"x" * 90) for _ in range(5)]
        # over 1 MiB of keyless records: send_batch moves the sticky partition on
        check(producer)
        bulk = producer.send_batch(topic, [b"y" * 90] * 12_000)
        check(producer)
        assert bulk[-1].partition != first[0].result().partition
        after = [producer.send(topic, b"z" * 90) for _ in range(5)]
        check(producer)
        producer.flush()
        assert {f.result().partition for f in after} == {bulk[-1].partition}
    with Producer(orders, linger_ms=60_000, batch_bytes=1000) as producer:
        producer.send(topic, b"v" * 90).result()
        orders.topic(topic).add_partitions(4)  # 8 in all
        time.sleep(0.6)  # producers re-read topic settings at most every half second...
        later = [producer.send(topic, b"w" * 900) for _ in range(300)]  # ...256 sends
        check(producer)
        producer.flush()
        assert {f.result().partition for f in later} - {0, 1, 2, 3}  # reaches the new ones
    stored = collections.Counter(r.value[-90:] for r in local_records(orders, topic))
    assert stored == {b"x" * 90: 5, b"y" * 90: 12_000, b"z" * 90: 5, b"v" * 90: 1,
                      b"w" * 90: 300}


def test_custom_partitioner(orders, topic):
    calls = []

    def last_partition(topic, key, n):
        calls.append((topic, key, n))
        return n - 1

    with Producer(orders, partitioner=last_partition) as producer:
        assert producer.send(topic, 1, key="k").result().partition == 3
        assert producer.send(topic, 2).result().partition == 3
    assert calls[0] == (topic, msgpack.packb("k"), 4)
    assert calls[1] == (topic, None, 4)
    with Producer(orders, partitioner=lambda t, k, n: 99) as producer:
        with pytest.raises(InvalidConfigError, match="partitioner returned 99"):
            producer.send(topic, 1)
    with pytest.raises(InvalidConfigError):
        Producer(orders, partitioner="modulo")


def test_explicit_partition_wins_and_is_checked(orders, topic):
    with Producer(orders) as producer:
        assert producer.send(topic, 1, key="k", partition=2).result().partition == 2
        with pytest.raises(InvalidRecordError):
            producer.send(topic, 1, partition=4)
        assert producer.partitions_for(topic) == [0, 1, 2, 3]


# -- serializers and errors -------------------------------------------------------------

MSGPACK_VALUES = [None, True, False, 0, -1, 2**63 - 1, 1.5, "", "héllo", b"", b"\x00\xff",
                  [], [1, "a", None], {}, {"a": {"b": [1, 2]}}, {1: "int key"}]


def test_default_msgpack_round_trips_every_msgpack_type(orders, topic):
    with Producer(orders) as producer:
        metas = [producer.send(topic, v, partition=0).result() for v in MSGPACK_VALUES]
    got = all_records(orders, topic)
    assert [r.offset for r in got] == [md.offset for md in metas]
    decoded = [None if r.value is None else unpack(r.value) for r in got]
    assert decoded == MSGPACK_VALUES


@pytest.mark.parametrize("name, value, raw", [
    ("bytes", b"\x01\x02", b"\x01\x02"),
    ("str", "héllo", "héllo".encode()),
    ("json", {"a": [1, 2]}, b'{"a":[1,2]}'),
])
def test_builtin_serializers(orders, topic, name, value, raw):
    with Producer(orders, value_serializer=name, key_serializer="str") as producer:
        md = producer.send(topic, value, key="k").result()
    (record,) = all_records(orders, topic)
    assert (record.partition, record.offset) == (md.partition, md.offset)
    assert (record.key, record.value) == (b"k", raw)
    assert deserializer(name)(record.value) == value


def test_custom_serializer_callable(orders, topic):
    with Producer(orders, value_serializer=lambda v: str(v * 2).encode()) as producer:
        md = producer.send(topic, 21).result()
    assert [(r.offset, r.value) for r in all_records(orders, topic)] == [(md.offset, b"42")]


def test_serialization_errors_name_topic_and_part_and_write_nothing(orders, topic):
    with Producer(orders) as producer:
        with pytest.raises(SerializationError, match=rf"'{topic}'.*value"):
            producer.send(topic, {1, 2})          # a set is not msgpack-able
        with pytest.raises(SerializationError, match=rf"'{topic}'.*key"):
            producer.send(topic, 1, key=object())
    with Producer(orders, value_serializer="json") as producer:
        with pytest.raises(SerializationError, match="value"):
            producer.send(topic, float("nan"))
    with Producer(orders, value_serializer=lambda v: "not bytes") as producer:
        with pytest.raises(SerializationError, match="returned str"):
            producer.send(topic, 1)
    assert all_records(orders, topic) == []
    with pytest.raises(InvalidConfigError):
        Producer(orders, value_serializer="yaml")


def test_bad_headers_and_timestamps_are_refused(orders, topic):
    with Producer(orders) as producer:
        for bad in (["x"], [("k", "str-value")], [(1, b"v")], {"k": b"v"}, "abc"):
            with pytest.raises(InvalidRecordError):
                producer.send(topic, 1, headers=bad)
        with pytest.raises(InvalidRecordError):
            producer.send(topic, 1, timestamp_ms=-5)
        with pytest.raises(InvalidRecordError):
            producer.send(topic, 1, timestamp_ms="now")
        md = producer.send(topic, 1, headers=[("trace", b"t1"), ("x", bytearray(b"y"))],
                           partition=0).result()
    assert all_records(orders, topic)[0].headers == [("trace", b"t1"), ("x", b"y")]
    assert md.offset == 0


def test_record_too_large_is_refused_before_writing(any_log):
    log, small = any_log, unique_name("small")
    log.create_topic(small, max_message_bytes=100)
    with Producer(log) as producer:
        with pytest.raises(RecordTooLargeError):
            producer.send(small, b"x" * 200)
        with pytest.raises(RecordTooLargeError):
            producer.send(small, b"v", key=b"k" * 60, headers=[("h", b"x" * 40)])
        with pytest.raises(RecordTooLargeError):
            producer.send_batch(small, [b"ok", b"x" * 200, b"ok"])
        producer.flush()
    assert all_records(log, small) == []


def test_unknown_topic_and_auto_create(any_address):
    nope, fresh = unique_name("nope"), unique_name("fresh")
    with eventlog.open(any_address) as log, Producer(log) as producer:
        with pytest.raises(UnknownTopicError):
            producer.send(nope, 1)
    with eventlog.open(any_address, auto_create_topics=True) as log, \
            Producer(log) as producer:
        assert producer.send(fresh, 1).result().offset == 0


# -- timestamps -------------------------------------------------------------------------

class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


def test_create_time_is_the_callers_or_now(any_address):
    clock, t = Clock(1_000_000), unique_name()
    with eventlog.open(any_address, clock=clock) as log, Producer(log) as producer:
        log.create_topic(t)
        a = producer.send(t, 1).result()
        b = producer.send(t, 2, timestamp_ms=42).result()
        assert (a.timestamp_ms, b.timestamp_ms) == (1_000_000, 42)
        assert [r.timestamp_ms for r in all_records(log, t)] == [1_000_000, 42]


def test_log_append_time_topics(any_address):
    clock, t = Clock(5_000), unique_name()
    with eventlog.open(any_address, clock=clock) as log, Producer(log) as producer:
        log.create_topic(t, timestamp_type="log_append_time")
        before = int(time.time() * 1000)
        f = producer.send(t, 1, timestamp_ms=42)
        clock.now = 7_000
        stamped = f.result().timestamp_ms
        # the time of the append, on the clock of whoever appends: the log's, or on
        # Kafka the broker's (docs/kafka-backend.md)
        assert stamped == 7_000 if not is_kafka(log) else stamped >= before
        assert [r.timestamp_ms for r in all_records(log, t)] == [stamped]


# -- bulk path --------------------------------------------------------------------------

def test_send_batch_keyless_keyed_and_explicit(orders, topic):
    with Producer(orders) as producer:
        producer.send(topic, "first", partition=1)         # pending, must stay first
        meta = producer.send_batch(topic, [{"i": i} for i in range(1000)],
                                   keys=[f"k{i % 13}" for i in range(1000)])
        assert len(meta) == 1000
        one = producer.send_batch(topic, ["a", "b"], partition=1)
        plain = producer.send_batch(topic, list(range(5000)))
    records = {(r.partition, r.offset): r for r in all_records(orders, topic)}
    for i, md in enumerate(meta):
        r = records[(md.partition, md.offset)]
        assert unpack(r.value) == {"i": i} and unpack(r.key) == f"k{i % 13}"
    assert [unpack(records[(1, 0)].value)] == ["first"]
    assert one.partitions() == [1, 1] and one.offsets()[1] == one.offsets()[0] + 1
    assert [unpack(records[(m.partition, m.offset)].value) for m in plain] == list(range(5000))
    assert meta[-1] == meta[999] and meta[10:12] == [meta[10], meta[11]]


@pytest.mark.parametrize("partitioner", ["xxhash", "murmur2"])
def test_send_batch_places_keys_where_send_does(orders, topic, partitioner):
    keys = [f"user-{i}" for i in range(300)] + [None, "user-1"]
    with Producer(orders, partitioner=partitioner, key_serializer="str") as producer:
        one_by_one = [producer.send(topic, i, key=k) for i, k in enumerate(keys)]
        producer.flush()
        every_key = producer.send_batch(topic, list(range(300)), keys=keys[:300])
        some_none = producer.send_batch(topic, list(range(len(keys))), keys=keys)
    expected = [f.result().partition for f in one_by_one]
    assert every_key.partitions() == expected[:300]  # (a column at once)
    assert some_none.partitions()[:300] == expected[:300]  # (record by record)
    assert some_none.partitions()[301] == expected[301] == expected[1]
    assert len(set(expected)) == 4


def test_keyed_send_batch_gathers_every_column_per_partition(log):
    # Five busy keys and one key sent once, on a partition of its own: every record
    # keeps its value, key, headers and timestamp, in send order per partition.
    log.create_topic("t", partitions=16)
    busy = [f"user-{i}" for i in range(5)]
    with Producer(log) as producer:
        placed = producer.send_batch("t", [0] * 30, keys=busy + [f"x{j}" for j in range(25)])
        taken = set(placed.partitions()[:5])
        alone = next(f"x{j}" for j, p in enumerate(placed.partitions()[5:]) if p not in taken)
        keys = [busy[i % 5] for i in range(1000)]
        keys.insert(500, alone)
        meta = producer.send_batch(
            "t", list(range(len(keys))), keys=keys,
            headers=[[("i", str(i).encode())] for i in range(len(keys))],
            timestamps_ms=[1000 + i for i in range(len(keys))])
    assert meta.partitions().count(meta[500].partition) == 1
    got = {(r.partition, r.offset): r for r in all_records(log, "t")}
    for i, md in enumerate(meta):
        r = got[(md.partition, md.offset)]
        assert unpack(r.value) == i and unpack(r.key) == keys[i]
        assert r.headers == [("i", str(i).encode())] and r.timestamp_ms == 1000 + i
    for p in set(meta.partitions()):
        mine = [md.offset for md in meta if md.partition == p]
        assert mine == sorted(mine) and len(set(mine)) == len(mine)


def test_send_batch_headers_timestamps_and_errors(orders, topic):
    with Producer(orders) as producer:
        meta = producer.send_batch(topic, [1, 2], headers=[[("h", b"1")], None],
                                   timestamps_ms=[10, 20], partition=0)
        assert [m.timestamp_ms for m in meta] == [10, 20]
        with pytest.raises(SerializationError, match="record 2"):
            producer.send_batch(topic, [1, 2, {3}, 4])
        with pytest.raises(InvalidRecordError):
            producer.send_batch(topic, [1], keys=["a", "b"])
        with pytest.raises(InvalidRecordError):
            producer.send_batch(topic, [1, 2], timestamps_ms=[1])
    records = all_records(orders, topic)
    assert len(records) == 2
    assert [r.headers for r in records] == [[("h", b"1")], []]


@local_only("the accumulator's batch counters; on Kafka metrics() is librdkafka's queue")
def test_metrics_count_what_was_sent(orders, topic):
    with Producer(orders, linger_ms=60_000) as producer:
        for _i in range(10):
            producer.send(topic, b"x" * 10, partition=0)
        check(producer)
        assert producer.metrics()["records_pending"] == 10
        producer.flush()
        producer.send_batch(topic, [b"y"] * 5, partition=1)
        m = producer.metrics()
    assert m["records_sent"] == 15
    assert m["batches_sent"] == 2
    assert m["records_per_batch"] == 7.5
    assert m["errors"] == 0 and m["records_pending"] == 0
    assert m["bytes_sent"] > 0 and m["bytes_per_batch"] == m["bytes_sent"] / 2


@local_only("a partition's append failing (the storage under a log directory)")
def test_storage_errors_reach_the_futures_and_are_counted(orders, topic, monkeypatch):
    producer = Producer(orders, linger_ms=60_000)
    f = producer.send(topic, 1, partition=0)
    part_log = orders.topic(topic).partition(0)._log

    def refuse(batch):
        raise eventlog.LogDirectoryError(28, "No space left on device")

    monkeypatch.setattr(part_log, "append", refuse)
    producer.flush()
    assert isinstance(f.exception(), eventlog.LogDirectoryError)
    with pytest.raises(eventlog.LogDirectoryError):
        f.result()
    assert producer.metrics()["errors"] == 1
    monkeypatch.undo()
    assert producer.send(topic, 2, partition=0).result().offset == 0
    producer.close()


# -- idempotence ------------------------------------------------------------------------

@local_only("a partition's direct append")
def test_a_retried_batch_is_not_appended_twice(log):
    log.create_topic("t")
    p = log.topic("t").partition(0)
    batch = encode_batch([b"a", b"b"], producer_id=7, base_sequence=0)
    first = p._log.append(batch)
    again = p._log.append(encode_batch([b"a", b"b"], producer_id=7, base_sequence=0))
    assert (first.base_offset, again.base_offset) == (0, -1)
    assert again.stored_offsets == [0, 1]
    assert p.end_offset == 2
    overlap = p._log.append(encode_batch([b"b", b"c"], producer_id=7, base_sequence=1))
    assert overlap.stored_offsets == [1] and overlap.base_offset == 2
    assert [r.value for r in p.read(0)] == [b"a", b"b", b"c"]
    with pytest.raises(OutOfOrderSequenceError):
        p._log.append(encode_batch([b"z"], producer_id=7, base_sequence=10))
    assert p.end_offset == 3


@local_only("producer_id= (Kafka assigns producer ids)")
def test_a_restarted_producer_resending_the_same_records_appends_only_what_is_missing(log_dir):
    with eventlog.open(log_dir) as log:
        log.create_topic("t", partitions=3)
        with Producer(log, producer_id=42) as producer:
            for i in range(100):
                producer.send("t", i, key=f"k{i % 5}")
    with eventlog.open(log_dir) as log:      # reopened: state rebuilt from the log
        with Producer(log, producer_id=42) as producer:
            futures = [producer.send("t", i, key=f"k{i % 5}") for i in range(150)]
            producer.flush()
            first = [f.result() for f in futures[:100]]
            m = producer.metrics()
        records = local_records(log, "t")
        assert sorted(unpack(r.value) for r in records) == list(range(150))
        assert m["duplicates"] == 100 and m["records_sent"] == 50
        by_pos = {(r.partition, r.offset): unpack(r.value) for r in records}
        assert [by_pos[(md.partition, md.offset)] for md in first] == list(range(100))


@local_only("producer_id= (Kafka assigns producer ids)")
def test_idempotent_keyless_replay_lands_on_the_same_partitions(log_dir):
    with eventlog.open(log_dir) as log:
        log.create_topic("t", partitions=4)
        with Producer(log, producer_id=9, batch_bytes=200) as producer:
            producer.send_batch("t", [f"r{i}" for i in range(300)])
        with Producer(log, producer_id=9, batch_bytes=200) as producer:
            meta = producer.send_batch("t", [f"r{i}" for i in range(400)])
        assert sorted(unpack(r.value) for r in local_records(log, "t")) == \
            sorted(f"r{i}" for i in range(400))
        assert len(meta) == 400


@local_only("producer_id= (Kafka assigns producer ids)")
def test_only_one_live_producer_per_producer_id(log_dir):
    with eventlog.open(log_dir) as log:
        log.create_topic("t")
        producer = Producer(log, producer_id=5)
        with pytest.raises(ProducerFencedError):
            Producer(log, producer_id=5)
        code = """
import sys, eventlog
with eventlog.open(sys.argv[1]) as log:
    try:
        eventlog.Producer(log, producer_id=5)
        print("acquired")
    except eventlog.ProducerFencedError:
        print("fenced")
"""
        assert run_python(code, str(log_dir)).stdout.strip() == "fenced"
        producer.close()
        assert run_python(code, str(log_dir)).stdout.strip() == "acquired"


@local_only("producer_id= (Kafka assigns producer ids)")
def test_a_producer_that_fails_to_start_does_not_hold_its_producer_id(log):
    log.create_topic("t")
    with pytest.raises(InvalidConfigError):
        Producer(log, producer_id=6, partitioner="modulo")
    with Producer(log, producer_id=6) as producer:
        assert producer.send("t", 1).result().offset == 0
    with Producer(log, enable_idempotence=True) as producer:   # a random id: no lock file
        assert producer.producer_id is not None
    assert os.listdir(os.path.join(log.path, "producers")) == ["6.lock"]


@local_only("a partition's append failing, producer_id=")
def test_failed_append_does_not_consume_sequence_numbers(log, monkeypatch):
    log.create_topic("t")
    part_log = log.topic("t").partition(0)._log
    with Producer(log, producer_id=3, linger_ms=60_000) as producer:
        f = producer.send("t", "lost")
        real = part_log.append
        monkeypatch.setattr(part_log, "append", lambda b: (_ for _ in ()).throw(OSError(5, "EIO")))
        producer.flush()
        assert f.exception() is not None
        monkeypatch.setattr(part_log, "append", real)
        assert producer.send("t", "next").result().offset == 0   # no sequence gap


RESUMER = """
import sys, eventlog
path = sys.argv[1]
with eventlog.open(path, fsync="never") as log:
    with eventlog.Producer(log, producer_id=77, linger_ms=1, batch_bytes=400) as producer:
        for i in range(int(sys.argv[2])):
            producer.send("t", i, key=i % 6)
            if i % 50 == 0:
                producer.flush()
                print(i, flush=True)
"""


@local_only("kill -9 of a writer process, producer_id=")
def test_replay_after_kill_9_stores_every_record_exactly_once(log_dir):
    import random

    total = 3000
    with eventlog.open(log_dir) as log:
        log.create_topic("t", partitions=3, segment_bytes=4096)
    rng = random.Random(5)
    for _ in range(soak(4)):
        child = spawn_python(RESUMER, str(log_dir), str(total), stdout=-1)
        time.sleep(rng.uniform(0.2, 0.6))
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        child.stdout.close()
    run_python(RESUMER, str(log_dir), str(total))   # the final replay runs to the end
    with eventlog.open(log_dir) as log:
        values = [unpack(r.value) for r in local_records(log, "t")]
        assert sorted(values) == list(range(total))   # every record exactly once
        for p in log.topic("t").partitions:            # and in order per partition
            vs = [unpack(r.value) for r in p.read(0, max_records=10**6)]
            assert vs == sorted(vs)


# -- several processes ----------------------------------------------------------------

WRITER = """
import sys, eventlog
path, tag, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with eventlog.open(path) as log, eventlog.Producer(log, batch_bytes=500) as producer:
    for i in range(count):
        producer.send("t", [tag, i], key=f"{tag}-{i % 7}")
"""


@local_only("several processes sharing one log directory")
def test_several_producer_processes_on_one_topic(log_dir):
    with eventlog.open(log_dir) as log:
        log.create_topic("t", partitions=3, segment_bytes=8192)
    count = 800
    procs = [spawn_python(WRITER, str(log_dir), str(tag), str(count)) for tag in range(4)]
    for proc in procs:
        assert proc.wait(timeout=120) == 0
    with eventlog.open(log_dir) as log:
        per_producer_key = collections.defaultdict(list)
        total = 0
        for p in log.topic("t").partitions:
            for r in p.read(0, max_records=10**6):
                tag, i = unpack(r.value)
                per_producer_key[(tag, i % 7)].append(i)
                total += 1
            p._log._check()
    assert total == 4 * count
    for (tag, k), seq in per_producer_key.items():
        assert seq == list(range(k, count, 7)), (tag, k)


@local_only("a child process on the same log directory (on both: test_backends.py)")
def test_records_pending_at_interpreter_exit_are_flushed(log_dir):
    with eventlog.open(log_dir) as log:
        log.create_topic("t")
    run_python("""
import sys, eventlog
log = eventlog.open(sys.argv[1])
producer = eventlog.Producer(log, linger_ms=60_000)
for i in range(10):
    producer.send("t", i)
""", str(log_dir))
    with eventlog.open(log_dir) as log:
        assert [unpack(r.value) for r in log.topic("t").partition(0).read(0)] == list(range(10))


def test_producer_rejects_bad_options(any_log):
    log = any_log
    with pytest.raises(InvalidConfigError, match="linger_ms must be at least 0, not -1"):
        Producer(log, linger_ms=-1)
    with pytest.raises(InvalidConfigError, match="batch_bytes must be at least 1"):
        Producer(log, batch_bytes=0)
    with pytest.raises(InvalidConfigError, match="batch_bytes must be an int, not True"):
        Producer(log, batch_bytes=True)
    if is_kafka(log):   # Kafka assigns producer ids (docs/kafka-backend.md)
        for producer_id in (-3, 1.5, 5):
            with pytest.raises(InvalidConfigError, match="producer_id= has no meaning"):
                Producer(log, producer_id=producer_id)
    else:
        with pytest.raises(InvalidConfigError, match="producer_id must be at least 0"):
            Producer(log, producer_id=-3)
        with pytest.raises(InvalidConfigError, match="producer_id must be an int or None"):
            Producer(log, producer_id=1.5)
    with pytest.raises(TypeError):
        Producer("not a log")
    with Producer(log) as producer:
        metrics = json.loads(json.dumps(producer.metrics()))
    assert metrics["records_pending"] == 0
    if not is_kafka(log):   # on Kafka metrics() is librdkafka's queue alone
        assert metrics["records_sent"] == 0


def test_a_topic_deleted_and_created_again_gets_the_next_records(any_log):
    log, t = any_log, unique_name()
    log.create_topic(t)
    with Producer(log) as producer:
        assert producer.send(t, 1).result().offset == 0
        log.delete_topic(t)
        log.create_topic(t)
        kafka = is_kafka(log)
        lost = producer.send(t, 2)   # the batch in flight meets the closed partition...
        if kafka:   # ...except on Kafka, where it reaches the new topic's partition
            assert lost.result().offset == 0
        else:
            assert isinstance(lost.exception(), (ClosedError, UnknownTopicError))
        base = 1 if kafka else 0
        assert producer.send(t, 3).result().offset == base   # ...the next one the new one
        assert producer.send_batch(t, [4, 5]).offsets() == [base + 1, base + 2]
    assert [unpack(r.value) for r in all_records(log, t)] == [2] * kafka + [3, 4, 5]


def test_flush_returns_with_every_future_done(orders, topic):
    with Producer(orders, linger_ms=1) as producer:
        for round_ in range(20):
            futures = [producer.send(topic, i, partition=round_ % 4) for i in range(50)]
            time.sleep(0.002)        # let the linger thread append some of them
            producer.flush()
            assert all(f.done() for f in futures)
