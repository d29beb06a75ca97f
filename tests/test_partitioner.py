"""Partition choice: murmur2, the sticky rule for keyless records, whole columns."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventlog import InvalidConfigError, InvalidRecordError
from eventlog._partitioner import (
    BULK_BLOCK_BYTES,
    RecordPartitioner,
    StickyPartitioner,
    check_partition,
    murmur2,
    murmur2_partition,
    xxhash_partition,
)


def test_murmur2_of_short_tails_and_the_empty_key():
    # Kafka's UtilsTest values, one per tail length (0..3 bytes after the last word)
    assert murmur2(b"") == 275646681
    assert [murmur2(b"abc"), murmur2(b"21"), murmur2(b"foobar")] == \
        [479470107, -973932308, -790332482]
    assert murmur2_partition("t", b"21", 4) == (-973932308 & 0x7FFFFFFF) % 4


def test_a_keyless_block_fills_then_moves_to_the_next_partition():
    sticky = StickyPartitioner(lambda n: 2)
    placed = [sticky.place("t", 3, 9, 50)[0] for _ in range(12)]  # 10 bytes a record
    assert placed == [2] * 5 + [0] * 5 + [1] * 2
    sticky._check()


def test_a_cursor_that_moved_on_is_retired():
    sticky = StickyPartitioner(lambda n: 0)
    _, first = sticky.place("t", 2, 100, 50)
    assert not first.retired
    _, second = sticky.place("t", 2, 1, 50)
    assert first.retired and first.filled >= 50 and second is not first
    assert second.partition(2) == 1
    sticky._check()


def test_each_topic_has_its_own_cursor():
    sticky = StickyPartitioner(lambda n: 0)
    assert sticky.place("a", 4, 100, 50)[0] == 0
    assert sticky.place("b", 4, 1, 50)[0] == 0
    assert sticky.place("a", 4, 1, 50)[0] == 1


@given(size=st.integers(0, 200), count=st.integers(1, 400), block=st.integers(1, 3000),
       partitions=st.integers(1, 7))
def test_runs_of_equal_records_go_where_one_by_one_would(size, count, block, partitions):
    one, many = StickyPartitioner(lambda n: 0), StickyPartitioner(lambda n: 0)
    expected = [one.place("t", partitions, size, block)[0] for _ in range(count)]
    got = []
    for p, indexes in many.runs("t", partitions, [size] * count, block):
        got.extend([p] * len(indexes))
    assert got == expected
    many._check()


def test_runs_are_contiguous_and_cover_the_column():
    sticky = StickyPartitioner(lambda n: 0)
    sizes = [7, 300, 1, 0, 90] * 50
    runs = sticky.runs("t", 3, sizes, 500)
    covered = list(itertools.chain.from_iterable(indexes for _, indexes in runs))
    assert covered == list(range(len(sizes)))


def test_an_idempotent_producer_starts_where_its_id_says():
    assert RecordPartitioner("xxhash", 100, 9).place_keyless("t", 4, 1)[0] == 9 % 4
    a = RecordPartitioner("xxhash", 100, None)
    assert 0 <= a.place_keyless("t", 4, 1)[0] < 4


def test_choose_checks_what_a_custom_partitioner_returns():
    calls = []
    last = RecordPartitioner(lambda t, k, n: calls.append((t, k, n)) or n - 1, 100, None)
    assert last.custom and not last.uses_sticky(None)
    assert last.choose("t", None, 4) == 3 and calls == [("t", None, 4)]
    for bad in (4, -1, "1", None):
        with pytest.raises(InvalidConfigError, match="partitioner returned"):
            RecordPartitioner(lambda t, k, n, bad=bad: bad, 100, None).choose("t", b"k", 4)
    with pytest.raises(InvalidConfigError):
        RecordPartitioner("modulo", 100, None)
    with pytest.raises(InvalidConfigError):
        RecordPartitioner(42, 100, None)  # type: ignore[arg-type]


def test_check_partition():
    assert check_partition(3, 4, "t") == 3
    for bad in (4, -1, True, "0", None):
        with pytest.raises(InvalidRecordError, match=r"topic 't' has partitions 0\.\.3"):
            check_partition(bad, 4, "t")


@pytest.mark.parametrize("name, function", [("xxhash", xxhash_partition),
                                            ("murmur2", murmur2_partition)])
def test_assign_places_a_keyed_column_where_choose_places_each_key(name, function):
    part = RecordPartitioner(name, 100, None)
    keys = [b"user-%d" % i for i in range(200)]
    groups = part.assign("t", 5, keys, [10] * 200, None)
    where = {i: p for p, indexes in groups for i in indexes}
    assert where == {i: function("t", k, 5) for i, k in enumerate(keys)}
    assert all(list(ix) == sorted(ix) for _, ix in groups)   # input order kept


def test_assign_with_some_keys_missing_puts_those_on_the_sticky_partition():
    part = RecordPartitioner("xxhash", 100, 1)
    keys = [b"a", None, b"b", None]
    where = {i: p for p, ix in part.assign("t", 4, keys, [5] * 4, None) for i in ix}
    assert where[1] == where[3] == 1                  # producer id 1: partition 1
    assert where[0] == xxhash_partition("t", b"a", 4)


def test_assign_keyless_fills_bulk_blocks_and_an_explicit_partition_wins():
    part = RecordPartitioner("xxhash", 100, 0)
    sizes = [1023] * 2048                               # 2 MiB: two blocks
    runs = part.assign("t", 4, None, sizes, None)
    assert [p for p, _ in runs] == [0, 1]
    assert len(runs[0][1]) == BULK_BLOCK_BYTES // 1024
    assert part.assign("t", 4, None, sizes, 3) == [(3, range(2048))]
    with pytest.raises(InvalidRecordError):
        part.assign("t", 4, None, sizes, 4)
