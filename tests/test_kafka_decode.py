"""The Kafka backend's decoder: a long poll is built a column at a time, and gives the
records the message-by-message loop gives, error, unassigned partition and bad value
included (real ``confluent_kafka.Message`` objects, made with their own constructor);
and, on the session's broker, a consumer reads back every field of a long mixed poll.
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import eventlog
from tests.conftest import read_all, unique_name

confluent_kafka = pytest.importorskip("confluent_kafka")
from confluent_kafka import (  # noqa: E402
    TIMESTAMP_CREATE_TIME,
    TIMESTAMP_LOG_APPEND_TIME,
    KafkaError,
    Message,
)

from eventlog._kafka import _decode  # noqa: E402
from eventlog.serde import deserializer  # noqa: E402

ASSIGNED = {("a", 0), ("a", 1), ("b", 0)}

# msgpack values of many kinds (int map keys among them: the column pass refuses those)
GOOD_VALUES = [msgpack.packb(v) for v in (
    0, -7, 2**40, 2**64 - 1, "", "text", None, True, 1.5, [1, [2, None]], {"a": 1},
    {"k": "v", "b": b"\x00"}, {3: "int key"}, {1: {2: [3]}}, b"\xff" * 20)]
NOT_ONE_OBJECT = [b"\xc1", b"\x01\x02", b""]
ERRORS = [KafkaError._PARTITION_EOF, KafkaError._TRANSPORT, KafkaError.UNKNOWN_TOPIC_OR_PART]


@st.composite
def messages(draw: Any) -> list[Any]:
    """Polls of up to 48 messages, short and long, most of them all plain; an odd
    message is an error, one of a partition not assigned, or a value that is not one
    msgpack object. (Built from one seeded ``Random``: per-field draws would overrun
    Hypothesis's buffer on long polls.)"""
    count = draw(st.one_of(st.integers(0, 15), st.integers(16, 48)))
    rare = draw(st.sampled_from([0.0, 0.0, 0.02, 0.1]))   # how often a message is odd
    rnd = draw(st.randoms(use_true_random=False))
    offsets: dict[tuple[str, int], int] = {}
    out = []
    for _ in range(count):
        odd = rnd.random() < rare
        if odd and rnd.random() < 0.4:
            out.append(Message(error=KafkaError(rnd.choice(ERRORS))))
            continue
        tp = rnd.choice(sorted(ASSIGNED) + ([("c", 0)] if odd else []))
        offset = offsets[tp] = offsets.get(tp, -1) + rnd.randint(1, 3)
        value = rnd.choice(GOOD_VALUES + (NOT_ONE_OBJECT if odd else []))
        headers = rnd.choice([None, None, [], [("h", b"v")], [("h", None), ("i", b"")]])
        out.append(Message(
            topic=tp[0], partition=tp[1], offset=offset,
            key=rnd.choice([None, None, msgpack.packb("k"), msgpack.packb(rnd.randint(0, 9))]),
            value=None if rnd.random() < 0.1 else value, headers=headers,
            timestamp=(rnd.choice([TIMESTAMP_CREATE_TIME] * 3 + [TIMESTAMP_LOG_APPEND_TIME]),
                       rnd.randint(0, 2**41))))
    return out


def _outcome(result: tuple[list[Any], list[Any], Any]) -> tuple[Any, ...]:
    records, rest, error = result
    return (records, [id(m) for m in rest],
            None if error is None else (type(error), str(error)))


@settings(max_examples=300, deadline=None)
@given(messages(), st.sampled_from([None, "bytes", "json"]))
def test_the_column_decoder_gives_what_the_loop_gives(msgs, spec):
    de = deserializer(spec)
    by_columns: dict[Any, int] = {}
    by_loop: dict[Any, int] = {}
    columns = _decode._columns(msgs, ASSIGNED, de, de, {})
    loop_ends: dict[tuple[str, int], int] = {}
    looped = _decode._decode(msgs, ASSIGNED, de, de, loop_ends)
    assert _outcome(_decode.to_records(msgs, ASSIGNED, de, de, by_columns)) == _outcome(looped)
    for (topic, partition), offset in loop_ends.items():
        by_loop[eventlog.TopicPartition(topic, partition)] = offset + 1
    assert by_columns == by_loop
    if columns is not None:   # the common case: every message returned, in order
        assert columns == _decode._decode(msgs, ASSIGNED, de, de, {})[0]
        assert len(columns) == len(msgs)


def test_the_column_decoder_takes_the_common_case_and_leaves_the_rest():
    de = deserializer(None)
    plain = [Message(topic="a", partition=0, offset=i, value=msgpack.packb({"n": i}),
                     timestamp=(TIMESTAMP_CREATE_TIME, 1000 + i)) for i in range(20)]
    ends: dict[tuple[str, int], int] = {}
    records = _decode._columns(plain, ASSIGNED, de, de, ends)
    assert records is not None and [r.value for r in records] == [{"n": i} for i in range(20)]
    assert ends == {("a", 0): 19}
    assert records[0].headers == [] and records[0].headers is not records[1].headers
    for odd in (Message(error=KafkaError(KafkaError._PARTITION_EOF)),
                Message(topic="c", partition=0, offset=0, value=msgpack.packb(1)),
                Message(topic="a", partition=0, offset=20, value=b"\xc1")):
        untouched: dict[tuple[str, int], int] = {}
        assert _decode._columns([*plain, odd], ASSIGNED, de, de, untouched) is None
        assert untouched == {}


def test_a_long_mixed_poll_reads_back_every_field(any_log):
    topic = unique_name()
    any_log.create_topic(topic, partitions=2)
    sent = [dict(value=None if i % 7 == 3 else {"i": i, 5: "int key"} if i % 11 == 0
                 else {"i": i},
                 key=None if i % 2 else f"k{i}",
                 headers=[("h", str(i).encode())] if i % 3 == 0 else None,
                 partition=i % 2, timestamp_ms=1_700_000_000_000 + i)
            for i in range(300)]
    with eventlog.Producer(any_log) as producer:
        for record in sent:
            producer.send(topic, **record)
    got = read_all(any_log, topic)
    by_partition = [[s for s in sent if s["partition"] == p] for p in (0, 1)]
    expected = [(p, n, s["timestamp_ms"], s["key"], s["value"], s["headers"] or [])
                for p in (0, 1) for n, s in enumerate(by_partition[p])]
    assert [(r.partition, r.offset, r.timestamp_ms, r.key, r.value, r.headers)
            for r in got] == expected
