"""Partition layer: append, read bounds, rolls, indexes, time lookup, fsync modes."""

from __future__ import annotations

import os
import stat
import time

import pytest

import eventlog
from eventlog import OffsetOutOfRangeError
from eventlog._segment import parse_file_name


def values(n, start=0, size=None):
    if size is None:
        return [b"value-%d" % i for i in range(start, start + n)]
    return [(b"%d:" % i).ljust(size, b"x") for i in range(start, start + n)]


def segment_bases(partition):
    return sorted(b for b in map(parse_file_name, os.listdir(partition._log.directory))
                  if b is not None)


class Clock:
    def __init__(self, now=1_700_000_000_000):
        self.now = now

    def __call__(self):
        return self.now


def test_append_returns_base_offsets_and_read_returns_in_order(log):
    p = log.create_topic("t").partition(0)
    assert p.append(values(3)) == 0
    assert p.append(values(2, 3)) == 3
    assert (p.start_offset, p.end_offset) == (0, 5)
    records = p.read(0)
    assert [r.offset for r in records] == [0, 1, 2, 3, 4]
    assert [r.value for r in records] == values(5)
    assert all(r.topic == "t" and r.partition == 0 for r in records)
    assert [r.value for r in p.read(2, max_records=2)] == values(2, 2)
    p._log._check()


def test_keys_headers_and_timestamps_round_trip(log):
    p = log.create_topic("t").partition(0)
    p.append([b"v1", None], keys=[b"k", None], timestamps_ms=[5, 7],
             headers=[[("trace", b"1")], None])
    r0, r1 = p.read(0)
    assert (r0.key, r0.value, r0.timestamp_ms, r0.headers) == (b"k", b"v1", 5,
                                                              [("trace", b"1")])
    assert (r1.key, r1.value, r1.timestamp_ms, r1.headers) == (None, None, 7, [])


def test_read_at_end_is_empty_and_beyond_end_raises(log):
    p = log.create_topic("t").partition(0)
    assert p.read(0) == []
    p.append(values(2))
    assert p.read(2) == []
    with pytest.raises(OffsetOutOfRangeError) as info:
        p.read(3)
    assert (info.value.start_offset, info.value.end_offset, info.value.offset) == (0, 2, 3)
    with pytest.raises(OffsetOutOfRangeError):
        p.read(-1)


def test_read_below_start_offset_raises(log):
    p = log.create_topic("t").partition(0)
    p.append(values(10))
    plog = p._log
    with plog._locked() as st:  # advance the log start offset as retention would
        plog._publish(st._replace(start_offset=4))
    assert p.start_offset == 4
    with pytest.raises(OffsetOutOfRangeError, match=r"\[4, 10\]"):
        p.read(3)
    assert [r.offset for r in p.read(4)] == list(range(4, 10))


def test_reading_a_batch_in_parts_decodes_it_once(log, monkeypatch):
    p = log.create_topic("t").partition(0)
    p.append(values(1000))
    p.append(values(1000, 1000))
    decoded = []
    real = eventlog._format.decode_batch
    monkeypatch.setattr(eventlog._format, "decode_batch",
                        lambda *a, **k: decoded.append(a[1]) or real(*a, **k))
    got = []
    while len(got) < 2000:
        got += p.read(len(got), max_records=30)  # 67 reads, two batches
    assert [r.value for r in got] == values(2000)
    assert len(decoded) == 2  # each batch once: later reads resume in the kept one
    # a damaged byte in the kept batch's header is still noticed
    assert len(p.read(1500, max_records=5)) == 5
    seg = p._log.segments[0]
    position = p._log.segments._partial[1].position
    seg.mapping(position + 64)[position + 20] ^= 0xFF
    with pytest.raises(eventlog.CorruptRecordError):
        p.read(1990, max_records=5)


def test_max_bytes_bounds_the_read_but_always_returns_one_record(log):
    p = log.create_topic("t").partition(0)
    for i in range(10):
        p.append([b"x" * 1000], keys=[b"%d" % i])
    got = p.read(0, max_bytes=2500)
    assert 2 <= len(got) <= 3
    assert len(p.read(0, max_bytes=1)) == 1


def test_bad_read_arguments_are_typed_errors(log):
    p = log.create_topic("t").partition(0)
    with pytest.raises(TypeError):
        p.read("0")
    with pytest.raises(ValueError):
        p.read(0, max_records=0)
    with pytest.raises(ValueError):
        p.read(0, max_bytes=-1)


def test_segments_roll_at_segment_bytes(log_dir):
    with eventlog.open(log_dir, segment_bytes=1024) as log:
        p = log.create_topic("t").partition(0)
        for i in range(60):
            p.append(values(1, i, size=100))
        bases = segment_bases(p)
        assert len(bases) > 5
        names = sorted(n for n in os.listdir(p._log.directory) if n.endswith(".log"))
        assert names[0] == "00000000000000000000.log"
        assert all(len(n) == 24 for n in names)
        # every sealed segment holds whole batches totalling at most segment_bytes
        for base, nxt in zip(bases, bases[1:]):
            seg = p._log.segments[base]
            used = sum(h.length for _, h in seg.headers(0, seg.file_bytes()))
            assert used <= 1024
            assert seg.headers(0, seg.file_bytes()) is not None
            last = list(seg.headers(0, seg.file_bytes()))[-1][1]
            assert last.next_offset == nxt
        assert [r.value for r in p.read(0, max_records=1000)] == values(60, size=100)
        p._log._check()


