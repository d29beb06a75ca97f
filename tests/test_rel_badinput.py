"""Bad input: hostile names, oversized records, invalid offsets and settings, and log
directories that are read-only or belong to another user. Each gets a clear, typed
error, and nothing is created outside the log directory (nor, for refused input, in it).
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from functools import partial

import pytest

import eventlog
from eventlog import (
    EventLogError,
    InvalidConfigError,
    InvalidGroupError,
    InvalidTopicError,
    TopicPartition,
)
from tests.conftest import ROOT, small_filesystem

HOSTILE = ["../outside", "..", ".", "a/b", "/etc/passwd", "x" * 250, "nul\x00byte",
           "ünïcode", "tab\tname", "new\nline", "", " ", "a\\b", "$(rm -rf ~)", "*",
           "\u202eevil", "con:"]


def listing(path):
    return sorted(os.path.relpath(os.path.join(r, n), path)
                  for r, ds, fs in os.walk(path) for n in ds + fs)


def test_hostile_topic_and_group_names_touch_nothing(tmp_path):
    parent = tmp_path / "parent"
    parent.mkdir()
    with eventlog.open(parent / "log") as log:
        log.create_topic("ok")
        before = listing(parent)
        producer = eventlog.Producer(log)
        for name in HOSTILE:
            for call in (partial(log.create_topic, name), partial(log.topic, name),
                         partial(log.delete_topic, name), partial(log.alter_topic, name),
                         partial(producer.send, name, 1)):
                with pytest.raises(InvalidTopicError):
                    call()
            for call in (partial(eventlog.Consumer, log, "ok", group_id=name),
                         partial(log.group_offsets, name), partial(log.delete_group, name),
                         partial(log.reset_group_offsets, name, to_earliest=True),
                         partial(eventlog.Consumer, log, "ok", group_id="g",
                                 group_instance_id=name)):
                with pytest.raises((InvalidGroupError, InvalidConfigError)):
                    call()
        producer.close()
        assert listing(parent) == before
        log.create_topic("Case")
        with pytest.raises(InvalidTopicError, match="collides"):
            log.create_topic("CASE")


@pytest.mark.parametrize("options", [
    {"fsync": "sometimes"}, {"fsync": 1}, {"fsync_interval_ms": 0},
    {"fsync_interval_ms": "1000"}, {"recovery": "yolo"}, {"auto_create_topics": "yes"},
    {"clock": 5}, {"segment_bytes": 10}, {"segment_bytes": 2**40},
    {"segment_bytes": 1024.5}, {"segment_bytes": True}, {"retention_ms": -1},
    {"cleanup_policy": "shred"}, {"max_message_bytes": 0}, {"partitions": 0},
    {"min_cleanable_dirty_ratio": 2}, {"timestamp_type": "now"}, {"colour": "blue"},
    {"maintenance_interval_ms": -5},
])
def test_invalid_settings_are_refused(tmp_path, options):
    with pytest.raises(InvalidConfigError):
        eventlog.open(tmp_path / "log", **options)
    with eventlog.open(tmp_path / "log2") as log:
        topic_options = {k: v for k, v in options.items()
                         if k in eventlog.TopicConfig.names() or k == "partitions"}
        if topic_options:
            with pytest.raises(InvalidConfigError):
                log.create_topic("t", **topic_options)
            assert "t" not in log


def test_invalid_offsets_are_typed_errors_and_change_nothing(log):
    log.create_topic("t").partition(0).append([b"a", b"b"])
    p = log.topic("t").partition(0)
    tp = TopicPartition("t", 0)
    with eventlog.Consumer(log, group_id="g", enable_auto_commit=False) as c:
        c.assign([tp])
        for bad in (-1, "3", 2.0, None, True):
            with pytest.raises((InvalidConfigError, TypeError)):
                c.seek(tp, bad)
            with pytest.raises((InvalidConfigError, TypeError)):
                c.commit({tp: bad})
        with pytest.raises(EventLogError):
            c.position(TopicPartition("t", 9))
        with pytest.raises(EventLogError):
            c.assign([TopicPartition("t", 9)])
    for bad in (-1, 3, 10**20):
        with pytest.raises(eventlog.OffsetOutOfRangeError):
            p.read(bad)
    for bad in ("x", None):
        with pytest.raises(TypeError):
            p.read(bad)
    with pytest.raises(eventlog.OffsetOutOfRangeError):
        log.delete_records(("t", 0), 99)
    with pytest.raises(InvalidConfigError):
        log.reset_group_offsets("g", to_offset="7")
    assert p.start_offset == 0 and p.end_offset == 2


def test_oversized_records_write_nothing(log):
    log.create_topic("t", max_message_bytes=1000)
    with eventlog.Producer(log) as producer:
        with pytest.raises(eventlog.RecordTooLargeError):
            producer.send("t", b"x" * 2000)
        with pytest.raises(eventlog.RecordTooLargeError):
            producer.send_batch("t", [b"ok", b"x" * 5000])
    with pytest.raises(eventlog.RecordTooLargeError):
        log.topic("t").partition(0).append([b"x" * 1001])
    assert log.topic("t").partition(0).end_offset == 0


def test_a_read_only_log_directory(tmp_path):
    with small_filesystem(1 << 20) as mountpoint:
        if mountpoint is None:   # no permission to mount: a read-only bind is impossible
            pytest.fail("this test needs to mount a tmpfs (run as root, as CI does)")
        with eventlog.open(mountpoint / "log") as log:
            log.create_topic("t").partition(0).append([b"kept"])
        subprocess.run(["mount", "-o", "remount,ro", str(mountpoint)], check=True)
        try:
            with pytest.raises(eventlog.LogDirectoryError) as info:
                eventlog.open(mountpoint / "log")
            assert info.value.errno in (errno.EROFS, errno.EACCES)
            with pytest.raises(eventlog.LogDirectoryError):
                eventlog.open(mountpoint / "fresh")
        finally:
            subprocess.run(["mount", "-o", "remount,rw", str(mountpoint)], check=True)
        with eventlog.open(mountpoint / "log") as log:   # nothing was damaged
            assert [r.value for r in log.topic("t").partition(0).read(0)] == [b"kept"]


def test_a_log_directory_owned_by_another_user(tmp_path):
    owned = tmp_path / "rootlog"
    with eventlog.open(owned) as log:
        log.create_topic("t")
    os.chmod(tmp_path, 0o755)
    code = """
