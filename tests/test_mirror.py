"""``eventlog mirror``: a local log to a real Kafka broker and back, byte for byte, group
offsets translated, and a copy resumed after ``kill -9`` with neither gaps nor
duplicates."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

import eventlog
from eventlog import TopicPartition as TP
from eventlog.cli import main
from tests.conftest import ROOT

pytest.importorskip("confluent_kafka")


def _fill(log: eventlog.Log, topic: str, partitions: int, count: int, **config: Any) -> None:
    # Stamped a minute ago, not long ago: a Kafka topic given retention_ms (7 days
    # below) deletes older records at the broker's next retention check, which once
    # came in the middle of the round trip and emptied the partitions it translates.
    base_ms = int(time.time() * 1000) - 60_000
    log.create_topic(topic, partitions=partitions, **config)
    with eventlog.Producer(log, key_serializer="bytes", value_serializer="bytes") as p:
        for i in range(count):
            value = None if i % 17 == 0 else os.urandom(i % 50) + b"v%d" % i
            # a compacted Kafka topic refuses records without a key
            keyless = i % 5 == 0 and "compact" not in config.get("cleanup_policy", "")
            key = None if keyless else b"key-%d" % (i % 13)
            headers = [("trace", b"%d" % i), ("empty", b"")] if i % 3 == 0 else None
            p.send(topic, value, key=key, headers=headers, partition=i % partitions,
                   timestamp_ms=base_ms + i)


def _records(log: eventlog.Log, topic: str) -> dict[int, list[tuple[Any, ...]]]:
    """Every record of ``topic``, per partition, as (offset, timestamp, key, value,
    headers) with the stored bytes."""
    out: dict[int, list[tuple[Any, ...]]] = {}
    n = log.topic(topic).num_partitions
    tps = [TP(topic, i) for i in range(n)]
    with eventlog.Consumer(log, key_deserializer="bytes", value_deserializer="bytes") as c:
        c.assign(tps)
        ends = c.end_offsets(tps)
        deadline = time.monotonic() + 60
        while any(c.position(tp) < ends[tp] for tp in tps) and time.monotonic() < deadline:
            for r in c.poll(timeout=0.5):
                out.setdefault(r.partition, []).append(
                    (r.offset, r.timestamp_ms, r.key, r.value, r.headers))
    return {p: out.get(p, []) for p in range(n)}


def _mirror(*args: str) -> None:
    assert main(["mirror", "-q", *args]) == 0


def test_local_to_kafka_and_back_is_byte_for_byte_with_groups(kafka_broker, tmp_path):
    kafka = f"kafka://{kafka_broker.bootstrap_servers}"
    src = tmp_path / "src"
    back = tmp_path / "back"
    orders, events = f"orders-{uuid.uuid4().hex[:8]}", f"events-{uuid.uuid4().hex[:8]}"
    group = f"billing-{uuid.uuid4().hex[:8]}"
    with eventlog.open(src) as log:
        _fill(log, orders, 3, 600, retention_ms=7 * 86_400_000, max_message_bytes=100_000)
        _fill(log, events, 1, 50, cleanup_policy="compact")
        with eventlog.Consumer(log, orders, group_id=group) as c:
            c.commit({TP(orders, 0): 150, TP(orders, 1): 200, TP(orders, 2): 0})
        want = {orders: _records(log, orders), events: _records(log, events)}
        want_groups = log.group_offsets(group)
    _mirror(str(src), kafka, "--topic", orders, "--topic", events, "--groups")
    with eventlog.open(kafka) as cluster:
        assert cluster.topic(orders).num_partitions == 3
        assert cluster.topic(orders).config.max_message_bytes == 100_000
        assert cluster.topic(events).config.cleanup_policy == "compact"
        assert _records(cluster, orders) == want[orders]
        assert _records(cluster, events) == want[events]
        assert cluster.group_offsets(group) == want_groups
    _mirror(kafka, str(back), "--topic", orders, "--topic", events, "--groups")
    with eventlog.open(back) as log:
        assert _records(log, orders) == want[orders]
        assert _records(log, events) == want[events]
        assert log.topic(orders).config.retention_ms == 7 * 86_400_000
        assert log.group_offsets(group) == want_groups
    # nothing new: running again copies nothing and duplicates nothing
    _mirror(kafka, str(back), "--topic", orders)
    with eventlog.open(back) as log:
        assert _records(log, orders) == want[orders]


def test_mirror_appends_what_is_new_since_the_last_run(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    with eventlog.open(src) as log:
        _fill(log, "t", 2, 100)
    _mirror(str(src), str(dst))
    with eventlog.open(src) as log, eventlog.Producer(log, value_serializer="bytes") as p:
        for i in range(30):
            p.send("t", b"new-%d" % i, partition=i % 2)
    _mirror(str(src), str(dst))
    with eventlog.open(src) as a, eventlog.open(dst) as b:
        assert _records(a, "t") == _records(b, "t")
        assert "__eventlog_mirror" in b.topics()


def _end_offsets(log: eventlog.Log, topic: str) -> int:
    """The records ``topic`` holds in ``log`` (0 while it does not exist)."""
    if topic not in log:
        return 0
    return sum(p.end_offset for p in log.topic(topic).partitions)


def _kill_mid_copy(src: Path, dest: str, topic: str, probe: Any, total: int) -> int:
    """Start a mirror process, kill -9 it once part of the records are in ``dest``, and
    return how many were there."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.Popen([sys.executable, "-m", "eventlog", "mirror", "-q", str(src),
                             dest, "--topic", topic], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        copied = 0
        while time.monotonic() < deadline and proc.poll() is None:
            copied = probe()
            if copied >= total // 4:
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"the mirror ended before it was killed: " \
                                    f"{proc.stderr.read() if proc.stderr else b''!r}"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return copied
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("dest_kind", ["local", pytest.param("kafka", marks=pytest.mark.kafka)])
def test_a_copy_killed_with_kill_9_resumes_without_gaps_or_duplicates(request, tmp_path,
                                                                      dest_kind):
    topic = f"big-{uuid.uuid4().hex[:8]}"
    src = tmp_path / "src"
    total = 30_000
    with eventlog.open(src) as log:
        _fill(log, topic, 3, total)
        want = _records(log, topic)
    if dest_kind == "kafka":
        broker = request.getfixturevalue("kafka_broker")
        dest = f"kafka://{broker.bootstrap_servers}"
    else:
        dest = str(tmp_path / "dst")

    # On Kafka one log is opened for all the looks: opening one (its admin client)
    # takes longer than the mirror needs to copy every record, which left no
    # "mid-copy" to kill in.
    probe_log = eventlog.open(dest) if dest_kind == "kafka" else None

    def in_dest() -> int:
        if dest_kind == "local" and not Path(dest, "eventlog.json").exists():
            return 0
        try:
            if probe_log is not None:
                return _end_offsets(probe_log, topic)
            with eventlog.open(dest) as log:
                return _end_offsets(log, topic)
        except eventlog.EventLogError:
            return 0

    try:
        first = _kill_mid_copy(src, dest, topic, in_dest, total)
    finally:
        if probe_log is not None:
            probe_log.close()
    assert 0 < first < total
    _mirror(str(src), dest, "--topic", topic)
    with eventlog.open(dest) as log:
        assert _records(log, topic) == want
