"""What a user of kafka-python, confluent-kafka or aiokafka writes first, and gets
(issue 17, items 6 to 11): kafka-python's listener names, aiokafka's start/stop/
getmany, a poll that does not spin, ``client_id``, Kafka's dotted topic settings,
regex subscriptions and ``timestamp_type``."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import eventlog
from eventlog import InvalidConfigError, TimestampType, TopicPartition
from eventlog.aio import AIOConsumer, AIOProducer
from tests.conftest import ROOT


def _poll_until(consumers, done, rounds=200):
    """Poll every consumer (briefly) until ``done()``; group changes need polls."""
    for _ in range(rounds):
        for consumer in consumers:
            consumer.poll(timeout=0.01)
        if done():
            return
    raise AssertionError("the group did not settle")


def _cli(*args: object) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    return subprocess.run([sys.executable, "-m", "eventlog", *map(str, args)],
                          capture_output=True, text=True, timeout=60, env=env)


# -- item 6: rebalance listeners with kafka-python's names ---------------------------------

class KafkaPythonListener:
    """Written as for kafka-python's ConsumerRebalanceListener (no eventlog base)."""

    def __init__(self):
        self.calls = []

    def on_partitions_revoked(self, revoked):
        self.calls.append(("revoked", sorted(revoked)))

    def on_partitions_assigned(self, assigned):
        self.calls.append(("assigned", sorted(assigned)))


def test_kafka_python_listener_names_are_called_on_a_rebalance(log):
    log.create_topic("orders", partitions=2)
    first_listener, second_listener = KafkaPythonListener(), KafkaPythonListener()
    first = eventlog.Consumer(log, group_id="billing")
    first.subscribe(["orders"], listener=first_listener)
    assert first_listener.calls == [("assigned", [TopicPartition("orders", 0),
                                                  TopicPartition("orders", 1)])]
    second = eventlog.Consumer(log, group_id="billing", listener=second_listener)
    second.subscribe(["orders"])
    _poll_until([first, second], lambda: len(first.assignment()) == 1
                and len(second.assignment()) == 1 and second_listener.calls)
    moved = sorted(second.assignment())
    assert ("revoked", moved) in first_listener.calls
    assert second_listener.calls == [("assigned", moved)]
    second.close()
    first.close()


def test_a_listener_without_known_methods_fails_at_subscribe(log):
    log.create_topic("orders")

    class Misnamed:
        def partitions_revoked(self, partitions):  # neither naming
            pass

    consumer = eventlog.Consumer(log, group_id="billing")
    with pytest.raises(InvalidConfigError, match="on_partitions_revoked") as caught:
        consumer.subscribe(["orders"], listener=Misnamed())
    assert "on_revoked" in str(caught.value) and "on_assigned" in str(caught.value)
    assert consumer.assignment() == set() and log.groups() == []
    with pytest.raises(InvalidConfigError):
        eventlog.Consumer(log, "orders", group_id="billing", listener=object())
    with pytest.raises(InvalidConfigError):
        AIOConsumer(log, "orders", group_id="billing", listener=Misnamed())
    consumer.close()


def test_an_eventlog_listener_subclass_may_use_kafka_python_names(log):
    log.create_topic("orders")
    calls = []

    class Mixed(eventlog.RebalanceListener):
        def on_partitions_assigned(self, assigned):
            calls.append(sorted(assigned))

    with eventlog.Consumer(log, group_id="g") as consumer:
        consumer.subscribe(["orders"], listener=Mixed())
        assert calls == [[TopicPartition("orders", 0)]]


# -- item 7: aiokafka's start, stop, getmany, send_and_wait ----------------------------------

