"""The committed-offsets sidecar: append-only checksummed records, replayed on read;
torn and damaged records read as if never committed; rewrites by temp file + rename.
The byte layout the tests build and damage is the one drawn in ``_offsets``'s docstring."""

from __future__ import annotations

import fcntl
import os
import platform
import struct
import threading
import time
from pathlib import Path

import msgpack
import pytest
import xxhash

from eventlog import TopicPartition
from eventlog._fileutil import atomic_write
from eventlog._offsets import (
    _COMPACT_RECORDS,
    HISTORY_MAX,
    Commit,
    OffsetStore,
    damaged_bytes,
    encode_record,
    parse,
)
from tests.conftest import spawn_python

HEADER = b"EvLgOFS1" + bytes(8)
RECORD = struct.Struct("<4sIQ")  # sync marker, payload length, xxh3_64 of the payload
A, B, C = TopicPartition("t", 0), TopicPartition("t", 1), TopicPartition("u", 0)
SYS_FLOCK = {"x86_64": 73, "aarch64": 32, "arm64": 32}.get(platform.machine())


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "groups" / "g.offsets")


def committed(store: OffsetStore, offsets: dict[TopicPartition, int], now_ms: int = 0,
              **kwargs: object) -> None:
    store.commit(offsets, now_ms, **kwargs)  # type: ignore[arg-type]
    store._check()


def records_of(path: str) -> list[dict[str, object]]:
    """The payloads of the records in the file, walked by the documented layout."""
    data = Path(path).read_bytes()
    assert data[:8] == HEADER[:8] and len(data) >= 16  # magic + random file id
    out, pos = [], 16
    while pos < len(data):
        sync, length, checksum = RECORD.unpack_from(data, pos)
        payload = data[pos + RECORD.size:pos + RECORD.size + length]
        assert sync == b"EvOc" and xxhash.xxh3_64_intdigest(payload) == checksum
        out.append(msgpack.unpackb(payload))
        pos += RECORD.size + length
    return out


def test_file_layout_is_the_documented_one(path):
    store = OffsetStore(path, fsync=False)
    committed(store, {A: 5, C: 9}, now_ms=1234, generation=3, member="m-1")
    assert records_of(path) == [{"ts": 1234, "gen": 3, "member": "m-1",
                                 "offsets": [["t", 0, 5], ["u", 0, 9]]}]
    assert os.stat(os.path.dirname(path)).st_mode & 0o777 == 0o700
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_missing_file_reads_empty_and_checks(path):
    store = OffsetStore(path, fsync=False)
    assert store.read() == {}
    store._check()
    assert not os.path.exists(path)


def test_commit_and_read_round_trip_and_the_last_commit_of_a_partition_wins(path):
    store = OffsetStore(path, fsync=False)
    committed(store, {A: 5, B: 7})
    assert store.read() == {A: 5, B: 7}
    committed(store, {A: 6})
    assert store.read() == {A: 6, B: 7}
    committed(store, {C: 0, B: 100})
    assert store.read() == {A: 6, B: 100, C: 0}
    store._check()
    assert OffsetStore(path, fsync=False).read() == {A: 6, B: 100, C: 0}
    assert len(records_of(path)) == 3


def test_two_stores_on_one_file_read_each_others_commits(path):
    first, second = OffsetStore(path, fsync=False), OffsetStore(path, fsync=False)
    committed(first, {A: 1})
    assert second.read() == {A: 1}
    second._check()
    committed(second, {B: 2})
    assert first.read() == {A: 1, B: 2}
    first._check()
    committed(first, {A: 3})   # first's commit tail skips second's record: it checks it
    committed(second, {B: 4})
    for store in (first, second):
        assert store.read() == {A: 3, B: 4}
        store._check()
    assert len(records_of(path)) == 4


