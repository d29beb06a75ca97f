"""The seam between the clients (``Producer``, ``Consumer``, ``aio``) and a log backend.

The clients never touch a log's directory, topics or partitions directly: they ask a
``Backend`` for topic metadata, for a ``PartitionBackend`` to append encoded batches to
and fetch decoded batches from, and for group coordination (membership and committed
offsets). ``Log.backend`` is the local implementation, ``LocalBackend``, over the
log directory; a second backend (an Apache Kafka cluster) implements the same two
protocols, and the clients above run on it unchanged.

Layers, top to bottom (see docs/architecture.md)::

    Producer / Consumer / aio          serializers, batching, polling, groups
        |  Backend, PartitionBackend   (this module)
    LocalBackend -> TopicStore         topic metadata, the PartitionLog of each partition
        |
    PartitionLog -> SegmentList -> Segment -> bytes
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ._format import DecodedBatch, EncodedBatch
from ._group import GroupFiles, GroupMember
from ._notify import Word
from ._offsets import OffsetStore
from ._partition import AppendResult, PartitionLog, StorageContext
from ._txn_coordinator import TransactionCoordinator
from ._txn_state import TransactionStore
from .config import TopicMetadata

if TYPE_CHECKING:
    from ._topics import TopicStore

__all__ = ["PRODUCERS_DIR", "Backend", "LocalBackend", "PartitionBackend"]

PRODUCERS_DIR = "producers"


class PartitionBackend(Protocol):
    """One partition, as the clients see it. Thread-safe."""

    @property
    def start_offset(self) -> int:
        """The first offset still stored."""

    @property
    def end_offset(self) -> int:
        """The next offset to be written (the high watermark)."""

    def bounds(self) -> tuple[int, int]:
        """``(start_offset, end_offset)``, read together (one head read)."""

    def append(self, batch: EncodedBatch) -> AppendResult:
        """Append one encoded batch (with producer id and sequence if idempotent)."""

    def fetch(self, offset: int, max_bytes: int, max_records: int | None = None
              ) -> list[DecodedBatch]:
        """Whole decoded batches from the one holding ``offset`` on; ``[]`` at the end;
        ``OffsetOutOfRangeError`` outside ``[start_offset, end_offset]``."""

    def offset_for_time(self, timestamp_ms: int) -> int | None:
        """The earliest offset with a timestamp >= ``timestamp_ms``, or None."""

    def wake_words(self) -> tuple[Word, Word]:
        """The (counter, waiters) words a reader sleeps on (``_notify.wait``)."""


class Backend(Protocol):
    """A log as the clients see it: topics, partitions, groups."""

    path: str
    clock: Callable[[], int]

    @property
    def closed(self) -> bool:
        """True once the log is closed."""

    @property
    def read_only(self) -> bool:
        """True when the log was opened ``read_only``: producing, committing and joining
        a group raise ``ReadOnlyError`` (the clients check it up front)."""

    def check_open(self) -> None:
        """Raise ``ClosedError`` if the log cannot be used (closed, or inherited by fork)."""

    def metadata(self, topic: str, refresh: bool = False) -> TopicMetadata:
        """Partition count and settings of ``topic``, re-read at most every half second
        when another process changes them (at once with ``refresh``). Raises
        ``UnknownTopicError`` (or creates the topic, with ``auto_create_topics``) and
        ``InvalidTopicError``."""

    def topics(self) -> list[str]:
        """The names of the topics, sorted (what a pattern subscription matches)."""

    def partition(self, topic: str, partition: int) -> PartitionBackend:
        """Partition ``partition`` of ``topic`` (``UnknownPartitionError`` if none)."""

    def offset_store(self, group_id: str) -> OffsetStore:
        """The committed offsets of ``group_id`` (read-only: committing raises
        ``ReadOnlyError``, on a log opened ``read_only``)."""

    def group_member(self, group_id: str, *, strategy: str, session_timeout_ms: int,
                     max_poll_interval_ms: int, heartbeat_interval_ms: int,
                     instance_id: str | None, partition_count: Callable[[str], int],
                     client_id: str | None = None) -> GroupMember:
        """A new (not yet joined) member of ``group_id`` (``ReadOnlyError`` on a log
        opened ``read_only``: membership writes files)."""

    def producer_id_lock_path(self, producer_id: int) -> str:
        """The file whose ``flock`` makes ``producer_id`` exclusive to one producer."""

    def transactions(self) -> TransactionCoordinator:
        """The transaction coordinator of this log (its transactional ids' state and
        the protocol steps over them; see ``_txn_coordinator``)."""


class _ReadOnlyOffsetStore(OffsetStore):
    """A group's committed offsets in a log opened ``read_only``: they read as usual;
    every change raises ``ReadOnlyError`` before touching a file."""

    def __init__(self, path: str, context: StorageContext) -> None:
        super().__init__(path, fsync=False)
        self._context = context

    def commit(self, *args: Any, **kwargs: Any) -> None:
        self._context.check_not_read_only("committing offsets")

    def replace(self, *args: Any, **kwargs: Any) -> None:
        self._context.check_not_read_only("replacing committed offsets")

    def delete(self) -> None:
        self._context.check_not_read_only("deleting committed offsets")


class LocalBackend:
    """``Backend`` over a log directory (the ``Log`` that made it owns the store)."""

    def __init__(self, path: str, context: StorageContext, store: TopicStore,
                 check_open: Callable[[], None], is_closed: Callable[[], bool]) -> None:
        self.path = path
        self.clock = context.clock
        self._context = context
        self._fsync_commits = context.options.fsync == "always"
        self._store = store
        # The Log's own check, not a method calling it: a consumer's poll calls it.
        self.check_open: Callable[[], None] = check_open
        self._is_closed = is_closed
        self._transactions: TransactionCoordinator | None = None

    def __repr__(self) -> str:
        return f"<LocalBackend {self.path!r}>"

    @property
    def closed(self) -> bool:
        return self._is_closed()

    @property
    def read_only(self) -> bool:
        return self._context.options.read_only

    def metadata(self, topic: str, refresh: bool = False) -> TopicMetadata:
        return self._store.topic(topic, refresh=refresh).metadata()

    def topics(self) -> list[str]:
        return self._store.names()

    def partition(self, topic: str, partition: int) -> PartitionLog:
        return self._store.topic(topic).partition_log(partition)

    def offset_store(self, group_id: str) -> OffsetStore:
        path = GroupFiles(self.path, group_id).offsets_path
        if self.read_only:
            return _ReadOnlyOffsetStore(path, self._context)
        return OffsetStore(path, fsync=self._fsync_commits)

    def group_member(self, group_id: str, *, strategy: str, session_timeout_ms: int,
                     max_poll_interval_ms: int, heartbeat_interval_ms: int,
                     instance_id: str | None, partition_count: Callable[[str], int],
                     client_id: str | None = None) -> GroupMember:
        self._context.check_not_read_only(f"joining consumer group {group_id!r} (consume "
                                          "without a group_id to read only)")
        return GroupMember(self.path, group_id, strategy=strategy,
                           session_timeout_ms=session_timeout_ms,
                           max_poll_interval_ms=max_poll_interval_ms,
                           heartbeat_interval_ms=heartbeat_interval_ms,
                           instance_id=instance_id, partition_count=partition_count,
                           clock=self.clock, client_id=client_id)

    def producer_id_lock_path(self, producer_id: int) -> str:
        return os.path.join(self.path, PRODUCERS_DIR, f"{producer_id}.lock")

    def transactions(self) -> TransactionCoordinator:
        if self._transactions is None:
            self._transactions = TransactionCoordinator(
                TransactionStore(self.path, self.read_only), self.partition,
                self.offset_store, self.clock, self._context.options.fsync != "never")
        return self._transactions
