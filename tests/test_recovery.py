"""Recovery on open: dead writers' debris, torn tails, corruption, lost heads.

A real process crash is tested with ``kill -9`` in test_crash.py. Here ``crash``
drops a Log the way a killed process would (no fsync, no clean marker, locks released)
and ``reboot`` makes a partition's head look as if it was written before an OS restart,
so that recovery may no longer trust the page cache.
"""

from __future__ import annotations

import os

import pytest

import eventlog
from eventlog import CorruptRecordError
from eventlog._head import FLAG_CLEAN, Head
from eventlog._segment import file_name


def crash(log):
    log._abandon()


def reboot(partition_dir):
    head = Head(os.path.join(partition_dir, "head"))
    try:
        st = head.read()
        head.publish(st._replace(boot_id=st.boot_id ^ 0xFFFF, flags=st.flags & ~FLAG_CLEAN))
    finally:
        head.close()


def values(n, start=0):
    return [b"record-%05d" % i for i in range(start, start + n)]


def fill(log_dir, batches, **options):
    """Append ``batches`` one-record batches; return (log, partition, positions)."""
    log = eventlog.open(log_dir, **options)
    topic = log.topic("t") if "t" in log else log.create_topic("t")
    p = topic.partition(0)
    start = p.end_offset
    for i in range(batches):
        p.append(values(1, start + i))
    return log, p


def batch_positions(partition_dir, base=0):
    """(position, header) of every batch of segment ``base``."""
    from eventlog._segment import Segment

    seg = Segment(partition_dir, base)
    try:
        return list(seg.headers(0, seg.file_bytes()))
    finally:
        seg.close()


def seg_path(partition_dir, base=0):
    return os.path.join(partition_dir, file_name(base))


def damage(path, position, data):
    with open(path, "r+b") as fh:
        fh.seek(position)
        fh.write(data)


def cut_files(partition_dir):
    return sorted(n for n in os.listdir(partition_dir) if ".cut-" in n)


def test_dead_writers_bytes_past_the_end_are_moved_aside(log_dir):
    log, p = fill(log_dir, 5)
    directory = p._log.directory
    position = p._log.state().active_position
    crash(log)
    debris = b"EvLg" + os.urandom(100)  # a batch a killed writer had begun
    damage(seg_path(directory), position, debris)
    with eventlog.open(log_dir) as log:
        p = log.topic("t").partition(0)
        assert p.end_offset == 5
        assert [r.value for r in p.read(0)] == values(5)
        (cut,) = cut_files(directory)
        with open(os.path.join(directory, cut), "rb") as fh:
            assert fh.read() == debris
        assert p.append(values(1, 5)) == 5
        assert [r.value for r in p.read(0)] == values(6)
        p._log._check()


def test_a_live_writer_cuts_debris_left_by_another_dead_writer(log_dir):
    with eventlog.open(log_dir) as log:
        p = log.create_topic("t").partition(0)
        p.append(values(3))
        with eventlog.open(log_dir) as other:
            q = other.topic("t").partition(0)
            q.append(values(1, 3))
            position = q._log.state().active_position
            damage(seg_path(p._log.directory), position, b"EvLg-half-written-batch")
        assert p.append(values(1, 4)) == 4
        assert [r.value for r in p.read(0)] == values(5)
        assert len(cut_files(p._log.directory)) == 1


def test_torn_tail_after_a_reboot_is_cut_and_kept_aside(log_dir):
    log, p = fill(log_dir, 10, fsync="never")
    log.close()  # clean: the durable point is offset 10
    log, p = fill(log_dir, 5, fsync="never")
    directory = p._log.directory
    crash(log)
    reboot(directory)
    pos13 = batch_positions(directory)[13][0]
    original_tail = open(seg_path(directory), "rb").read()[pos13:].rstrip(b"\0")
    damage(seg_path(directory), pos13 + 70, b"\xff\xfe")  # torn write inside batch 13
    with eventlog.open(log_dir) as log:
        p = log.topic("t").partition(0)
        assert p.end_offset == 13
        assert [r.value for r in p.read(0)] == values(13)
        (cut,) = cut_files(directory)
        kept = open(os.path.join(directory, cut), "rb").read()
        assert len(kept) == len(original_tail)
        assert p.append(values(1, 13)) == 13
        p._log._check()


def test_corruption_before_the_durable_point_raises_in_strict_mode(log_dir):
    log, p = fill(log_dir, 10, fsync="always")
    directory = p._log.directory
    crash(log)
    reboot(directory)
    pos3 = batch_positions(directory)[3][0]
    damage(seg_path(directory), pos3 + 70, b"\x00\x01")
    with pytest.raises(CorruptRecordError, match="durable point"):
        eventlog.open(log_dir)
    # nothing was changed by the failed open
    assert cut_files(directory) == []
    with eventlog.open(log_dir, recovery="truncate") as log:
        p = log.topic("t").partition(0)
        assert p.end_offset == 3
        assert [r.value for r in p.read(0)] == values(3)
        assert len(cut_files(directory)) == 1


def test_lost_head_is_rebuilt_from_the_segments(log_dir):
    with eventlog.open(log_dir, segment_bytes=300) as log:
        p = log.create_topic("t").partition(0)
        for i in range(20):
            p.append(values(1, i))
        directory = p._log.directory
    with open(os.path.join(directory, "head"), "r+b") as fh:
        fh.seek(64)
        fh.write(bytes(400))  # both state slots gone
    with eventlog.open(log_dir) as log:
        p = log.topic("t").partition(0)
        assert p.end_offset == 20
        assert [r.value for r in p.read(0, max_records=100)] == values(20)
        p._log._check()