def test_a_read_parses_only_what_was_appended_since_the_last(path, monkeypatch):
    reader, writer = OffsetStore(path, fsync=False), OffsetStore(path, fsync=False)
    for i in range(20):
        committed(writer, {A: i, B: i})
    assert reader.read() == {A: 19, B: 19}
    reader._check()
    size = os.path.getsize(path)
    committed(writer, {B: 50})
    appended = os.path.getsize(path) - size
    preads: list[tuple[int, int]] = []
    real_pread = os.pread

    def spy(fd: int, n: int, offset: int) -> bytes:
        preads.append((n, offset))
        return real_pread(fd, n, offset)

    monkeypatch.setattr(os, "pread", spy)
    assert reader.read() == {A: 19, B: 50}
    assert preads == [(16, 0), (appended, size)]  # the header (file id), then the new bytes
    preads.clear()
    assert reader.read() == {A: 19, B: 50}  # nothing new: only the header is read
    assert preads == [(16, 0)]
    monkeypatch.undo()
    reader._check()


def test_commits_from_two_processes_interleave_whole(path):
    """A child commits one partition while this process commits another: the flock
    keeps records whole, and a reader never sees a committed offset go back."""
    n = 600  # 2n records stay below the compaction threshold
    os.makedirs(os.path.dirname(path))
    child = spawn_python(
        "import sys\n"
        "from eventlog import TopicPartition\n"
        "from eventlog._offsets import OffsetStore\n"
        "store = OffsetStore(sys.argv[1], fsync=False)\n"
        "for i in range(1, int(sys.argv[2]) + 1):\n"
        "    store.commit({TopicPartition('t', 1): i}, i, member='child')\n", path, str(n))
    store, reader = OffsetStore(path, fsync=False), OffsetStore(path, fsync=False)
    seen = []
    try:
        deadline = time.monotonic() + 30
        while B not in reader.read():  # start once the child commits
            assert time.monotonic() < deadline and child.poll() is None
            time.sleep(0.0002)
        for i in range(1, n + 1):
            store.commit({A: i}, i, member="parent")
            if i % 20 == 0:
                store._check()
            seen.append(reader.read().get(B, 0))
        assert child.wait(timeout=60) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert seen == sorted(seen)
    store._check()
    reader._check()
    assert reader.read() == {A: n, B: n}
    members = [r["member"] for r in records_of(path)]
    assert sorted(members) == ["child"] * n + ["parent"] * n


def test_torn_tail_is_ignored_and_reads_use_the_last_good_commit(path):
    store, reader = OffsetStore(path, fsync=False), OffsetStore(path, fsync=False)
    committed(store, {A: 10})
    committed(store, {A: 20, B: 1})
    assert reader.read() == {A: 20, B: 1}
    record = encode_record({A: 30, B: 2}, 0, -1, "")
    last_good = {A: 20, B: 1}
    for cut in (3, RECORD.size, len(record) - 1):  # a commit killed mid-write
        with open(path, "ab") as fh:
            fh.write(record[:cut])
        for store_ in (reader, OffsetStore(path, fsync=False)):
            assert store_.read() == last_good
            store_._check()  # a torn tail is a state the store recognises
        size = os.path.getsize(path)
        committed(store, {A: 100 + cut})
        last_good = {A: 100 + cut, B: 1}
        # the next commit cut the torn record (marker and all) before appending
        assert os.path.getsize(path) == size - cut + len(encode_record(
            {A: 100 + cut}, 0, -1, ""))
        assert parse(Path(path).read_bytes())[1] == os.path.getsize(path)
        assert reader.read() == last_good
        reader._check()
    assert OffsetStore(path, fsync=False).read() == last_good


def test_junk_without_a_marker_at_the_end_is_cut_by_the_next_commit(path):
    store = OffsetStore(path, fsync=False)
    committed(store, {A: 1})
    good = os.path.getsize(path)
    with open(path, "ab") as fh:
        fh.write(bytes(40))  # e.g. a file extended but never written, after power loss
    assert OffsetStore(path, fsync=False).read() == {A: 1}
    other = OffsetStore(path, fsync=False)  # a committer that has not seen the file yet
    committed(other, {B: 2})
    assert os.path.getsize(path) == good + len(encode_record({B: 2}, 0, -1, ""))
    assert [r["offsets"] for r in records_of(path)] == [[["t", 0, 1]], [["t", 1, 2]]]


