"""A fetch skips a partition found drained until its notify count or the consumer's
position changes (``PartitionFetch.idle``): records appended later, by any process,
and seeks are still seen at once."""

from __future__ import annotations

import eventlog
from eventlog import TopicPartition
from tests.conftest import run_python

APPEND = """
import sys, eventlog
with eventlog.open(sys.argv[1]) as log, eventlog.Producer(log) as producer:
    producer.send("t", "from the child", partition=int(sys.argv[2])).result()
"""


def _drain(consumer):
    while consumer.poll(timeout=0):
        pass


def test_an_append_by_another_process_to_one_drained_partition_is_fetched(tmp_path):
    with eventlog.open(tmp_path) as log:
        log.create_topic("t", partitions=8)
        with eventlog.Producer(log) as producer:
            for p in range(8):
                producer.send("t", p, partition=p)
        with eventlog.Consumer(log, "t", group_id="g") as consumer:
            got = []
            while len(got) < 8:
                got.extend(consumer.poll(timeout=5))
            _drain(consumer)
            fetcher = consumer._fetcher  # the state under test
            fetcher._check()
            assert all(p.idle is not None for p in fetcher._parts.values())
            run_python(APPEND, str(tmp_path), "5")
            records = consumer.poll(timeout=5)
            assert [(r.partition, r.value) for r in records] == [(5, "from the child")]
            fetcher._check()


def test_a_seek_on_a_drained_partition_reads_again(tmp_path):
    with eventlog.open(tmp_path) as log:
        log.create_topic("t", partitions=2)
        with eventlog.Producer(log) as producer:
            producer.send_batch("t", list(range(6)), partition=1)
        with eventlog.Consumer(log, "t") as consumer:
            _drain(consumer)
            tp = TopicPartition("t", 1)
            assert consumer.position(tp) == 6
            consumer.seek(tp, 2)
            assert [r.value for r in consumer.poll(timeout=5)] == [2, 3, 4, 5]
            consumer.seek_to_beginning(tp)
            assert [r.offset for r in consumer.poll(timeout=5)] == list(range(6))


def test_a_drained_partition_whose_records_were_all_deleted_reads_what_comes_next(tmp_path):
    with eventlog.open(tmp_path) as log:
        log.create_topic("t")
        with eventlog.Producer(log) as producer:
            producer.send_batch("t", list(range(4)))
        with eventlog.Consumer(log, "t") as consumer:
            _drain(consumer)
            tp = TopicPartition("t", 0)
            assert log.delete_records(tp, 4) == 4  # everything: start = end = 4
            with eventlog.Producer(log) as producer:
                producer.send("t", "after").result()
            assert [r.value for r in consumer.poll(timeout=5)] == ["after"]
