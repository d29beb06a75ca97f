"""Kafka's errors, translated once into eventlog's error tree.

Every call into confluent-kafka that can fail goes through :func:`translate` (for a
``KafkaError``) or the :func:`kafka_errors` context manager (for a raised
``KafkaException``), so no librdkafka exception escapes the public API.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from ..errors import (
    BrokerUnavailableError,
    ClosedError,
    ClusterError,
    CommitFailedError,
    EventLogError,
    InvalidConfigError,
    InvalidGroupError,
    InvalidTopicError,
    OffsetOutOfRangeError,
    ProducerFencedError,
    RecordTooLargeError,
    TopicExistsError,
    UnknownGroupError,
    UnknownPartitionError,
    UnknownTopicError,
)

_E = KafkaError
# librdkafka names its client-side error codes with a leading underscore
# (KafkaError._TRANSPORT, ._TIMED_OUT, ...): that is their public, documented spelling,
# not a private attribute.
_BY_CODE: dict[int, type[EventLogError]] = {
    _E.TOPIC_ALREADY_EXISTS: TopicExistsError,
    _E.UNKNOWN_TOPIC_OR_PART: UnknownTopicError,
    _E._UNKNOWN_TOPIC: UnknownTopicError,
    _E.UNKNOWN_TOPIC_ID: UnknownTopicError,
    _E._UNKNOWN_PARTITION: UnknownPartitionError,
    _E.TOPIC_EXCEPTION: InvalidTopicError,
    _E.MSG_SIZE_TOO_LARGE: RecordTooLargeError,
    _E.RECORD_LIST_TOO_LARGE: RecordTooLargeError,
    _E.INVALID_PARTITIONS: InvalidConfigError,
    _E.INVALID_CONFIG: InvalidConfigError,
    _E.INVALID_REPLICATION_FACTOR: InvalidConfigError,
    _E._INVALID_ARG: InvalidConfigError,
    _E.POLICY_VIOLATION: InvalidConfigError,
    _E._TRANSPORT: BrokerUnavailableError,
    _E._TIMED_OUT: BrokerUnavailableError,
    _E._MSG_TIMED_OUT: BrokerUnavailableError,
    _E._ALL_BROKERS_DOWN: BrokerUnavailableError,
    _E._RESOLVE: BrokerUnavailableError,
    _E.PRODUCER_FENCED: ProducerFencedError,
    _E._FENCED: ProducerFencedError,
    _E.INVALID_PRODUCER_EPOCH: ProducerFencedError,
    _E.FENCED_INSTANCE_ID: ProducerFencedError,
    _E.GROUP_ID_NOT_FOUND: UnknownGroupError,
    _E._UNKNOWN_GROUP: UnknownGroupError,
    _E.INVALID_GROUP_ID: InvalidGroupError,
    _E.OFFSET_OUT_OF_RANGE: OffsetOutOfRangeError,
    _E._AUTO_OFFSET_RESET: OffsetOutOfRangeError,   # auto_offset_reset="none"
    _E.REBALANCE_IN_PROGRESS: CommitFailedError,
    _E.ILLEGAL_GENERATION: CommitFailedError,
    _E.UNKNOWN_MEMBER_ID: CommitFailedError,
    _E._PURGE_QUEUE: ClosedError,      # records still queued when the producer closed
    _E._PURGE_INFLIGHT: ClosedError,
}


def translate(error: Any, what: str) -> EventLogError:
    """The eventlog error for ``error`` (a ``KafkaError``, or a ``KafkaException``
    holding one), its message naming ``what`` was being done."""
    if isinstance(error, KafkaException) and error.args and \
            isinstance(error.args[0], KafkaError):
        error = error.args[0]
    if not isinstance(error, KafkaError):
        return ClusterError(f"{what}: {error}")
    cls = _BY_CODE.get(error.code(), ClusterError)
    message = f"{what}: {error.str()} (Kafka error {error.name()})"
    if cls is OffsetOutOfRangeError:
        return OffsetOutOfRangeError(message)
    exc = cls(message)
    if isinstance(exc, ClusterError):
        exc.code = error.name()
        exc.retriable = bool(error.retriable())
    return exc


UNREACHABLE = frozenset({_E._TIMED_OUT, _E._TRANSPORT, _E._ALL_BROKERS_DOWN, _E._RESOLVE})


@contextlib.contextmanager
def kafka_errors(what: str) -> Iterator[None]:
    """Raise librdkafka's exceptions inside the block as eventlog errors."""
    try:
        yield
    except KafkaException as exc:
        raise translate(exc, what) from exc