def test_damaged_record_reads_as_if_that_commit_never_happened(path):
    store = OffsetStore(path, fsync=False)
    committed(store, {A: 1, B: 1})
    middle = os.path.getsize(path)
    committed(store, {A: 2, B: 2})
    committed(store, {A: 3})
    with open(path, "r+b") as fh:
        fh.seek(middle + RECORD.size + 5)  # inside the second record's payload
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0x40]))
    fresh = OffsetStore(path, fsync=False)
    assert fresh.read() == {A: 3, B: 1}  # B falls back to the commit before the damage
    fresh._check()
    committed(fresh, {C: 7})
    assert OffsetStore(path, fsync=False).read() == {A: 3, B: 1, C: 7}


def test_checksummed_but_malformed_record_is_skipped(path):
    store = OffsetStore(path, fsync=False)
    committed(store, {A: 1})
    payload = msgpack.packb({"ts": 0, "gen": -1, "member": "",
                             "offsets": [["t", 0, "not an offset"]]})
    with open(path, "ab") as fh:
        fh.write(RECORD.pack(b"EvOc", len(payload), xxhash.xxh3_64_intdigest(payload)))
        fh.write(payload)
    assert parse(Path(path).read_bytes())[2] == 1  # counted records
    fresh = OffsetStore(path, fsync=False)
    assert fresh.read() == {A: 1}
    fresh._check()
    committed(fresh, {A: 2})
    assert fresh.read() == {A: 2}


def test_foreign_file_fails_the_check_and_a_commit_starts_it_over(path):
    os.makedirs(os.path.dirname(path))
    Path(path).write_bytes(b"not an offsets file at all")
    store = OffsetStore(path, fsync=False)
    assert store.read() == {}
    with pytest.raises(AssertionError):
        store._check()
    committed(store, {A: 4})
    assert store.read() == {A: 4}
    assert Path(path).read_bytes().startswith(HEADER[:8])


def test_check_catches_a_cache_that_no_longer_matches_the_file(path):
    store = OffsetStore(path, fsync=False)
    committed(store, {A: 10})
    assert store.read() == {A: 10}
    data = Path(path).read_bytes()
    other = encode_record({A: 11}, 0, -1, "")  # same size: offsets 10 and 11 pack alike
    assert len(other) == len(data) - 16
    with open(path, "r+b") as fh:  # same inode, same size, other content
        fh.seek(16)
        fh.write(other)
    with pytest.raises(AssertionError):
        store._check()


def test_replace_sets_exactly_the_given_offsets_in_a_new_file(path):
    store, reader = OffsetStore(path, fsync=False), OffsetStore(path, fsync=False)
    committed(store, {A: 5, B: 6})
    committed(store, {C: 1})
    assert reader.read() == {A: 5, B: 6, C: 1}
    inode = os.stat(path).st_ino
    store.replace({A: 1}, 99)
    store._check()
    assert os.stat(path).st_ino != inode  # temp file + rename, never rewritten in place
    assert records_of(path) == [{"ts": 99, "gen": -1, "member": "compaction",
                                 "offsets": [["t", 0, 1]]}]
    assert reader.read() == {A: 1}
    reader._check()
    committed(store, {B: 2})  # the commit tail of the old file is not trusted
    assert reader.read() == {A: 1, B: 2}
    reader._check()
    assert not [n for n in os.listdir(os.path.dirname(path)) if ".tmp-" in n]


def test_commit_waiting_on_a_file_replaced_meanwhile_retries_on_the_new_one(path):
    store = OffsetStore(path, fsync=False)
    committed(store, {A: 1})
    lock_fd = os.open(path, os.O_RDWR)
    fcntl.flock(lock_fd, fcntl.LOCK_EX)  # another committer, mid-compaction
    tid: list[int] = []
    errors: list[BaseException] = []

    def commit() -> None:
        tid.append(threading.get_native_id())
        try:
            store.commit({B: 2}, 0)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=commit)
    try:
        thread.start()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # until it blocks in flock on the old file
            try:
                with open(f"/proc/self/task/{tid[0]}/syscall") as fh:
                    if fh.read().split()[0] == str(SYS_FLOCK):
                        break
            except (IndexError, OSError):
                pass
            time.sleep(0.0005)
        else:
            pytest.skip("cannot see the committer blocked in flock")
        atomic_write(path, HEADER + encode_record({A: 1, C: 3}, 0, -1, "compaction"))
    finally:
        fcntl.flock(lock_fd, fcntl.LOCK_UN)
        os.close(lock_fd)
        thread.join(5)
    assert not errors and not thread.is_alive()
    store._check()
    assert OffsetStore(path, fsync=False).read() == {A: 1, B: 2, C: 3}
    assert len(records_of(path)) == 2  # landed in the new file, not the unlinked one


