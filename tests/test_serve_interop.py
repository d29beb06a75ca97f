"""Kafka clients and eventlog's own clients on one log directory at once, through
``eventlog serve``; kcat; and the ``eventlog serve`` command as a real process."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import msgpack
import pytest

import eventlog

from .kafka_wire import kcat

confluent_kafka = pytest.importorskip("confluent_kafka")
from confluent_kafka import Consumer as CKConsumer  # noqa: E402
from confluent_kafka import Producer as CKProducer  # noqa: E402
from confluent_kafka import TopicPartition as CKTopicPartition  # noqa: E402


def _ck_messages(bootstrap, topic, count, partition=0, timeout=20.0, **conf):
    c = CKConsumer({"bootstrap.servers": bootstrap, "group.id": "reader",
                    "enable.auto.commit": False, **conf})
    c.assign([CKTopicPartition(topic, partition, 0)])
    out = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < count and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is not None and m.error() is None:
                out.append(m)
    finally:
        c.close()
    return out


def test_eventlog_producer_records_reach_kafka_clients_as_stored_bytes(eventlog_kafka,
                                                                       eventlog_log):
    eventlog_log.create_topic("events")
    with eventlog.Producer(eventlog_log) as p:   # msgpack keys and values by default
        mds = [p.send("events", {"n": i, "tags": ["a", i]}, key=f"user-{i}",
                      headers=[("trace", b"%d" % i)], partition=0,
                      timestamp_ms=1_650_000_000_000 + i).result() for i in range(10)]
    got = _ck_messages(eventlog_kafka, "events", 10)
    assert [m.offset() for m in got] == [md.offset for md in mds]
    assert [msgpack.unpackb(m.value()) for m in got] == [{"n": i, "tags": ["a", i]}
                                                         for i in range(10)]
    assert [msgpack.unpackb(m.key()) for m in got] == [f"user-{i}" for i in range(10)]
    assert [m.headers() for m in got] == [[("trace", b"%d" % i)] for i in range(10)]
    assert [m.timestamp()[1] for m in got] == [1_650_000_000_000 + i for i in range(10)]
    stored = list(eventlog_log.topic("events").partition(0).read(0))
    assert [m.value() for m in got] == [r.value for r in stored]


def test_kafka_producer_records_reach_eventlog_consumers(eventlog_kafka, eventlog_log):
    eventlog_log.create_topic("in", partitions=2)
    p = CKProducer({"bootstrap.servers": eventlog_kafka, "compression.type": "zstd"})
    for i in range(20):
        p.produce("in", value=b"raw-%d" % i, key=b"k%d" % (i % 3), headers=[("h", b"v")])
    assert p.flush(20) == 0
    with eventlog.Consumer(eventlog_log, "in", group_id="native", key_deserializer=bytes,
                           value_deserializer=bytes) as c:
        records = []
        deadline = time.monotonic() + 20
        while len(records) < 20 and time.monotonic() < deadline:
            records.extend(c.poll(timeout=0.5))
        c.commit()
    assert sorted(r.value for r in records) == sorted(b"raw-%d" % i for i in range(20))
    assert all(r.headers == [("h", b"v")] for r in records)
    # the native group's commits are visible to Kafka clients through OffsetFetch
    kc = CKConsumer({"bootstrap.servers": eventlog_kafka, "group.id": "native"})
    try:
        committed = kc.committed([CKTopicPartition("in", 0), CKTopicPartition("in", 1)],
                                 timeout=10)
    finally:
        kc.close()
    ends = [eventlog_log.topic("in").partition(i).end_offset for i in (0, 1)]
    assert [tp.offset for tp in committed] == ends


def test_both_sides_interleave_on_one_partition(eventlog_kafka, eventlog_log):
    eventlog_log.create_topic("mix")
    kp = CKProducer({"bootstrap.servers": eventlog_kafka, "linger.ms": 0})
    with eventlog.Producer(eventlog_log, value_serializer="bytes") as ep:
        for i in range(10):
            if i % 2:
                kp.produce("mix", value=b"kafka-%d" % i, partition=0)
                assert kp.flush(10) == 0
            else:
                ep.send("mix", b"native-%d" % i, partition=0).result()
    got = _ck_messages(eventlog_kafka, "mix", 10)
    assert [m.value() for m in got] == [
        (b"kafka-%d" if i % 2 else b"native-%d") % i for i in range(10)]
    assert [m.offset() for m in got] == list(range(10))


def test_consumer_long_poll_wakes_on_an_in_process_append(eventlog_kafka, eventlog_log):
    eventlog_log.create_topic("live")
    c = CKConsumer({"bootstrap.servers": eventlog_kafka, "group.id": "live",
                    "fetch.wait.max.ms": 20000, "enable.auto.commit": False})
    c.assign([CKTopicPartition("live", 0, 0)])
    try:
        assert c.poll(1.0) is None  # now long-polling an empty partition
        with eventlog.Producer(eventlog_log, value_serializer="bytes") as p:
            p.send("live", b"now", partition=0).result()
        m = None
        deadline = time.monotonic() + 15  # less than fetch.wait.max.ms: the append woke it
        while m is None and time.monotonic() < deadline:
            m = c.poll(0.5)
        assert m is not None and m.value() == b"now"
    finally:
        c.close()


def test_kcat_produces_lists_and_consumes(eventlog_kafka, eventlog_log, tmp_path):
    binary = kcat()
    eventlog_log.create_topic("cat", partitions=2)
    lines = "".join(f"key{i}:value{i}\n" for i in range(10))
    subprocess.run([binary, "-b", eventlog_kafka, "-P", "-t", "cat", "-K:", "-z", "snappy"],
                   input=lines.encode(), check=True, timeout=60)
    listing = subprocess.run([binary, "-b", eventlog_kafka, "-L", "-t", "cat"],
                             capture_output=True, text=True, check=True, timeout=60).stdout
    assert "2 partitions" in listing and "127.0.0.1" in listing
    out = subprocess.run([binary, "-b", eventlog_kafka, "-C", "-t", "cat", "-e", "-f",
                          "%k=%s\n"], capture_output=True, text=True, check=True,
                         timeout=60).stdout
    assert sorted(out.split()) == sorted(f"key{i}=value{i}" for i in range(10))
    stored = [r.value for p in eventlog_log.topic("cat").partitions for r in p.read(0)]
    assert sorted(stored) == sorted(b"value%d" % i for i in range(10))


def test_the_serve_command_serves_and_stops_on_sigterm(tmp_path):
    log_dir = tmp_path / "log"
    proc = subprocess.Popen([sys.executable, "-m", "eventlog", "--log", str(log_dir), "serve",
                             "--port", "0", "--partitions", "2"],
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        match = re.search(r"listening on (127\.0\.0\.1:\d+)", line)
        assert match, line
        p = CKProducer({"bootstrap.servers": match.group(1)})
        p.produce("made-by-kafka", value=b"hello")
        assert p.flush(20) == 0
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(30) == 0
        assert "stopped" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with eventlog.open(log_dir) as log:   # closed cleanly: opens at once, records there
        assert log.topic("made-by-kafka").num_partitions == 2
        values = [r.value for p in log.topic("made-by-kafka").partitions for r in p.read(0)]
        assert values == [b"hello"]


def test_serve_on_a_busy_port_is_a_one_line_error(tmp_path):
    with eventlog.open(tmp_path / "a") as log, eventlog.serve(log) as server:
        proc = subprocess.run([sys.executable, "-m", "eventlog", "--log", str(tmp_path / "b"),
                               "serve", "--port", str(server.port)],
                              capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.startswith("eventlog: error: cannot listen on")


def test_many_clients_at_once(eventlog_kafka, eventlog_log):
    import threading

    eventlog_log.create_topic("busy", partitions=4)
    errors = []

    def kafka_producer(n: int) -> None:
        p = CKProducer({"bootstrap.servers": eventlog_kafka, "linger.ms": 1})
        for i in range(200):
            p.produce("busy", value=b"c%d-%d" % (n, i), key=b"%d" % i,
                      on_delivery=lambda err, msg: err and errors.append(err))
        if p.flush(30):
            errors.append("unflushed")

    def native_producer(n: int) -> None:
        with eventlog.Producer(eventlog_log, value_serializer="bytes") as p:
            for i in range(200):
                p.send("busy", b"e%d-%d" % (n, i), partition=i % 4)

    threads = [threading.Thread(target=kafka_producer, args=(n,)) for n in range(6)]
    threads += [threading.Thread(target=native_producer, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    stored = [(p.id, r.offset, r.value) for p in eventlog_log.topic("busy").partitions
              for r in p.read(0)]
    assert sorted(v for _, _, v in stored) == sorted(
        [b"c%d-%d" % (n, i) for n in range(6) for i in range(200)]
        + [b"e%d-%d" % (n, i) for n in range(2) for i in range(200)])
    for part in range(4):
        offsets = [o for p, o, _ in stored if p == part]
        assert offsets == list(range(len(offsets)))
    for part in eventlog_log.topic("busy").partitions:
        got = _ck_messages(eventlog_kafka, "busy", part.end_offset, partition=part.id)
        assert [m.value() for m in got] == [v for p, _, v in stored if p == part.id]


def test_long_poll_wakes_on_an_append_by_another_process(eventlog_kafka, eventlog_log):
    eventlog_log.create_topic("remote")
    c = CKConsumer({"bootstrap.servers": eventlog_kafka, "group.id": "remote",
                    "fetch.wait.max.ms": 20000, "enable.auto.commit": False})
    c.assign([CKTopicPartition("remote", 0, 0)])
    try:
        assert c.poll(1.0) is None  # long-polling the empty partition
        subprocess.run([sys.executable, "-c", (
            "import eventlog, sys\n"
            "with eventlog.open(sys.argv[1]) as log, eventlog.Producer(log, "
            "value_serializer='bytes') as p:\n"
            "    p.send('remote', b'from afar', partition=0).result()\n"),
            str(eventlog_log.backend.path)], check=True, timeout=60)
        m = None
        deadline = time.monotonic() + 15  # less than fetch.wait.max.ms
        while m is None and time.monotonic() < deadline:
            m = c.poll(0.5)
        assert m is not None and m.value() == b"from afar"
    finally:
        c.close()
