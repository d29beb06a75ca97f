"""Value types of the public API: TopicPartition, Record, TimestampType, RecordMetadata.

``Record`` is a named tuple (as kafka-python's ``ConsumerRecord``), so records compare,
unpack and print like tuples and are cheap to build in bulk.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from enum import IntEnum
from functools import partial
from itertools import repeat
from typing import Any, NamedTuple

from ._format import ATTR_CONTROL, ATTR_LOG_APPEND_TIME, DecodedBatch


class TopicPartition(NamedTuple):
    """A partition of a topic: ``TopicPartition("orders", 0)``."""

    topic: str
    partition: int


class TimestampType(IntEnum):
    """Who set a record's ``timestamp_ms``: its producer (``CREATE_TIME``) or the log
    when it appended the record (``LOG_APPEND_TIME``, for topics created with
    ``timestamp_type="log_append_time"``, Kafka's ``message.timestamp.type``).

    The numbers are those of Kafka's Java client, kafka-python and aiokafka (0 and 1),
    so ``record.timestamp_type == 0`` works as there; ``str()`` gives Kafka's names,
    ``"CreateTime"`` and ``"LogAppendTime"``. (confluent-kafka numbers them 1 and 2:
    compare with the names, not the numbers, in code ported from it.)
    """

    CREATE_TIME = 0
    LOG_APPEND_TIME = 1

    def __str__(self) -> str:
        return _TIMESTAMP_TYPE_NAMES[self]


_TIMESTAMP_TYPE_NAMES = {TimestampType.CREATE_TIME: "CreateTime",
                         TimestampType.LOG_APPEND_TIME: "LogAppendTime"}


class Record(NamedTuple):
    """One record as a consumer or ``Partition.read`` returns it.

    ``headers`` is a list of ``(str, bytes)`` pairs (empty when there are none).
    ``timestamp_type`` says who set ``timestamp_ms`` (a ``TimestampType``: the
    producer, or the log at append time).
    """

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: Any
    value: Any
    headers: list[tuple[str, bytes]]
    timestamp_type: TimestampType = TimestampType.CREATE_TIME


class RecordMetadata(NamedTuple):
    """Where a produced record was stored: the result of a send future."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int


# tuple.__new__ bound to Record builds a record without a Python-level frame.
_make_record: Callable[[Any], Record] = partial(tuple.__new__, Record)
make_record = _make_record  # for the other backends' decoders

_CREATE, _LOG_APPEND = TimestampType.CREATE_TIME, TimestampType.LOG_APPEND_TIME

# Below this many records, pausing the collector is not worth the calls.
_GC_PAUSE_MIN_RECORDS = 256


def pause_gc(records: int) -> bool:
    """Pause the cyclic garbage collector before ``records`` acyclic objects are built,
    if that many are worth it and it runs; True if it was paused. The caller enables it
    again in a ``finally`` (``if paused: gc.enable()``), so a user's ``gc.disable()``
    stands and an error cannot leave it off.

    Records, their header lists and decoded columns cannot form cycles, yet each 700
    new containers trigger a collection that walks all young objects: measured, that
    tripled the cost of building records (967 -> 326 ns each).

    A call and a ``try``/``finally``, not a context manager: leaving a ``@contextmanager``
    generator raises a ``StopIteration``, a new container that set off the collection
    of the young records at once (while they are alive: a walk of every one of them),
    and a class's ``__enter__``/``__exit__`` are two more calls on a consumer's hot
    path. With nothing allocated after ``gc.enable()``, a caller that drops the records
    before it makes new containers (a poll loop handling a batch) never pays that walk:
    freeing them takes the young count back down.
    """
    if records >= _GC_PAUSE_MIN_RECORDS and gc.isenabled():
        gc.disable()
        return True
    return False


def records_from_batches(batches: Sequence[DecodedBatch], offset: int, topic: str,
                         partition: int, max_records: int | None = None,
                         key_fn: Callable[[Any], Any] | None = None,
                         value_fn: Callable[[Any], Any] | None = None) -> list[Record]:
    """Build ``Record`` tuples for every record at or after ``offset`` in ``batches``
    (control batches, a transaction's markers, hold none).

    ``key_fn``/``value_fn`` deserialize a whole column at once (they map a list to a
    list), so per-record work stays in C where the deserializer allows.
    Cost: O(records).
    """
    out: list[Record] = []
    remaining = max_records
    # (counted only while the collector runs: a consumer's fetch has paused it already)
    paused = gc.isenabled() and pause_gc(sum(b.header.record_count for b in batches))
    try:
        for batch in batches:
            header = batch.header
            if header.attributes & ATTR_CONTROL:
                continue  # a transaction's marker: never a record (as in Kafka)
            start = 0 if offset <= header.base_offset else batch.index_of(offset)
            count = header.record_count
            stop = count if remaining is None else min(count, start + remaining)
            if start >= stop:
                continue
            kind = _LOG_APPEND if header.attributes & ATTR_LOG_APPEND_TIME else _CREATE
            if stop - start == 1:
                # One record (a batch sent alone): its fields directly, deserialized as
                # a column of one; the columns below cost it ~1 us more
                # (tests/test_records_from_batches.py holds both to the batch's columns).
                at, timestamp, key, value, headers_i = batch.fields(start)
                if key_fn is not None and batch.keys is not None:
                    key = key_fn([key])[0]
                if value_fn is not None:
                    value = value_fn([value])[0]
                out.append(_make_record((topic, partition, at, timestamp, key, value,
                                         headers_i, kind)))
            else:
                _extend(out, batch, start, stop, topic, partition, kind, key_fn, value_fn)
            if remaining is not None:
                remaining -= stop - start
                if remaining <= 0:
                    break
    finally:
        if paused:
            gc.enable()
    return out


def _extend(out: list[Record], batch: DecodedBatch, start: int, stop: int, topic: str,
            partition: int, kind: TimestampType, key_fn: Callable[[Any], Any] | None,
            value_fn: Callable[[Any], Any] | None) -> None:
    """Records ``start:stop`` of ``batch``, built a column at a time."""
    whole = start == 0 and stop == batch.header.record_count
    values = batch.values if whole else batch.values[start:stop]
    keys: Any
    if batch.keys is None:
        keys = repeat(None)
    else:
        keys = batch.keys if whole else batch.keys[start:stop]
        if key_fn is not None:
            keys = key_fn(keys)
    if value_fn is not None:
        values = value_fn(values)
    offsets = batch.offsets()[start:stop]
    if batch.timestamp_deltas is None:
        timestamps: Any = repeat(batch.header.first_timestamp_ms)
    else:
        timestamps = batch.timestamps()[start:stop]
    headers: Any
    if batch.headers is None:
        headers = map(list, repeat((), stop - start))
    else:
        headers = batch.header_column()[start:stop]
    out.extend(map(_make_record, zip(repeat(topic), repeat(partition), offsets, timestamps,
                                     keys, values, headers, repeat(kind))))