def test_delete_removes_the_file_and_a_later_commit_starts_afresh(path):
    store, reader = OffsetStore(path, fsync=False), OffsetStore(path, fsync=False)
    committed(store, {A: 5})
    assert reader.read() == {A: 5}
    store.delete()
    store._check()
    assert not os.path.exists(path)
    assert reader.read() == {} and store.read() == {}
    # A record of another size than the deleted file (for one of the same size, see
    # the test of inode reuse below).
    committed(store, {B: 100_000})
    assert reader.read() == {B: 100_000}
    reader._check()
    assert len(records_of(path)) == 1


@pytest.mark.parametrize("fsync", [True, False])
def test_fsync_flag_makes_each_commit_durable_or_not(path, monkeypatch, fsync):
    calls: list[int] = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (calls.append(fd), real(fd))[1])
    store = OffsetStore(path, fsync=fsync)
    for i in range(3):
        committed(store, {A: i})
    assert len(calls) == (3 if fsync else 0)
    assert store.read() == {A: 2}


def test_many_commits_are_compacted_into_one_record(path):
    store, reader = OffsetStore(path, fsync=False), OffsetStore(path, fsync=False)
    expected: dict[TopicPartition, int] = {}
    committed(store, {A: 0})
    expected[A] = 0
    inode = os.stat(path).st_ino
    for i in range(1, 5000):
        tp = TopicPartition("t", i % 37)
        store.commit({tp: i}, i)
        expected[tp] = i
        if os.stat(path).st_ino != inode:
            break
        if i % 50 == 0:  # a full check reads the whole file: not after each of 2000
            store._check()
    else:
        pytest.fail("5000 commits and the file was never compacted")
    store._check()
    assert i >= 100  # compaction is rare: it waits for many records
    assert parse(Path(path).read_bytes())[2] == 1
    assert reader.read() == expected
    reader._check()
    assert records_of(path)[0]["member"] == "compaction"
    committed(store, {A: 1})
    assert len(records_of(path)) == 2


def test_reader_cache_after_a_committer_cut_a_junk_tail(path):
    reader, writer = OffsetStore(path, fsync=False), OffsetStore(path, fsync=False)
    committed(writer, {A: 1})
    with open(path, "ab") as fh:
        fh.write(bytes(10))  # junk without a marker
    assert reader.read() == {A: 1}  # cached at a size that includes the junk
    committed(writer, {B: 5})        # cuts the junk, appends
    committed(writer, {A: 2})
    assert reader.read() == {A: 2, B: 5}


def _same_inode_or_skip(before: int, path: str) -> None:
    if os.stat(path).st_ino != before:
        pytest.skip("this filesystem did not reuse the inode")


def test_cached_reader_after_the_file_is_deleted_and_recreated(path):
    store, reader = OffsetStore(path, fsync=False), OffsetStore(path, fsync=False)
    committed(store, {A: 5})
    assert reader.read() == {A: 5}
    inode = os.stat(path).st_ino
    store.delete()
    committed(store, {A: 7})  # e.g. Log.delete_group, then a new consumer commits
    _same_inode_or_skip(inode, path)
    assert reader.read() == {A: 7}


def test_cached_reader_after_two_rewrites(path):
    admin, reader = OffsetStore(path, fsync=False), OffsetStore(path, fsync=False)
    admin.replace({A: 50}, 0)
    assert reader.read() == {A: 50}
    inode = os.stat(path).st_ino
    admin.replace({A: 60}, 0)  # e.g. two reset_group_offsets
    admin.replace({A: 70}, 0)
    _same_inode_or_skip(inode, path)
    assert reader.read() == {A: 70}


def test_commit_tail_after_the_file_is_deleted_and_recreated(path):
    first, second = OffsetStore(path, fsync=False), OffsetStore(path, fsync=False)
    committed(first, {A: 5})
    inode = os.stat(path).st_ino
    second.delete()
    second.commit({B: 123_456_789, C: 1}, 0)  # longer than first's file was
    _same_inode_or_skip(inode, path)
    first.commit({A: 6}, 0)
    assert OffsetStore(path, fsync=False).read() == {A: 6, B: 123_456_789, C: 1}


