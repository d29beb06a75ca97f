"""One segment and its indexes, on real files: append, scan, validate, seal, lookups,
cuts and the compaction swap. ``_check()`` runs after every mutation."""

from __future__ import annotations

import os

import pytest

from eventlog import CorruptRecordError
from eventlog._format import encode_batch
from eventlog._segment import (
    IndexPolicy,
    Segment,
    cleaned_path,
    file_name,
    finish_interrupted_swaps,
    is_leftover,
    list_bases,
    move_aside,
    parse_file_name,
    rename_aside,
    replace_with_cleaned,
)

INTERVAL = 100  # tiny index interval: an entry every few batches
SEGMENT_BYTES = 4096


def fill(segment, count, *, base=None, start_ts=1000, size=30):
    """Append ``count`` one-record batches as the partition would (index entries after
    each); return [(position, base offset, timestamp)] and the end position."""
    position = segment.data_end()
    offset = segment.base_offset if base is None else base
    max_ts = -1
    out = []
    for i in range(count):
        ts = start_ts + (i * 7) % 50  # timestamps that do not increase
        batch = encode_batch([b"%d:" % i + b"x" * size], timestamps_ms=ts)
        length = segment.append(batch, position, offset, SEGMENT_BYTES)
        max_ts = max(max_ts, ts)
        segment.index_batch(position, offset, max_ts, INTERVAL)
        out.append((position, offset, ts))
        position += length
        offset += 1
    return out, position


@pytest.fixture
def segment(tmp_path):
    seg = Segment(str(tmp_path), 100)
    seg.open_for_write()
    yield seg
    seg.close()


def test_file_names_are_20_digit_base_offsets_and_parse_back(tmp_path):
    assert file_name(7) == "00000000000000000007.log"
    assert file_name(7, ".index") == "00000000000000000007.index"
    assert parse_file_name(file_name(123456)) == 123456
    assert parse_file_name("00000000000000000007.index") is None
    assert parse_file_name("00000000000000000007.index", ".index") == 7
    assert parse_file_name("0000000000000000000x.log") is None
    for base in (30, 0, 12):
        open(tmp_path / file_name(base), "wb").close()
    open(tmp_path / "notes.log", "wb").close()
    assert list_bases(str(tmp_path)) == [0, 12, 30]


def test_appended_batches_read_back_and_scan_stops_at_unwritten_space(segment):
    written, end = fill(segment, 20)
    segment._check(end)
    assert segment.file_bytes() > end  # preallocated: zeros after the data
    headers = list(segment.headers(0, segment.file_bytes()))
    assert [(p, h.base_offset) for p, h in headers] == [(p, o) for p, o, _ in written]
    batches = list(segment.batches(0, end))
    assert [b.position for b in batches] == [p for p, _, _ in written]
    assert [b.values[0][:3] for b in batches[:2]] == [b"0:x", b"1:x"]
    assert segment.read_batch(end, segment.file_bytes()) is None
    assert segment.data_end() == end or segment.data_end() < end  # a batch may end in 0


def test_a_flipped_bit_stops_the_scan_after_the_good_batches(segment):
    written, end = fill(segment, 10)
    position = written[6][0]
    segment.mapping(end)[position + 40] ^= 0x01
    seen = []
    with pytest.raises(CorruptRecordError, match="checksum"):
        for pos, _ in segment.headers(0, end):
            seen.append(pos)
    assert seen == [p for p, _, _ in written[:6]]
    # without verification only the structure is checked: the scan goes on
    assert len(list(segment.headers(0, end, verify=False))) == 10
    result = segment.validate(0, segment.base_offset, end, INTERVAL, rebuild_indexes=False)
    assert (result.end_position, result.next_offset, result.batches) == (position, 106, 6)
    assert "checksum" in result.error


def test_rebuilt_indexes_equal_the_ones_written_live(segment):
    _, end = fill(segment, 40)
    segment.seal(end, 1049, INTERVAL)
    segment._check(end)
    live = (segment.indexes.offset.entries(), segment.indexes.time.entries())
    assert len(live[0]) > 5
    segment.rebuild_indexes(end, INTERVAL)
    segment._check(end)
    assert (segment.indexes.offset.entries(), segment.indexes.time.entries()) == live
    assert segment.sealed_indexes_ok(end)


def test_seal_adds_the_final_entries_sealed_facts_read_back(segment):
    written, end = fill(segment, 25)
    max_ts = max(ts for _, _, ts in written)
    assert not segment.sealed_indexes_ok(end)  # the last batch has no entry yet
    segment.seal(end, max_ts, INTERVAL)
    segment._check(end)
    assert segment.sealed_indexes_ok(end)
    assert segment.indexes.offset.last() == (written[-1][1], written[-1][0])
    assert segment.sealed_size(end) == end
    assert segment.sealed_max_timestamp(end, INTERVAL) == max_ts
    segment._check(end)


def test_find_position_uses_the_index_and_distrusts_a_garbled_entry(segment):
    written, end = fill(segment, 60)
    for position, offset, _ in written:
        assert segment.find_position(offset, end) == position
    assert segment.find_position(10**9, end) == end
    # garble an entry in memory: the lookup notices, scans and stops trusting the index
    index = segment.indexes.offset
    index.positions[3] += 1
    target = segment.base_offset + index.relative_offsets[3]
    assert segment.find_position(target, end) == dict((o, p) for p, o, _ in written)[target]
    assert not index.valid
    segment.prepare_writer_indexes(end, INTERVAL)  # the writer rebuilds it
    assert index.valid
    segment._check(end)


