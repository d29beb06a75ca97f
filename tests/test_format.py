"""The batch byte layout: round trips, checksum coverage, and hostile input."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventlog import CorruptRecordError
from eventlog._format import (
    ATTR_SPARSE,
    CHECKSUM_START,
    HEADER,
    HEADER_BYTES,
    MAGIC,
    decode_batch,
    encode_batch,
    read_batch_header,
    write_batch,
)
from eventlog._types import records_from_batches


def place(batch, base_offset=0, size=None):
    buf = bytearray(size or batch.size)
    length = write_batch(buf, 0, batch, base_offset)
    assert length == batch.size
    return buf


def test_header_is_64_bytes_and_starts_with_magic():
    batch = encode_batch([b"v"], timestamps_ms=5)
    buf = place(batch, 7)
    assert HEADER_BYTES == 64
    assert bytes(buf[:4]) == MAGIC
    header = read_batch_header(buf, 0, len(buf))
    assert header.base_offset == 7
    assert header.record_count == 1
    assert header.first_timestamp_ms == header.max_timestamp_ms == 5
    assert header.length == len(buf)
    assert header.next_offset == 8


def test_round_trip_of_every_column():
    values = [b"a", None, b"ccc"]
    keys = [b"k1", b"k2", None]
    timestamps = [100, 90, 120]
    headers = [[("trace", b"x")], None, [("a", b""), ("b", b"\x00")]]
    buf = place(encode_batch(values, keys, timestamps, headers), 10)
    batch = decode_batch(buf, 0, len(buf))
    assert batch.values == values
    assert batch.keys == keys
    assert list(batch.timestamps()) == timestamps
    assert batch.header.max_timestamp_ms == 120
    assert list(batch.offsets()) == [10, 11, 12]
    assert batch.header_column() == [[("trace", b"x")], [], [("a", b""), ("b", b"\x00")]]


def test_uniform_columns_are_stored_as_nil():
    buf = place(encode_batch([b"x", b"y"], [None, None], [3, 3], [None, None]))
    payload = msgpack.unpackb(bytes(buf[HEADER_BYTES:]))
    assert payload == [[b"x", b"y"], None, None, None, None]


def test_sparse_batch_keeps_offset_gaps():
    buf = place(encode_batch([b"a", b"b"], offset_deltas=[0, 5]), 100)
    batch = decode_batch(buf, 0, len(buf))
    assert batch.header.attributes & ATTR_SPARSE
    assert list(batch.offsets()) == [100, 105]
    assert batch.header.next_offset == 106
    assert batch.index_of(101) == 1
    records = records_from_batches([batch], 101, "t", 0)
    assert [r.offset for r in records] == [105]


@given(st.lists(st.one_of(st.none(), st.binary(max_size=50)), min_size=1, max_size=30),
       st.integers(min_value=0, max_value=2**40))
def test_round_trip_property(values, base):
    buf = place(encode_batch(values, timestamps_ms=[1000 + i for i in range(len(values))]),
                base)
    batch = decode_batch(buf, 0, len(buf))
    assert batch.values == values
    assert list(batch.offsets()) == list(range(base, base + len(values)))


def test_every_single_bit_flip_is_detected():
    buf = place(encode_batch([b"hello", b"world"], [b"k", None], [1, 2],
                             [[("h", b"v")], None]), 42)
    original = bytes(buf)
    for byte in range(len(original)):
        for bit in range(8):
            damaged = bytearray(original)
            damaged[byte] ^= 1 << bit
            with pytest.raises(CorruptRecordError):
                decode_batch(damaged, 0, len(damaged))


def test_length_beyond_limit_is_refused():
    buf = place(encode_batch([b"x" * 10]))
    with pytest.raises(CorruptRecordError, match="impossible length"):
        decode_batch(buf, 0, len(buf) - 1)


def test_truncated_header_is_refused():
    with pytest.raises(CorruptRecordError, match="truncated"):
        decode_batch(b"EvLg" + bytes(20), 0, 24)


def _forge(payload_obj, count=1, attributes=0, last_delta=None):
    """A batch with a valid checksum over an arbitrary payload."""
    payload = msgpack.packb(payload_obj, use_bin_type=True)
    length = HEADER_BYTES + len(payload)
    buf = bytearray(length)
    HEADER.pack_into(buf, 0, MAGIC, length, 0, 1, attributes, 0, count, 0,
                     count - 1 if last_delta is None else last_delta, -1, 0, 0, -1)
    buf[HEADER_BYTES:] = payload
    import xxhash

    buf[8:16] = xxhash.xxh3_64_intdigest(bytes(buf[CHECKSUM_START:])).to_bytes(8, "little")
    return buf


@pytest.mark.parametrize("payload", [
    b"not a list",
    [[b"a"]],
    [[b"a", b"b"], None, None, None, None],          # count mismatch
    [["str-not-bytes"], None, None, None, None],
    [[b"a"], [1], None, None, None],
    [[b"a"], None, ["x"], None, None],
    [[b"a"], None, None, [[[1, b"v"]]], None],
    [[b"a"], None, None, [[["k", "v"]]], None],
    [[b"a"], None, None, None, [0]],                  # dense batch with offsets
    {"a": 1},
])
def test_structurally_wrong_payloads_raise_corrupt(payload):
    buf = _forge(payload)
    with pytest.raises(CorruptRecordError):
        decode_batch(buf, 0, len(buf))


def test_sparse_offsets_must_increase_and_match_header():
    buf = _forge([[b"a", b"b"], None, None, None, [3, 1]], count=2, attributes=ATTR_SPARSE,
                 last_delta=3)
    with pytest.raises(CorruptRecordError, match="increase"):
        decode_batch(buf, 0, len(buf))
    buf = _forge([[b"a", b"b"], None, None, None, [0, 7]], count=2, attributes=ATTR_SPARSE,
                 last_delta=5)
    with pytest.raises(CorruptRecordError, match="past the header's span"):
        decode_batch(buf, 0, len(buf))
    # a span past the last record is fine: compaction removed the records after it
    buf = _forge([[b"a", b"b"], None, None, None, [0, 1]], count=2, attributes=ATTR_SPARSE,
                 last_delta=5)
    assert decode_batch(buf, 0, len(buf)).header.next_offset == 6


def test_an_empty_span_batch_covers_offsets_without_records():
    buf = place(encode_batch([], offset_deltas=[], span=9, timestamps_ms=5), 100)
    batch = decode_batch(buf, 0, len(buf))
    assert batch.header.record_count == 0 and batch.header.next_offset == 110
    assert list(batch.offsets()) == [] and records_from_batches([batch], 100, "t", 0) == []
    with pytest.raises(ValueError):
        encode_batch([])           # only a sparse span may be empty
    dense = _forge([[], None, None, None, None], count=1)
    dense[20:24] = (0).to_bytes(4, "little")  # record_count 0 on a dense batch
    with pytest.raises(CorruptRecordError):
        decode_batch(dense, 0, len(dense))


@given(st.binary(min_size=0, max_size=400))
def test_random_bytes_only_raise_corrupt(data):
    try:
        decode_batch(data, 0, len(data))
    except CorruptRecordError:
        pass


@given(st.binary(min_size=1, max_size=200), st.integers(min_value=1, max_value=5))
def test_forged_checksummed_payloads_only_raise_corrupt(junk, count):
    buf = bytearray(HEADER_BYTES) + bytearray(junk)
    HEADER.pack_into(buf, 0, MAGIC, len(buf), 0, 1, 0, 0, count, 0, count - 1, -1, 0, 0, -1)
    import xxhash

    buf[8:16] = xxhash.xxh3_64_intdigest(bytes(buf[CHECKSUM_START:])).to_bytes(8, "little")
    try:
        batch = decode_batch(buf, 0, len(buf))
    except CorruptRecordError:
        return
    assert len(batch.values) == count
