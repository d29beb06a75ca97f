"""Topic administration, metrics, the Prometheus exporter, and log.check().

What runs where: ``alter_topic`` and ``describe_topic`` run on a log directory and on
the session's Kafka broker (``any_address``); metrics, the exporter and ``check()``
read a directory and are ``local_only``.
"""

from __future__ import annotations

import hashlib
import os
import socket
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import eventlog
from eventlog import Consumer, InvalidConfigError, Producer, TopicPartition
from eventlog.monitoring import STATUS_VALUES
from eventlog.prometheus import EventLogCollector, start_exporter
from eventlog.testing import ManualClock
from tests.conftest import unique_name

TP = TopicPartition
local_only = pytest.mark.local_only
MiB = 1 << 20   # Kafka's smallest segment.bytes


def test_alter_topic_is_persisted_and_seen_by_other_logs(any_address):
    t, nope = unique_name(), unique_name("nope")
    with eventlog.open(any_address) as log, eventlog.open(any_address) as other:
        log.create_topic(t, retention_ms=1000)
        seen = other.topic(t)
        log.alter_topic(t, retention_ms=None, segment_bytes=2 * MiB, cleanup_policy="compact")
        assert log.topic(t).config.segment_bytes == 2 * MiB
        seen.refresh()
        assert (seen.config.retention_ms, seen.config.cleanup_policy) == (None, "compact")
        with pytest.raises(InvalidConfigError):
            log.alter_topic(t, segment_bytes=1)
        with pytest.raises(InvalidConfigError):
            log.alter_topic(t, partitions=5)
        with pytest.raises(eventlog.UnknownTopicError):
            log.alter_topic(nope, retention_ms=1)
    with eventlog.open(any_address) as log:
        assert log.topic(t).config.segment_bytes == 2 * MiB


def test_describe_topic(any_address):
    t = unique_name()
    kafka = any_address.startswith("kafka://")
    segment_bytes = MiB if kafka else 500
    with eventlog.open(any_address, segment_bytes=segment_bytes) as log:
        log.create_topic(t, partitions=2)
        with Producer(log, linger_ms=0) as producer:
            for _i in range(30):
                producer.send(t, b"x" * 40, partition=0).result()
        d = log.describe_topic(t)
        assert d.name == t and d.config.segment_bytes == segment_bytes
        assert [(p.partition, p.start_offset, p.end_offset) for p in d.partitions] == \
            [(0, 0, 30), (1, 0, 0)]
        assert d.to_dict()["partitions"][0]["records"] == 30
        if kafka:   # sizes and segments are the brokers' (docs/kafka-backend.md)
            assert all((p.segments, p.size_bytes) == (0, 0) for p in d.partitions)
            return
        assert d.partitions[0].segments > 1 and d.partitions[1].segments == 1
        assert d.partitions[0].size_bytes == 30 * (64 + len(
            eventlog._format.encode_batch([eventlog.serde.serializer(None)(b"x" * 40)]
                                          ).payload))


@local_only("log.metrics() of a directory")
def test_metrics_of_a_known_workload(log_dir):
    with eventlog.open(log_dir) as log:
        log.create_topic("orders", partitions=2)
        with Producer(log) as producer:
            producer.send_batch("orders", list(range(100)), partition=0)
            producer.send_batch("orders", list(range(50)), partition=1)
        with Consumer(log, group_id="billing", enable_auto_commit=False) as consumer:
            consumer.assign([TP("orders", 0), TP("orders", 1)])
            consumer.commit({TP("orders", 0): 60, TP("orders", 1): 50})
        first = log.metrics()
        p0 = first.partition("orders", 0)
        assert (p0.start_offset, p0.end_offset, p0.segments) == (0, 100, 1)
        assert p0.size_bytes > 0 and p0.append_rate is None
        group = first.group("billing")
        assert group.lag == {TP("orders", 0): 40, TP("orders", 1): 0}
        assert group.max_lag == 40 and group.members == 0
        assert group.offsets[TP("orders", 0)] == 60
        assert first.disk_bytes > 0
        with Producer(log) as producer:
            producer.send_batch("orders", list(range(30)), partition=0)
        second = log.metrics()
        assert second.partition("orders", 0).append_rate > 0
        assert second.group("billing").max_lag == 70
        doc = second.to_dict()
        assert doc["groups"][0]["lag"]["orders:0"] == 70


