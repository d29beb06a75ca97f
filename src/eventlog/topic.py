"""Topic and Partition: the public façades over a topic directory and its partitions.

A ``Topic`` reads its metadata from ``topic.json`` and notices changes made by other
processes (new partitions, altered config) within ``_REFRESH_S`` seconds.
"""

from __future__ import annotations

import operator
import os
import re
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import _fileutil
from ._format import EncodedBatch, encode_batch
from ._partition import DEFAULT_FETCH_BYTES, PartitionLog, StorageContext
from ._records import byte_sizes, check_bytes_column, check_headers, check_sizes, record_size
from ._types import Record, TopicPartition, records_from_batches
from .config import TopicConfig, TopicMetadata
from .errors import (
    ClosedError,
    InvalidConfigError,
    InvalidTopicError,
    UnknownPartitionError,
    UnknownTopicError,
)

if TYPE_CHECKING:
    from .log import Log

__all__ = ["Partition", "Topic", "validate_topic_name"]

_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
_REFRESH_S = 0.5
TOPIC_FILE = "topic.json"
_MAX_TOPIC_FILE_BYTES = 1 << 20


def validate_topic_name(name: object) -> str:
    """Return ``name`` if it follows Kafka's rule, else raise ``InvalidTopicError``.

    Checked before any file is touched: the allowed characters contain no path
    separator, and ``.``/``..`` are refused, so a name never leaves the log directory.
    """
    if not isinstance(name, str):
        raise InvalidTopicError(f"a topic name must be a str, not {type(name).__name__}")
    if name in (".", "..") or not _TOPIC_NAME.fullmatch(name):
        shown = name if len(name) <= 60 else name[:57] + "..."
        raise InvalidTopicError(f"invalid topic name {shown!r}: use 1 to 249 of the "
                                "characters A-Z a-z 0-9 . _ -, and not '.' or '..'")
    return name


class Partition:
    """One partition of a topic. Thread-safe; shared by the producers and consumers of
    the ``Log`` that made it.

    Reads are lock-free and bounded by the published end offset; ``append`` takes the
    partition's writer lock (threads and processes).
    """

    def __init__(self, topic: Topic, partition_id: int, log: PartitionLog) -> None:
        self.topic = topic
        self.id = partition_id
        self._log = log

    def __repr__(self) -> str:
        return f"<Partition {self.topic.name}[{self.id}]>"

    @property
    def topic_partition(self) -> TopicPartition:
        return TopicPartition(self.topic.name, self.id)

    @property
    def start_offset(self) -> int:
        """The first offset still stored (the log start offset)."""
        return self._log.start_offset

    @property
    def end_offset(self) -> int:
        """The next offset to be written (the high watermark)."""
        return self._log.end_offset

    @_fileutil.translate_errors("partition")
    def read(self, offset: int, max_records: int | None = None,
             max_bytes: int | None = None) -> list[Record]:
        """Records from ``offset`` on, in order, as stored (keys and values are bytes).

        Returns at most ``max_records`` records and stops after ``max_bytes`` of batches
        (the first batch is returned whole however large, so a read makes progress). Reading at
        ``end_offset`` returns ``[]``; below ``start_offset`` or above ``end_offset``
        raises ``OffsetOutOfRangeError``. Cost: O(log n) to find the offset, then
        O(bytes read); no lock is taken.
        """
        if type(offset) is not int:
            raise TypeError(f"offset must be an int, not {type(offset).__name__}")
        if max_records is not None and (type(max_records) is not int or max_records < 1):
            raise ValueError(f"max_records must be a positive int, not {max_records!r}")
        if max_bytes is not None and (type(max_bytes) is not int or max_bytes < 1):
            raise ValueError(f"max_bytes must be a positive int, not {max_bytes!r}")
        batches = self._log.fetch(offset, max_bytes or DEFAULT_FETCH_BYTES, max_records)
        return records_from_batches(batches, offset, self.topic.name, self.id, max_records)

    @_fileutil.translate_errors("partition")
    def append(self, values: Sequence[bytes | None], *,
               keys: Sequence[bytes | None] | None = None,
               timestamps_ms: Sequence[int] | int | None = None,
               headers: Sequence[Sequence[tuple[str, bytes]] | None] | None = None) -> int:
        """Append already-serialized records as one batch; return the first offset.

        This is the storage-level write (no serializer, no partitioner): values and
        keys are ``bytes`` or ``None``. Every record is checked against
        ``max_message_bytes`` before anything is written.
        """
        batch = self.encode(values, keys=keys, timestamps_ms=timestamps_ms, headers=headers)
        return self._log.append(batch).base_offset

    @_fileutil.translate_errors("partition")
    def encode(self, values: Sequence[bytes | None], *,
               keys: Sequence[bytes | None] | None = None,
               timestamps_ms: Sequence[int] | int | None = None,
               headers: Sequence[Sequence[tuple[str, bytes]] | None] | None = None
               ) -> EncodedBatch:
        """Validate and encode records for ``append_encoded``.

        Cost: O(records), in C for values and keys (type and size scans); a Python
        pass only over records that have headers.
        """
        where = f"topic {self.topic.name!r}"
        count = len(values)
        if count == 0:
            raise ValueError("append needs at least one record")
        if keys is not None and len(keys) != count:
            raise ValueError("keys and values differ in length")
        if headers is not None and len(headers) != count:
            raise ValueError("headers and values differ in length")
        limit = self.topic.config.max_message_bytes
        check_bytes_column(values, "value", where)
        sizes: Any = byte_sizes(values)
        if keys is not None:
            check_bytes_column(keys, "key", where)
            sizes = map(operator.add, sizes, byte_sizes(keys))
        norm_headers = None
        if headers is not None:
            norm_headers = [check_headers(h, where) for h in headers]
            header_sizes = [record_size(None, None, h) for h in norm_headers]
            sizes = map(operator.add, sizes, header_sizes)
        check_sizes(list(sizes), limit, where)
        if timestamps_ms is None:
            timestamps_ms = self.topic.clock()
        elif not isinstance(timestamps_ms, int) and len(timestamps_ms) != count:
            raise ValueError("timestamps_ms and values differ in length")
        return encode_batch(values, keys, timestamps_ms, norm_headers)

    @_fileutil.translate_errors("partition")
    def append_encoded(self, batch: EncodedBatch) -> int:
        return self._log.append(batch).base_offset

    @_fileutil.translate_errors("partition")
    def offset_for_time(self, timestamp_ms: int) -> int | None:
        """The earliest offset with a timestamp >= ``timestamp_ms`` (None if none)."""
        return self._log.offset_for_time(timestamp_ms)

    @_fileutil.translate_errors("partition")
    def roll(self) -> None:
        """Close the active segment and start a new one (if it holds any record)."""
        self._log.roll()


