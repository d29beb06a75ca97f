"""TopicStore and TopicFiles (_topics.py): the topic registry under a Log, on real
directories, with ``_check()`` after every mutation."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from eventlog import (
    ClosedError,
    InvalidConfigError,
    InvalidTopicError,
    TopicExistsError,
    UnknownPartitionError,
    UnknownTopicError,
)
from eventlog._format import encode_batch
from eventlog._partition import StorageContext
from eventlog._topics import TOPIC_FILE, TopicStore
from eventlog.config import LogOptions

pytestmark = pytest.mark.local_only("TopicStore: the topics of a directory (Log's topic "
                                    "calls run on both backends in tests/test_log.py)")


def make_store(path, **options):
    opts = LogOptions.from_kwargs(dict(options))
    return TopicStore(str(path), StorageContext(opts), opts.auto_create_topics,
                      opts.topic_defaults, opts.default_partitions)


@pytest.fixture
def store(tmp_path):
    s = make_store(tmp_path)
    yield s
    s.close(last_user=False)


def test_create_builds_the_topic_in_staging_and_renames_it_into_place(store, tmp_path):
    files = store.create("orders", 3, retention_ms=1000)
    store._check()
    assert store.names() == ["orders"] and store.exists("orders")
    assert files.metadata().partitions == 3
    assert files.metadata().config.retention_ms == 1000
    assert sorted(os.listdir(files.directory)) == ["0", "1", "2", TOPIC_FILE]
    assert os.listdir(tmp_path / ".staging") == []
    with pytest.raises(TopicExistsError):
        store.create("orders")
    with pytest.raises(InvalidTopicError):
        store.create("ORDERS")  # differs only in case
    store._check()


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "../x", "x" * 250, "ü"])
def test_bad_names_are_refused_before_any_file_is_touched(store, tmp_path, name):
    before = sorted(os.listdir(tmp_path / "topics"))
    with pytest.raises(InvalidTopicError):
        store.create(name)
    with pytest.raises(InvalidTopicError):
        store.topic(name)
    assert sorted(os.listdir(tmp_path / "topics")) == before


def test_partition_logs_open_lazily_once_and_refuse_ids_out_of_range(store):
    files = store.create("t", 2)
    assert files.opened() == []
    first = files.partition_log(1)
    assert files.partition_log(1) is first and files.opened() == [first]
    store._check()
    for bad in (2, -1, "0"):
        with pytest.raises(UnknownPartitionError):
            files.partition_log(bad)
    first.append(encode_batch([b"x"]))
    assert first.end_offset == 1
    store._check()


def test_add_partitions_grows_the_count_seen_by_another_store(store, tmp_path):
    files = store.create("t", 1)
    other = make_store(tmp_path)
    try:
        seen = other.topic("t")
        store.add_partitions(files, 2)
        store._check()
        assert files.metadata().partitions == 3
        assert seen.metadata(force=True).partitions == 3
        assert seen.partition_log(2).end_offset == 0
        other._check()
        with pytest.raises(InvalidConfigError):
            store.add_partitions(files, 0)
    finally:
        other.close(last_user=False)


def test_alter_is_stored_atomically_and_partitions_cannot_change_through_it(store):
    store.create("t")
    files = store.alter("t", segment_bytes=4096, cleanup_policy="compact")
    store._check()
    assert files.metadata().config.compacted
    with pytest.raises(InvalidConfigError):
        store.alter("t", partitions=4)
    with pytest.raises(UnknownTopicError):
        store.alter("missing", retention_ms=1)


def test_a_deleted_and_recreated_topic_is_a_new_topic_to_old_handles(store, tmp_path):
    old = store.create("t", 1)
    plog = old.partition_log(0)
    plog.append(encode_batch([b"old"]))
    other = make_store(tmp_path)
    try:
        other.delete("t")
        other.create("t", 2)
        with pytest.raises(UnknownTopicError):
            old.metadata(force=True)
        new = store.topic("t")  # the store notices and loads the new directory
        assert new is not old and new.metadata().partitions == 2
        assert new.partition_log(0).end_offset == 0
        store._check()
    finally:
        other.close(last_user=False)


def test_delete_marks_partitions_deleted_for_other_processes(store, tmp_path):
    store.create("t", 1).partition_log(0).append(encode_batch([b"x"]))
    script = (
        "import sys; from tests.test_topics import make_store\n"
        "s = make_store(sys.argv[1]); s.delete('t'); s.close(last_user=False)\n")
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True,
                   cwd=os.path.dirname(os.path.dirname(__file__)))
    assert store.names() == []
    with pytest.raises(UnknownTopicError):
        store.topic("t").partition_log(0).append(encode_batch([b"y"]))


def test_auto_create_makes_a_topic_with_the_defaults(tmp_path):
    s = make_store(tmp_path, auto_create_topics=True, partitions=4)
    try:
        files = s.topic("fresh")
        assert files.metadata().partitions == 4
        s._check()
    finally:
        s.close(last_user=False)


def test_closing_as_last_user_marks_every_partition_clean_and_closes_the_store(tmp_path):
    s = make_store(tmp_path)
    files = s.create("t", 2)
    files.partition_log(0).append(encode_batch([b"x"]))
    s.close(last_user=True)
    assert s.closed
    with pytest.raises(ClosedError):
        files.partition_log(1)
    reopened = make_store(tmp_path)
    try:
        logs = reopened.topic("t").partition_logs()
        assert [plog.state().clean for plog in logs] == [True, True]
        assert logs[0].end_offset == 1
        reopened._check()
    finally:
        reopened.close(last_user=False)
