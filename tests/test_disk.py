"""Disk usage: ``_disk``'s measurements, the disk fields of ``Log.metrics()``, and the
``eventlog disk`` command as a real subprocess (its warning included, with a real
writer process filling the log while it samples)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import eventlog
from eventlog import _disk
from tests.conftest import ROOT
from tests.test_cli import cli, fails, make_topic, ok

# -- _disk -------------------------------------------------------------------------------


def test_write_rate_is_the_least_squares_slope():
    assert _disk.write_rate([(10.0, 0), (11.0, 100), (12.0, 200)]) == 100.0
    # One burst in the middle moves the slope less than a difference of ends would.
    noisy = [(0.0, 0), (1.0, 0), (2.0, 1000), (3.0, 1000), (4.0, 1000)]
    assert _disk.write_rate(noisy) == pytest.approx(300.0)
    assert _disk.write_rate([(0.0, 500), (1.0, 300)]) == -200.0  # retention freed space
    assert _disk.write_rate([]) is None
    assert _disk.write_rate([(1.0, 5)]) is None
    assert _disk.write_rate([(1.0, 5), (1.0, 9)]) is None  # no time passed


def test_time_to_full():
    assert _disk.time_to_full_s(1000, 250.0) == 4.0
    assert _disk.time_to_full_s(1000, None) is None
    assert _disk.time_to_full_s(1000, -5.0) is None   # shrinking: never fills
    assert _disk.time_to_full_s(0, None) == 0.0        # already full
    assert _disk.time_to_full_s(-1, 10.0) == 0.0


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_sample_reads_every_interval_over_the_duration():
    fake = FakeTime()
    reads = iter(range(0, 10_000, 10))
    got = _disk.sample(lambda: next(reads), 1.0, clock=fake.clock, sleep=fake.sleep)
    assert [t for t, _ in got] == [100.0, 100.25, 100.5, 100.75, 101.0]
    assert [b for _, b in got] == [0, 10, 20, 30, 40]
    assert _disk.write_rate(got) == pytest.approx(40.0)
    assert _disk.sample(lambda: 7, 0.0, clock=fake.clock, sleep=fake.sleep) == \
        [(101.0, 7)]
    # A read slower than the interval spaces the samples out; the end is still kept.
    fake = FakeTime()

    def slow() -> int:
        fake.now += 0.4
        return 1

    got = _disk.sample(slow, 1.0, clock=fake.clock, sleep=fake.sleep)
    assert got[0][0] == pytest.approx(100.4) and got[-1][0] >= 101.4
    assert len(got) == 3


def test_allocated_bytes_counts_blocks_and_file_system_usage_is_statvfs(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a").write_bytes(b"x" * 10_000)
    (tmp_path / "b").write_bytes(b"y")
    expected = sum(os.stat(p).st_blocks * 512 for p in (tmp_path / "sub" / "a",
                                                           tmp_path / "b"))
    assert _disk.allocated_bytes(str(tmp_path)) == expected >= 10_000
    usage = _disk.file_system_usage(str(tmp_path))
    st = os.statvfs(tmp_path)
    assert usage.total_bytes == st.f_blocks * st.f_frsize
    assert 0 <= usage.free_bytes <= usage.total_bytes
    assert 0.0 <= usage.used_ratio <= 1.0
    used = usage.total_bytes - st.f_bfree * st.f_frsize
    assert usage.used_ratio == pytest.approx(used / (used + usage.free_bytes), abs=1e-3)


# -- Log.metrics() -----------------------------------------------------------------------

def test_metrics_report_bytes_per_topic_and_partition_and_the_file_system(log_dir):
    with eventlog.open(log_dir, segment_bytes=4096) as log:
        log.create_topic("orders", partitions=2)
        log.create_topic("empty")
        for _ in range(20):
            log.topic("orders").partition(1).append([b"v" * 500])
        m = log.metrics()
        p0, p1 = m.partition("orders", 0), m.partition("orders", 1)
        assert p1.segments > 1 and p1.size_bytes > 10_000
        assert p1.disk_bytes == _disk.allocated_bytes(str(log_dir / "topics/orders/1"))
        assert p1.disk_bytes >= p1.size_bytes > p0.size_bytes == 0
        orders = m.topic("orders")
        assert (orders.partitions, orders.size_bytes, orders.disk_bytes) == \
            (2, p0.size_bytes + p1.size_bytes, p0.disk_bytes + p1.disk_bytes)
        assert [t.topic for t in m.topics] == ["empty", "orders"] or \
            [t.topic for t in m.topics] == ["orders", "empty"]
        assert m.topic("empty").size_bytes == 0
        with pytest.raises(KeyError):
            m.topic("nope")
        assert m.disk_bytes >= sum(t.disk_bytes for t in m.topics)
        st = os.statvfs(log_dir)
        assert m.fs_total_bytes == st.f_blocks * st.f_frsize
        assert 0 < m.fs_free_bytes <= m.fs_total_bytes
        assert 0.0 < m.fs_used_ratio < 1.0
        doc = m.to_dict()
        assert {"fs_free_bytes", "fs_total_bytes", "fs_used_ratio", "topics"} <= doc.keys()
        assert {"topic": "orders", "partitions": 2, "size_bytes": orders.size_bytes,
                "disk_bytes": orders.disk_bytes} in doc["topics"]
        assert doc["partitions"][0]["disk_bytes"] > 0
        json.dumps(doc)


# -- eventlog disk -----------------------------------------------------------------------

_WRITER = """
import os, sys, time
import eventlog
log_dir, stop = sys.argv[1], sys.argv[2]
with eventlog.open(log_dir) as log:
    partition = log.topic("orders").partition(0)
    deadline = time.monotonic() + 60
    partition.append([b"w" * 1000] * 20)
    print("writing", flush=True)
    while not os.path.exists(stop) and time.monotonic() < deadline:
        partition.append([b"w" * 1000] * 20)
        time.sleep(0.01)
