"""The segment list of a partition, on real files with tiny segments that roll
constantly: lookups, reloads, truncation, reads that resume, the mapped-segment cache,
retention choices and time lookups. Every invariant is checked after every mutation."""

from __future__ import annotations

import os

import pytest

from eventlog import CorruptRecordError
from eventlog._format import encode_batch
from eventlog._partition import PartitionLog, StorageContext, create_partition_files
from eventlog.config import LogOptions, TopicConfig

SEGMENT_BYTES = 300
INTERVAL = 64


class Clock:
    def __init__(self, now=1_000_000):
        self.now = now

    def __call__(self):
        return self.now


def open_partition(directory, clock=None, **config):
    """A PartitionLog on ``directory`` as the first process to open it would make."""
    config.setdefault("segment_bytes", SEGMENT_BYTES)
    config.setdefault("index_interval_bytes", INTERVAL)
    topic = TopicConfig(**config)
    ctx = StorageContext(LogOptions(fsync="never", clock=clock or Clock()))
    if not os.path.exists(directory):
        create_partition_files(str(directory), ctx.clock())
    return PartitionLog(str(directory), lambda: topic, ctx, recover=True)


def append(plog, n, start=0, ts=None):
    for i in range(start, start + n):
        plog.append(encode_batch([b"record-%05d" % i], timestamps_ms=i if ts is None else ts))


def check_all(plog):
    """Every invariant of the partition, its segment list and its segments."""
    plog._check()
    st = plog.state()
    plog.segments._check(st)
    for segment in plog.segments.published(st):
        segment._check(plog.segments.limit(segment, st))


def read_values(plog, offset=None):
    st = plog.state()
    offset = st.start_offset if offset is None else offset
    out = []
    while offset < st.end_offset:
        for batch in plog.fetch(offset, max_bytes=1):
            for o, v in zip(batch.offsets(), batch.values, strict=True):
                if o >= offset:
                    out.append(v)
            offset = batch.header.next_offset
    return out


@pytest.fixture
def plog(tmp_path):
    p = open_partition(tmp_path / "p")
    yield p
    p.close()


def test_rolls_add_segments_that_lookups_find(plog):
    check_all(plog)
    append(plog, 30)
    check_all(plog)
    segments = plog.segments
    st = plog.state()
    bases = segments.bases
    assert len(bases) > 4 and bases[0] == 0 and st.active_base == bases[-1]
    assert [s.base_offset for s in segments.published(st)] == bases
    assert [s.base_offset for s in segments.sealed(st)] == bases[:-1]
    for base, nxt in zip(bases, bases[1:]):
        assert segments.segment_for(base).base_offset == base
        assert segments.segment_for(nxt - 1).base_offset == base
        assert segments.next_segment(base).base_offset == nxt
    assert segments.next_segment(bases[-1]) is None
    assert segments.segment_for(-1) is None
    assert read_values(plog) == [b"record-%05d" % i for i in range(30)]
    check_all(plog)


def test_truncate_at_segment_boundary_removes_segments(plog):
    append(plog, 30)
    bases = plog.segments.bases
    epoch = plog.segments.layout_epoch
    assert plog.delete_records(bases[2]) == bases[2]
    check_all(plog)
    assert plog.segments.bases == bases[2:]
    assert plog.segments.layout_epoch == epoch + 1
    assert sorted(int(n[:20]) for n in os.listdir(plog.directory) if n.endswith(".log")) \
        == bases[2:]
    assert read_values(plog) == [b"record-%05d" % i for i in range(bases[2], 30)]
    append(plog, 5, 30)
    check_all(plog)


def test_truncate_inside_a_segment_keeps_it_and_moves_the_start(plog):
    append(plog, 30)
    bases = plog.segments.bases
    inside = bases[1] + 1
    assert plog.delete_records(inside) == inside
    check_all(plog)
    assert plog.segments.bases == bases[1:]
    assert plog.start_offset == inside
    assert read_values(plog)[0] == b"record-%05d" % inside
    assert plog.delete_records(0) == inside  # the start never moves back
    check_all(plog)


def test_a_roll_in_another_process_is_found_by_reload(tmp_path):
    first = open_partition(tmp_path / "p")
    second = PartitionLog(first.directory, lambda: TopicConfig(segment_bytes=SEGMENT_BYTES),
                          StorageContext(LogOptions(fsync="never", clock=Clock())))
    try:
        append(first, 2)
        before = second.segments.bases
        append(first, 20, 2)
        st = second.state()          # a state naming an unknown active segment reloads
        assert second.segments.covers(st)
        assert len(second.segments.bases) > len(before)
        check_all(second)
        assert read_values(second) == [b"record-%05d" % i for i in range(22)]
        append(second, 3, 22)        # and it can write after them
        check_all(first)
        assert read_values(first)[-1] == b"record-00024"
    finally:
        second.close()
        first.close()