def test_readers_keep_few_sealed_segments_mapped(log_dir, monkeypatch):
    with eventlog.open(log_dir, segment_bytes=1024) as log:
        p = log.create_topic("t").partition(0)
        for i in range(100):
            p.append(values(1, i, size=100))

    def mapped_sealed(p):
        active = segment_bases(p)[-1]
        return [seg.base_offset for seg in p._log.segments
                if seg.mapped_bytes and seg.base_offset != active]

    for limit, most in ((256 << 20, 4), (1, 1)):  # the count bounds, then the bytes
        monkeypatch.setattr("eventlog._segments._MAX_MAPPED_SEALED_BYTES", limit)
        with eventlog.open(log_dir) as log:
            p = log.topic("t").partition(0)
            assert len(segment_bases(p)) > 8
            seen = []
            for offset in range(100):  # one record at a time: every segment in turn
                seen += [r.value for r in p.read(offset, max_records=1)]
                assert len(mapped_sealed(p)) <= most
            assert seen == values(100, size=100)
            assert len(mapped_sealed(p)) == most
            # going back maps an evicted segment again
            assert [r.value for r in p.read(0, max_records=1)] == values(1, size=100)


def test_a_batch_larger_than_a_segment_gets_a_segment_of_its_own(log_dir):
    with eventlog.open(log_dir, segment_bytes=512) as log:
        p = log.create_topic("t").partition(0)
        p.append([b"a"])
        p.append([b"b" * 2000])
        p.append([b"c"])
        assert segment_bases(p) == [0, 1, 2]
        assert [len(r.value) for r in p.read(0)] == [1, 2000, 1]


def test_segments_roll_at_segment_ms(log_dir):
    clock = Clock()
    with eventlog.open(log_dir, clock=clock, segment_ms=1000) as log:
        p = log.create_topic("t").partition(0)
        p.append(values(1))
        clock.now += 999
        p.append(values(1, 1))
        assert segment_bases(p) == [0]
        clock.now += 1
        p.append(values(1, 2))
        assert segment_bases(p) == [0, 2]
        assert [r.value for r in p.read(0)] == values(3)


def test_files_and_directories_are_private(log_dir):
    with eventlog.open(log_dir) as log:
        p = log.create_topic("t").partition(0)
        p.append(values(1))
        for root, dirs, files in os.walk(log_dir):
            for d in dirs:
                assert stat.S_IMODE(os.stat(os.path.join(root, d)).st_mode) & 0o077 == 0, d
            for f in files:
                assert stat.S_IMODE(os.stat(os.path.join(root, f)).st_mode) & 0o077 == 0, f


def test_offset_lookup_uses_the_sparse_index(log_dir):
    with eventlog.open(log_dir, index_interval_bytes=256) as log:
        p = log.create_topic("t").partition(0)
        for i in range(200):
            p.append(values(1, i, size=50))
        seg = p._log.segments[0]
        assert len(seg.indexes.offset) > 20
        for target in (0, 1, 57, 133, 199):
            assert p.read(target, max_records=1)[0].value == values(1, target, size=50)[0]


def test_offset_for_time_across_segments_and_unordered_timestamps(log_dir):
    with eventlog.open(log_dir, segment_bytes=400, index_interval_bytes=64) as log:
        p = log.create_topic("t").partition(0)
        stamps = [1000, 1500, 1200, 2000, 2000, 3000, 2500, 4000, 4500, 5000]
        for i, ts in enumerate(stamps):
            p.append(values(1, i, size=60), timestamps_ms=[ts])
        assert len(segment_bases(p)) > 2
        for target in (0, 1000, 1001, 1300, 1600, 2000, 2600, 4999, 5000):
            expected = next((i for i, ts in enumerate(stamps) if ts >= target), None)
            assert p.offset_for_time(target) == expected, target
        assert p.offset_for_time(5001) is None


def test_deleted_index_files_are_rebuilt_with_identical_lookups(log_dir):
    with eventlog.open(log_dir, segment_bytes=2048, index_interval_bytes=128) as log:
        p = log.create_topic("t").partition(0)
        for i in range(120):
            p.append(values(1, i, size=40), timestamps_ms=[10_000 + i])
        before = {o: p.read(o, max_records=1)[0] for o in range(0, 120, 7)}
        times = {t: p.offset_for_time(t) for t in range(10_000, 10_130, 9)}
        directory = p._log.directory
    for name in os.listdir(directory):
        if name.endswith((".index", ".timeindex")):
            os.unlink(os.path.join(directory, name))
    with eventlog.open(log_dir) as log:
        p = log.topic("t").partition(0)
        assert {o: p.read(o, max_records=1)[0] for o in before} == before
        assert {t: p.offset_for_time(t) for t in times} == times
    assert any(n.endswith(".index") for n in os.listdir(directory))


