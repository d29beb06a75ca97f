"""Honest lag (issue 17): every report counts every partition of a group's topics, by
one rule (``_group_admin.partition_lag``), and commits cannot claim offsets that do not
exist.

Real log directories, real consumers; the CLI as a real subprocess.
"""

from __future__ import annotations

import json

from prometheus_client import CollectorRegistry, generate_latest

import eventlog
from eventlog import Consumer, Producer, TopicPartition
from eventlog._group_admin import partition_lag
from eventlog.prometheus import EventLogCollector
from tests.test_cli import cli, ok

TP = TopicPartition


def _scenario(log: eventlog.Log) -> None:
    """The issue's: the group committed partition 1 only; records wait on 0 and 2."""
    log.create_topic("orders", partitions=3)
    with Producer(log) as producer:
        producer.send("orders", "first", partition=1)
    with Consumer(log, group_id="g", enable_auto_commit=False) as consumer:
        consumer.assign([TP("orders", 1)])
        consumer.commit({TP("orders", 1): 1})
    with Producer(log) as producer:
        for p in (0, 0, 2, 1):
            producer.send("orders", "more", partition=p)


EXPECTED = {TP("orders", 0): 2, TP("orders", 1): 1, TP("orders", 2): 1}


def test_partitions_never_committed_count_from_their_start_in_every_report(log_dir):
    with eventlog.open(log_dir) as log:
        _scenario(log)
        assert log.group_lag("g") == EXPECTED
        assert log.describe_group("g").lag == EXPECTED
        group = log.metrics().group("g")
        assert group.lag == EXPECTED and group.max_lag == 2
        assert {tp: ps.lag for tp, ps in log.group_status("g").partitions.items()} == \
            EXPECTED
        registry = CollectorRegistry()
        registry.register(EventLogCollector(log))
        text = generate_latest(registry).decode()
        assert 'eventlog_group_lag{group="g",partition="0",topic="orders"} 2.0' in text
        assert 'eventlog_group_max_lag{group="g"} 2.0' in text
    lag, described = (json.loads(ok(cli(*args, "--json", log=log_dir)).stdout)
                      for args in (("groups", "lag", "g"), ("groups", "describe", "g")))
    assert [(r["partition"], r["committed"], r["end_offset"], r["lag"]) for r in lag] == \
        [(0, None, 2, 2), (1, 1, 2, 1), (2, None, 1, 1)]
    assert [(r["partition"], r["committed"], r["lag"]) for r in described[0]["partitions"]] \
        == [(0, None, 2), (1, 1, 1), (2, None, 1)]
    text = ok(cli("groups", "lag", "g", log=log_dir)).stdout
    assert "group g: total lag 4" in text


def test_lag_counts_the_topics_members_subscribe_to_before_any_commit(log_dir):
    with eventlog.open(log_dir) as log:
        log.create_topic("audit", partitions=2)
        with Producer(log) as producer:
            producer.send_batch("audit", ["a", "b", "c"], partition=1)
        with Consumer(log, "audit", group_id="fresh", enable_auto_commit=False):
            assert log.group_lag("fresh") == {TP("audit", 0): 0, TP("audit", 1): 3}


def test_a_commit_outside_the_stored_range_counts_from_the_start():
    assert partition_lag(None, 10, 15) == 5
    assert partition_lag(12, 10, 15) == 3
    assert partition_lag(15, 10, 15) == 0
    assert partition_lag(3, 10, 15) == 5      # records deleted under it by retention
    assert partition_lag(99, 10, 15) == 5     # beyond the end: a recreated topic