def test_a_new_layout_epoch_replaces_every_segment_object(plog):
    append(plog, 30)
    st = plog.state()
    old = {s.base_offset: s for s in plog.segments.published(st)}
    read_values(plog)                      # leaves resume points behind
    plog.segments.reload(st.layout_epoch)  # same epoch: the objects stay
    assert all(plog.segments[b] is s for b, s in old.items())
    plog.segments.reload(st.layout_epoch + 1)
    assert not any(plog.segments[b] is s for b, s in old.items())
    assert not plog.segments._hints and plog.segments._partial is None
    # the writer closes the replaced segments' descriptors at its next sync
    append(plog, 1, 30)
    check_all(plog)


def test_a_read_resumes_where_the_last_one_ended_without_an_index_search(plog, monkeypatch):
    append(plog, 40)
    searches = []
    real = type(plog.segments[0]).find_position
    monkeypatch.setattr(type(plog.segments[0]), "find_position",
                        lambda self, *a: searches.append(a) or real(self, *a))
    got = read_values(plog)           # one batch per fetch, across every segment
    assert got == [b"record-%05d" % i for i in range(40)]
    assert len(searches) == 1         # only the first fetch looked the offset up
    plog.fetch(17)                    # a jump: searched
    assert len(searches) == 2
    check_all(plog)


def test_the_cache_of_mapped_sealed_segments_stays_bounded(plog, monkeypatch):
    monkeypatch.setattr("eventlog._segments._MAX_MAPPED_SEALED", 2)
    append(plog, 60)
    st = plog.state()
    read_values(plog)
    mapped = [s for s in plog.segments.sealed(st) if s.mapped_bytes]
    assert len(plog.segments.sealed(st)) > 5 and len(mapped) <= 2
    check_all(plog)


def test_retention_chooses_the_oldest_segments_by_time_and_by_size(plog):
    append(plog, 40)
    st = plog.state()
    sealed = plog.segments.sealed_sizes(st)
    segments = plog.segments
    assert segments.retention_doomed(st, None, None) == []
    assert segments.retention_doomed(st, 0, None) == []   # nothing is older than 0
    # records have timestamps equal to their offsets: a cutoff removes the segments
    # wholly below it
    cutoff = sealed[3][0].base_offset
    assert segments.retention_doomed(st, cutoff, None) == [s.base_offset
                                                           for s, _ in sealed[:3]]
    total = sum(size for _, size in sealed) + st.active_position
    keep = total - sum(size for _, size in sealed[:2])
    assert segments.retention_doomed(st, None, keep) == [s.base_offset for s, _ in sealed[:2]]
    assert segments.retention_doomed(st, None, 0) == [s.base_offset for s, _ in sealed]
    check_all(plog)


def test_size_bytes_counts_batches_not_preallocated_space(plog):
    append(plog, 25)
    st = plog.state()
    lengths = sum(h.length for s in plog.segments.published(st)
                  for _, h in s.headers(0, plog.segments.limit(s, st)))
    assert plog.size_bytes() == plog.segments.size_bytes(st) == lengths
    assert sum(os.path.getsize(s.path) for s in plog.segments.published(st)) >= lengths
    check_all(plog)


def test_offset_for_time_with_timestamps_that_go_back(plog):
    stamps = [50, 10, 90, 30, 200, 150, 400, 350, 600, 500, 800, 700, 20, 900]
    for i, ts in enumerate(stamps):
        append(plog, 1, i, ts=ts)
    assert len(plog.segments.bases) > 3
    st = plog.state()
    for target in (0, 10, 11, 60, 95, 199, 201, 451, 650, 899, 900):
        expected = next((i for i, ts in enumerate(stamps) if ts >= target), None)
        assert plog.segments.offset_for_time(target, st) == expected, target
    assert plog.segments.offset_for_time(901, st) is None
    check_all(plog)


def test_a_missing_segment_in_the_middle_fails_the_read_loudly(tmp_path):
    plog = open_partition(tmp_path / "p")
    append(plog, 30)
    bases = plog.segments.bases
    plog.close()
    os.unlink(os.path.join(plog.directory, "%020d.log" % bases[2]))
    again = PartitionLog(plog.directory, lambda: TopicConfig(segment_bytes=SEGMENT_BYTES),
                         StorageContext(LogOptions(fsync="never", clock=Clock())))
    try:
        # the batches before the gap first (as before a bad batch), then the error
        before = again.fetch(bases[1], max_bytes=1 << 20)
        assert before[-1].header.next_offset == bases[2]
        with pytest.raises(CorruptRecordError, match="missing"):
            again.fetch(bases[2], max_bytes=1 << 20)
        assert again.fetch(bases[3])[0].header.base_offset == bases[3]
    finally:
        again.close()
