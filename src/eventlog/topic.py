"""Topic and Partition: the public façades over a topic directory and its partitions.

The directory itself (metadata, refresh, partition logs) is ``_topics.TopicFiles``;
the storage of a partition is ``_partition.PartitionLog``. These classes validate
arguments and translate errors, and hold no state of their own beyond that.
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Sequence
from typing import Any

from . import _fileutil
from ._format import EncodedBatch, encode_batch
from ._partition import DEFAULT_FETCH_BYTES, PartitionLog
from ._records import (
    byte_sizes,
    check_bytes_column,
    check_headers,
    check_sizes,
    check_timestamps,
    record_size,
)
from ._topics import TopicFiles, validate_topic_name
from ._types import Record, TopicPartition, records_from_batches
from .config import TopicConfig, TopicMetadata, check_int

__all__ = ["Partition", "Topic", "validate_topic_name"]


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
        """This partition as a ``TopicPartition(topic, partition)``."""
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
        check_int("max_records", max_records, 1, optional=True)
        check_int("max_bytes", max_bytes, 1, optional=True)
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
        else:
            timestamps_ms = check_timestamps(timestamps_ms, count, where)
        return encode_batch(values, keys, timestamps_ms, norm_headers)

    @_fileutil.translate_errors("partition")
    def append_encoded(self, batch: EncodedBatch) -> int:
        """Append a batch made by ``encode`` (records encoded once, appended perhaps
        many times); returns the offset of its first record. Cost: as ``append``."""
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
    """A topic of an open log: its name, partitions and configuration. Thread-safe.

    A façade over the topic's directory (``_topics.TopicFiles``): settings and the
    partition count are re-read within half a second when another process changes
    them. A ``Topic`` whose topic was deleted raises ``UnknownTopicError`` from then on,
    even if a topic of the same name is created again (``Log.topic`` returns the new one).
    """

    def __init__(self, files: TopicFiles) -> None:
        self._files = files
        self.name = files.name
        self.directory = files.directory
        self._lock = threading.Lock()
        self._partitions: dict[int, tuple[PartitionLog, Partition]] = {}

    def __repr__(self) -> str:
        return f"<Topic {self.name!r} partitions={self.num_partitions}>"

    def clock(self) -> int:
        """Now, in epoch milliseconds, on the log's clock."""
        return self._files.store.context.clock()

    @property
    def metadata(self) -> TopicMetadata:
        """Name, partition count, settings and creation time, as stored."""
        return self._files.metadata()

    def refresh(self) -> TopicMetadata:
        """Re-read the topic's metadata now (changes by other processes are otherwise
        seen within half a second)."""
        return self._files.metadata(force=True)

    @property
    def config(self) -> TopicConfig:
        """The topic's settings (re-read when another process changes them)."""
        return self._files.metadata().config

    @property
    def num_partitions(self) -> int:
        """The partition count (re-read within half a second of a change by another process)."""
        return self._files.metadata().partitions

    @property
    def partitions(self) -> list[Partition]:
        """Every partition, in id order."""
        return [self.partition(i) for i in range(self.num_partitions)]

    def partition(self, partition_id: int) -> Partition:
        """Partition ``partition_id`` (0-based). Raises ``UnknownPartitionError`` (an
        ``IndexError``) if out of range."""
        plog = self._files.partition_log(partition_id)
        cached = self._partitions.get(partition_id)
        if cached is None or cached[0] is not plog:
            with self._lock:
                cached = self._partitions.get(partition_id)
                if cached is None or cached[0] is not plog:
                    cached = self._partitions[partition_id] = (
                        plog, Partition(self, partition_id, plog))
        return cached[1]

    def add_partitions(self, count: int) -> None:
        """Add ``count`` new, empty partitions (the count never shrinks, as in Kafka)."""
        self._files.store.add_partitions(self._files, count)