def test_aiokafka_style_start_stop_getmany_and_send_and_wait(log):
    log.create_topic("orders", partitions=2)

    async def main():
        producer = AIOProducer(log)
        await producer.start()
        for i in range(6):
            await producer.send_and_wait("orders", i, partition=i % 2)
        await producer.stop()
        with pytest.raises(eventlog.ClosedError):
            await producer.send("orders", 99)
        with pytest.raises(eventlog.ClosedError):
            await producer.start()

        consumer = AIOConsumer(log, "orders", group_id="g")
        await consumer.start()
        batches = await consumer.getmany(timeout_ms=1000, max_records=10)
        empty = await consumer.getmany(timeout_ms=10)
        await consumer.stop()
        with pytest.raises(eventlog.ClosedError):
            await consumer.getmany(timeout_ms=10)
        return batches, empty

    batches, empty = asyncio.run(main())
    assert empty == {}
    assert {tp: [r.value for r in records] for tp, records in batches.items()} == {
        TopicPartition("orders", 0): [0, 2, 4], TopicPartition("orders", 1): [1, 3, 5]}
    assert log.group_offsets("g") == {TopicPartition("orders", 0): 3,
                                      TopicPartition("orders", 1): 3}  # stop committed


def test_aio_getmany_rejects_a_bad_timeout(log):
    log.create_topic("orders")

    async def main():
        async with AIOConsumer(log, "orders") as consumer:
            with pytest.raises(InvalidConfigError):
                await consumer.getmany(timeout_ms=-1)

    asyncio.run(main())


# -- item 8: poll's default timeout does not spin ---------------------------------------------

def test_an_idle_poll_loop_with_the_default_timeout_sleeps(log):
    log.create_topic("idle")
    consumer = eventlog.Consumer(log, "idle")
    wall_start, cpu_start = time.monotonic(), time.process_time()
    polls = 0
    while time.monotonic() - wall_start < 1.2:
        assert consumer.poll() == []
        polls += 1
    wall = time.monotonic() - wall_start
    cpu = time.process_time() - cpu_start
    # A spinning loop burns a core (cpu ~ wall) and polls thousands of times.
    assert cpu < 0.25 * wall, (cpu, wall, polls)
    assert polls < 100, polls
    consumer.close()


def test_poll_takes_kafka_python_timeout_ms_too(log):
    log.create_topic("t")
    with eventlog.Producer(log) as producer:
        producer.send("t", "x")
    with eventlog.Consumer(log, "t") as consumer:
        assert [r.value for r in consumer.poll(timeout_ms=1000)] == ["x"]
        assert consumer.poll(timeout_ms=0) == []
        with pytest.raises(InvalidConfigError, match="not both"):
            consumer.poll(5, timeout_ms=10)
        with pytest.raises(InvalidConfigError):
            consumer.poll(timeout_ms=-5)
        with pytest.raises(InvalidConfigError):
            consumer.poll(timeout="1")

    async def main():
        async with AIOConsumer(log, "t") as consumer:
            return await consumer.poll(timeout_ms=1000)

    assert [r.value for r in asyncio.run(main())] == ["x"]


# -- item 9: client_id ------------------------------------------------------------------------

def test_client_id_shows_in_describe_group_the_cli_and_metrics(log):
    log.create_topic("orders", partitions=2)
    with eventlog.Producer(log, client_id="checkout-api") as producer:
        producer.send("orders", 1).result()
        assert producer.metrics()["client_id"] == "checkout-api"
    consumer = eventlog.Consumer(log, "orders", group_id="billing",
                                 client_id="billing-worker-1")
    consumer.poll(timeout=0.1)
    assert consumer.client_id == "billing-worker-1"
    metrics = consumer.metrics()
    assert metrics["client_id"] == "billing-worker-1" and metrics["group_id"] == "billing"
    assert metrics["assigned_partitions"] == 2
    members = log.describe_group("billing").members
    assert [m.client_id for m in members] == ["billing-worker-1"]

    shown = _cli("--log", log.path, "groups", "describe", "billing")
    assert shown.returncode == 0, shown.stderr
    header = next(line for line in shown.stdout.splitlines() if line.startswith("MEMBER"))
    assert "CLIENT-ID" in header and "billing-worker-1" in shown.stdout
    as_json = _cli("--log", log.path, "groups", "describe", "billing", "--json")
    assert json.loads(as_json.stdout)[0]["members"][0]["client_id"] == "billing-worker-1"
    consumer.close()


