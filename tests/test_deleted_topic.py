"""Clients of a topic deleted under them, in this process and in another: every public
path that holds a partition of the deleted topic fails with ``UnknownTopicError`` or
recovers (a subscription drops the topic, as a rebalance would), never a raw
``ValueError: mmap closed`` or ``ClosedError``. Real log directories, real processes."""

from __future__ import annotations

import threading

import pytest

import eventlog
from eventlog import TopicPartition, UnknownTopicError
from eventlog._head import FILE_NAME, Head
from tests.conftest import soak, spawn_python
from tests.test_consumer import check

T0, T1, U0 = TopicPartition("t", 0), TopicPartition("t", 1), TopicPartition("u", 0)


@pytest.fixture
def log(tmp_path):
    with eventlog.open(tmp_path / "log") as log:
        log.create_topic("t", partitions=2)
        log.create_topic("u")
        with eventlog.Producer(log, value_serializer="bytes") as producer:
            for i in range(10):
                producer.send("t", b"t%d" % i, partition=i % 2)
            producer.send("u", b"u0")
        yield log


def consumer(log, *topics, **options):
    options.setdefault("auto_offset_reset", "earliest")
    options.setdefault("value_deserializer", "bytes")
    return eventlog.Consumer(log, *topics, **options)


def poll_all(c, n=3):
    """Records of ``n`` polls (enough for a consumer to notice a deletion), with the
    invariants of its coordinator, fetcher and group member checked after each."""
    out = []
    for _ in range(n):
        try:
            out += c.poll(timeout=0.05)
        finally:
            check(c)
    return out


def delete_in_another_process(path, topic):
    proc = spawn_python("import sys, eventlog\n"
                        "with eventlog.open(sys.argv[1]) as log:\n"
                        "    log.delete_topic(sys.argv[2])\n", str(path), topic)
    assert proc.wait(timeout=60) == 0


def produce(log, topic, value):
    with eventlog.Producer(log, value_serializer="bytes") as producer:
        return producer.send(topic, value).result()


@pytest.mark.parametrize("where", ["this process", "another process"])
@pytest.mark.parametrize("group_id", [None, "g"])
def test_a_subscription_drops_the_deleted_topic_and_goes_on_reading_the_others(
        log, where, group_id):
    c = consumer(log, "t", "u", group_id=group_id)
    assert len(poll_all(c)) == 11
    assert c.assignment() == {T0, T1, U0}
    if where == "this process":
        log.delete_topic("t")
    else:
        delete_in_another_process(log.path, "t")
    assert c.lag() == {U0: 0}   # before any poll noticed: no lag for deleted partitions
    produce(log, "u", b"u1")
    got = poll_all(c)
    assert [(r.topic, r.value) for r in got] == [("u", b"u1")]
    assert c.assignment() == {U0}
    assert c.lag() == {U0: 0}
    c.close()


def test_a_group_rebalances_without_the_deleted_topic(log):
    c = consumer(log, "t", "u", group_id="g", heartbeat_interval_ms=10)
    assert len(poll_all(c)) == 11
    log.delete_topic("t")
    produce(log, "u", b"u1")
    got = poll_all(c, 20)   # the group's checks come every 10 ms: it rebalances
    assert [r.value for r in got] == [b"u1"]
    assert c.assignment() == {U0}
    c.commit()
    assert c.committed(U0) == 2
    c.close()


@pytest.mark.parametrize("where", ["this process", "another process"])
def test_an_explicit_assignment_of_a_deleted_topic_raises_unknown_topic(log, where):
    c = consumer(log)
    c.assign([T0, U0])
    assert len(poll_all(c)) == 6
    if where == "this process":
        log.delete_topic("t")
    else:
        delete_in_another_process(log.path, "t")
    for _ in range(2):  # every poll, until the assignment changes
        with pytest.raises(UnknownTopicError):
            poll_all(c)
    assert c.lag() == {U0: 0}   # a deleted partition has no lag
    for call in (lambda: c.end_offsets([T0]),
                 lambda: c.beginning_offsets([T0]), lambda: c.offsets_for_times({T0: 0}),
                 lambda: c.seek_to_end(T0), lambda: c.seek_to_beginning(T0)):
        with pytest.raises(UnknownTopicError):
            call()
    c.assign([U0])
    produce(log, "u", b"u1")
    assert [r.value for r in poll_all(c)] == [b"u1"]
    c.close()


def test_an_assignment_made_again_reads_the_topic_created_again(log):
    c = consumer(log)
    c.assign([T0])
    assert len(poll_all(c)) == 5
    log.delete_topic("t")
    with pytest.raises(UnknownTopicError):
        poll_all(c)
    log.create_topic("t", partitions=2)
    produce(log, "t", b"new")   # round robin over fresh partitions: one of the two
    c.assign([T0, T1])
    assert [(r.offset, r.value) for r in poll_all(c)] == [(0, b"new")]
    c.close()


