"""librdkafka's messages -> eventlog ``Record``s, with the deserializers.

Stops at the first message it cannot return (a deserializer that raised, or a
non-transient error) and hands back the records before it, the messages not
returned, and the error: the consumer returns the records and raises the error when
nothing precedes it, as Kafka's consumer does.

A poll of many messages is decoded a column at a time (``_columns``): each accessor of
a librdkafka message mapped over all of them in C, the keys and values deserialized a
column at a time (``_deserialize.column_function``: one C-level map for the built-in
deserializer), the records zipped together. That is the common case: no error among
the messages, every one of an assigned partition, every key and value decodable.
Anything else goes message by message (``_decode``), which finds what to drop, what
to skip and where to stop; both give the same records.
"""

from __future__ import annotations

import gc
from collections.abc import Container, MutableMapping
from itertools import repeat
from operator import itemgetter
from typing import Any

from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME, KafkaError, Message

from .._deserialize import DeserializeError, column_function
from .._records import serialization_error
from .._types import Record, TimestampType, TopicPartition, make_record, pause_gc
from ..errors import EventLogError, SerializationError
from ..serde import Deserializer
from ._errors import translate

# transient: librdkafka retries them itself
QUIET = {KafkaError._PARTITION_EOF, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN,
         KafkaError._TIMED_OUT, KafkaError._RESOLVE, KafkaError.NOT_COORDINATOR,
         KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
         KafkaError.LEADER_NOT_AVAILABLE, KafkaError.NOT_LEADER_FOR_PARTITION}

# confluent-kafka numbers timestamp types 1 and 2; eventlog as Kafka's Java client
_CREATE, _LOG_APPEND = TimestampType.CREATE_TIME, TimestampType.LOG_APPEND_TIME

# Below this many messages, the passes of _columns cost more than the loop of _decode.
_COLUMNS_MIN = 16

# A message's accessors, to map over a list of messages
_ERROR, _TOPIC, _PARTITION, _OFFSET = Message.error, Message.topic, Message.partition, \
    Message.offset
_KEY, _VALUE, _HEADERS, _TIMESTAMP = Message.key, Message.value, Message.headers, \
    Message.timestamp
_FIRST, _SECOND = itemgetter(0), itemgetter(1)


def to_records(messages: list[Any], assigned: Container[tuple[str, int]],
               key_de: Deserializer, value_de: Deserializer,
               positions: MutableMapping[TopicPartition, int]
               ) -> tuple[list[Record], list[Any], EventLogError | None]:
    """``(records, messages not returned, error or None)``; messages of partitions not
    in ``assigned`` (fetched before a rebalance took them away) are dropped.
    ``positions`` gets, for each partition, the offset after its last record returned.

    Cost: per message, its accessors (mapped in C over a long poll), the deserializers
    (a column at a time) and one tuple; the partition check runs once per partition.
    The cyclic collector is paused while a poll's records are built (``pause_gc``:
    records and decoded values form no cycles), as on a log directory: each 700 new
    containers (a record, its decoded dict) would otherwise set off a walk of all the
    young ones, which cost a poll of 500 msgpack dicts a third of its time
    (docs/kafka-backend.md)."""
    ends: dict[tuple[str, int], int] = {}
    paused = pause_gc(len(messages))
    try:
        records = _columns(messages, assigned, key_de, value_de, ends) \
            if len(messages) >= _COLUMNS_MIN else None
        result = (records, [], None) if records is not None else \
            _decode(messages, assigned, key_de, value_de, ends)
        for (topic, partition), offset in ends.items():
            positions[TopicPartition(topic, partition)] = offset + 1
        return result
    finally:
        if paused:
            gc.enable()


