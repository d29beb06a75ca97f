"""The asyncio interface: AIOProducer and AIOConsumer, with real concurrent tasks and a
real producer process; cancellation safety under random cancellations.

What runs where: the tests of the public asyncio API take ``any_log`` and run on a log
directory and on the session's Kafka broker (tests/conftest.py). Those that look inside
the local consumer (its fetcher, its read-ahead buffer, the offsets sidecar file) or use
what only a directory has (a manual clock) carry ``local_only("why")``.
"""

from __future__ import annotations

import asyncio
import collections
import os
import random
import threading
import time

import pytest

import eventlog
from eventlog import ClosedError, Producer, TopicPartition
from eventlog._offsets import OffsetStore
from eventlog.aio import AIOConsumer, AIOProducer
from eventlog.testing import ManualClock
from tests.conftest import is_kafka, read_all, soak, spawn_python, unique_name

TP = TopicPartition
local_only = pytest.mark.local_only

# A producer in another process: N records of [partition, i] per partition, in short
# bursts with pauses, so that consumers both find records waiting and wait for them.
PRODUCE = """
import sys, time, eventlog
path, topic, per_partition = sys.argv[1], sys.argv[2], int(sys.argv[3])
with eventlog.open(path) as log:
    partitions = log.topic(topic).num_partitions
    with eventlog.Producer(log, linger_ms=0) as producer:
        for i in range(per_partition):
            for p in range(partitions):
                producer.send(topic, [p, i], partition=p)
            if i % 25 == 0:
                time.sleep(0.002)
"""


def run(coro):
    return asyncio.run(coro)


async def check(consumer):
    """The invariants of an AIOConsumer's coordinator and fetcher, checked in its
    thread (between calls, like every other use of them); a Kafka consumer's state is
    librdkafka's, with no such invariants to check."""
    if not hasattr(consumer, "_coordinator"):
        return

    def checks():
        consumer._coordinator._check()
        consumer._fetcher._check()
    await consumer._in_thread(checks)


# -- AIOProducer -----------------------------------------------------------------------------


def test_concurrent_sends_are_stored_in_order_per_key(any_log):
    orders = unique_name("orders")
    any_log.create_topic(orders, partitions=3)

    async def main():
        async with AIOProducer(any_log) as producer:
            async def customer(c):
                return [await producer.send(orders, {"c": c, "n": n}, key=f"c{c}")
                        for n in range(50)]
            return await asyncio.gather(*(customer(c) for c in range(8)))

    per_customer = run(main())
    for mds in per_customer:
        assert len({md.partition for md in mds}) == 1            # one key, one partition
        assert [md.offset for md in mds] == sorted(md.offset for md in mds)
    records = read_all(any_log, orders)
    assert len(records) == 400
    for c in range(8):
        assert [r.value["n"] for r in records if r.value["c"] == c] == list(range(50))


def test_send_raises_send_time_errors_and_send_after_close_raises_closed(any_log):
    # (a limit a Kafka batch's own framing fits under)
    small = unique_name("small")
    any_log.create_topic(small, max_message_bytes=1000)

    async def main():
        producer = AIOProducer(any_log)
        with pytest.raises(eventlog.UnknownTopicError):
            await producer.send(unique_name("missing"), 1)
        with pytest.raises(eventlog.RecordTooLargeError):
            await producer.send(small, "x" * 2000)
        with pytest.raises(eventlog.SerializationError):
            await producer.send(small, {1, 2})
        md = await producer.send_and_wait(small, "ok", headers=[("h", b"v")])
        assert (md.topic, md.offset) == (small, 0)
        batch = await producer.send_batch(small, ["a", "b"], timestamps_ms=[5, 6])
        assert [m.offset for m in batch] == [1, 2]
        await asyncio.gather(producer.close(), producer.close())   # idempotent, shared
        with pytest.raises(ClosedError):
            await producer.send(small, "late")
        with pytest.raises(ClosedError):
            await producer.flush()

    run(main())
    records = read_all(any_log, small)
    assert [r.value for r in records] == ["ok", "a", "b"]
    assert [r.headers for r in records] == [[("h", b"v")], [], []]
    assert [r.timestamp_ms for r in records[1:]] == [5, 6]


