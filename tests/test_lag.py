"""Honest lag (issue 17): every report counts every partition of a group's topics, by
one rule (``_group_admin.partition_lag``), and commits cannot claim offsets that do not
exist.

Real log directories, real consumers; the CLI as a real subprocess. The tests of the
public calls (``group_lag``, ``describe_group``, commits beyond the end,
``eventlog.testing.wait_for_lag``) run on a log directory and on the session's Kafka
broker (``any_log``); ``local_only`` ones say why (``log.metrics()``,
``group_status()``, the CLI and Prometheus read a directory; offset resets counted by
the local fetcher).
"""

from __future__ import annotations

import json
import logging
import threading
import time

import pytest
from prometheus_client import CollectorRegistry, generate_latest

import eventlog
from eventlog import Consumer, Producer, TopicPartition
from eventlog._group_admin import partition_lag
from eventlog.errors import OffsetOutOfRangeError
from eventlog.prometheus import EventLogCollector
from eventlog.testing import ManualClock, wait_for_lag
from tests.conftest import is_kafka, unique_name
from tests.test_cli import cli, ok

TP = TopicPartition
local_only = pytest.mark.local_only


def _scenario(log: eventlog.Log, topic: str = "orders", group: str = "g") -> None:
    """The issue's: the group committed partition 1 only; records wait on 0 and 2."""
    log.create_topic(topic, partitions=3)
    with Producer(log) as producer:
        producer.send(topic, "first", partition=1)
    with Consumer(log, group_id=group, enable_auto_commit=False) as consumer:
        consumer.assign([TP(topic, 1)])
        consumer.commit({TP(topic, 1): 1})
    with Producer(log) as producer:
        for p in (0, 0, 2, 1):
            producer.send(topic, "more", partition=p)


def _expected(topic: str = "orders") -> dict[TopicPartition, int]:
    return {TP(topic, 0): 2, TP(topic, 1): 1, TP(topic, 2): 1}


EXPECTED = _expected()


def test_group_lag_counts_partitions_never_committed_on_both_backends(any_log):
    topic, group = unique_name("orders"), unique_name("g")
    _scenario(any_log, topic, group)
    assert any_log.group_lag(group) == _expected(topic)
    assert any_log.describe_group(group).lag == _expected(topic)


def test_offsets_and_lag_maps_come_in_topic_and_partition_order(any_log):
    """Printed, ``group_offsets``, ``group_lag`` and ``Consumer.lag`` read in order,
    whatever order the partitions were committed or assigned in."""
    a, b, group = unique_name("a"), unique_name("b"), unique_name("g")
    for topic in (b, a):
        any_log.create_topic(topic, partitions=3)
    order = [TP(b, 2), TP(a, 1), TP(b, 0), TP(a, 2), TP(a, 0), TP(b, 1)]
    with Consumer(any_log, group_id=group, enable_auto_commit=False) as consumer:
        consumer.assign(order)
        for tp in order:
            consumer.commit({tp: 0})
        assert list(consumer.lag()) == sorted(order)
    assert list(any_log.group_offsets(group)) == sorted(order)
    assert list(any_log.group_lag(group)) == sorted(order)


@local_only("log.metrics(), group_status(), Prometheus and the CLI read a directory")
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


def test_lag_counts_the_topics_members_subscribe_to_before_any_commit(any_log):
    log, audit, fresh = any_log, unique_name("audit"), unique_name("fresh")
    log.create_topic(audit, partitions=2)
    with Producer(log) as producer:
        producer.send_batch(audit, ["a", "b", "c"], partition=1)
    with Consumer(log, audit, group_id=fresh, enable_auto_commit=False) as consumer:
        deadline = time.monotonic() + 30   # on Kafka: until the group has the member
        while not consumer.assignment() and time.monotonic() < deadline:
            consumer.poll(timeout=0.1, max_records=1)
        assert log.group_lag(fresh) == {TP(audit, 0): 0, TP(audit, 1): 3}


def test_a_commit_outside_the_stored_range_counts_from_the_start():
    assert partition_lag(None, 10, 15) == 5
    assert partition_lag(12, 10, 15) == 3
    assert partition_lag(15, 10, 15) == 0
    assert partition_lag(3, 10, 15) == 5      # records deleted under it by retention
    assert partition_lag(99, 10, 15) == 5     # beyond the end: a recreated topic


# -- commits beyond the end, and committed offsets out of range at read time ------------