"""


def test_disk_shows_topics_totals_and_free_space_and_exits_0_when_not_filling(log_dir):
    make_topic(log_dir, "orders", partitions=3)
    make_topic(log_dir, "clicks")
    with eventlog.open(log_dir) as log:
        log.topic("orders").partition(2).append([b"x" * 3000])
    text = ok(cli("disk", "--sample", "0.6", log=log_dir))
    lines = text.stdout.splitlines()
    assert lines[0].split() == ["TOPIC", "PARTITIONS", "STORED", "ON", "DISK"]
    assert any(line.split()[:2] == ["orders", "3"] for line in lines)
    assert any(line.split()[:2] == ["total", "4"] for line in lines)
    assert "free of" in text.stdout and "% used" in text.stdout
    assert "0 B/s over 0.6 s; the log is not growing" in text.stdout
    assert text.stderr == ""

    proc = ok(cli("disk", "--json", "--sample", "0.3", "--within", "7d", log=log_dir))
    doc = json.loads(proc.stdout)
    with eventlog.open(log_dir) as log:
        m = log.metrics()
    assert {t["topic"]: (t["partitions"], t["size_bytes"]) for t in doc["topics"]} == \
        {"orders": (3, m.topic("orders").size_bytes), "clicks": (1, 0)}
    assert doc["stored_bytes"] == m.topic("orders").size_bytes > 3000
    assert len(doc["partitions"]) == 4 and doc["disk_bytes"] > 0
    assert doc["fs_total_bytes"] == m.fs_total_bytes
    assert 0 < doc["fs_free_bytes"] <= doc["fs_total_bytes"]
    assert 0 < doc["fs_used_ratio"] < 1
    assert doc["write_rate_bytes_per_s"] == 0.0 and doc["samples"] >= 2
    assert doc["sample_s"] >= 0.3 and doc["time_to_full_s"] is None
    assert doc["within_s"] == 7 * 86_400 and doc["filling"] is False

    unmeasured = ok(cli("disk", "--sample", "0", log=log_dir))
    assert "not measured (--sample 0)" in unmeasured.stdout


def test_disk_warns_with_exit_1_when_a_writer_would_fill_the_disk_within_the_time(
        log_dir):
    make_topic(log_dir, "orders")
    stop = log_dir.parent / "stop"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(log_dir), str(stop)],
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "writing\n"
        # Both at once, during the writing: at the same rate, the free space lasts
        # longer than a millisecond, and less than a thousand years.
        argv = [sys.executable, "-m", "eventlog", "--log", str(log_dir), "disk",
                "--sample", "1.5"]
        runs = [subprocess.Popen(argv + extra, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=env)
                for extra in (["--within", "365000d", "--json"], ["--within", "1ms"])]
        (long_out, long_err), (short_out, short_err) = (r.communicate(timeout=60)
                                                        for r in runs)
    finally:
        stop.touch()
        writer.wait(timeout=60)
    assert runs[0].returncode == 1, long_err
    doc = json.loads(long_out)
    assert doc["filling"] is True and doc["write_rate_bytes_per_s"] > 0
    assert doc["time_to_full_s"] == pytest.approx(
        doc["fs_free_bytes"] / doc["write_rate_bytes_per_s"])
    assert long_err.startswith("eventlog: warning: free space runs out in ")
    assert "(within 365000.0 d)" in long_err and "Traceback" not in long_err
    assert runs[1].returncode == 0, short_err
    assert "the free space lasts" in short_out and short_err == ""


def test_disk_errors_and_usage(log_dir, tmp_path: Path):
    fails(cli("disk", log=tmp_path / "missing"), 1, "does not exist")
    fails(cli("disk", "--sample", "0"), 2, "no log directory")
    make_topic(log_dir)
    fails(cli("disk", "--within", "0", log=log_dir), 2, "expected a duration > 0")
    fails(cli("disk", "--within", "soon", log=log_dir), 2, "units: ms, s, min, h, d")
    fails(cli("disk", "--sample", "-1", log=log_dir), 2, "--sample")
    started = time.monotonic()
    ok(cli("disk", "--sample", "0", "--within", "90min", "-q", log=log_dir))
    assert time.monotonic() - started < 30
