"""Races between processes that must stay local to what they touch (issue 18): a topic
deleted, or deleted and created again, by another process while this one uses the log."""

from __future__ import annotations

import time

import pytest

import eventlog
from eventlog import Consumer, Producer, UnknownTopicError
from tests.conftest import run_python

DELETE = """
import sys, eventlog
with eventlog.open(sys.argv[1]) as log:
    log.delete_topic(sys.argv[2])
    if len(sys.argv) > 3:
        log.create_topic(sys.argv[2], partitions=int(sys.argv[3]))
"""


def test_a_topic_deleted_by_another_process_fails_only_that_topic(log_dir):
    with eventlog.open(log_dir, fsync="interval", fsync_interval_ms=1000) as log:
        a = log.create_topic("a").partition(0)
        b = log.create_topic("b").partition(0)
        time.sleep(1.1)              # let the flusher's first round pass
        a.append([b"1"])             # a is now dirty for the next round...
        run_python(DELETE, str(log_dir), "a")
        time.sleep(1.2)              # ...which meets the deleted partition
        assert not log.failed
        assert b.append([b"still fine"]) == 0
        with pytest.raises(UnknownTopicError):
            a.append([b"2"])
        log.flush()
    with eventlog.open(log_dir) as log:
        assert [r.value for r in log.topic("b").partition(0).read(0)] == [b"still fine"]


def test_a_topic_recreated_by_another_process_is_the_new_topic_here(log_dir):
    with eventlog.open(log_dir) as log:
        log.create_topic("t", partitions=1)
        with Producer(log, linger_ms=0) as producer:
            producer.send("t", "old").result(5)
            run_python(DELETE, str(log_dir), "t", "3")
            deadline = time.monotonic() + 5
            while True:  # the first send may fail with the old topic; then the new one
                try:
                    meta = producer.send("t", "new", partition=2).result(5)
                    break
                except UnknownTopicError:
                    assert time.monotonic() < deadline, "the producer never saw the new topic"
                    time.sleep(0.05)
            assert (meta.partition, meta.offset) == (2, 0)
        topic = log.topic("t")
        assert topic.num_partitions == 3
        assert [r.value for r in topic.partition(2).read(0)] == [b"\xa3new"]
        with Consumer(log, "t", value_deserializer="msgpack") as consumer:
            got = consumer.poll(timeout=2)
            assert [r.value for r in got] == ["new"]
    # and closing the log after all this raises nothing (it did: issue 18 item 6)