def test_a_commit_beyond_the_end_offset_is_refused_and_changes_nothing(any_log):
    log, topic, group = any_log, unique_name("orders"), unique_name("g")
    log.create_topic(topic)
    with Producer(log) as producer:
        producer.send_batch(topic, ["a", "b", "c"])
    tp = TP(topic, 0)
    with Consumer(log, group_id=group, enable_auto_commit=False) as consumer:
        consumer.assign([tp])
        consumer.commit({tp: 2})
        if is_kafka(log):
            # the broker takes it (docs/kafka-backend.md); the lag counts from the start
            consumer.commit({tp: 999})
            assert consumer.committed(tp) == 999
            assert log.group_lag(group) == {tp: 3}
        else:
            with pytest.raises(OffsetOutOfRangeError,
                               match="beyond its end offset 3") as info:
                consumer.commit({tp: 999})
            assert (info.value.offset, info.value.end_offset) == (999, 3)
            assert consumer.committed(tp) == 2
        consumer.commit({tp: 3})          # the end itself: caught up
        assert consumer.committed(tp) == 3
    assert log.group_lag(group) == {tp: 0}


@local_only("follows from a directory refusing commits beyond the end offset")
def test_auto_commit_leaves_out_a_position_sought_past_the_end(log):
    log.create_topic("orders", partitions=2)
    with Producer(log) as producer:
        producer.send_batch("orders", ["a", "b"], partition=0)
        producer.send_batch("orders", ["c"], partition=1)
    with Consumer(log, group_id="g", auto_commit_interval_ms=1) as consumer:
        consumer.assign([TP("orders", 0), TP("orders", 1)])
        consumer.seek(TP("orders", 0), 50)
        consumer.seek(TP("orders", 1), 1)
        time.sleep(0.01)                   # the auto-commit is due
        consumer.poll(timeout=0)           # auto-commits first: must not raise
        assert consumer.committed(TP("orders", 1)) == 1
        assert consumer.committed(TP("orders", 0)) is None   # 50 was left out


@local_only("offset resets counted and logged by the local fetcher")
def test_a_committed_offset_out_of_range_resets_visibly(log, caplog):
    log.create_topic("orders")
    tp = TP("orders", 0)
    with Producer(log) as producer:
        producer.send_batch("orders", list(range(6)))
    with Consumer(log, group_id="g", enable_auto_commit=False) as consumer:
        consumer.assign([tp])
        consumer.commit({tp: 1})
    log.delete_records(tp, 4)            # retention took the records under the commit
    with caplog.at_level(logging.WARNING, logger="eventlog"), \
            Consumer(log, group_id="g", enable_auto_commit=False) as consumer:
        consumer.assign([tp])
        assert consumer.metrics()["offset_resets"] == 0
        assert [r.value for r in consumer.poll(timeout=1)] == [4, 5]
        m = consumer.metrics()
        assert (m["offset_resets"], m["records_consumed"], m["records_lag_max"]) == (1, 2, 0)
    assert any("committed offset 1 of orders[0] is out of range [4, 6]; reset to 4"
               in r.getMessage() for r in caplog.records)


@local_only("offset resets counted and logged by the local fetcher")
def test_a_position_that_retention_overtakes_resets_visibly(log, caplog):
    log.create_topic("orders")
    tp = TP("orders", 0)
    with Producer(log) as producer:
        producer.send_batch("orders", list(range(6)))
    with Consumer(log, enable_auto_commit=False, auto_offset_reset="latest") as consumer:
        consumer.assign([tp])
        consumer.seek(tp, 1)
        log.delete_records(tp, 3)
        with caplog.at_level(logging.WARNING, logger="eventlog"):
            assert consumer.poll(timeout=0) == []      # "latest": to the end
        assert consumer.position(tp) == 6 and consumer.metrics()["offset_resets"] == 1
        consumer.seek(tp, 0)               # again at once: counted, not logged again
        with caplog.at_level(logging.WARNING, logger="eventlog"):
            assert consumer.poll(timeout=0) == []
        assert consumer.metrics()["offset_resets"] == 2
    warnings = [r.getMessage() for r in caplog.records if "out of range" in r.getMessage()]
    assert len(warnings) == 1 and "position 1 of orders[0] is out of range" in warnings[0]


# -- eventlog.testing.wait_for_lag --------------------------------------------------------

def test_wait_for_lag_waits_for_a_group_that_does_not_exist_yet(any_log):
    log, orders, workers = any_log, unique_name("orders"), unique_name("workers")
    log.create_topic(orders, partitions=2)
    with Producer(log) as producer:
        producer.send_batch(orders, list(range(40)), partition=0)
        producer.send_batch(orders, list(range(10)), partition=1)

    def worker() -> None:
        time.sleep(0.05)                              # the group appears later
        with Consumer(log, orders, group_id=workers,
                      enable_auto_commit=False) as consumer:
            while not consumer.assignment() or sum(consumer.lag().values()):
                consumer.poll(timeout=1, max_records=7)
                if consumer.assignment():
                    consumer.commit()

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        assert wait_for_lag(log, workers, timeout=30) == \
            {TP(orders, 0): 0, TP(orders, 1): 0}
    finally:
        thread.join()