def test_aio_clients_take_a_client_id_and_bad_ones_are_refused(log):
    log.create_topic("orders")

    async def main():
        async with AIOProducer(log, client_id="aio-producer") as producer:
            assert producer.producer.metrics()["client_id"] == "aio-producer"
        async with AIOConsumer(log, "orders", group_id="g", client_id="aio-1") as consumer:
            await consumer.poll(timeout=0)
            return [m.client_id for m in log.describe_group("g").members]

    assert asyncio.run(main()) == ["aio-1"]
    for bad in ("", 7, "tab\there", "x" * 256):
        with pytest.raises(InvalidConfigError):
            eventlog.Consumer(log, "orders", client_id=bad)
        with pytest.raises(InvalidConfigError):
            eventlog.Producer(log, client_id=bad)
        with pytest.raises(InvalidConfigError):
            AIOConsumer(log, "orders", client_id=bad)


# -- item 10: Kafka's dotted topic settings ---------------------------------------------------

def test_create_topic_and_alter_take_kafkas_dotted_names(log):
    topic = log.create_topic("audit", **{"retention.ms": 86_400_000,
                                         "segment.bytes": 1 << 20,
                                         "message.timestamp.type": "LogAppendTime"})
    assert topic.config.retention_ms == 86_400_000
    assert topic.config.segment_bytes == 1 << 20
    assert topic.config.timestamp_type == "log_append_time"
    altered = log.alter_topic("audit", **{"retention.ms": -1, "cleanup.policy": "compact",
                                          "max.message.bytes": 4096})
    assert altered.config.retention_ms is None  # Kafka's -1: no limit
    assert (altered.config.cleanup_policy, altered.config.max_message_bytes) == \
        ("compact", 4096)
    with eventlog.open(log.path) as again:  # stored under the library's names
        assert again.topic("audit").config == altered.config


def test_dotted_names_that_are_wrong_or_doubled_change_nothing(log):
    with pytest.raises(InvalidConfigError, match=r"retention\.mss"):
        log.create_topic("a", **{"retention.mss": 1})
    with pytest.raises(InvalidConfigError, match="twice"):
        log.create_topic("a", **{"retention.ms": 1, "retention_ms": 2})
    with pytest.raises(InvalidConfigError):
        log.create_topic("a", **{"segment.bytes": -1})
    assert log.topics() == []


def test_the_cli_and_the_library_share_one_table_of_kafka_names(tmp_path: Path):
    path = tmp_path / "log"
    made = _cli("--log", path, "topics", "create", "events",
                "--config", "message.timestamp.type=LogAppendTime",
                "--config", "min.compaction.lag.ms=5s")
    assert made.returncode == 0, made.stderr
    with eventlog.open(path) as log:
        config = log.topic("events").config
        assert config.timestamp_type == "log_append_time"
        assert config.min_compaction_lag_ms == 5000


def test_eventlog_open_takes_dotted_topic_defaults(tmp_path: Path):
    with eventlog.open(tmp_path / "log", **{"segment.bytes": 1 << 20}) as log:
        assert log.create_topic("t").config.segment_bytes == 1 << 20


# -- item 11: regex subscriptions and timestamp_type --------------------------------------

def test_a_pattern_subscription_picks_up_topics_created_later(log):
    log.create_topic("orders-eu")
    log.create_topic("payments")
    consumer = eventlog.Consumer(log)
    consumer.subscribe(pattern=r"orders-.*")
    assert consumer.subscription() == {"orders-eu"}
    log.create_topic("orders-us", partitions=2)
    with eventlog.Producer(log) as producer:
        producer.send("orders-us", "late", partition=1)
        producer.send("payments", "not mine")
    got = []
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:
        got = consumer.poll(timeout=0.5)
    assert [(r.topic, r.value) for r in got] == [("orders-us", "late")]
    assert consumer.subscription() == {"orders-eu", "orders-us"}
    assert consumer.assignment() == {TopicPartition("orders-eu", 0),
                                     TopicPartition("orders-us", 0),
                                     TopicPartition("orders-us", 1)}
    consumer.close()