def test_a_cancelled_send_still_stores_its_record_and_flush_waits_for_it(any_log):
    t = unique_name()
    any_log.create_topic(t)

    async def main():
        async with AIOProducer(any_log, linger_ms=60_000) as producer:
            tasks = [asyncio.create_task(producer.send(t, i)) for i in range(20)]
            await asyncio.sleep(0)
            for task in tasks[::2]:
                task.cancel()
            await producer.flush()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            assert sum(isinstance(r, asyncio.CancelledError) for r in results) >= 1
            assert any_log.topic(t).partition(0).end_offset == 20

    run(main())
    assert sorted(r.value for r in read_all(any_log, t)) == list(range(20))


@local_only("a log directory's clock= (a Kafka producer stamps with librdkafka's clock)")
def test_send_timestamps_come_from_the_log_clock_at_the_call(log_dir):
    clock = ManualClock(start_ms=1_000)

    async def main(log):
        log.create_topic("t")
        async with AIOProducer(log) as producer:
            coro = producer.send("t", "a")     # the time is read when send() runs
            task = asyncio.ensure_future(coro)
            await asyncio.sleep(0)
            clock.advance(500)
            first = await task
            second = await producer.send("t", "b")
            batch = await producer.send_batch("t", ["c"])
        return first.timestamp_ms, second.timestamp_ms, batch[0].timestamp_ms

    with eventlog.open(log_dir, clock=clock) as log:
        assert run(main(log)) == (1_000, 1_500, 1_500)


# -- AIOConsumer: waking, not blocking the loop ------------------------------------------------


def test_tasks_consume_while_another_process_produces_without_blocking_the_loop(any_log):
    events, readers = unique_name("events"), unique_name("readers")
    any_log.create_topic(events, partitions=4)
    per_partition = soak(400)

    async def main():
        gaps = []
        stop = asyncio.Event()

        async def ticker():   # the loop stays free: this task keeps running on time
            last = time.monotonic()
            while not stop.is_set():
                await asyncio.sleep(0.005)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        total = 4 * per_partition
        seen_a, seen_b = [], []
        a = AIOConsumer(any_log, events, group_id=readers, consumer_timeout_ms=30_000)
        b = AIOConsumer(any_log, events, group_id=readers, consumer_timeout_ms=30_000)

        async def member(consumer, seen):
            async with consumer:
                async for record in consumer:
                    seen.append(record)
                    if len(seen_a) + len(seen_b) == total:
                        await asyncio.gather(a.close(), b.close())  # ends the other's loop

        tick = asyncio.create_task(ticker())
        members = [asyncio.create_task(member(a, seen_a)), asyncio.create_task(member(b, seen_b))]
        deadline = time.monotonic() + 30   # the group settled (a Kafka join takes a while)
        while not (a.assignment() and b.assignment()
                   and len(a.assignment() | b.assignment()) == 4):
            assert time.monotonic() < deadline, (a.assignment(), b.assignment())
            await asyncio.sleep(0.05)
        child = spawn_python(PRODUCE, str(any_log.path), events, str(per_partition))
        try:
            await asyncio.wait_for(asyncio.gather(*members), 60)
        finally:
            stop.set()
            await tick
            assert await asyncio.to_thread(child.wait, 60) == 0
        return seen_a, seen_b, gaps

    seen_a, seen_b, gaps = run(main())
    assert seen_a and seen_b                           # the group shared the partitions
    values = sorted(tuple(r.value) for r in seen_a + seen_b)
    assert values == sorted((p, i) for p in range(4) for i in range(per_partition))
    # 5 ms ticks; a blocked loop would show gaps as long as a whole poll wait
    assert max(gaps) < 1.0
    offsets = any_log.group_offsets(readers)
    assert offsets == {TP(events, p): per_partition for p in range(4)}


def test_poll_wakes_on_an_append_by_another_process(any_log):
    t = unique_name()
    any_log.create_topic(t)

    async def main():
        async with AIOConsumer(any_log, t) as consumer:
            assert await consumer.poll(timeout=0.05) == []
            child = spawn_python(PRODUCE, str(any_log.path), t, "1")
            start = time.monotonic()
            records = await consumer.poll(timeout=30)
            waited = time.monotonic() - start
            assert await asyncio.to_thread(child.wait, 30) == 0
        return records, waited

    records, waited = run(main())
    assert [r.value for r in records] == [[0, 0]]
    assert waited < 15                                  # long before the timeout


def test_poll_times_out_and_getone_and_async_for_work(any_log):
    t = unique_name()
    any_log.create_topic(t, partitions=2)
    with Producer(any_log) as producer:
        producer.send_batch(t, list(range(10)), partition=0)

    async def main():
        async with AIOConsumer(any_log, t, consumer_timeout_ms=100) as consumer:
            first = await consumer.getone()
            rest = [record.value async for record in consumer]
            start = time.monotonic()
            assert await consumer.poll(timeout=0.1) == []
            assert time.monotonic() - start >= 0.09
        return first.value, rest

    assert run(main()) == (0, list(range(1, 10)))


