"""Fuzzing the readers of everything stored: batches, indexes, the offsets sidecar,
the partition head and whole segments. Random and mutated input may only raise
CorruptRecordError (or be read as the valid data it happens to be), and memory stays
bounded by the input, never by a length read from it."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tracemalloc

import msgpack
import pytest
import xxhash
from hypothesis import given
from hypothesis import strategies as st

import eventlog
from eventlog._format import (
    CHECKSUM_START,
    HEADER,
    HEADER_BYTES,
    MAGIC,
    decode_batch,
    encode_batch,
    write_batch,
)
from eventlog._head import FILE_BYTES, Head
from eventlog._index import OffsetIndex, TimeIndex
from eventlog._offsets import parse
from eventlog.errors import CorruptRecordError
from tests.conftest import ROOT, SOAK
from tests.faults import rebooted

STATS = {"inputs": 0}


def valid_batch():
    batch = encode_batch([b"a", None, b"ccc"], [b"k", None, b"k2"], [5, 6, 9],
                         [[("h", b"v")], None, None])
    buf = bytearray(batch.size)
    write_batch(buf, 0, batch, 7)
    return bytes(buf)


def with_checksum(buf: bytearray) -> bytearray:
    buf[8:16] = xxhash.xxh3_64_intdigest(bytes(buf[CHECKSUM_START:])).to_bytes(8, "little")
    return buf


def decode_only_corrupt(buf) -> None:
    STATS["inputs"] += 1
    try:
        batch = decode_batch(buf, 0, len(buf))
    except CorruptRecordError:
        return
    assert len(batch.values) == batch.header.record_count


mutations = st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8)


@given(mutations, st.booleans(), st.integers(0, 400))
def test_mutated_batches(changes, fix_checksum, cut):
    buf = bytearray(valid_batch())
    for position, value in changes:
        buf[position % len(buf)] = value
    if fix_checksum:
        with_checksum(buf)
    decode_only_corrupt(bytes(buf[:cut]) if cut < len(buf) else bytes(buf))


@given(st.binary(max_size=300), st.integers(0, 2**32 - 1), st.integers(0, 20))
def test_forged_payloads_with_valid_checksums(payload, length_claim, count):
    for body in (payload, msgpack.packb([[payload] * (count % 4), None, None, None, None])):
        buf = bytearray(HEADER_BYTES) + bytearray(body)
        HEADER.pack_into(buf, 0, MAGIC, len(buf), 0, 1, 0, 0, max(1, count), 0,
                         max(1, count) - 1, -1, 0, 0, -1)
        decode_only_corrupt(bytes(with_checksum(buf)))
    huge = bytearray(valid_batch())
    HEADER.pack_into(huge, 0, MAGIC, length_claim, 0, 1, 0, 0, 1, 0, 0, -1, 0, 0, -1)
    decode_only_corrupt(bytes(huge))


def test_memory_is_bounded_by_the_input_not_by_claimed_sizes():
    # msgpack containers that claim 2**32 - 1 elements, in a checksummed batch
    claims = [b"\xdd\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff", b"\xc6\xff\xff\xff\xff",
              b"\x95\xdd\xff\xff\xff\xff"]
    tracemalloc.start()
    for claim in claims:
        buf = bytearray(HEADER_BYTES) + bytearray(claim + bytes(64))
        HEADER.pack_into(buf, 0, MAGIC, len(buf), 0, 1, 0, 0, 1, 0, 0, -1, 0, 0, -1)
        decode_only_corrupt(bytes(with_checksum(buf)))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 8 << 20, f"decoding tiny hostile input peaked at {peak} bytes"


@given(st.binary(max_size=400))
def test_index_files_of_random_bytes(tmp_path_factory, data):
    path = str(tmp_path_factory.mktemp("idx") / "00000000000000000000.index")
    with open(path, "wb") as fh:
        fh.write(data)
    for cls in (OffsetIndex, TimeIndex):
        index = cls(path, 0)
        assert index.load() in (True, False)
        index.lookup(3)
        index.close()
        STATS["inputs"] += 1


@given(st.binary(max_size=400), mutations)
def test_offsets_sidecar_of_random_and_mutated_bytes(data, changes):
    parse(data)
    good = bytearray(b"EvLgOFS1" + bytes(8))
    from eventlog._offsets import encode_record
    from eventlog._types import TopicPartition

    for i in range(3):
        good += encode_record({TopicPartition("t", 0): i}, 0, 1, "m")
    for position, value in changes:
        good[position % len(good)] = value
    entries, valid_end, _ = parse(bytes(good))
    assert valid_end <= len(good)
    assert all(isinstance(off, int) for _, off in entries)
    STATS["inputs"] += 2


@given(st.binary(min_size=0, max_size=FILE_BYTES))
def test_partition_heads_of_random_bytes(tmp_path_factory, data):
    path = str(tmp_path_factory.mktemp("head") / "head")
    with open(path, "wb") as fh:
        fh.write(data)
    head = Head(path)
    try:
        state = head.read()
        assert state is None or state.seq >= 0
    finally:
        head.close()
    STATS["inputs"] += 1


@given(st.binary(min_size=1, max_size=600), st.sampled_from(["strict", "truncate"]))
def test_recovery_of_a_segment_full_of_random_bytes(tmp_path_factory, data, mode):
    root = tmp_path_factory.mktemp("log") / "log"
    with eventlog.open(root) as log:
        p = log.create_topic("t").partition(0)
        p.append([b"good"])
        segment = p._log._segments[0].path
    with open(segment, "r+b") as fh:
        fh.seek(0, os.SEEK_END)
        fh.write(data)
        fh.seek(200)
        fh.write(data[:50])
    with rebooted():
        try:
            log = eventlog.open(root, recovery=mode)
        except CorruptRecordError:
            assert mode == "strict"
            return
    with log:
        records = log.topic("t").partition(0).read(0)
        assert all(r.value == b"good" for r in records)
    STATS["inputs"] += 1


@pytest.mark.skipif(sys.platform != "linux", reason="atheris ships Linux wheels only")
def test_atheris_coverage_guided_fuzzing(tmp_path):
    if importlib.util.find_spec("atheris") is None:
        pytest.fail("atheris is in the test extras: pip install -e '.[test]'")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    runs = 3000 * SOAK
    result = subprocess.run([sys.executable, str(ROOT / "tests/fuzz/atheris_targets.py"),
                             f"-atheris_runs={runs}", "-max_len=512", "-seed=1"],
                            capture_output=True, text=True, cwd=tmp_path, env=env,
                            timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Done" in result.stderr
    STATS["inputs"] += runs
