"""Opening log directories, topic administration, names, config persistence.

What runs where: the tests of ``Log``'s public calls take ``any_log`` or
``any_address`` and run on a log directory and on the session's Kafka broker (topic
names unique to the test: the broker keeps every topic); ``local_only`` ones say why
(the directory itself, a partition's direct append, file names).
"""

from __future__ import annotations

import json
import os

import pytest

import eventlog
from eventlog import (
    ClosedError,
    InvalidConfigError,
    InvalidTopicError,
    LogDirectoryError,
    TopicExistsError,
    UnknownTopicError,
)
from tests.conftest import is_kafka, read_all, unique_name

local_only = pytest.mark.local_only


def tree(path):
    return sorted(os.path.relpath(os.path.join(root, n), path)
                  for root, dirs, files in os.walk(path) for n in dirs + files)


@local_only("opening a directory")
def test_open_creates_the_directory_and_a_marker(log_dir):
    assert not log_dir.exists()
    with eventlog.open(log_dir) as log:
        assert log.topics() == []
        assert log.path == str(log_dir)
    marker = json.loads((log_dir / "eventlog.json").read_text())
    assert marker["format"] == 1


@local_only("opening a directory")
def test_open_refuses_a_foreign_directory_and_a_file(tmp_path):
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"meow")
    with pytest.raises(LogDirectoryError, match="not an eventlog directory"):
        eventlog.open(foreign)
    assert tree(foreign) == ["cat.jpg"]
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(LogDirectoryError) as info:
        eventlog.open(a_file)
    assert isinstance(info.value, OSError)


@local_only("opening a directory")
def test_open_rejects_unknown_options(log_dir):
    with pytest.raises(InvalidConfigError, match="unknown option"):
        eventlog.open(log_dir, fsynk="always")
    with pytest.raises(InvalidConfigError, match="fsync"):
        eventlog.open(log_dir, fsync="sometimes")


def test_topics_are_listed_sorted_and_found(any_log):
    log, name = any_log, unique_name()
    zeta, alpha, beta = f"zeta-{name}", f"alpha-{name}", f"beta-{name}"
    log.create_topic(zeta)
    log.create_topic(alpha, partitions=3)
    assert [t for t in log.topics() if t.endswith(name)] == [alpha, zeta]
    assert log.topics() == sorted(log.topics())   # (the broker's other tests' topics too)
    assert alpha in log and beta not in log and 5 not in log
    topic = log.topic(alpha)
    assert topic.name == alpha
    assert [p.id for p in topic.partitions] == [0, 1, 2]
    assert topic.partition(2).end_offset == 0
    with pytest.raises(IndexError):
        topic.partition(3)
    with pytest.raises(UnknownTopicError, match=beta):
        log.topic(beta)


def test_create_topic_twice_raises_topic_exists(any_log):
    t = unique_name()
    any_log.create_topic(t)
    with pytest.raises(TopicExistsError):
        any_log.create_topic(t)


@pytest.mark.parametrize("name", [
    "", ".", "..", "../escape", "a/b", "/abs", "x" * 250, "sp ace", "nul\x00", "ünïcode",
    "a\\b", "..\\..", "tab\t",
])
def test_invalid_topic_names_are_refused_before_touching_files(any_log, name):
    log = any_log
    local = not is_kafka(log)
    before = tree(log.path) if local else log.topics()
    with pytest.raises(InvalidTopicError):
        log.create_topic(name)
    with pytest.raises(InvalidTopicError):
        log.topic(name)
    with pytest.raises(InvalidTopicError):
        log.delete_topic(name)
    assert (tree(log.path) if local else log.topics()) == before
    assert name not in log
    if local:
        assert not os.path.exists(os.path.join(os.path.dirname(log.path), "escape"))


@local_only("names Kafka keeps for itself (__consumer_offsets) are free in a directory")
def test_kafka_legal_names_are_accepted(log):
    for name in ("a", "A.b_c-9", "x" * 249, "__consumer_offsets", ".hidden"):
        log.create_topic(name)
    assert len(log.topics()) == 5


@local_only("topic directories on case-insensitive file systems (Kafka keeps both)")
def test_names_that_differ_only_in_case_collide(log):
    log.create_topic("Orders")
    with pytest.raises(InvalidTopicError, match="collides"):
        log.create_topic("orders")


# segment sizes of 1 MiB and more: Kafka's smallest segment.bytes
MiB = 1 << 20


