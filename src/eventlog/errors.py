"""The exception tree of eventlog.

Every error raised by the public API derives from ``EventLogError``.
Where the meaning matches a built-in exception, the error also inherits from it,
so ``except ValueError`` keeps working for bad input:

    EventLogError
     ├── ClosedError                      the log, producer or consumer is closed
     ├── UnknownTopicError (LookupError)  the topic does not exist
     ├── UnknownPartitionError (IndexError) the topic has no such partition
     ├── TopicExistsError                 create_topic() on an existing name
     ├── InvalidTopicError (ValueError)   the name breaks Kafka's topic-name rule
     ├── InvalidConfigError (ValueError)  a setting has a wrong type or range
     ├── RecordTooLargeError (ValueError) a record exceeds max_message_bytes
     ├── InvalidRecordError (TypeError)   a key, value or header has the wrong type
     ├── SerializationError (ValueError)  a key or value could not be (de)serialized
     ├── OutOfOrderSequenceError          an idempotent batch skips sequence numbers
     ├── ProducerFencedError              another live producer holds this producer_id,
     │                                    or a newer one took over its transactional_id
     ├── TransactionError                 a transactional call in the wrong state
     ├── UnknownTransactionalIdError (LookupError) no state for that transactional id
     ├── InvalidGroupError (ValueError)   a group id breaks the naming rule
     ├── CommitFailedError                the consumer may not commit (no group, or it
     │                                    lost its partitions: generation fencing)
     ├── NotAssignedError (LookupError)   the partition is not assigned to this consumer
     ├── UnknownGroupError (LookupError)  no such consumer group
     ├── GroupNotEmptyError               the group has live members (resetting
     │                                    offsets or deleting it needs none)
     ├── OffsetOutOfRangeError (LookupError)
     │                                    read below start_offset or above end_offset
     ├── CorruptRecordError               a checksum or structure check failed on disk
     ├── LogDirectoryError (OSError)      the directory is unusable: not a log,
     │                                    not writable, or an I/O error hit it
     ├── LogFailedError                   an fsync failed: the log refuses writes until reopened
     ├── ReadOnlyError                    the log was opened with read_only=True: producing,
     │                                    committing or changing anything is refused
     ├── ProtocolError (ValueError)       bytes from a Kafka client break the wire protocol
     │                                    (``eventlog serve`` closes that connection)
     ├── UnsupportedOperationError        the call has no meaning on this backend (a Kafka
     │                                    cluster): the message says why
     ├── BrokerUnavailableError (ConnectionError, TimeoutError)
     │                                    no Kafka broker answered within the timeout
     └── ClusterError                     any other error a Kafka cluster reported

Lower-layer errors (``struct.error``, msgpack exceptions, ``KeyError``) are
translated once, at the boundary where they occur, with ``raise ... from exc``.
"""

from __future__ import annotations

__all__ = [
    "ClosedError",
    "CommitFailedError",
    "CorruptRecordError",
    "EventLogError",
    "GroupNotEmptyError",
    "InvalidConfigError",
    "InvalidGroupError",
    "InvalidRecordError",
    "InvalidTopicError",
    "LogDirectoryError",
    "LogFailedError",
    "NotAssignedError",
    "OffsetOutOfRangeError",
    "OutOfOrderSequenceError",
    "ProtocolError",
    "ProducerFencedError",
    "ReadOnlyError",
    "RecordTooLargeError",
    "SerializationError",
    "TopicExistsError",
    "TransactionError",
    "UnknownGroupError",
    "UnknownPartitionError",
    "UnknownTopicError",
    "UnknownTransactionalIdError",
    "UnsupportedOperationError",
    "BrokerUnavailableError",
    "ClusterError",
]


class EventLogError(Exception):
    """Base class of every error raised by eventlog."""


class ClosedError(EventLogError):
    """The log, producer or consumer has been closed (or belongs to a parent process)."""


class UnknownTopicError(EventLogError, LookupError):
    """The topic does not exist in this log."""

    def __str__(self) -> str:  # LookupError would quote the message like a KeyError
        return str(self.args[0]) if self.args else "unknown topic"


class UnknownPartitionError(EventLogError, IndexError):
    """The topic has no partition with that id."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown partition"


class TopicExistsError(EventLogError):
    """``create_topic`` was called with the name of an existing topic."""


class InvalidTopicError(EventLogError, ValueError):
    """A topic name breaks the rule ``[A-Za-z0-9._-]{1,249}``, is ``.`` or ``..``,
    or collides with an existing topic that differs only in letter case."""


class InvalidConfigError(EventLogError, ValueError):
    """A log or topic setting is unknown, has the wrong type or is out of range."""


class RecordTooLargeError(EventLogError, ValueError):
    """A record is larger than its topic's ``max_message_bytes``; nothing was written."""