# -- AIOConsumer: cancellation safety -----------------------------------------------------------


@local_only("it reads the group's offsets sidecar file after every step")
def test_random_cancellations_lose_nothing_and_commit_only_what_was_returned(log, log_dir):
    """Polls cancelled at random moments, while another process produces: every record
    is returned exactly once, and the committed offsets never pass what was returned."""
    log.create_topic("events", partitions=3)
    per_partition = soak(400)
    rng = random.Random(7)

    async def main():
        returned = collections.defaultdict(list)
        cancelled = 0
        consumer = AIOConsumer(log, "events", group_id="g", auto_commit_interval_ms=20,
                               max_poll_records=rng.choice([2, 7, 50]))
        await consumer.start()
        child = spawn_python(PRODUCE, str(log_dir), "events", str(per_partition))

        committed = OffsetStore(os.path.join(log.path, "groups", "g.offsets"), fsync=False)

        def check_commits():   # (a store of our own reads faster than log.group_offsets)
            for tp, offset in committed.read().items():
                got = returned[tp.partition]
                assert offset <= (got[-1] + 1 if got else 0), (tp, offset, got[-5:])

        try:
            total = 3 * per_partition
            deadline = time.monotonic() + 60
            while sum(map(len, returned.values())) < total:
                assert time.monotonic() < deadline
                task = asyncio.create_task(
                    consumer.poll(timeout=rng.choice([0, 0.001, 0.01, None]),
                                  max_records=rng.randint(1, 40)))
                await asyncio.sleep(rng.choice([0, 0, 0.0005, 0.002, 0.01]))
                task.cancel()
                try:
                    records = await task
                except asyncio.CancelledError:
                    cancelled += 1
                    records = []
                for record in records:
                    returned[record.partition].append(record.offset)
                if rng.random() < 0.1:
                    await consumer.commit()
                check_commits()
        finally:
            assert await asyncio.to_thread(child.wait, 60) == 0
        await consumer.close()
        check_commits()
        return returned, cancelled

    returned, cancelled = run(main())
    assert cancelled > 10
    for p in range(3):
        assert returned[p] == list(range(per_partition))   # in order, each exactly once
    assert log.group_offsets("g") == {TP("events", p): per_partition for p in range(3)}


@local_only("it stops the local consumer's fetcher inside its fetch step")
def test_a_poll_cancelled_inside_the_fetch_step_returns_its_records_later(log):
    """Deterministic: the task is cancelled while the worker thread is inside the
    fetch step; the records that call fetched come out of the next poll."""
    log.create_topic("t")
    with Producer(log) as producer:
        producer.send_batch("t", list(range(5)))

    async def main():
        async with AIOConsumer(log, "t", group_id="g") as consumer:
            underlying = consumer._fetcher
            inside, release = threading.Event(), threading.Event()
            real_fetch = underlying.fetch

            def slow_fetch(*args, **kwargs):
                records = real_fetch(*args, **kwargs)
                inside.set()
                release.wait(10)
                return records

            underlying.fetch = slow_fetch
            task = asyncio.create_task(consumer.poll(timeout=5))
            await asyncio.to_thread(inside.wait, 10)
            task.cancel()
            release.set()
            with pytest.raises(asyncio.CancelledError):
                await task
            await consumer.commit()                      # nothing returned, nothing committed
            assert log.group_offsets("g").get(TP("t", 0), 0) == 0
            underlying.fetch = real_fetch
            records = await consumer.poll(timeout=5)
            await consumer.commit()
        return [r.value for r in records]

    assert run(main()) == [0, 1, 2, 3, 4]
    assert log.group_offsets("g") == {TP("t", 0): 5}


def test_close_commits_only_the_records_returned_not_those_read_ahead(any_log):
    t, g = unique_name(), unique_name("g")
    any_log.create_topic(t)
    with Producer(any_log) as producer:
        producer.send_batch(t, list(range(100)))

    async def main():
        async with AIOConsumer(any_log, t, group_id=g) as consumer:
            got = await consumer.poll(timeout=5, max_records=5)
            if not is_kafka(any_log):   # (on Kafka the read-ahead is librdkafka's queue)
                assert len(consumer._buffer) == 95            # read ahead, not returned
            assert await consumer.position(TP(t, 0)) == 5
            assert await consumer.lag() == {TP(t, 0): 95}
        return [r.value for r in got]

    assert run(main()) == [0, 1, 2, 3, 4]
    assert any_log.group_offsets(g) == {TP(t, 0): 5}