def test_topic_config_is_validated_and_survives_reopen(any_address):
    bad, t = unique_name("bad"), unique_name()
    with eventlog.open(any_address) as log:
        with pytest.raises(InvalidConfigError, match="unknown"):
            log.create_topic(bad, retention_hours=5)
        with pytest.raises(InvalidConfigError, match="segment_bytes"):
            log.create_topic(bad, segment_bytes=10)
        with pytest.raises(InvalidConfigError, match="cleanup_policy"):
            log.create_topic(bad, cleanup_policy="shred")
        with pytest.raises(InvalidConfigError, match="partitions"):
            log.create_topic(bad, partitions=0)
        assert bad not in log
        log.create_topic(t, partitions=2, segment_bytes=2 * MiB, retention_ms=60_000,
                         cleanup_policy="compact", max_message_bytes=512)
    with eventlog.open(any_address) as log:
        topic = log.topic(t)
        assert len(topic.partitions) == 2
        cfg = topic.config
        assert (cfg.segment_bytes, cfg.retention_ms, cfg.cleanup_policy,
                cfg.max_message_bytes) == (2 * MiB, 60_000, "compact", 512)


def test_log_level_defaults_apply_to_new_topics(any_address):
    with eventlog.open(any_address, segment_bytes=8 * MiB, partitions=3) as log:
        topic = log.create_topic(unique_name())
        assert topic.config.segment_bytes == 8 * MiB
        assert len(topic.partitions) == 3
        u = log.create_topic(unique_name("u"), segment_bytes=4 * MiB)
        assert u.config.segment_bytes == 4 * MiB


@local_only("a partition's direct append")
def test_record_larger_than_max_message_bytes_writes_nothing(log):
    p = log.create_topic("t", max_message_bytes=100).partition(0)
    with pytest.raises(eventlog.RecordTooLargeError):
        p.append([b"ok", b"x" * 101])
    with pytest.raises(eventlog.RecordTooLargeError):
        p.append([b"v"], keys=[b"k" * 60], headers=[[("h", b"x" * 40)]])
    assert p.end_offset == 0
    with pytest.raises(TypeError):
        p.append(["not bytes"])
    with pytest.raises(TypeError):
        p.append([b"v"], headers=[[("k", "not-bytes")]])
    assert p.end_offset == 0


def test_auto_create_topics(any_address):
    with eventlog.open(any_address, auto_create_topics=True, partitions=2) as log:
        assert len(log.topic(unique_name("fresh")).partitions) == 2


@local_only("a partition's direct append")
def test_delete_topic_stops_other_processes_writers(log_dir):
    with eventlog.open(log_dir) as log, eventlog.open(log_dir) as other:
        log.create_topic("t").partition(0).append([b"a"])
        q = other.topic("t").partition(0)
        log.delete_topic("t")
        assert "t" not in log and log.topics() == []
        with pytest.raises(UnknownTopicError):
            q.append([b"after"])
        with pytest.raises(UnknownTopicError):
            log.topic("t")
        with pytest.raises(UnknownTopicError):
            log.delete_topic("t")
        # the name can be used again, from zero
        assert log.create_topic("t").partition(0).end_offset == 0


def test_add_partitions_is_seen_by_other_logs(any_address):
    t = unique_name()
    with eventlog.open(any_address) as log, eventlog.open(any_address) as other:
        topic = log.create_topic(t, partitions=1)
        seen = other.topic(t)
        topic.add_partitions(2)
        assert len(topic.partitions) == 3
        seen.refresh()
        assert len(seen.partitions) == 3
        with eventlog.Producer(other) as producer:
            producer.send(t, "new", partition=2).result()
        assert [(r.partition, r.value) for r in read_all(log, t)] == [(2, "new")]
    with eventlog.open(any_address) as log, pytest.raises(InvalidConfigError):
        log.topic(t).add_partitions(0)


def test_closed_log_raises_closed_error(any_address):
    log = eventlog.open(any_address)
    t = unique_name()
    p = log.create_topic(t).partition(0)
    log.close()
    log.close()  # idempotent
    with pytest.raises(ClosedError):
        log.topic(t)
    with pytest.raises(ClosedError):
        log.create_topic(unique_name("u"))
    with pytest.raises(ClosedError):
        eventlog.Producer(log)
    with pytest.raises(ClosedError):
        eventlog.Consumer(log)
    with pytest.raises(ClosedError):
        p.end_offset   # noqa: B018 - the property reads the partition
    if not is_kafka(log):   # (a partition's direct read and append: a directory's)
        with pytest.raises(ClosedError):
            p.read(0)
        with pytest.raises(ClosedError):
            p.append([b"x"])


@local_only("the partitions' head files")
def test_clean_close_marks_every_partition_clean(log_dir):
    from eventlog._head import Head

    with eventlog.open(log_dir) as log, eventlog.open(log_dir) as other:
        log.create_topic("t", partitions=2)
        other.topic("t").partition(1).append([b"x"])
        other.close()  # not the last user: leaves partitions as they are
        head = Head(str(log_dir / "topics/t/1/head"))
        assert not head.read().clean
        head.close()
    for i in (0, 1):
        head = Head(str(log_dir / f"topics/t/{i}/head"))
        assert head.read().clean
        head.close()