class InvalidRecordError(EventLogError, TypeError):
    """A record's key, value or headers have the wrong type (for example a header that
    is not a ``(str, bytes)`` pair, or a non-bytes value at the storage layer)."""


class SerializationError(EventLogError, ValueError):
    """A key or value could not be serialized or deserialized. The message names the
    topic (and, when consuming, the partition and offset) and whether the key or the
    value failed; when consuming, ``topic``, ``partition`` and ``offset`` are set, and
    the consumer can ``seek`` past the record."""

    topic: str | None = None
    partition: int | None = None
    offset: int | None = None


class OutOfOrderSequenceError(EventLogError):
    """An idempotent producer's batch does not continue its sequence in a partition
    (records would be missing between the last stored sequence and this batch)."""


class ProducerFencedError(EventLogError):
    """Another live producer, in this or another process, uses the same
    ``producer_id``; two writers under one id would break deduplication. Also: a newer
    producer with the same ``transactional_id`` called ``init_transactions`` (or the
    transaction timed out and was aborted), so this one may never commit again."""


class UnknownTransactionalIdError(EventLogError, LookupError):
    """No transactional id of that name has state in this log."""


class TransactionError(EventLogError):
    """A transactional call in the wrong state: ``begin_transaction`` before
    ``init_transactions`` or twice, a commit, abort or send without a transaction,
    or a commit of a transaction that must be aborted (one of its sends failed)."""


class OffsetOutOfRangeError(EventLogError, LookupError):
    """An offset lies below the partition's ``start_offset`` or above its ``end_offset``."""

    def __init__(self, message: str, *, offset: int = -1, start_offset: int = -1,
                 end_offset: int = -1) -> None:
        super().__init__(message)
        self.offset = offset
        self.start_offset = start_offset
        self.end_offset = end_offset

    def __str__(self) -> str:
        return str(self.args[0])


class CorruptRecordError(EventLogError):
    """Stored bytes failed a checksum or structure check.

    Raised instead of returning a wrong record, and instead of silently dropping
    data that was acknowledged as durable.
    """


class LogDirectoryError(EventLogError, OSError):
    """The log directory cannot be used: it is not an eventlog directory, it is not
    writable, or the operating system reported an I/O error (``errno`` is set, so a
    full disk shows as ``errno.ENOSPC``)."""


class LogFailedError(EventLogError):
    """A write could not be made durable (an fsync failed). The log refuses further
    writes, because the operating system may have dropped the unsynced pages; reopen
    it to recover from what is on disk."""


class ReadOnlyError(EventLogError):
    """The log was opened with ``read_only=True``, which creates, writes and locks
    nothing: producing, committing, joining a group, changing topics or groups and
    repairing are refused. Open the directory without ``read_only`` to do them.

    Not a ``PermissionError``: that is an ``OSError`` about the file system, and a
    read-only file system opened without ``read_only`` raises ``LogDirectoryError``
    with ``errno.EROFS`` instead."""


class InvalidGroupError(EventLogError, ValueError):
    """A group id (or static ``group_instance_id``) breaks the rule
    ``[A-Za-z0-9._-]{1,249}`` (it names files in the log directory)."""


class CommitFailedError(EventLogError):
    """A commit was refused: the consumer has no ``group_id``, or it is no longer the
    owner of the partitions (removed from the group or fenced by a newer generation)."""


class NotAssignedError(EventLogError, LookupError):
    """The partition is not assigned to this consumer."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "partition not assigned"


class UnknownGroupError(EventLogError, LookupError):
    """No consumer group of that name exists in this log."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown group"


class GroupNotEmptyError(EventLogError):
    """The group has live members; resetting its offsets or deleting it needs none."""


class ProtocolError(EventLogError, ValueError):
    """Bytes received by ``eventlog serve`` break Kafka's wire protocol (a truncated or
    oversized frame, a bad length, an unknown API); the server closes that connection."""


class UnsupportedOperationError(EventLogError):
    """The call has no meaning on this backend: on a log opened over an Apache Kafka
    cluster (``eventlog.open("kafka://...")``), storage-level calls such as a
    partition's direct ``append``, ``check()`` or fsync modes belong to the brokers.
    The message says why and what to use instead (see docs/kafka-backend.md)."""


class BrokerUnavailableError(EventLogError, ConnectionError, TimeoutError):
    """No Kafka broker answered within the timeout (wrong address, cluster down, or a
    network or security setting that keeps the client out)."""


class ClusterError(EventLogError):
    """An error a Kafka cluster reported that has no closer eventlog error; ``code``
    is Kafka's error name (``"NOT_ENOUGH_REPLICAS"``, ...), ``retriable`` says whether
    trying again may succeed."""

    code: str = ""
    retriable: bool = False