def test_garbled_index_never_returns_a_wrong_record(log_dir):
    with eventlog.open(log_dir, segment_bytes=4096, index_interval_bytes=128) as log:
        p = log.create_topic("t").partition(0)
        for i in range(150):
            p.append(values(1, i, size=40))
        directory = p._log.directory
    for name in os.listdir(directory):
        if name.endswith(".index"):
            path = os.path.join(directory, name)
            with open(path, "r+b") as fh:
                data = bytearray(fh.read())
                for i in range(16, len(data), 3):
                    data[i] ^= 0x5A
                fh.seek(0)
                fh.write(data)
    with eventlog.open(log_dir) as log:
        p = log.topic("t").partition(0)
        for target in range(0, 150, 11):
            assert p.read(target, max_records=1)[0].value == values(1, target, size=40)[0]


def test_fsync_always_advances_the_durable_point_with_every_append(log_dir):
    with eventlog.open(log_dir, fsync="always") as log:
        p = log.create_topic("t").partition(0)
        p.append(values(3))
        st = p._log.state()
        assert (st.recovery_offset, st.recovery_position) == (3, st.active_position)


def test_fsync_interval_advances_the_durable_point_in_the_background(log_dir):
    with eventlog.open(log_dir, fsync="interval", fsync_interval_ms=20) as log:
        p = log.create_topic("t").partition(0)
        p.append(values(3))
        deadline = time.monotonic() + 5
        while p._log.state().recovery_offset != 3:
            assert time.monotonic() < deadline, "the flusher never ran"
            time.sleep(0.01)


def test_fsync_never_leaves_the_durable_point_until_close(log_dir):
    with eventlog.open(log_dir, fsync="never") as log:
        p = log.create_topic("t").partition(0)
        p.append(values(3))
        time.sleep(0.05)
        assert p._log.state().recovery_offset == 0
    with eventlog.open(log_dir) as log:
        st = log.topic("t").partition(0)._log.state()
        assert st.recovery_offset == 3


def test_log_append_time_replaces_producer_timestamps(log_dir):
    clock = Clock(5_000)
    with eventlog.open(log_dir, clock=clock) as log:
        p = log.create_topic("t", timestamp_type="log_append_time").partition(0)
        p.append(values(2), timestamps_ms=[1, 2])
        assert [r.timestamp_ms for r in p.read(0)] == [5_000, 5_000]


def test_reading_never_overrides_the_users_garbage_collector_setting(log):
    import gc

    p = log.create_topic("t").partition(0)
    p.append(values(2000))
    was = gc.isenabled()
    try:
        gc.disable()
        assert len(p.read(0, max_records=2000)) == 2000
        assert not gc.isenabled()
        gc.enable()
        assert len(p.read(0, max_records=2000)) == 2000
        assert gc.isenabled()
    finally:
        if was:
            gc.enable()
        else:
            gc.disable()


def test_time_lookup_survives_garbled_time_indexes(log_dir):
    with eventlog.open(log_dir, segment_bytes=300, index_interval_bytes=64) as log:
        p = log.create_topic("t").partition(0)
        stamps = [5, 1, 9, 3, 20, 15, 40, 35, 60, 50, 80, 70]
        for i, ts in enumerate(stamps):
            p.append(values(1, i, size=60), timestamps_ms=[ts])
        directory = p._log.directory
    for name in os.listdir(directory):
        if name.endswith(".timeindex"):
            with open(os.path.join(directory, name), "r+b") as fh:
                fh.seek(16)
                fh.write(b"\xff" * 24)
    with eventlog.open(log_dir) as log:
        p = log.topic("t").partition(0)
        for target in range(0, 90, 3):
            expected = next((i for i, ts in enumerate(stamps) if ts >= target), None)
            assert p.offset_for_time(target) == expected, target


def test_on_roll_runs_after_an_append_rolls_and_not_after_an_explicit_roll(tmp_path):
    from eventlog._format import encode_batch
    from eventlog._partition import PartitionLog, StorageContext, create_partition_files
    from eventlog.config import LogOptions, TopicConfig

    rolls = []
    ctx = StorageContext(LogOptions(fsync="never"))
    create_partition_files(str(tmp_path / "p"), ctx.clock())
    plog = PartitionLog(str(tmp_path / "p"), lambda: TopicConfig(segment_bytes=200), ctx,
                        on_roll=lambda p: rolls.append(p.state().active_base))
    try:
        for i in range(10):
            plog.append(encode_batch([b"%d" % i * 40]))
        assert rolls and rolls == plog.segments.bases[1:]
        plog.roll()
        assert rolls == plog.segments.bases[1:-1]
        plog._check()
    finally:
        plog.close()