@local_only("the Prometheus exporter reads log.metrics() of a directory")
def test_prometheus_collector_and_exporter(log_dir):
    clock = ManualClock()
    with eventlog.open(log_dir, clock=clock) as log:
        log.create_topic("orders")
        with Producer(log) as producer:
            producer.send_batch("orders", list(range(10)))
        with Consumer(log, group_id="g", enable_auto_commit=False) as consumer:
            consumer.assign([TP("orders", 0)])
            consumer.commit({TP("orders", 0): 4})
        registry = CollectorRegistry()
        registry.register(EventLogCollector(log))
        text = generate_latest(registry).decode()
        assert 'eventlog_partition_end_offset{partition="0",topic="orders"} 10.0' in text
        assert 'eventlog_group_lag{group="g",partition="0",topic="orders"} 6.0' in text
        assert 'eventlog_group_max_lag{group="g"} 6.0' in text
        assert "eventlog_disk_bytes" in text
        labels = 'group="g",partition="0",topic="orders"'
        assert f"eventlog_group_partition_status{{{labels}}} 0.0" in text  # just committed
        assert 'eventlog_group_status{group="g"} 0.0' in text
        m = log.metrics()
        p0 = m.partition("orders", 0)
        assert f'eventlog_partition_disk_bytes{{partition="0",topic="orders"}} ' \
            f"{float(p0.disk_bytes)}" in text
        assert f'eventlog_topic_size_bytes{{topic="orders"}} {float(p0.size_bytes)}' in text
        assert f'eventlog_topic_disk_bytes{{topic="orders"}} {float(p0.disk_bytes)}' in text
        unlabelled = {s.name: s.value for f in text_string_to_metric_families(text)
                      for s in f.samples if not s.labels}
        assert unlabelled["eventlog_fs_total_bytes"] == m.fs_total_bytes
        assert 0 < unlabelled["eventlog_fs_free_bytes"] <= m.fs_total_bytes
        assert 0 < unlabelled["eventlog_fs_used_ratio"] < 1
        # A minute without a commit while records wait: STOP, and the group ERR.
        clock.advance(60_000)
        text = generate_latest(registry).decode()
        assert f"eventlog_group_partition_status{{{labels}}} " \
            f"{float(STATUS_VALUES['STOP'])}" in text
        assert f'eventlog_group_status{{group="g"}} {float(STATUS_VALUES["ERR"])}' in text
        assert f"eventlog_group_lag_seconds{{{labels}}} 60.0" in text
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        start_exporter(log, port, registry=CollectorRegistry())
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
        assert b"eventlog_partition_end_offset" in body


def _digest(directory):
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(directory)):
        for name in sorted(files):
            if name in (".lock", ".meta.lock", "head") or "cleaner.lock" in name:
                continue
            with open(os.path.join(root, name), "rb") as fh:
                h.update(name.encode() + fh.read())
    return h.hexdigest()


@local_only("log.check() verifies a directory's files")
def test_check_reports_without_changing_anything_and_fix_repairs_indexes(log_dir):
    with eventlog.open(log_dir, segment_bytes=400) as log:
        p = log.create_topic("t").partition(0)
        for i in range(40):
            p.append([b"record-%03d" % i])
        report = log.check()
        assert report.ok and report.problems == []
        assert (report.records, report.batches) == (40, 40) and report.segments > 3
        directory = p._log.directory
    seg = os.path.join(directory, "00000000000000000000.log")
    with open(seg, "r+b") as fh:
        fh.seek(100)
        byte = fh.read(1)
        fh.seek(100)
        fh.write(bytes([byte[0] ^ 0x04]))
    index = sorted(n for n in os.listdir(directory) if n.endswith(".index"))[1]
    with open(os.path.join(directory, index), "r+b") as fh:
        fh.seek(16)
        fh.write(b"\xee" * 8)
    with eventlog.open(log_dir) as log:
        before = _digest(log_dir)
        seen = []
        report = log.check(progress=lambda done, total: seen.append((done, total)))
        assert _digest(log_dir) == before            # check changes nothing
        kinds = sorted(pr.kind for pr in report.problems)
        assert kinds == ["corrupt", "index"] and not report.ok
        assert seen and seen[-1][0] == seen[-1][1]
        fixed = log.check(fix=True)  # cuts the partition before the damaged batch
        assert fixed.ok and [pr.kind for pr in fixed.problems] == ["corrupt"]
        assert "were lost" in fixed.problems[0].message
        assert log.check().ok


