"""Kafka's error codes (``org.apache.kafka.common.protocol.Errors``) that this server
answers with, and the translation of eventlog's exceptions into them."""

from __future__ import annotations

from .. import errors

__all__ = ["code_for"]

UNKNOWN_SERVER_ERROR = -1
NONE = 0
OFFSET_OUT_OF_RANGE = 1
CORRUPT_MESSAGE = 2
UNKNOWN_TOPIC_OR_PARTITION = 3
MESSAGE_TOO_LARGE = 10
COORDINATOR_NOT_AVAILABLE = 15
NOT_COORDINATOR = 16
INVALID_TOPIC_EXCEPTION = 17
RECORD_LIST_TOO_LARGE = 18
INVALID_REQUIRED_ACKS = 21
ILLEGAL_GENERATION = 22
INCONSISTENT_GROUP_PROTOCOL = 23
INVALID_GROUP_ID = 24
UNKNOWN_MEMBER_ID = 25
INVALID_SESSION_TIMEOUT = 26
REBALANCE_IN_PROGRESS = 27
INVALID_COMMIT_OFFSET_SIZE = 28
INVALID_TIMESTAMP = 32
UNSUPPORTED_VERSION = 35
TOPIC_ALREADY_EXISTS = 36
INVALID_PARTITIONS = 37
INVALID_REPLICATION_FACTOR = 38
INVALID_REPLICA_ASSIGNMENT = 39
INVALID_CONFIG = 40
INVALID_REQUEST = 42
UNSUPPORTED_FOR_MESSAGE_FORMAT = 43
POLICY_VIOLATION = 44
OUT_OF_ORDER_SEQUENCE_NUMBER = 45
TRANSACTIONAL_ID_AUTHORIZATION_FAILED = 53
KAFKA_STORAGE_ERROR = 56
GROUP_ID_NOT_FOUND = 69
NON_EMPTY_GROUP = 68
MEMBER_ID_REQUIRED = 79
INVALID_RECORD = 87
UNKNOWN_TOPIC_ID = 100

# Most specific first: several eventlog errors derive from each other's bases.
_BY_TYPE: tuple[tuple[type[BaseException], int], ...] = (
    (errors.UnknownPartitionError, UNKNOWN_TOPIC_OR_PARTITION),
    (errors.UnknownTopicError, UNKNOWN_TOPIC_OR_PARTITION),
    (errors.InvalidTopicError, INVALID_TOPIC_EXCEPTION),
    (errors.TopicExistsError, TOPIC_ALREADY_EXISTS),
    (errors.InvalidConfigError, INVALID_CONFIG),
    (errors.RecordTooLargeError, MESSAGE_TOO_LARGE),
    (errors.InvalidRecordError, INVALID_RECORD),
    (errors.OutOfOrderSequenceError, OUT_OF_ORDER_SEQUENCE_NUMBER),
    (errors.OffsetOutOfRangeError, OFFSET_OUT_OF_RANGE),
    (errors.InvalidGroupError, INVALID_GROUP_ID),
    (errors.UnknownGroupError, GROUP_ID_NOT_FOUND),
    (errors.GroupNotEmptyError, NON_EMPTY_GROUP),
    (errors.CorruptRecordError, CORRUPT_MESSAGE),
    (errors.ReadOnlyError, POLICY_VIOLATION),
    (errors.LogFailedError, KAFKA_STORAGE_ERROR),
    (errors.LogDirectoryError, KAFKA_STORAGE_ERROR),
)


def code_for(exc: BaseException) -> int:
    """The Kafka error code that says what ``exc`` means to a client."""
    for cls, code in _BY_TYPE:
        if isinstance(exc, cls):
            return code
    return UNKNOWN_SERVER_ERROR
