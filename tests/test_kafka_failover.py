"""Failover on a real three-broker cluster: a broker killed with ``kill -9`` while an
``acks=all`` producer and a consumer group run loses nothing that was acknowledged.

Topics have replication factor 3 and ``min.insync.replicas=2`` (tests/kafka_broker.py),
so an acknowledged record is on at least two brokers when its future resolves. The
victim is the leader of partition 0, killed mid-stream; the producer keeps sending
through the leader elections, the group keeps consuming and committing. Afterwards
every acknowledged record is read back, in order per key, by the group and by a fresh
reader. ``EVENTLOG_SOAK`` scales how long the producer runs.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest

import eventlog
from tests.conftest import soak

pytest.importorskip("confluent_kafka")

PARTITIONS = 3


def _leader_of(bootstrap: str, topic: str, partition: int) -> int:
    from confluent_kafka.admin import AdminClient

    meta = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    return int(meta.topics[topic].partitions[partition].leader)


@pytest.mark.slow
def test_kill_9_of_a_broker_loses_no_acknowledged_record(kafka_cluster: Any) -> None:
    log = eventlog.open(f"kafka://{kafka_cluster.bootstrap_servers}")
    topic, group = f"failover-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    log.create_topic(topic, partitions=PARTITIONS, replication_factor=3)
    acked: list[tuple[str, int]] = []
    failed: list[BaseException] = []
    lock = threading.Lock()
    stop_producing = threading.Event()
    stop_consuming = threading.Event()
    consumed: dict[str, list[int]] = {}

    def on_done(future: Any, key: str, seq: int) -> None:
        error = future.exception(timeout=0)
        with lock:
            if error is None:
                acked.append((key, seq))
            else:
                failed.append(error)

    def produce() -> None:
        with eventlog.Producer(log, acks="all", enable_idempotence=True,
                               kafka_config={"delivery.timeout.ms": 60_000}) as producer:
            seq = 0
            while not stop_producing.is_set():
                key = f"key-{seq % 12}"
                future = producer.send(topic, seq, key=key)
                future.add_done_callback(lambda f, k=key, s=seq: on_done(f, k, s))
                seq += 1
                if seq % 50 == 0:
                    time.sleep(0.01)
            producer.flush(timeout=90)

    def consume() -> None:
        with eventlog.Consumer(log, topic, group_id=group, auto_commit_interval_ms=500,
                               session_timeout_ms=6000, heartbeat_interval_ms=500) as c:
            while not stop_consuming.is_set():
                for record in c.poll(timeout=0.2):
                    consumed.setdefault(record.key, []).append(record.value)

    producer_thread = threading.Thread(target=produce)
    consumer_thread = threading.Thread(target=consume)
    producer_thread.start()
    consumer_thread.start()
    victim = kafka_cluster.nodes[_leader_of(kafka_cluster.bootstrap_servers, topic, 0) - 1]
    try:
        time.sleep(2)
        victim.kill()
        time.sleep(4 * soak(1) + 4)   # through fencing and leader election
        stop_producing.set()
        producer_thread.join(timeout=120)
        assert not producer_thread.is_alive()
        assert acked, "nothing was acknowledged"
        want = {}
        for key, seq in acked:
            want.setdefault(key, set()).add(seq)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(
                not want[k] <= set(consumed.get(k, ())) for k in want):
            time.sleep(0.2)
        stop_consuming.set()
        consumer_thread.join(timeout=60)
        # the group saw every acknowledged record (at least once), in order per key
        for key, seqs in want.items():
            got = consumed.get(key, [])
            assert seqs <= set(got), f"{key}: {len(seqs - set(got))} acknowledged records lost"
            first = [s for i, s in enumerate(got) if s not in got[:i]]
            assert first == sorted(first)
        # and a fresh reader finds each acknowledged record exactly once, in order per key
        read: dict[str, list[int]] = {}
        with eventlog.Consumer(log, topic) as reader:
            total = sum(len(s) for s in want.values())
            deadline = time.monotonic() + 60
            count = 0
            while count < total and time.monotonic() < deadline:
                for record in reader.poll(timeout=0.5):
                    read.setdefault(record.key, []).append(record.value)
                    count += 1
        for key, seqs in want.items():
            assert seqs <= set(read.get(key, [])), f"{key}: acknowledged records lost"
            assert read[key] == sorted(set(read[key])), f"{key}: duplicates or disorder"
    finally:
        stop_producing.set()
        stop_consuming.set()
        producer_thread.join(timeout=120)
        consumer_thread.join(timeout=60)
        if not victim.running:
            victim.start()
        kafka_cluster.wait_ready()
        log.close()


def test_a_topic_just_created_is_known_at_once_whichever_broker_answers(
        kafka_cluster: Any) -> None:
    """librdkafka sends each metadata request to any broker, and a broker replays a
    topic's creation a moment after the controller has answered. A topic a Log has just
    created must not look unknown to its next call: once, in the test above, the
    consumer made right after ``create_topic`` raised ``UnknownTopicError``. And a
    setting just changed is the one the next record meets."""
    with eventlog.open(f"kafka://{kafka_cluster.bootstrap_servers}") as log, \
            eventlog.Producer(log, value_serializer="bytes") as producer:
        for i in range(8):
            topic = f"fresh-{uuid.uuid4().hex[:8]}"
            log.create_topic(topic, partitions=PARTITIONS, replication_factor=3)
            assert topic in log and len(log.topic(topic).partitions) == PARTITIONS
            eventlog.Consumer(log, topic, group_id=f"g-{i}").close()
            assert producer.send(topic, b"x" * 500).result(timeout=30).offset == 0
            log.alter_topic(topic, max_message_bytes=200)
            with pytest.raises(eventlog.RecordTooLargeError):
                producer.send_batch(topic, [b"x" * 500], partition=0)