def test_a_producer_of_a_deleted_topic_fails_typed_then_sends_to_the_new_one(log):
    with eventlog.Producer(log, value_serializer="bytes") as producer:
        producer.send("t", b"before", partition=0).result()   # partition cached
        log.delete_topic("t")
        with pytest.raises(UnknownTopicError):
            producer.send("t", b"after", partition=0).result()
        log.create_topic("t", partitions=2)
        metadata = producer.send("t", b"again", partition=0).result()
        assert metadata.offset == 0
    assert log.topic("t").partition(0).read(0)[0].value == b"again"


def test_a_partition_handle_of_a_deleted_topic_fails_typed(log):
    partition = log.topic("t").partition(0)
    log.delete_topic("t")
    for call in (lambda: partition.end_offset, lambda: partition.start_offset,
                 lambda: partition.read(0), lambda: partition.append([b"x"]),
                 lambda: partition.offset_for_time(0)):
        with pytest.raises(UnknownTopicError):
            call()


@pytest.mark.parametrize("where", ["this process", "another process"])
def test_a_topic_facade_of_a_deleted_topic_fails_typed(log, where):
    """A ``Topic`` held across the delete reopens nothing that is gone: a partition
    never opened here included (its directory is missing then)."""
    topic = log.create_topic("v", partitions=2)
    topic.partition(1).append([b"x"])  # opened; partition 0 is not
    if where == "this process":
        log.delete_topic("v")
    else:
        delete_in_another_process(log.path, "v")
    calls = {"partition(0)": lambda: topic.partition(0),
             "partition(1).end_offset": lambda: topic.partition(1).end_offset,
             "partitions": lambda: topic.partitions,
             "add_partitions(1)": lambda: topic.add_partitions(1)}
    for name, call in calls.items():
        with pytest.raises(UnknownTopicError):
            call()
            pytest.fail(f"{name} did not raise")
    log.create_topic("v")
    assert log.topic("v").partition(0).end_offset == 0   # the new topic
    with pytest.raises(UnknownTopicError):
        topic.partition(0)   # the old façade stays the deleted topic's


def test_a_released_notify_word_keeps_its_last_value(tmp_path):
    """What lets a fetcher holding a deleted partition's words read them (the
    ``ValueError: mmap closed`` of the issue came from the word of a closed head)."""
    with eventlog.open(tmp_path / "log") as log:
        log.create_topic("t")
        partition = log.topic("t").partition(0)
        directory = partition._log.directory
    head = Head(f"{directory}/{FILE_NAME}")
    counter = head.counter
    before = counter.load()
    head.close()
    assert counter.load() == before
    counter.store(before + 1)   # its own buffer now, not the file
    head = Head(f"{directory}/{FILE_NAME}")
    assert head.counter.load() == before
    head.close()



def _read_until_it_fails(log, started, errors):
    c = consumer(log, max_poll_records=5)
    c.assign([T0])
    try:
        while True:
            if not c.poll(timeout=0.001):
                c.seek(T0, 0)
            started.set()
    except BaseException as exc:   # what the thread met, for the test to judge
        errors.append(exc)
        started.set()


def _append_until_it_fails(partition, started, errors):
    try:
        while True:
            partition.append([b"y" * 50])   # rolls every ~60 appends
            started.set()
    except BaseException as exc:
        errors.append(exc)
        started.set()


def test_a_delete_racing_a_reader_and_a_writer_thread_gives_them_unknown_topic(tmp_path):
    """The deleting thread closes the mappings and removes the directory while the
    others are inside a fetch or an append (a roll's retention included): what they
    meet is reported as the deletion, never ``ValueError`` or ``LogDirectoryError``."""
    for round_ in range(soak(10)):
        with eventlog.open(tmp_path / str(round_)) as log:
            partition = log.create_topic("t", segment_bytes=4096,
                                         retention_bytes=8192).partition(0)
            for _ in range(100):
                partition.append([b"x" * 50])
            errors: list[BaseException] = []
            started = [threading.Event(), threading.Event()]
            threads = [threading.Thread(target=_read_until_it_fails,
                                        args=(log, started[0], errors)),
                       threading.Thread(target=_append_until_it_fails,
                                        args=(partition, started[1], errors))]
            for thread in threads:
                thread.start()
            for event in started:
                assert event.wait(60)
            log.delete_topic("t")
            for thread in threads:
                thread.join(60)
            assert [type(e) for e in errors] == [UnknownTopicError] * 2, errors
