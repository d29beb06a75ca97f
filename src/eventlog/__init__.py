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

from ._types import Record, RecordMetadata, TimestampType, TopicPartition
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
    ProtocolError,
    ReadOnlyError,
    RecordTooLargeError,
    SerializationError,
    TopicExistsError,
    TransactionError,
    UnknownGroupError,
    UnknownPartitionError,
    UnknownTopicError,
    UnknownTransactionalIdError,
    UnsupportedOperationError,
)
from .log import GroupDescription, Log, MemberDescription, open
from .monitoring import GroupStatus, PartitionStatus
from .producer import BatchMetadata, Producer, RecordFuture
from .serve import KafkaServer, serve
from .topic import Partition, Topic

__version__ = "0.1.0"

# Submodules a plain produce/consume does not need load on first use, so that
# `import eventlog` stays fast (issue 16): `eventlog.aio`, `eventlog.testing`, ...
_LAZY_SUBMODULES = frozenset({"aio", "cli", "prometheus", "strategies", "testing"})


def __getattr__(name: str) -> object:
    """``eventlog.aio`` and the other tool submodules, imported on first access."""
    if name in _LAZY_SUBMODULES:
        import importlib  # noqa: PLC0415 - lazy on purpose

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

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
    "KafkaServer",
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
    "ProtocolError",
    "ReadOnlyError",
    "Record",
    "RecordFuture",
    "RecordMetadata",
    "RecordTooLargeError",
    "RebalanceListener",
    "SerializationError",
    "TimestampType",
    "Topic",
    "TopicConfig",
    "TopicExistsError",
    "TransactionError",
    "TopicPartition",
    "UnknownGroupError",
    "UnknownPartitionError",
    "UnknownTopicError",
    "UnknownTransactionalIdError",
    "UnsupportedOperationError",
    "BrokerUnavailableError",
    "ClusterError",
    "__version__",
    "open",
    "serve",
]