class Topic:
    """A topic of an open log: its name, partitions and configuration."""

    def __init__(self, log: Log, name: str, directory: str, context: StorageContext,
                 *, recover: bool = False) -> None:
        self._log = log
        self.name = name
        self.directory = directory
        self._ctx = context
        self._lock = threading.Lock()
        self._dir_ino = self._dir_inode()
        self._partitions: list[Partition | None] = []
        self._set_meta(self._read_meta())
        self._checked_at = time.monotonic()
        if recover:
            for i in range(self._meta.partitions):
                self.partition(i)

    def __repr__(self) -> str:
        return f"<Topic {self.name!r} partitions={self._meta.partitions}>"

    def clock(self) -> int:
        return self._ctx.clock()

    # -- metadata ---------------------------------------------------------------------

    def _meta_path(self) -> str:
        return os.path.join(self.directory, TOPIC_FILE)

    def _stat(self) -> tuple[int, int]:
        try:
            st = os.stat(self._meta_path())
        except FileNotFoundError:
            return (0, 0)
        return (st.st_ino, st.st_mtime_ns)

    def _read_meta(self) -> TopicMetadata:
        path = self._meta_path()
        try:
            data = _fileutil.read_file(path, _MAX_TOPIC_FILE_BYTES)
        except FileNotFoundError as exc:
            raise UnknownTopicError(f"topic {self.name!r} does not exist") from exc
        return TopicMetadata.from_json(data, path)

    def _dir_inode(self) -> int:
        try:
            return os.stat(self.directory).st_ino
        except FileNotFoundError:
            return 0

    def _set_meta(self, meta: TopicMetadata) -> None:
        with self._lock:
            self._meta = meta
            self._meta_stat = self._stat()
            grow = meta.partitions - len(self._partitions)
            if grow > 0:
                self._partitions.extend([None] * grow)

    @_fileutil.translate_errors("topic")
    def _refresh(self, force: bool = False) -> TopicMetadata:
        """The metadata, re-read if another process changed it. A topic that was
        deleted (and perhaps created again under the same name, in a new directory)
        raises ``UnknownTopicError``; ``Log.topic`` then loads the new one."""
        now = time.monotonic()
        if force or now - self._checked_at >= _REFRESH_S:
            self._checked_at = now
            stat = self._stat()
            if stat == (0, 0) or self._dir_inode() != self._dir_ino:
                raise UnknownTopicError(f"topic {self.name!r} was deleted")
            if stat != self._meta_stat:
                self._set_meta(self._read_meta())
        return self._meta

    def _write_meta(self, meta: TopicMetadata) -> None:
        _fileutil.atomic_write(self._meta_path(), meta.to_json())
        self._set_meta(meta)

    @property
    def config(self) -> TopicConfig:
        """The topic's settings (re-read when another process changes them)."""
        return self._refresh().config

    @property
    def num_partitions(self) -> int:
        return self._refresh().partitions

    @property
    def partitions(self) -> list[Partition]:
        """Every partition, in id order."""
        return [self.partition(i) for i in range(self.num_partitions)]

    @_fileutil.translate_errors("topic")
    def partition(self, partition_id: int) -> Partition:
        """Partition ``partition_id`` (0-based). Raises ``UnknownPartitionError`` (an
        ``IndexError``) if out of range."""
        if type(partition_id) is not int:
            raise UnknownPartitionError(f"partition id must be an int, not "
                                        f"{type(partition_id).__name__}")
        count = self.num_partitions
        if not 0 <= partition_id < count:
            raise UnknownPartitionError(f"topic {self.name!r} has partitions "
                                        f"0..{count - 1}, not {partition_id}")
        part = self._partitions[partition_id]
        if part is None:
            with self._lock:
                part = self._partitions[partition_id]
                if part is None:
                    if self._log._closed:
                        raise ClosedError("the log is closed")
                    plog = PartitionLog(os.path.join(self.directory, str(partition_id)),
                                        lambda: self._refresh().config, self._ctx,
                                        recover=self._log._recovering)
                    part = Partition(self, partition_id, plog)
                    self._partitions[partition_id] = part
        return part

    @_fileutil.translate_errors("topic")
    def add_partitions(self, count: int) -> None:
        """Add ``count`` new, empty partitions (the count never shrinks, as in Kafka)."""
        if type(count) is not int or count < 1:
            raise InvalidConfigError(f"add_partitions needs a positive int, not {count!r}")
        self._log._add_partitions(self, count)

    def _opened_partitions(self) -> list[Partition]:
        return [p for p in self._partitions if p is not None]

    def _close(self, clean: bool) -> None:
        for part in self._opened_partitions():
            part._log.close(clean=clean)
        self._partitions = [None] * len(self._partitions)