# -- the history of commits (group_status) -----------------------------------------------

def history_of(store: OffsetStore) -> dict[TopicPartition, list[Commit]]:
    return store.read_history()[1]


def test_a_commit_with_ends_writes_its_history_entry_in_the_same_record(path):
    store = OffsetStore(path, fsync=False)
    committed(store, {A: 5, C: 9}, now_ms=1234, generation=3, member="m-1",
              ends={A: 8, C: 9})
    committed(store, {A: 6, B: 1}, now_ms=1300, ends={A: 10})  # B's end unknown
    assert records_of(path) == [
        {"ts": 1234, "gen": 3, "member": "m-1", "offsets": [["t", 0, 5], ["u", 0, 9]],
         "ends": [8, 9]},
        {"ts": 1300, "gen": -1, "member": "", "offsets": [["t", 0, 6], ["t", 1, 1]],
         "ends": [10, None]}]
    assert store.read_history() == ({A: 6, B: 1, C: 9},
                                    {A: [Commit(5, 1234, 8), Commit(6, 1300, 10)],
                                     C: [Commit(9, 1234, 9)]})
    assert Commit(5, 1234, 8).lag == 3
    assert store.read() == {A: 6, B: 1, C: 9}
    store._check()


def test_records_without_ends_still_read_and_add_no_history(path):
    os.makedirs(os.path.dirname(path))
    # A file as an earlier version wrote it: no "ends", a zero file id.
    Path(path).write_bytes(HEADER + encode_record({A: 5}, 10, 1, "old"))
    store = OffsetStore(path, fsync=False)
    assert store.read_history() == ({A: 5}, {})
    committed(store, {A: 7}, now_ms=20, ends={A: 9})
    assert store.read_history() == ({A: 7}, {A: [Commit(7, 20, 9)]})


def test_malformed_ends_lose_only_the_history_never_the_offset(path):
    store = OffsetStore(path, fsync=False)
    committed(store, {A: 1}, ends={A: 1})
    for ends in (["x"], [1, 2], "no", [[1]]):
        payload = msgpack.packb({"ts": 5, "gen": -1, "member": "", "offsets": [["t", 0, 2]],
                                 "ends": ends})
        with open(path, "ab") as fh:
            fh.write(RECORD.pack(b"EvOc", len(payload), xxhash.xxh3_64_intdigest(payload)))
            fh.write(payload)
        fresh = OffsetStore(path, fsync=False)
        assert fresh.read() == {A: 2}
        assert fresh.read_history() == ({A: 2}, {A: [Commit(1, 0, 1)]})
        with pytest.raises(AssertionError):
            fresh._check()     # our writer never writes this: the check says so
        store.commit({A: 3}, 0)  # (cuts nothing: the record is valid)
        assert parse(Path(path).read_bytes())[1] == os.path.getsize(path)


def test_history_reads_are_incremental_and_cached_apart_from_offsets(path, monkeypatch):
    reader, writer = OffsetStore(path, fsync=False), OffsetStore(path, fsync=False)
    for i in range(10):
        committed(writer, {A: i}, now_ms=i, ends={A: i + 1})
    assert len(history_of(reader)) == 1
    assert reader.read() == {A: 9}
    size = os.path.getsize(path)
    committed(writer, {A: 10}, now_ms=10, ends={A: 10})
    preads: list[tuple[int, int]] = []
    real_pread = os.pread

    def spy(fd: int, n: int, offset: int) -> bytes:
        preads.append((n, offset))
        return real_pread(fd, n, offset)

    monkeypatch.setattr(os, "pread", spy)
    offsets, history = reader.read_history()
    assert preads == [(16, 0), (os.path.getsize(path) - size, size)]
    monkeypatch.undo()
    assert offsets == {A: 10} and history[A][-1] == Commit(10, 10, 10)
    assert len(history[A]) == 11
    reader._check()
    history[A].clear()                 # callers get copies
    assert len(history_of(reader)[A]) == 11


