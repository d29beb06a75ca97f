"""Corruption matrix on a reference log: every single-bit flip, a truncation at every
byte, garbage after the tail, damaged indexes, and a damaged offsets sidecar."""

from __future__ import annotations

import json
import os
import random

import pytest

import eventlog
from eventlog import CorruptRecordError, TopicPartition
from eventlog._offsets import OffsetStore
from eventlog._segment import parse_file_name
from tests.faults import crash, rebooted

STATS = {"bits_flipped": 0, "cuts": 0, "records_checked": 0}


def build_reference(path, fsync="never", clean=True):
    """A small log: 3 segments, batches with and without keys, headers, timestamps."""
    log = eventlog.open(path, fsync=fsync, segment_bytes=420, index_interval_bytes=64)
    p = log.create_topic("t").partition(0)
    rng = random.Random(7)
    for i in range(14):
        n = rng.randint(1, 3)
        p.append([b"v%d.%d" % (i, j) for j in range(n)],
                 keys=[b"k%d" % (i % 4)] * n if i % 3 else None,
                 timestamps_ms=[1000 + 10 * i + j for j in range(n)],
                 headers=[[("h", b"%d" % i)]] * n if i % 5 == 0 else None)
    if clean:
        log.close()
    else:
        crash(log)


def read_all(log):
    p = log.topic("t").partition(0)
    return [(r.offset, r.key, r.value, r.timestamp_ms, r.headers)
            for r in p.read(p.start_offset, max_records=10**6)]


def batches(log):
    plog = log.topic("t").partition(0)._log
    st = plog.state()
    out = []
    for segment in plog.segments.published(st):
        for position, header in segment.headers(0, plog.segments.limit(segment, st)):
            out.append((segment, position, header))
    return out


def test_every_single_bit_flip_is_detected_and_no_wrong_record_returned(tmp_path):
    build_reference(tmp_path / "log")
    with eventlog.open(tmp_path / "log") as log:
        reference = read_all(log)
        p = log.topic("t").partition(0)
        for segment, position, header in batches(log):
            mm = segment.mapping(position + header.length)
            for byte in range(position, position + header.length):
                for bit in range(8):
                    mm[byte] ^= 1 << bit
                    p._log.segments.forget_positions()
                    try:
                        got = p.read(header.base_offset, max_records=header.record_count)
                    except CorruptRecordError:
                        got = None
                    finally:
                        mm[byte] ^= 1 << bit
                    assert got is None, (f"flip of bit {bit} at byte {byte - position} of "
                                         f"the batch at {position} was not detected")
                    STATS["bits_flipped"] += 1
        assert read_all(log) == reference


def _snapshot(root):
    files = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as fh:
                files[path] = fh.read()
    return files


def _restore(root, files):
    """Put the directory back as it was (faster than copying it for every cut)."""
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            if path not in files:
                os.unlink(path)
    for path, data in files.items():
        try:
            with open(path, "rb") as fh:
                if fh.read() == data:
                    continue
        except FileNotFoundError:
            pass
        with open(path, "wb") as fh:
            fh.write(data)


def test_truncation_at_every_byte_recovers_exactly_the_complete_batches(tmp_path):
    root = tmp_path / "log"
    build_reference(root, clean=False)
    log = eventlog.open(root)
    reference = read_all(log)
    layout = [(s.path, pos, h) for s, pos, h in batches(log)]
    crash(log)   # keep it an unclean log: recovery must then validate what it finds
    pristine = _snapshot(root)
    sizes = {path: max(pos + h.length for p2, pos, h in layout if p2 == path)
             for path, _, _ in layout}
    for path, size in sizes.items():
        base = parse_file_name(os.path.basename(path))
        for cut in range(size + 1):
            _restore(root, pristine)
            with open(path, "r+b") as fh:
                fh.truncate(cut)
            with rebooted():
                log = eventlog.open(root)
            got = read_all(log)
            crash(log)
            if cut >= size:      # nothing of this segment was cut: the log is whole
                expected_end = reference[-1][0] + 1
            else:
                complete = [h for p, pos, h in layout
                            if parse_file_name(os.path.basename(p)) < base
                            or (p == path and pos + h.length <= cut)]
                expected_end = max((h.next_offset for h in complete), default=0)
            assert got == [r for r in reference if r[0] < expected_end], (path, cut)
            STATS["cuts"] += 1
            STATS["records_checked"] += len(got)