def test_breaking_out_of_async_for_leaves_the_rest_for_the_next_poll(any_log):
    t, g = unique_name(), unique_name("g")
    any_log.create_topic(t)
    with Producer(any_log) as producer:
        producer.send_batch(t, list(range(10)))

    async def main():
        async with AIOConsumer(any_log, t, group_id=g) as consumer:
            async for record in consumer:
                if record.value == 3:
                    break
            await consumer.commit()
            assert any_log.group_offsets(g) == {TP(t, 0): 4}
            return [r.value for r in await consumer.poll(timeout=5)]

    assert run(main()) == [4, 5, 6, 7, 8, 9]


# -- AIOConsumer: positions, pause, assignment, rebalances, closing ------------------------------


async def take(consumer, count, timeout=10.0):
    """Poll until ``count`` records came (or ``timeout`` passed), and a little longer
    for any record too many: a Kafka consumer returns a partition's records as its
    fetches come back, not all in one poll."""
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        got += await consumer.poll(timeout=0.5, max_records=100)
    return got + await consumer.poll(timeout=0.05)


def test_seek_pause_and_resume_respect_records_read_ahead(any_log):
    t = unique_name()
    any_log.create_topic(t, partitions=2)
    with Producer(any_log) as producer:
        producer.send_batch(t, list(range(20)), partition=0)
        producer.send_batch(t, list(range(100, 120)), partition=1)
    tp0, tp1 = TP(t, 0), TP(t, 1)

    async def main():
        async with AIOConsumer(any_log) as consumer:
            await consumer.assign([tp0, tp1])
            await check(consumer)
            assert consumer.assignment() == {tp0, tp1}
            [first] = await consumer.poll(timeout=10, max_records=1)  # the rest is read ahead
            assert first.offset == 0
            paused = TP(t, first.partition)
            other = tp1 if paused == tp0 else tp0
            await consumer.pause(paused)
            await check(consumer)
            assert await consumer.position(paused) == 1
            got = await take(consumer, 20)
            assert [(r.partition, r.offset) for r in got] == [(other.partition, i)
                                                               for i in range(20)]
            await consumer.resume(paused)
            await check(consumer)
            got = await take(consumer, 19)
            assert [(r.partition, r.offset) for r in got] == [(paused.partition, i)
                                                               for i in range(1, 20)]
            await consumer.seek(tp0, 5)
            await consumer.seek_to_beginning(tp1)
            await check(consumer)
            values = sorted(r.value for r in await take(consumer, 35))
            assert values == list(range(5, 20)) + list(range(100, 120))
            await consumer.seek_to_end()
            await check(consumer)
            assert await consumer.poll(timeout=0.05) == []
            assert await consumer.end_offsets([tp0]) == {tp0: 20}
            assert await consumer.beginning_offsets([tp0]) == {tp0: 0}
            assert (await consumer.offsets_for_times({tp0: 0}))[tp0] == 0
            await consumer.assign([tp1])
            await check(consumer)
            assert consumer.assignment() == {tp1}

    run(main())


@local_only("the hand-over happens while the first member holds records read ahead; a "
            "Kafka rebalance often completes only after it has read them all")
def test_a_rebalance_hands_over_without_losing_or_repeating_records(any_log):
    jobs, g = unique_name("jobs"), unique_name("g")
    any_log.create_topic(jobs, partitions=4)
    with Producer(any_log) as producer:
        for p in range(4):
            producer.send_batch(jobs, [[p, i] for i in range(200)], partition=p)

    class Recorder(eventlog.RebalanceListener):
        def __init__(self):
            self.revoked = set()

        def on_revoked(self, partitions):
            self.revoked |= partitions

    async def main():
        listener = Recorder()
        first = AIOConsumer(any_log, jobs, group_id=g, listener=listener,
                            heartbeat_interval_ms=20)
        await first.start()
        seen = {first: await first.poll(timeout=1, max_records=5)}   # and 495 read ahead
        second = AIOConsumer(any_log, jobs, group_id=g, heartbeat_interval_ms=20)
        await second.start()                  # joining revokes some of first's partitions
        seen[second] = []

        async def work(consumer):             # a slow worker: few records at a time
            while sum(map(len, seen.values())) < 800:
                seen[consumer] += await consumer.poll(timeout=0.05, max_records=5)
                await asyncio.sleep(0.001)

        await asyncio.wait_for(asyncio.gather(work(first), work(second)), 30)
        await first.close()
        await second.close()
        return seen[first], seen[second], listener.revoked

    by_first, by_second, revoked = run(main())
    assert revoked and by_second            # the partitions moved while first had a buffer
    values = [tuple(r.value) for r in by_first + by_second]
    assert sorted(values) == sorted((p, i) for p in range(4) for i in range(200))
    assert any_log.group_offsets(g) == {TP(jobs, p): 200 for p in range(4)}