def test_find_time_never_skips_an_old_enough_record(segment):
    written, end = fill(segment, 50)
    segment.seal(end, max(ts for _, _, ts in written), INTERVAL)
    for target in range(990, 1060, 3):
        start = segment.find_time(target, end)
        first = next((o for p, o, ts in written if ts >= target), None)
        found = next((b.header.base_offset for b in segment.batches(start, end)
                      if b.header.max_timestamp_ms >= target), None)
        assert found == first, target


def test_unmap_drops_the_mapping_and_loaded_indexes_then_reads_map_again(segment):
    written, end = fill(segment, 12)
    segment.seal(end, 2000, INTERVAL)
    segment.find_position(written[5][1], end)
    assert segment.mapped_bytes > 0 and segment.indexes.loaded
    segment.unmap()
    assert segment.mapped_bytes == 0 and not segment.indexes.loaded
    assert len(segment.indexes.offset) == 0
    segment._check(end)
    assert segment.find_position(written[5][1], end) == written[5][0]
    assert segment.mapped_bytes > 0
    segment._check(end)


def test_reopened_segment_reads_the_indexes_written_before(tmp_path, segment):
    written, end = fill(segment, 30)
    segment.seal(end, 2000, INTERVAL)
    entries = segment.indexes.offset.entries()
    again = Segment(str(tmp_path), segment.base_offset)
    try:
        assert again.find_position(written[17][1], end) == written[17][0]
        assert again.indexes.offset.entries() == entries
        again._check(end)
    finally:
        again.close()


def test_index_policy_adds_an_entry_every_interval_and_final_entries():
    policy = IndexPolicy(100)
    for i, position in enumerate(range(0, 500, 40)):
        policy.observe(position, i, 10 * i)
    assert [p for _, p in policy.offset_entries] == [0, 120, 240, 360, 480]
    policy.finish(500)
    assert policy.offset_entries[-1] == (12, 480)
    assert policy.time_entries[-1][1] == 12  # the final entries name the last batch
    policy = IndexPolicy(100)
    for i, position in enumerate(range(0, 200, 40)):
        policy.observe(position, i, 10 * i)
    policy.finish(90)
    assert policy.offset_entries[-1] == (4, 160)
    assert policy.time_entries[-1] == (90, 4)


def test_move_aside_keeps_the_bytes_after_a_position_in_a_cut_file(tmp_path, segment):
    written, end = fill(segment, 8)
    cut_at = written[5][0]
    tail = bytes(segment.mapping(end)[cut_at:end])
    assert move_aside(segment, cut_at, 42) == len(tail.rstrip(b"\0"))
    (name,) = [n for n in os.listdir(tmp_path) if ".cut-" in n]
    assert name == file_name(segment.base_offset, f".cut-{cut_at}-42")
    assert open(tmp_path / name, "rb").read() == tail.rstrip(b"\0")
    assert segment.data_end() <= cut_at
    segment._check(cut_at)
    assert move_aside(segment, cut_at, 42) == 0  # nothing left to cut
    # a second cut at the same place and time gets a name of its own
    fill(segment, 2)
    move_aside(segment, cut_at, 42)
    assert len([n for n in os.listdir(tmp_path) if ".cut-" in n]) == 2


def test_rename_aside_moves_the_segment_and_its_indexes(tmp_path, segment):
    _, end = fill(segment, 30)
    segment.seal(end, 2000, INTERVAL)
    rename_aside(segment, 7)
    names = sorted(os.listdir(tmp_path))
    assert names == sorted(file_name(100, suffix) + ".cut-7"
                           for suffix in (".log", ".index", ".timeindex"))


def test_delete_unlinks_the_files_but_a_mapping_stays_readable(tmp_path, segment):
    written, end = fill(segment, 30)
    segment.seal(end, 2000, INTERVAL)
    mm = segment.mapping(end)
    segment.delete()
    assert os.listdir(tmp_path) == []
    assert len(list(segment.headers(0, end))) == 30  # the mapping survives the unlink
    assert mm[written[3][0]:written[3][0] + 4] == b"EvLg"


def test_swap_in_a_cleaned_copy_and_finish_an_interrupted_swap(tmp_path, segment):
    _, end = fill(segment, 20)
    segment.seal(end, 2000, INTERVAL)
    other = Segment(str(tmp_path), 500)
    other.open_for_write()
    _, other_end = fill(other, 3)
    other.sync()
    other.close()
    other.indexes.unlink()
    cleaned = cleaned_path(segment)
    os.replace(other.path, cleaned)
    assert is_leftover(os.path.basename(cleaned))
    replace_with_cleaned(segment, cleaned)
    assert sorted(os.listdir(tmp_path)) == [file_name(100)]  # old indexes gone
    fresh = Segment(str(tmp_path), 100)
    assert [h.base_offset for _, h in fresh.headers(0, fresh.file_bytes())] == [500, 501, 502]
    assert fresh.data_end() <= other_end
    fresh.close()
    # a swap that died after its first rename is completed by recovery
    os.replace(fresh.path, fresh.path + ".swap")
    open(cleaned_path(fresh), "wb").close()  # and an unfinished cleaning is dropped
    assert finish_interrupted_swaps(str(tmp_path)) == 2
    assert sorted(os.listdir(tmp_path)) == [file_name(100)]