import sys, eventlog
try:
    eventlog.open(sys.argv[1])
except eventlog.LogDirectoryError as exc:
    print("refused", exc.errno)
"""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    result = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                             sys.executable, "-c", code, str(owned)],
                            capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["refused", str(errno.EACCES)]


@pytest.mark.parametrize("bad", [2**63, 2**70, -1, True, 1.5])
def test_an_out_of_range_timestamp_is_refused_at_the_call_and_fails_nothing_else(
        tmp_path, bad):
    with eventlog.open(tmp_path / "log") as log:
        log.create_topic("t")
        with eventlog.Producer(log, linger_ms=60_000) as producer:
            good = producer.send("t", "good")               # pending in the same batch
            with pytest.raises(eventlog.InvalidRecordError, match="timestamp_ms"):
                producer.send("t", "bad", timestamp_ms=bad)
            with pytest.raises(eventlog.InvalidRecordError, match="record 1"):
                producer.send_batch("t", ["a", "b"], timestamps_ms=[0, bad])
            producer.flush()
            assert good.result(5).offset == 0
        part = log.topic("t").partition(0)
        with pytest.raises(eventlog.InvalidRecordError, match="timestamps_ms"):
            part.append([b"x"], timestamps_ms=bad)
        assert part.append([b"edge"], timestamps_ms=2**63 - 1) == 1
        assert [r.timestamp_ms for r in part.read(1)] == [2**63 - 1]
        assert part.end_offset == 2


def test_group_ids_are_refused_past_what_file_names_can_hold(tmp_path):
    # issue 18, item 11: 248-249 characters passed, then poll() failed with "File name
    # too long" and the leftover directory broke groups list for the whole log
    from eventlog._group import MAX_ID_CHARS

    with eventlog.open(tmp_path / "log") as log:
        log.create_topic("t")
        log.topic("t").partition(0).append([b"\x01"])
        for length in (MAX_ID_CHARS + 1, 248, 249):
            with pytest.raises(eventlog.InvalidGroupError, match=f"1 to {MAX_ID_CHARS}"):
                eventlog.Consumer(log, "t", group_id="g" * length)
            with pytest.raises(eventlog.InvalidGroupError):
                eventlog.Consumer(log, "t", group_id="g", group_instance_id="i" * length)
        longest = "g" * MAX_ID_CHARS
        with eventlog.Consumer(log, "t", group_id=longest, group_instance_id="i" * MAX_ID_CHARS,
                               enable_auto_commit=False) as consumer:
            assert [r.value for r in consumer.poll(timeout=2)] == [1]
            consumer.commit()
        assert log.groups() == [longest]
        assert log.group_offsets(longest) == {eventlog.TopicPartition("t", 0): 1}
        log.describe_group(longest)