def test_wait_for_lag_fails_with_the_lag_per_partition(any_log):
    log, orders, slow = any_log, unique_name("orders"), unique_name("slow")
    ghost = unique_name("ghost")
    log.create_topic(orders, partitions=2)
    with Producer(log) as producer:
        producer.send_batch(orders, list(range(5)), partition=1)
    with pytest.raises(AssertionError, match=rf"group '{ghost}' .* does not exist"):
        wait_for_lag(log, ghost, timeout=0.05)
    with Consumer(log, group_id=slow, enable_auto_commit=False) as consumer:
        consumer.assign([TP(orders, 1)])
        consumer.commit({TP(orders, 1): 2})
    with pytest.raises(AssertionError, match=rf"its lag is 3 \({orders}\[0\]: 0, "
                                             rf"{orders}\[1\]: 3\)"):
        wait_for_lag(log, slow, timeout=0.05)
    assert wait_for_lag(log, slow, 3) == {TP(orders, 0): 0, TP(orders, 1): 3}
    with pytest.raises(AssertionError, match="has no partitions on topic 'audit'"):
        wait_for_lag(log, slow, 0, topic="audit", timeout=0.05)
    with pytest.raises(eventlog.InvalidConfigError):
        wait_for_lag(log, slow, -1)


# -- Prometheus: kafka-exporter's names, sums, time lag, client counters ------------------

def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@local_only("the Prometheus collector reads log.metrics() of a directory")
def test_prometheus_offers_kafka_exporters_names_sums_and_time_lag(log_dir):
    clock = ManualClock()
    with eventlog.open(log_dir, clock=clock) as log:
        _scenario(log)
        log.delete_records(TP("orders", 0), 1)
        clock.advance(90_000)
        registry = CollectorRegistry()
        registry.register(EventLogCollector(log))
        got = _samples(generate_latest(registry).decode())

        def value(name: str, **labels: str) -> float:
            return got[(name, tuple(sorted(labels.items())))]

        g0 = {"consumergroup": "g", "topic": "orders", "partition": "0"}
        g1 = {**g0, "partition": "1"}
        assert value("kafka_consumergroup_lag", **g0) == 1      # never committed
        assert value("kafka_consumergroup_lag", **g1) == 1
        assert value("kafka_consumergroup_lag_sum", consumergroup="g", topic="orders") == 3
        assert value("kafka_consumergroup_current_offset", **g1) == 1
        assert ("kafka_consumergroup_current_offset", tuple(sorted(g0.items()))) not in got
        assert value("kafka_consumergroup_current_offset_sum", consumergroup="g",
                     topic="orders") == 1
        assert value("kafka_consumergroup_members", consumergroup="g") == 0
        assert value("kafka_topic_partitions", topic="orders") == 3
        assert value("kafka_topic_partition_current_offset", topic="orders",
                     partition="0") == 2
        assert value("kafka_topic_partition_oldest_offset", topic="orders",
                     partition="0") == 1
        assert value("eventlog_group_total_lag", group="g") == 3
        assert value("eventlog_group_max_lag_seconds", group="g") == 90.0
        plain = CollectorRegistry()
        plain.register(EventLogCollector(log, kafka_names=False))
        assert "kafka_" not in generate_latest(plain).decode()


@local_only("the counters of the local producer and consumer")
def test_prometheus_exports_the_counters_of_producers_and_consumers(log):
    log.create_topic("orders", partitions=2)
    collector = EventLogCollector(log, kafka_names=False)
    registry = CollectorRegistry()
    registry.register(collector)
    producer = Producer(log)
    consumer = Consumer(log, "orders", group_id="billing", enable_auto_commit=False)
    collector.add_client(producer, "orders-api")
    collector.add_client(consumer, "billing-1")
    try:
        producer.send_batch("orders", list(range(30)), partition=0)
        assert len(consumer.poll(timeout=1, max_records=20)) == 20
        got = _samples(generate_latest(registry).decode())
        assert got[("eventlog_producer_records_sent_total",
                    (("client", "orders-api"),))] == 30
        assert got[("eventlog_producer_batches_sent_total", (("client", "orders-api"),))] >= 1
        assert got[("eventlog_producer_records_pending", (("client", "orders-api"),))] == 0
        assert got[("eventlog_consumer_records_consumed_total",
                    (("client", "billing-1"),))] == 20
        assert got[("eventlog_consumer_offset_resets_total", (("client", "billing-1"),))] == 0
        assert got[("eventlog_consumer_assigned_partitions", (("client", "billing-1"),))] == 2
        assert got[("eventlog_consumer_records_lag_max", (("client", "billing-1"),))] == 10
    finally:
        consumer.close()
        producer.close()
    text = generate_latest(registry).decode()
    assert 'client="billing-1"' not in text          # closed: no longer exported
    collector.remove_client("orders-api")
    assert 'client="orders-api"' not in generate_latest(registry).decode()
    with pytest.raises(TypeError):
        collector.add_client(log, "log")