def test_a_pattern_matches_whole_names_and_may_be_compiled(log):
    for name in ("orders", "orders-eu", "old-orders"):
        log.create_topic(name)
    with eventlog.Consumer(log) as consumer:
        consumer.subscribe(pattern="orders.*")
        assert consumer.subscription() == {"orders", "orders-eu"}
        consumer.subscribe(pattern=re.compile(r".*orders"))
        assert consumer.subscription() == {"orders", "old-orders"}
        with pytest.raises(InvalidConfigError):
            consumer.subscribe(pattern="(unclosed")
        with pytest.raises(InvalidConfigError, match="not both"):
            consumer.subscribe(["orders"], pattern="orders")
        with pytest.raises(InvalidConfigError):
            consumer.subscribe("orders")  # a str, not a list of names


def test_a_group_with_a_pattern_rebalances_over_new_matching_topics(log):
    log.create_topic("clicks-web", partitions=2)
    first = eventlog.Consumer(log, group_id="analytics")
    first.subscribe(pattern="clicks-.*")
    second = eventlog.Consumer(log, group_id="analytics")
    second.subscribe(pattern="clicks-.*")
    _poll_until([first, second], lambda: len(first.assignment()) == 1
                and len(second.assignment()) == 1)
    log.create_topic("clicks-app", partitions=2)
    _poll_until([first, second], lambda: len(first.assignment() | second.assignment()) == 4
                and not first.assignment() & second.assignment()
                and len(first.assignment()) == 2, rounds=500)
    assert {tp.topic for tp in first.assignment() | second.assignment()} == \
        {"clicks-web", "clicks-app"}
    first._coordinator._check()
    second._coordinator._check()
    second.close()
    first.close()


def test_aio_consumer_subscribes_with_a_pattern(log):
    log.create_topic("metrics-cpu")

    async def main():
        async with AIOProducer(log) as producer, AIOConsumer(log) as consumer:
            await consumer.subscribe(pattern="metrics-.*")
            log.create_topic("metrics-disk")
            await producer.send("metrics-disk", 93)
            return await consumer.getone()

    record = asyncio.run(main())
    assert (record.topic, record.value) == ("metrics-disk", 93)


def test_records_carry_their_timestamp_type(log):
    log.create_topic("client-time")
    log.create_topic("log-time", timestamp_type="log_append_time")
    with eventlog.Producer(log) as producer:
        producer.send("client-time", 1, timestamp_ms=1_000)
        producer.send("log-time", 2, timestamp_ms=1_000)
    with eventlog.Consumer(log, "client-time", "log-time") as consumer:
        records = {r.topic: r for r in consumer.poll(timeout=1)}
    created, appended = records["client-time"], records["log-time"]
    assert created.timestamp_type is TimestampType.CREATE_TIME
    assert (created.timestamp_type, str(created.timestamp_type)) == (0, "CreateTime")
    assert created.timestamp_ms == 1_000
    assert appended.timestamp_type is TimestampType.LOG_APPEND_TIME
    assert (appended.timestamp_type, str(appended.timestamp_type)) == (1, "LogAppendTime")
    assert appended.timestamp_ms != 1_000
    raw = log.topic("log-time").partition(0).read(0)[0]
    assert raw.timestamp_type is TimestampType.LOG_APPEND_TIME


def test_confluent_kafka_style_callbacks_are_called_with_the_consumer(log):
    log.create_topic("orders", partitions=2)
    calls = []

    def on_assign(consumer, partitions):
        calls.append(("assign", consumer, partitions))

    def on_revoke(consumer, partitions):
        calls.append(("revoke", consumer, partitions))

    first = eventlog.Consumer(log, group_id="billing")
    first.subscribe(["orders"], on_assign=on_assign, on_revoke=on_revoke)
    assert calls == [("assign", first, [TopicPartition("orders", 0),
                                        TopicPartition("orders", 1)])]
    second = eventlog.Consumer(log, "orders", group_id="billing")
    _poll_until([first, second], lambda: len(calls) > 1 and len(second.assignment()) == 1)
    assert calls[1] == ("revoke", first, sorted(second.assignment()))
    with pytest.raises(InvalidConfigError, match="not both"):
        first.subscribe(["orders"], listener=KafkaPythonListener(), on_assign=on_assign)
    with pytest.raises(InvalidConfigError, match="on_revoke"):
        first.subscribe(["orders"], on_revoke="not callable")
    second.close()
    first.close()