def test_close_ends_a_waiting_poll_and_async_for(any_log):
    t = unique_name()
    any_log.create_topic(t)

    async def main():
        consumer = AIOConsumer(any_log, t)
        await consumer.start()
        waiting = asyncio.create_task(consumer.poll(timeout=None))
        iterating = asyncio.create_task(consumer.__anext__())
        await asyncio.sleep(0.05)
        start = time.monotonic()
        await consumer.close()
        with pytest.raises(ClosedError):
            await waiting
        with pytest.raises(StopAsyncIteration):
            await iterating
        assert time.monotonic() - start < 5
        await consumer.close()                               # idempotent
        with pytest.raises(ClosedError):
            await consumer.poll()
        with pytest.raises(ClosedError):
            await consumer.commit()

    run(main())


def test_commit_runs_at_once_while_another_task_waits_in_poll(any_log):
    t, g = unique_name(), unique_name("g")
    any_log.create_topic(t)
    with Producer(any_log) as producer:
        producer.send_batch(t, [1, 2])

    async def main():
        async with AIOConsumer(any_log, t, group_id=g, enable_auto_commit=False) as consumer:
            assert len(await consumer.poll(timeout=10)) == 2
            waiting = asyncio.create_task(consumer.poll(timeout=30))
            await asyncio.sleep(0.05)
            start = time.monotonic()
            await consumer.commit()
            took = time.monotonic() - start
            assert await consumer.committed(TP(t, 0)) == 2
            waiting.cancel()
            await asyncio.gather(waiting, return_exceptions=True)
        return took

    # It did not wait for the 30 s poll, nor (locally) for a slice of it. On Kafka the
    # consumer's one thread takes the commit between two 0.2 s slices of librdkafka's
    # poll (src/eventlog/_kafka/_aio.py), and the commit is a round trip to the broker.
    assert run(main()) < (1.0 if is_kafka(any_log) else 0.2)


def test_a_record_that_fails_to_deserialize_is_raised_after_the_good_ones(any_log):
    raw = unique_name("raw")
    any_log.create_topic(raw)
    with Producer(any_log, value_serializer="bytes") as producer:
        producer.send_batch(raw, [b'{"n": 1}', b"oops", b'{"n": 3}'])

    async def main():
        async with AIOConsumer(any_log, raw, value_deserializer="json") as consumer:
            values = [r.value for r in await consumer.poll(timeout=10)]
            with pytest.raises(eventlog.SerializationError) as failure:
                await consumer.poll(timeout=10)
            error = failure.value
            assert (error.topic, error.partition, error.offset) == (raw, 0, 1)
            await consumer.seek(TP(error.topic, error.partition), error.offset + 1)
            values += [r.value for r in await consumer.poll(timeout=10)]
        return values

    assert run(main()) == [{"n": 1}, {"n": 3}]


def test_bad_options_and_commit_without_a_group(any_log):
    t = unique_name()
    any_log.create_topic(t)
    for bad in ({"max_poll_records": 0}, {"auto_commit_interval_ms": 0},
                {"consumer_timeout_ms": -1}):
        with pytest.raises((eventlog.InvalidConfigError, TypeError)):
            AIOConsumer(any_log, t, **bad)
    with pytest.raises(TypeError, match="no_such_option"):
        AIOConsumer(any_log, t, no_such_option=1)

    async def main():
        async with AIOConsumer(any_log, t) as consumer:
            with pytest.raises(eventlog.InvalidConfigError):
                await consumer.poll(max_records=0)
            with pytest.raises(eventlog.CommitFailedError):
                await consumer.commit()
        broken = AIOConsumer(any_log, t, auto_offset_reset="sideways")
        with pytest.raises(eventlog.InvalidConfigError):
            await broken.start()
        with pytest.raises(eventlog.InvalidConfigError):
            await broken.poll()
        await broken.close()

    run(main())