def test_clean_shutdown_skips_validation_but_reads_still_verify(log_dir):
    with eventlog.open(log_dir, segment_bytes=300) as log:
        p = log.create_topic("t").partition(0)
        for i in range(20):
            p.append(values(1, i))
        directory = p._log.directory
    assert Head(os.path.join(directory, "head")).read().clean
    pos = batch_positions(directory)[1][0]
    damage(seg_path(directory), pos + 70, b"\x13")
    with eventlog.open(log_dir) as log:  # trusted: no scan, so no error on open
        p = log.topic("t").partition(0)
        assert p.end_offset == 20
        assert p.read(0, max_records=1)[0].value == values(1)[0]
        with pytest.raises(CorruptRecordError, match="checksum"):
            p.read(1)
        assert [r.value for r in p.read(2, max_records=100)] == values(18, 2)


def test_stray_bytes_after_the_last_batch_are_cut_after_a_reboot(log_dir):
    log, p = fill(log_dir, 4, fsync="never")
    directory = p._log.directory
    end = p._log.state().active_position
    crash(log)
    reboot(directory)
    damage(seg_path(directory), end + 500, b"garbage")
    with eventlog.open(log_dir) as log:
        p = log.topic("t").partition(0)
        assert p.end_offset == 4
        assert len(cut_files(directory)) == 1
        p.append(values(1, 4))
        assert [r.value for r in p.read(0)] == values(5)


def _segmented_log(log_dir, fsync):
    with eventlog.open(log_dir, segment_bytes=200, fsync=fsync) as log:
        p = log.create_topic("t").partition(0)
        for i in range(12):
            p.append(values(1, i))
        directory = p._log.directory
    bases = sorted(int(n[:20]) for n in os.listdir(directory) if n.endswith(".log"))
    assert len(bases) >= 4
    return directory, bases


def test_missing_segment_before_the_durable_point_fails_reads_not_silently(log_dir):
    directory, bases = _segmented_log(log_dir, "always")
    os.unlink(seg_path(directory, bases[1]))
    with eventlog.open(log_dir) as log:
        p = log.topic("t").partition(0)
        # the records before the gap first (as before a bad batch), then the error
        assert [r.value for r in p.read(0, max_records=100)] == values(bases[1], 0)
        with pytest.raises(CorruptRecordError, match="missing"):
            p.read(bases[1], max_records=100)
        # records after the gap stay readable
        assert [r.value for r in p.read(bases[2])] == values(12 - bases[2], bases[2])


def test_missing_segment_after_the_durable_point_is_a_lost_tail(log_dir):
    directory, bases = _segmented_log(log_dir, "never")
    reboot(directory)
    head = Head(os.path.join(directory, "head"))
    st = head.read()
    head.publish(st._replace(recovery_base=bases[0], recovery_position=0,
                             recovery_offset=bases[0]))
    head.close()
    os.unlink(seg_path(directory, bases[1]))
    with eventlog.open(log_dir) as log:
        p = log.topic("t").partition(0)
        assert p.end_offset == bases[1]
        assert [r.value for r in p.read(0)] == values(bases[1])
        assert any(".cut-" in n for n in os.listdir(directory))


def test_recovery_is_idempotent(log_dir):
    log, p = fill(log_dir, 8, fsync="never")
    directory = p._log.directory
    crash(log)
    reboot(directory)
    pos = batch_positions(directory)[6][0]
    damage(seg_path(directory), pos + 66, b"\x99")
    for _ in range(3):
        log = eventlog.open(log_dir)
        p = log.topic("t").partition(0)
        assert p.end_offset == 6
        assert [r.value for r in p.read(0)] == values(6)
        crash(log)
        reboot(directory)
    assert len(cut_files(directory)) == 1


def test_a_new_segment_never_adopts_the_index_of_a_lost_one(log_dir):
    # A power loss can keep a segment's index while its .log vanishes (the directory
    # entry of the .log was never synced): the segment that later gets the same base
    # must start with empty indexes, not with entries pointing into lost data.
    log, p = fill(log_dir, 0, segment_bytes=600, index_interval_bytes=64)
    for i in range(12):
        p.append([b"v-%03d-%s" % (i, b"x" * 40)])
    directory = p._log.directory
    lost = p._log.state().active_base
    assert lost > 0
    crash(log)
    index_files = [n for n in os.listdir(directory) if n.startswith(file_name(lost)[:20])
                   and not n.endswith(".log")]
    assert index_files, os.listdir(directory)
    os.unlink(seg_path(directory, lost))
    reboot(directory)
    with eventlog.open(log_dir, recovery="truncate") as log:
        p = log.topic("t").partition(0)
        assert p.end_offset == lost
        while p._log.state().active_base != lost:
            p.append([b"after-%03d-%s" % (p.end_offset, b"y" * 40)])
        for i in range(6):
            p.append([b"again-%d-%s" % (i, b"z" * 40)])
        p._log._check()
        records = p.read(lost, max_records=100)
        assert [r.offset for r in records] == list(range(lost, p.end_offset))
        assert all(r.value.startswith(b"again-") for r in records if r.offset > lost)
