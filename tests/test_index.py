"""Offset and time indexes: format, search, incremental load, damage detection."""

from __future__ import annotations

import os

from eventlog._index import HEADER_BYTES, OffsetIndex, TimeIndex


def test_offset_index_lookup_finds_last_entry_at_or_before(tmp_path):
    idx = OffsetIndex(str(tmp_path / "0.index"), 100)
    for off, pos in [(100, 0), (110, 500), (130, 1200)]:
        idx.append(off, pos)
    assert idx.lookup(99) == (100, 0)
    assert idx.lookup(100) == (100, 0)
    assert idx.lookup(129) == (110, 500)
    assert idx.lookup(130) == (130, 1200)
    assert idx.lookup(10**9) == (130, 1200)
    assert os.path.getsize(idx.path) == HEADER_BYTES + 3 * 8


def test_reload_reads_what_was_written(tmp_path):
    path = str(tmp_path / "0.index")
    writer = OffsetIndex(path, 0)
    writer.append(0, 0)
    writer.append(5, 64)
    reader = OffsetIndex(path, 0)
    assert reader.load()
    assert reader.entries() == [(0, 0), (5, 64)]
    writer.append(9, 300)
    assert reader.refresh()
    assert reader.last() == (9, 300)


def test_torn_trailing_entry_is_ignored(tmp_path):
    path = str(tmp_path / "0.index")
    idx = OffsetIndex(path, 0)
    idx.append(0, 0)
    idx.append(4, 100)
    with open(path, "ab") as fh:
        fh.write(b"\x07\x00\x00")  # a partial entry, as a crash could leave
    reader = OffsetIndex(path, 0)
    assert reader.load()
    assert len(reader) == 2


def test_non_monotonic_entries_mark_the_index_invalid(tmp_path):
    path = str(tmp_path / "0.index")
    idx = OffsetIndex(path, 0)
    idx.append(0, 0)
    idx.append(10, 100)
    with open(path, "r+b") as fh:
        fh.seek(HEADER_BYTES + 8)
        fh.write((5).to_bytes(4, "little") + (50).to_bytes(4, "little"))
        fh.write((3).to_bytes(4, "little") + (40).to_bytes(4, "little"))
    reader = OffsetIndex(path, 0)
    assert not reader.load()
    assert not reader.valid


def test_wrong_header_or_missing_file_is_invalid(tmp_path):
    path = str(tmp_path / "0.index")
    assert not OffsetIndex(path, 0).load()
    OffsetIndex(path, 0).append(0, 0)
    assert not OffsetIndex(path, 7).load()  # base offset disagrees with the header
    with open(path, "r+b") as fh:
        fh.write(b"garbage!")
    assert not OffsetIndex(path, 0).load()


def test_time_index_lookup_returns_scan_start(tmp_path):
    idx = TimeIndex(str(tmp_path / "0.timeindex"), 0)
    for ts, off in [(1000, 0), (2000, 10), (2000, 15), (5000, 20)]:
        idx.append(ts, off)
    # (2000, 15) does not raise the largest timestamp, so it is kept only if the offset
    # grows; lookups return the offset of the last entry strictly below the target.
    assert idx.lookup(500) == 0
    assert idx.lookup(1000) == 0
    assert idx.lookup(1500) == 0
    assert idx.lookup(2500) in (10, 15)
    assert idx.lookup(9999) == 20
    assert idx.max_timestamp() == 5000


def test_write_all_replaces_atomically(tmp_path):
    path = str(tmp_path / "0.index")
    idx = OffsetIndex(path, 0)
    idx.append(0, 0)
    idx.write_all([(0, 0), (3, 90), (8, 400)])
    again = OffsetIndex(path, 0)
    assert again.load()
    assert again.entries() == [(0, 0), (3, 90), (8, 400)]
    assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n]
