"""A consumer decodes a column of msgpack values in one pass (serde.column_unpacker),
and still names the exact record when one value is not a single msgpack object; a
column whose maps have keys the pass refuses (ints) decodes alike."""

from __future__ import annotations

import msgpack
import pytest

import eventlog
from eventlog.serde import column_unpacker, deserializer


def _write(log, values):
    log.create_topic("t")
    with eventlog.Producer(log, value_serializer="bytes") as producer:
        producer.send_batch("t", values)


def _poll_all(consumer, expected):
    got = []
    while len(got) < expected:
        batch = consumer.poll(timeout=5)
        assert batch, "no records came"
        got.extend(batch)
    return got


def test_a_column_of_values_round_trips_int_keys_and_all(tmp_path):
    values = [{"id": i, 7: [i, None, True], "b": b"\x00" * i, "f": i / 3} for i in range(40)]
    with eventlog.open(tmp_path) as log:
        _write(log, [msgpack.packb(v) for v in values])
        with eventlog.Consumer(log, "t") as consumer:
            assert [r.value for r in _poll_all(consumer, 40)] == values


@pytest.mark.parametrize("bad", [
    [b"\x92\x01", b"\x02\x03"],   # an array cut short, then two objects: they line up when joined
    [b""],                        # no object at all
    [b"\x01\x02"],                # two objects in one value
    [b"\xc1"],                    # never valid msgpack
], ids=["spanning", "empty", "two-objects", "invalid"])
def test_a_value_that_is_not_one_msgpack_object_is_named(tmp_path, bad):
    good = [msgpack.packb(i) for i in range(10)]
    with eventlog.open(tmp_path) as log:
        _write(log, good + bad + good)
        with eventlog.Consumer(log, "t") as consumer:
            before = consumer.poll(timeout=5)
            assert [r.value for r in before] == list(range(10))
            with pytest.raises(eventlog.SerializationError) as info:
                consumer.poll(timeout=5)
            assert info.value.offset == 10
            assert consumer.position(eventlog.TopicPartition("t", 0)) == 10


def test_only_the_builtin_msgpack_deserializer_has_a_column_pass():
    whole = column_unpacker(deserializer(None))
    assert whole is not None
    assert whole([msgpack.packb(x) for x in ("a", 1, [2])]) == ["a", 1, [2]]
    assert whole([b"\x92\x01", b"\x02\x03"]) is None
    assert whole([msgpack.packb({1: "int key"})]) is None    # the caller's keywords decode it
    assert whole([memoryview(msgpack.packb({"k": [1.5, None]}))]) == [{"k": [1.5, None]}]
    assert column_unpacker(deserializer("json")) is None
    assert column_unpacker(lambda b: b) is None