@local_only("log.check() verifies a directory's files")
def test_check_repairs_damaged_offsets_and_leftover_compaction_files(log_dir):
    with eventlog.open(log_dir) as log:
        log.create_topic("t")
        with Consumer(log, group_id="g", enable_auto_commit=False) as consumer:
            consumer.assign([TP("t", 0)])
            for _i in range(3):
                consumer.commit({TP("t", 0): 0})
        path = os.path.join(str(log_dir), "groups", "g.offsets")
        with open(path, "ab") as fh:
            fh.write(b"EvOc" + b"\xff" * 30)                  # a damaged record
        leftover = os.path.join(log.topic("t").partition(0)._log.directory,
                                "00000000000000000000.log.cleaned")
        with open(leftover, "wb") as fh:
            fh.write(b"half-written")
        report = log.check()
        assert sorted(p.kind for p in report.problems) == ["leftover", "offsets"]
        assert os.path.exists(leftover)
        log.check(fix=True)
        assert not os.path.exists(leftover)
        assert log.check().ok
        assert log.group_offsets("g") == {TP("t", 0): 0}


@local_only("log.check() verifies a directory's files")
def test_check_reports_damage_in_the_middle_of_the_offsets_file(log_dir):
    import struct

    with eventlog.open(log_dir) as log:
        log.create_topic("t", partitions=2)
        with Consumer(log, group_id="g", enable_auto_commit=False) as consumer:
            consumer.assign([TP("t", 0), TP("t", 1)])
            consumer.commit({TP("t", 0): 0})
            consumer.commit({TP("t", 1): 0})
            consumer.commit({TP("t", 0): 0})
        path = os.path.join(str(log_dir), "groups", "g.offsets")
        data = open(path, "rb").read()
        starts, pos = [], 16
        while pos < len(data):   # the documented layout: marker, u32 length, u64 checksum
            starts.append(pos)
            pos += 16 + struct.unpack_from("<I", data, pos + 4)[0]
        assert len(starts) == 3
        second_bytes = starts[2] - starts[1]
        with open(path, "r+b") as fh:  # flip a payload byte of the second record
            fh.seek(starts[1] + 20)
            byte = fh.read(1)
            fh.seek(starts[1] + 20)
            fh.write(bytes([byte[0] ^ 0xFF]))
        (problem,) = log.check().problems
        assert problem.kind == "offsets" and not problem.fixed
        assert problem.message.startswith(f"{second_bytes} damaged bytes"), problem.message
        # partition 1's only commit was in the damaged record: reads skip it
        assert log.group_offsets("g") == {TP("t", 0): 0}
        (fixed,) = log.check(fix=True).problems
        assert fixed.fixed
        assert log.check().ok
        assert log.group_offsets("g") == {TP("t", 0): 0}


@local_only("log.check() verifies a directory's files")
def test_check_is_clean_for_a_log_written_by_many_short_lived_processes(log_dir):
    from tests.conftest import run_python

    with eventlog.open(log_dir) as log:
        log.create_topic("t", segment_bytes=4096, index_interval_bytes=64)
    for _ in range(4):   # each process closes cleanly (it is the last user), then more
        run_python("""
import sys, eventlog
with eventlog.open(sys.argv[1]) as log:
    log.topic("t").partition(0).append([b"x" * 40] * 3)
""", str(log_dir))
    with eventlog.open(log_dir) as log:
        report = log.check()
        assert report.ok, report.problems
        assert report.records == 12