@pytest.mark.parametrize("same_boot", [True, False])
def test_garbage_after_the_tail_is_moved_aside(tmp_path, same_boot):
    build_reference(tmp_path / "log", clean=False)
    with eventlog.open(tmp_path / "log") as log:
        reference = read_all(log)
        segment, position, header = batches(log)[-1]
        end = position + header.length
        path = segment.path
        crash(log)
    with open(path, "r+b") as fh:
        fh.seek(end)
        fh.write(os.urandom(300))
        fh.seek(0, os.SEEK_END)
        fh.write(os.urandom(100))          # past the allocated size too
    if same_boot:
        log = eventlog.open(tmp_path / "log")
    else:
        with rebooted():
            log = eventlog.open(tmp_path / "log")
    with log:
        assert read_all(log) == reference
        assert any(".cut-" in n for n in os.listdir(os.path.dirname(path)))
        log.topic("t").partition(0).append([b"next"])
        assert log.check().ok


@pytest.mark.parametrize("damage", ["delete", "truncate", "garble"])
def test_damaged_indexes_are_rebuilt_with_identical_lookups(tmp_path, damage):
    build_reference(tmp_path / "log")
    with eventlog.open(tmp_path / "log") as log:
        p = log.topic("t").partition(0)
        end = p.end_offset
        lookups = {o: p.read(o, max_records=1) for o in range(end)}
        times = {t: p.offset_for_time(t) for t in range(990, 1150, 7)}
        directory = p._log.directory
    rng = random.Random(damage)
    for name in os.listdir(directory):
        if not name.endswith((".index", ".timeindex")):
            continue
        path = os.path.join(directory, name)
        if damage == "delete":
            os.unlink(path)
        elif damage == "truncate":
            with open(path, "r+b") as fh:
                fh.truncate(rng.randrange(0, os.path.getsize(path)))
        else:
            with open(path, "r+b") as fh:
                data = bytearray(fh.read())
                for _ in range(6):
                    data[rng.randrange(len(data))] ^= rng.randrange(1, 256)
                fh.seek(0)
                fh.write(data)
    with eventlog.open(tmp_path / "log") as log:
        p = log.topic("t").partition(0)
        assert {o: p.read(o, max_records=1) for o in range(end)} == lookups
        assert {t: p.offset_for_time(t) for t in times} == times
        log.check(fix=True)
        assert log.check().ok   # every index consistent again


def test_every_bit_flip_in_the_offsets_sidecar_falls_back_to_a_good_commit(tmp_path):
    path = str(tmp_path / "g.offsets")
    store = OffsetStore(path, fsync=False)
    tp = TopicPartition("t", 0)
    for value in (10, 20, 30):
        store.commit({tp: value}, 0)
    original = open(path, "rb").read()
    for byte in range(len(original)):
        for bit in range(8):
            damaged = bytearray(original)
            damaged[byte] ^= 1 << bit
            with open(path, "wb") as fh:
                fh.write(damaged)
            got = OffsetStore(path, False).read().get(tp)
            assert got in (None, 10, 20, 30), (byte, bit, got)
            STATS["bits_flipped"] += 1
    with open(path, "wb") as fh:
        fh.write(original)
    assert OffsetStore(path, False).read() == {tp: 30}


def test_a_damaged_topic_file_leaves_the_rest_of_the_log_usable(tmp_path):
    # issue 18: a corrupt topic.json made the whole log unopenable
    path = tmp_path / "log"
    with eventlog.open(path) as log:
        log.create_topic("good").partition(0).append([b"kept"])
        log.create_topic("bad").partition(0).append([b"x"])
    topic_file = path / "topics" / "bad" / "topic.json"
    topic_file.write_bytes(b'{"format": 1, "name": "bad", "partit')   # cut short
    with eventlog.open(path) as log:
        assert [r.value for r in log.topic("good").partition(0).read(0)] == [b"kept"]
        log.topic("good").partition(0).append([b"more"])
        with pytest.raises(eventlog.InvalidConfigError, match=r"topic\.json"):
            log.topic("bad")
        report = log.check()
        (problem,) = report.problems
        assert (problem.kind, problem.path, problem.fixed) == ("topic", str(topic_file), False)
        assert log.metrics().partition("good", 0).end_offset == 2
        log.enforce_retention()


def test_a_damaged_marker_beside_a_log_layout_does_not_lock_the_log_away(tmp_path):
    path = tmp_path / "log"
    with eventlog.open(path) as log:
        log.create_topic("t").partition(0).append([b"kept"])
    marker = path / "eventlog.json"
    marker.write_bytes(b'{"format": 1, "creat')                       # cut short
    with eventlog.open(path, read_only=True) as log:                    # nothing written
        assert [r.value for r in log.topic("t").partition(0).read(0)] == [b"kept"]
    assert marker.read_bytes() == b'{"format": 1, "creat'
    with eventlog.open(path) as log:                                    # rewritten
        assert [r.value for r in log.topic("t").partition(0).read(0)] == [b"kept"]
    assert json.loads(marker.read_bytes())["format"] == 1
    other = tmp_path / "not-a-log"
    other.mkdir()
    (other / "eventlog.json").write_bytes(b"garbage")
    with pytest.raises(eventlog.LogDirectoryError, match="is damaged"):
        eventlog.open(other)