def test_check_catches_a_history_cache_that_no_longer_matches_the_file(path):
    store = OffsetStore(path, fsync=False)
    committed(store, {A: 1}, ends={A: 4})
    store.read_history()
    cache = store._history_cache
    assert cache is not None and cache[4] is not None
    cache[4][A].append(Commit(1, 0, 99))   # a cache that kept something the file lacks
    with pytest.raises(AssertionError):
        store._check()


def test_compaction_keeps_the_last_history_max_entries_of_every_partition(path):
    store, reader = OffsetStore(path, fsync=False), OffsetStore(path, fsync=False)
    partitions = [TopicPartition("t", p) for p in range(7)]
    expected: dict[TopicPartition, list[Commit]] = {tp: [] for tp in partitions}
    assert history_of(reader) == {}
    inode = os.stat(path).st_ino if os.path.exists(path) else None
    for i in range(_COMPACT_RECORDS + 30):
        tp = partitions[i % 7]
        store.commit({tp: i}, i, ends={tp: i + i % 3})
        expected[tp].append(Commit(i, i, i + i % 3))
        if i % 500 == 0:
            store._check()
        if i == 1000:
            assert len(history_of(reader)[tp]) == HISTORY_MAX   # bounded before a rewrite
    store._check()
    assert os.stat(path).st_ino != inode
    doc = next(r for r in records_of(path) if r["member"] == "compaction")
    assert sorted((t, p, len(c)) for t, p, c in doc["history"]) == \
        [("t", p, HISTORY_MAX) for p in range(7)]
    assert history_of(reader) == {tp: e[-HISTORY_MAX:] for tp, e in expected.items()}
    assert history_of(OffsetStore(path, fsync=False)) == history_of(reader)
    reader._check()


def test_replace_keeps_history_drops_it_for_partitions_dropped_and_adds_reset_entries(path):
    store = OffsetStore(path, fsync=False)
    committed(store, {A: 5, B: 6}, now_ms=1, ends={A: 10, B: 6})
    store.replace({A: 0, C: 3}, 7, ends={A: 10})   # a reset of A; B dropped; C without end
    store._check()
    assert store.read_history() == ({A: 0, C: 3},
                                    {A: [Commit(5, 1, 10), Commit(0, 7, 10)]})
    store.replace({A: 0, C: 3}, 8)                 # a repair: no entry
    assert history_of(store) == {A: [Commit(5, 1, 10), Commit(0, 7, 10)]}


def test_a_rewrite_too_large_for_one_record_keeps_fewer_entries(path, monkeypatch):
    import eventlog._offsets as offsets_module
    store = OffsetStore(path, fsync=False)
    for i in range(HISTORY_MAX):
        committed(store, {A: i, B: i}, now_ms=i, ends={A: i, B: i})
    full = len(encode_record({A: 0, B: 0}, 0, -1, "compaction",
                             history={A: [Commit(i, i, i) for i in range(HISTORY_MAX)],
                                      B: [Commit(i, i, i) for i in range(HISTORY_MAX)]}))
    monkeypatch.setattr(offsets_module, "_MAX_RECORD_BYTES", full // 2)
    store.replace(store.read(), 99)
    kept = history_of(store)
    assert 0 < len(kept[A]) < HISTORY_MAX and kept[A] == [Commit(i, i, i) for i in
                                                         range(HISTORY_MAX - len(kept[A]),
                                                               HISTORY_MAX)]
    assert store.read() == {A: HISTORY_MAX - 1, B: HISTORY_MAX - 1}


def test_a_flipped_bit_in_the_magic_never_makes_the_offsets_read_empty(path):
    # issue 18, item 10: a consumer with auto_offset_reset="latest" would skip records
    for bit in range(64):
        if os.path.exists(path):
            os.unlink(path)
        store = OffsetStore(path, fsync=False)
        committed(store, {A: 10})
        committed(store, {B: 20})
        data = bytearray(Path(path).read_bytes())
        data[bit // 8] ^= 1 << (bit % 8)
        Path(path).write_bytes(bytes(data))
        assert OffsetStore(path, fsync=False).read() == {A: 10, B: 20}, bit
        assert damaged_bytes(bytes(data)) == 8
        store.commit({A: 11}, 0)  # keeps the older commits and mends the magic
        assert Path(path).read_bytes()[:8] == HEADER[:8]
        assert OffsetStore(path, fsync=False).read() == {A: 11, B: 20}
        store._check()
