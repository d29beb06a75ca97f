"""eventlog: an embeddable event log for Python.

Topics split into partitions, records addressed by offsets, producers, consumer
groups with committed offsets, retention and compaction — as a library, on
memory-mapped segment files in a directory. Several threads and processes may use
one log directory at once.

A short tour (the storage layer; producers and consumers build on it):

>>> import eventlog, tempfile
>>> with eventlog.open(tempfile.mkdtemp()) as log:
...     orders = log.create_topic("orders", partitions=2)
...     p0 = orders.partition(0)
...     p0.append([b"first", b"second"])
...     [r.value for r in p0.read(0)]
0
[b'first', b'second']
"""

from __future__ import annotations

from ._types import Record, RecordMetadata, TopicPartition
from .config import LogOptions, TopicConfig
from .consumer import Consumer, RebalanceListener
from .errors import (
    BrokerUnavailableError,
    ClosedError,
    ClusterError,
    CommitFailedError,
    CorruptRecordError,
    EventLogError,
    GroupNotEmptyError,
    InvalidConfigError,
    InvalidGroupError,
    InvalidRecordError,
    InvalidTopicError,
    LogDirectoryError,
    LogFailedError,
    NotAssignedError,
    OffsetOutOfRangeError,
    OutOfOrderSequenceError,
    ProducerFencedError,
    ReadOnlyError,
    RecordTooLargeError,
    SerializationError,
    TopicExistsError,
    TransactionError,
    UnknownGroupError,
    UnknownPartitionError,
    UnknownTopicError,
    UnsupportedOperationError,
)
from .log import GroupDescription, Log, MemberDescription, open
from .monitoring import GroupStatus, PartitionStatus
from .producer import BatchMetadata, Producer, RecordFuture
from .topic import Partition, Topic

__version__ = "0.1.0"

__all__ = [
    "BatchMetadata",
    "ClosedError",
    "CommitFailedError",
    "Consumer",
    "CorruptRecordError",
    "EventLogError",
    "GroupDescription",
    "GroupNotEmptyError",
    "GroupStatus",
    "InvalidConfigError",
    "InvalidGroupError",
    "InvalidRecordError",
    "InvalidTopicError",
    "Log",
    "LogDirectoryError",
    "LogFailedError",
    "LogOptions",
    "MemberDescription",
    "NotAssignedError",
    "OffsetOutOfRangeError",
    "OutOfOrderSequenceError",
    "Partition",
    "PartitionStatus",
    "Producer",
    "ProducerFencedError",
    "ReadOnlyError",
    "Record",
    "RecordFuture",
    "RecordMetadata",
    "RecordTooLargeError",
    "RebalanceListener",
    "SerializationError",
    "Topic",
    "TopicConfig",
    "TopicExistsError",
    "TopicPartition",
    "UnknownGroupError",
    "UnknownPartitionError",
    "UnknownTopicError",
    "UnsupportedOperationError",
    "BrokerUnavailableError",
    "ClusterError",
    "TransactionError",
    "__version__",
    "open",
]