def _columns(messages: list[Any], assigned: Container[tuple[str, int]],
             key_de: Deserializer, value_de: Deserializer, ends: dict[tuple[str, int], int]
             ) -> list[Record] | None:
    """The records of ``messages`` built column by column, or None (``ends``
    untouched) when the common case does not hold: an error among them, one of a
    partition not in ``assigned``, a key or value that fails to deserialize."""
    count = len(messages)
    if any(map(_ERROR, messages)):   # (a KafkaError is true, even code 0)
        return None
    topics: list[Any] = list(map(_TOPIC, messages))
    partitions: list[Any] = list(map(_PARTITION, messages))
    offsets: list[Any] = list(map(_OFFSET, messages))
    # each partition's last offset (dict keeps the last value of a key)
    tps: dict[Any, Any] = dict(zip(zip(topics, partitions, strict=True), offsets, strict=True))
    if not all(tp in assigned for tp in tps):
        return None
    keys: Any = list(map(_KEY, messages))
    try:
        keys = repeat(None, count) if keys.count(None) == count else \
            column_function(key_de)(keys)
        values = column_function(value_de)(list(map(_VALUE, messages)))
    except DeserializeError:
        return None
    given: list[Any] = list(map(_HEADERS, messages))
    headers: Any = map(list, repeat((), count)) if given.count(None) == count else \
        [[(k, b"" if v is None else v) for k, v in h] if h else [] for h in given]
    stamps: list[Any] = list(map(_TIMESTAMP, messages))
    kinds: Any = repeat(_CREATE, count) if TIMESTAMP_LOG_APPEND_TIME not in \
        map(_FIRST, stamps) else \
        [_LOG_APPEND if kind == TIMESTAMP_LOG_APPEND_TIME else _CREATE for kind, _ in stamps]
    records = list(map(make_record, zip(topics, partitions, offsets,
                                        map(_SECOND, stamps), keys, values, headers, kinds,
                                        strict=True)))
    ends.update(tps)
    return records


def _decode(messages: list[Any], assigned: Container[tuple[str, int]],
            key_de: Deserializer, value_de: Deserializer, ends: dict[tuple[str, int], int]
            ) -> tuple[list[Record], list[Any], EventLogError | None]:
    # Names local, one comparison of ints then strs per message for the partition
    # run, a partition's end noted once per run (``returned``), the deserializer's
    # error handled apart from the hot path.
    out: list[Record] = []
    append, make = out.append, make_record
    create, log_append, log_append_time = _CREATE, _LOG_APPEND, TIMESTAMP_LOG_APPEND_TIME
    last: tuple[str, int] = ("", -1)
    last_topic, last_partition, wanted, returned = "", -1, False, -1
    for i, msg in enumerate(messages):
        error = msg.error()
        if error is not None:
            if error.code() in QUIET or error.retriable():
                continue
            _note(ends, last, returned)
            return out, messages[i + 1:], translate(error, "consuming")
        topic, partition = msg.topic(), msg.partition()
        if partition != last_partition or topic != last_topic:
            _note(ends, last, returned)
            last_topic, last_partition, returned = topic, partition, -1
            last = (topic, partition)
            wanted = last in assigned
        if not wanted:
            continue
        key, value = msg.key(), msg.value()
        try:
            if key is not None:
                key = key_de(key)
        except Exception as exc:
            _note(ends, last, returned)
            return out, messages[i:], _undecodable(msg, "key", exc)
        try:
            if value is not None:
                value = value_de(value)
        except Exception as exc:
            _note(ends, last, returned)
            return out, messages[i:], _undecodable(msg, "value", exc)
        headers = msg.headers()
        offset = msg.offset()
        kind, timestamp = msg.timestamp()
        append(make((topic, partition, offset, timestamp, key, value,
                     [(k, b"" if v is None else v) for k, v in headers] if headers else [],
                     log_append if kind == log_append_time else create)))
        returned = offset
    _note(ends, last, returned)
    return out, [], None


def _note(ends: dict[tuple[str, int], int], tp: tuple[str, int], offset: int) -> None:
    if offset >= 0:
        ends[tp] = offset


def _undecodable(msg: Any, what: str, exc: Exception) -> SerializationError:
    """The error of a message whose key or value the deserializer refused."""
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    base = serialization_error(topic, what, exc, verb="deserialize")
    raised = SerializationError(f"{base} at {topic}[{partition}] offset {offset}; "
                                "seek past it to skip it")
    raised.topic, raised.partition, raised.offset = topic, partition, offset
    raised.__cause__ = exc
    return raised
