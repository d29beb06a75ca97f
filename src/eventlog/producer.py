"""Producer: the public face of sending records (options, serializers, checks).

``Producer`` is a facade over three rooms; data flows one way, top to bottom::

    Producer          options, serializers, record checks, topic metadata cache,
       |              the producer id and its lock (this module)
    RecordPartitioner the partition of each record (_partitioner.py)
       |
    Accumulator       pending batches, futures, linger thread, flush (_accumulator.py)
       |
    Sender.write      the one write path: encode, stamp id/sequence, append, count
       |
    Backend           the log, as clients see it (_backend.py: metadata, append)

``send`` serializes a record, picks its partition, and adds it to that partition's
pending batch; a batch is appended (as one batch) when it reaches ``batch_bytes``,
when it has waited ``linger_ms`` (a background thread appends it), on ``flush``, or as
soon as someone waits for one of its futures. Each partition's batches are appended
in send order, one at a time, so a producer's records keep their order per
partition, whatever threads send them.

``send_batch`` is the bulk path: one call serializes a whole column of values with
one C-level map and appends it in large batches, close to the speed of writing the
bytes to a file. Both end in ``Sender.write``.

Idempotence: a producer with ``enable_idempotence=True`` (or an explicit
``producer_id``) stamps each batch with its id and the sequence number of its first
record, counted per partition from 0. The partition stores a record only once per
(producer id, sequence), so a retried batch is never duplicated, and a producer that
restarts under the same ``producer_id`` and sends the same records again in the same
order (say, a pipeline re-reading its input) only appends what is missing. Only one
live producer may hold an explicit ``producer_id`` (an ``flock`` enforces it across
processes; a second one raises ``ProducerFencedError``). See docs/producer.md.
"""

from __future__ import annotations

import atexit
import fcntl
import inspect
import os
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import msgpack

from . import _fileutil
from ._accumulator import (
    Accumulator,
    BatchMetadata,
    Chunk,
    Columns,
    RecordFuture,
    Sender,
    TopicInfo,
    new_future,
)
from ._partitioner import (
    BULK_BLOCK_BYTES,
    Partitioner,
    RecordPartitioner,
    check_partition,
    murmur2,
)
from ._records import (
    MAX_TIMESTAMP_MS,
    batch_sizes,
    check_headers,
    check_size,
    check_timestamps,
    record_size,
    serialization_error,
)
from ._transactions import TransactionManager
from ._types import TopicPartition
from .config import _wall_clock_ms, check_client_id, check_int
from .errors import (
    ClosedError,
    InvalidConfigError,
    InvalidRecordError,
    ProducerFencedError,
    ReadOnlyError,
    SerializationError,
    TransactionError,
)
from .log import Log
from .serde import BUILTINS, Serializer, column_packer, is_builtin, serializer

__all__ = ["BatchMetadata", "Producer", "RecordFuture", "murmur2"]

_REFRESH_EVERY = 256  # sends between checks for topic changes by other processes

_time_ns = time.time_ns
_BYTES_OR_NONE = frozenset((bytes, type(None)))

_live_producers: weakref.WeakSet[Producer] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    # Records sent but still waiting for linger_ms would be lost when the interpreter
    # exits without close(); flush them (best effort).
    for producer in list(_live_producers):
        try:
            producer.close(timeout=5)
        except Exception:  # noqa: S112 - nothing useful to do at exit
            continue


def _own_packer(fn: Serializer) -> Callable[[Any], bytes]:
    # Built-in serializers run under the producer lock with this producer's own
    # msgpack Packer (a Packer is not thread-safe; the lock makes it so).
    if is_builtin(fn, "msgpack"):
        return msgpack.Packer(use_bin_type=True, autoreset=True).pack  # type: ignore[no-any-return]
    return fn


def _serialize(fn: Callable[[Any], Any], obj: Any, topic: str, what: str) -> bytes:
    try:
        data = fn(obj)
    except Exception as exc:
        raise serialization_error(topic, what, exc) from exc
    if type(data) is not bytes:
        if isinstance(data, (bytearray, memoryview)):
            return bytes(data)
        raise SerializationError(f"topic {topic!r}: the {what} serializer returned "
                                 f"{type(data).__name__}, not bytes")
    return data


def _identity(obj: Any) -> Any:
    return obj


def _serialize_column(fn: Serializer, items: Sequence[Any], topic: str, what: str
                      ) -> list[bytes | None]:
    """Serialize a column with one C-level ``map``; on a failure, find and name the
    record that failed."""
    if is_builtin(fn, "bytes") and set(map(type, items)) <= _BYTES_OR_NONE:
        return items if type(items) is list else list(items)
    fn = column_packer(fn)
    try:
        if None in items:
            out = [None if x is None else fn(x) for x in items]
        else:
            out = list(map(fn, items))
    except Exception:
        for i, x in enumerate(items):
            if x is not None:
                try:
                    fn(x)
                except Exception as exc:
                    raise serialization_error(topic, what, exc, index=i) from exc
        raise
    if not set(map(type, out)) <= _BYTES_OR_NONE:
        return [None if x is None else _serialize(_identity, x, topic, what) for x in out]
    return out


class Producer:
    """Sends records to the topics of a ``Log``. Thread-safe: many threads may share
    one producer. A context manager: leaving it closes (and flushes) the producer.

    Options:

    - ``key_serializer`` / ``value_serializer``: "msgpack" (default), "bytes", "str",
      "json", or a callable returning bytes.
    - ``partitioner``: "xxhash" (default; a hash of the serialized key), "murmur2"
      (Kafka's, so keys land where Kafka would put them), or a callable
      ``(topic, key_bytes, num_partitions) -> partition`` called for every record.
    - ``linger_ms`` (5): how long a batch may wait for more records.
    - ``batch_bytes`` (128 KiB): append a batch once it holds this many bytes. Keyless
      records stick to one partition for ``batch_bytes``, then move to the next.
    - ``enable_idempotence`` / ``producer_id``: see the module docstring.
    - ``transactional_id`` / ``transaction_timeout_ms`` (60000): a transactional producer
      (``init_transactions``, ``begin_transaction``, ``commit_transaction``, ...), whose
      records become visible to ``read_committed`` consumers together at commit, or
      never; see docs/transactions.md.
    - ``client_id`` (Kafka's ``client.id``): a name for this producer, in ``metrics()``.
    """

    def __new__(cls, log: Log, *args: Any, **kwargs: Any) -> Producer:
        # A log on another backend (a Kafka cluster) brings its own producer class.
        klass = cls
        if cls is Producer and isinstance(log, Log):
            klass = log.client_classes.get("producer", cls)
        return super().__new__(klass)

    def __init__(self, log: Log, *, key_serializer: str | Serializer | None = None,
                 value_serializer: str | Serializer | None = None,
                 partitioner: str | Partitioner = "xxhash",
                 linger_ms: int = 5, batch_bytes: int = 128 * 1024,
                 enable_idempotence: bool = False, producer_id: int | None = None,
                 transactional_id: str | None = None,
                 transaction_timeout_ms: int = 60_000,
                 client_id: str | None = None) -> None:
        if not isinstance(log, Log):
            raise TypeError(f"Producer needs an eventlog.Log, not {type(log).__name__}")
        backend = log.backend
        backend.check_open()
        if backend.read_only:  # refused here, not at the first send's future
            raise ReadOnlyError(f"the log {backend.path} was opened with read_only=True: "
                                "a producer is refused (open it without read_only for that)")
        check_int("linger_ms", linger_ms, 0)
        check_int("batch_bytes", batch_bytes, 1)
        check_int("producer_id", producer_id, 0, 2**63 - 1, optional=True)
        if transactional_id is not None and producer_id is not None:
            raise InvalidConfigError("a transactional producer gets its producer id from "
                                     "init_transactions(): do not pass producer_id")
        self.client_id = check_client_id(client_id)
        self._backend = backend
        self._key_ser = serializer(key_serializer)
        self._value_ser = serializer(value_serializer)
        explicit_id = producer_id is not None
        if producer_id is None and enable_idempotence:
            producer_id = int.from_bytes(os.urandom(8), "little") >> 1
        self.producer_id = producer_id
        self._partitioner = RecordPartitioner(partitioner, batch_bytes, producer_id)
        self._custom_partitioner = self._partitioner.custom
        self._batch_bytes = batch_bytes
        self._clock = backend.clock
        self._wall_clock = backend.clock is _wall_clock_ms  # inlined on the hot path
        self._fast = not self._custom_partitioner and all(
            any(is_builtin(fn, name) for name in BUILTINS)
            for fn in (self._key_ser, self._value_ser))
        self._vpack = _own_packer(self._value_ser)
        self._kpack = _own_packer(self._key_ser)
        self._info: dict[str, TopicInfo] = {}
        self._accumulator = Accumulator(Sender(backend, self.producer_id), batch_bytes,
                                        linger_ms / 1000)
        self._lock = self._accumulator.lock
        self._acquire, self._release = self._lock.acquire, self._lock.release
        self._hot = self._accumulator.hot
        self._closing = False  # no more sends
        self._closed = False
        self._id_lock_fd = -1
        self._txn: TransactionManager | None = None
        if transactional_id is not None:
            self._txn = TransactionManager(backend.transactions(), transactional_id,
                                           transaction_timeout_ms, self._accumulator.sender,
                                           self._accumulator.flush)
        # send()'s fast path is for built-in serializers outside transactions
        self._plain = self._fast and self._txn is None
        if explicit_id:  # (a random id needs no lock)
            assert producer_id is not None
            self._lock_producer_id(producer_id)  # last: nothing may fail after it
        _live_producers.add(self)

    # The dispatch above takes (log, *args, **kwargs): help(), inspect.signature and the
    # API reference show __init__'s parameters instead.
    __new__.__signature__ = inspect.signature(__init__).replace(  # type: ignore[attr-defined]
        return_annotation=inspect.Signature.empty)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<eventlog.Producer {self._backend.path!r} {state}>"

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _lock_producer_id(self, producer_id: int) -> None:
        path = self._backend.producer_id_lock_path(producer_id)
        with _fileutil.os_errors("locking the producer id"):
            _fileutil.makedirs(os.path.dirname(path))
            fd = _fileutil.open_fd(path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ProducerFencedError(f"producer_id {producer_id} is in use by another live "
                                      "producer (in this or another process)") from None
        self._id_lock_fd = fd

    # -- sending ------------------------------------------------------------------------

    @_fileutil.translate_errors("producer")
    def _refresh_info(self, topic: str, now: bool = False) -> TopicInfo:
        """Cache the metadata of ``topic`` for the next ``_REFRESH_EVERY`` sends (the
        backend re-reads it at most every half second, or ``now``)."""
        self._backend.check_open()
        meta = self._backend.metadata(topic, refresh=now)
        info = self._info[topic] = TopicInfo(meta.config.max_message_bytes,
                                              meta.partitions, _REFRESH_EVERY)
        return info

    def send(self, topic: str, value: Any = None, *, key: Any = None,
             headers: Iterable[tuple[str, bytes]] | None = None, partition: int | None = None,
             timestamp_ms: int | None = None) -> RecordFuture:
        """Queue one record and return its future. Thread-safe.

        Raises at once (nothing queued) for an unknown topic, a record the serializer
        cannot encode (``SerializationError``), headers that are not ``(str, bytes)``
        pairs (``InvalidRecordError``), a record over ``max_message_bytes``
        (``RecordTooLargeError``), or a closed producer (``ClosedError``). Errors while
        storing the batch are delivered through the future.

        Cost: one serializer call and about a microsecond of bookkeeping; the batch is
        appended later, once per ``batch_bytes`` or ``linger_ms``.
        """
        if timestamp_ms is None:
            ts = _time_ns() // 1_000_000 if self._wall_clock else self._clock()
        elif type(timestamp_ms) is not int or not 0 <= timestamp_ms <= MAX_TIMESTAMP_MS:
            raise InvalidRecordError(f"timestamp_ms must be an int from 0 to "
                                     f"{MAX_TIMESTAMP_MS}, not {timestamp_ms!r}")
        else:
            ts = timestamp_ms
        if key is not None or headers is not None or partition is not None or not self._plain:
            return self._send_general(topic, value, key, headers, partition, ts)
        # The common case, a keyless record with built-in serializers, inlined: it is
        # the hot path of every producer (see benchmarks/bench_producer.py). It is
        # Accumulator.append and StickyPartitioner.place for an entry of
        # Accumulator.hot (see there when it is valid); anything else takes
        # _send_general, which renews the entry. The lock's bound methods are faster
        # than a with statement (about 120 ns against 230).
        self._acquire()
        try:
            if self._closing:
                raise ClosedError("the producer is closed")
            hot = self._hot.get(topic)
            if hot is not None:
                batch, info, cursor = hot
                if info.sends_left > 0 and cursor.filled < self._batch_bytes and (
                        batch.plain if batch is not None else self._info.get(topic) is info):
                    if value is None:
                        v = None
                        size = 0
                    else:
                        try:
                            v = self._vpack(value)
                        except Exception as exc:
                            raise serialization_error(topic, "value", exc) from exc
                        size = len(v)
                        if size > info.max_message_bytes:
                            check_size(size, info.max_message_bytes, topic)
                    if batch is None:
                        # The last batch was drained (a record sent alone and flushed):
                        # open the next one where the general path would (None: it
                        # cannot, so let it).
                        batch = self._accumulator.reopen(topic, info, cursor)
                    if batch is not None:
                        info.sends_left -= 1
                        cursor.filled += size + 1
                        values = batch.values
                        future = new_future((batch.result, len(values), ts,
                                             self._accumulator))
                        values.append(v)
                        batch.timestamps.append(ts)
                        batch.bytes += size
                        full = batch.partition if batch.bytes >= self._batch_bytes else -1
                    else:
                        hot = None
                else:
                    hot = None
        finally:
            self._release()
        if hot is None:  # the first record of a batch, or something changed
            return self._send_general(topic, value, None, None, None, ts)
        if full >= 0:
            self._accumulator.drain(topic, full)
        return future

    def _send_general(self, topic: str, value: Any, key: Any,
                      headers: Iterable[tuple[str, bytes]] | None, partition: int | None,
                      ts: int) -> RecordFuture:
        if self._txn is not None and not self._closing:
            self._txn.check_send()
        hdrs = None if headers is None else check_headers(headers, f"topic {topic!r}")
        fast = self._fast
        if not fast:  # user callables run outside the lock
            v = None if value is None else _serialize(self._value_ser, value, topic, "value")
            k = None if key is None else _serialize(self._key_ser, key, topic, "key")
        accumulator = self._accumulator
        partitioner = self._partitioner
        hot = None
        with self._lock:
            if self._closing:
                raise ClosedError("the producer is closed")
            info = self._info.get(topic)
            if info is None or info.sends_left <= 0:
                info = self._refresh_info(topic)
            info.sends_left -= 1
            if fast:
                v = None if value is None else _serialize(self._vpack, value, topic, "value")
                k = None if key is None else _serialize(self._kpack, key, topic, "key")
            size = record_size(k, v, hdrs)
            check_size(size, info.max_message_bytes, topic)
            if partition is not None:
                if type(partition) is int and partition >= info.partitions:
                    # partitions added (or the topic created again) by another process
                    info = self._refresh_info(topic, now=True)
                p = check_partition(partition, info.partitions, topic)
            elif partitioner.uses_sticky(k):
                p, cursor = partitioner.place_keyless(topic, info.partitions, size)
                if fast and not hdrs:
                    hot = (info, cursor)
            elif fast:
                p = partitioner.choose(topic, k, info.partitions)
            else:
                p = -1  # a custom partitioner (or serializer): called outside the lock
            if p >= 0:
                future, due = accumulator.append(topic, p, v, k, hdrs, ts, size, hot)
        if p < 0:
            p = partitioner.choose(topic, k, info.partitions)
            with self._lock:
                if self._closing:
                    raise ClosedError("the producer is closed")
                future, due = accumulator.append(topic, p, v, k, hdrs, ts, size)
        if due:
            accumulator.drain(topic, p)
        return future

    @_fileutil.translate_errors("producer")
    def send_batch(self, topic: str, values: Sequence[Any], *, keys: Sequence[Any] | None = None,
                   headers: Sequence[Iterable[tuple[str, bytes]] | None] | None = None,
                   partition: int | None = None,
                   timestamps_ms: Sequence[int] | int | None = None) -> BatchMetadata:
        """Serialize and append many records at once; return where each was stored.

        Synchronous: when it returns, every record is appended and visible, after any
        records this producer had pending for the same partitions. Every record is
        serialized and checked before anything is written. Cost: per record, one
        serializer call (in a C-level map); per 1 MiB, one append. Thread-safe.
        """
        if self._closing:
            raise ClosedError("the producer is closed")
        if self._txn is not None:
            self._txn.check_send()
        count = len(values)
        if count == 0:
            return BatchMetadata(topic, 0)
        self._backend.check_open()
        meta = self._backend.metadata(topic)
        where = f"topic {topic!r}"
        vals = _serialize_column(self._value_ser, values, topic, "value")
        ks = None
        if keys is not None:
            if len(keys) != count:
                raise InvalidRecordError(f"{where}: {len(keys)} keys for {count} values")
            ks = _serialize_column(self._key_ser, keys, topic, "key")
            if ks.count(None) == count:
                ks = None
        hdrs = None
        if headers is not None:
            if len(headers) != count:
                raise InvalidRecordError(f"{where}: {len(headers)} headers for {count} values")
            hdrs = [check_headers(h, where) for h in headers]
            if not any(hdrs):
                hdrs = None
        sizes = batch_sizes(vals, ks, hdrs, meta.config.max_message_bytes, where)
        stamps: Sequence[int] | int
        if timestamps_ms is None:
            stamps = self._clock()
        else:
            stamps = check_timestamps(timestamps_ms, count, where)
        columns = Columns(vals, ks, hdrs, stamps, sizes, max(sizes))
        if self._custom_partitioner:  # user code, outside the lock (it uses no cursor)
            groups = self._partitioner.assign(topic, meta.partitions, ks, sizes, partition)
        else:
            with self._lock:  # the sticky cursors
                groups = self._partitioner.assign(topic, meta.partitions, ks, sizes,
                                                  partition)
        chunk_bytes = max(self._batch_bytes, BULK_BLOCK_BYTES)
        chunks: list[Chunk] = []
        for p, indexes in groups:
            self._accumulator.write_columns(topic, p, indexes, columns, chunk_bytes, chunks)
        return BatchMetadata(topic, count, chunks)

    # -- flushing and closing ---------------------------------------------------------

    @_fileutil.translate_errors("producer")
    def flush(self, timeout: float | None = None) -> None:
        """Append every record sent before this call; return when all are stored (or
        failed: see their futures). Raises ``TimeoutError`` after ``timeout`` seconds
        (the records stay queued and are appended later). Thread-safe; cost: one
        append per pending batch."""
        self._accumulator.flush(timeout)

    @_fileutil.translate_errors("producer")
    def close(self, timeout: float | None = None) -> None:
        """Flush, then refuse further sends (``ClosedError``). Idempotent."""
        if self._closed:
            return
        if self._txn is not None and not self._backend.closed:
            self._txn.close()  # aborts an open transaction (while it can still flush)
        self._closing = True
        try:
            if not self._backend.closed:
                try:
                    self.flush(timeout)
                except TimeoutError:
                    pass  # what is still pending fails with ClosedError below
        finally:
            self._closed = True
            self._accumulator.close(timeout, ClosedError(
                "the producer was closed before this record was appended"))
            if self._id_lock_fd >= 0:
                os.close(self._id_lock_fd)
                self._id_lock_fd = -1
            _live_producers.discard(self)

    # -- transactions -------------------------------------------------------------------

    def _transactions(self) -> TransactionManager:
        if self._closed:
            raise ClosedError("the producer is closed")
        if self._txn is None:
            raise TransactionError("this producer has no transactional_id")
        return self._txn

    @_fileutil.translate_errors("producer")
    def init_transactions(self) -> None:
        """Take over this producer's ``transactional_id``: fence every older producer
        with the same id (in any process: its next call raises
        ``ProducerFencedError``), abort the transaction it left open (or complete the
        one it was committing), and start a new epoch. Call once, before the first
        ``begin_transaction``. Cost: a few state-file writes, plus the markers of an
        unfinished transaction."""
        self._transactions().init()

    @_fileutil.translate_errors("producer")
    def begin_transaction(self) -> None:
        """Open a transaction: the records sent until ``commit_transaction`` become
        visible to ``read_committed`` consumers together, or never. Raises
        ``TransactionError`` before ``init_transactions`` or with one open already.
        Cost: a small file read (and, once a second, a look for timed-out
        transactions)."""
        self._transactions().begin()

    @_fileutil.translate_errors("producer")
    def send_offsets_to_transaction(self, offsets: Mapping[TopicPartition, int],
                                    group_id: str) -> None:
        """Commit ``offsets`` (the next offsets to read, as in ``Consumer.commit``) for
        consumer group ``group_id`` atomically with the open transaction: they become
        the group's committed offsets at ``commit_transaction``, and never on abort.
        Raises ``TransactionError`` without an open transaction,
        ``ProducerFencedError`` if fenced. Cost: a small file read."""
        self._transactions().send_offsets(offsets, group_id)

    @_fileutil.translate_errors("producer")
    def commit_transaction(self, timeout: float | None = None) -> None:
        """Flush the transaction's records and commit it: markers in every partition it
        wrote, then its offsets. ``TimeoutError`` if the records could not be flushed
        within ``timeout`` seconds (nothing decided: call again, or abort);
        ``TransactionError`` if one of its sends failed (abort it);
        ``ProducerFencedError`` if a newer producer took the id over. Cost: two
        fsynced state writes, one marker append per partition (fsynced unless
        ``fsync="never"``), one offsets commit per group."""
        self._transactions().commit(timeout)

    @_fileutil.translate_errors("producer")
    def abort_transaction(self, timeout: float | None = None) -> None:
        """Abort the open transaction: its records are never returned to
        ``read_committed`` consumers, and its offsets are dropped. Cost: as a commit,
        without the offsets."""
        self._transactions().abort(timeout)

    @contextmanager
    def transaction(self) -> Iterator[Producer]:
        """``with producer.transaction():`` begins a transaction, commits it when the
        block ends normally, and aborts it when the block raises (the exception goes
        on). A fenced producer's exception is not masked by the abort."""
        self.begin_transaction()
        try:
            yield self
        except BaseException:
            txn = self._txn
            if txn is not None and txn.in_transaction():
                try:
                    self.abort_transaction()
                except ProducerFencedError:
                    pass  # the successor aborted it already
            raise
        self.commit_transaction()

    # -- introspection ----------------------------------------------------------------

    @_fileutil.translate_errors("producer")
    def partitions_for(self, topic: str) -> list[int]:
        """The partition ids of ``topic``. Cost: a metadata lookup (a file read at most
        every half second)."""
        return list(range(self._backend.metadata(topic).partitions))

    def metrics(self) -> dict[str, Any]:
        """Counters since the producer was created: records and bytes appended,
        batches, average batch size, records that failed, and duplicates skipped; and
        the ``client_id`` they belong to (None if none was given).
        Cost: O(partitions with pending records)."""
        m: dict[str, Any] = dict(self._accumulator.sender.metrics())
        m["client_id"] = self.client_id
        m["records_pending"] = self._accumulator.pending_records()
        batches = m["batches_sent"]
        m["records_per_batch"] = (m["records_sent"] + m["duplicates"]) / batches if batches \
            else 0.0
        m["bytes_per_batch"] = m["bytes_sent"] / batches if batches else 0.0
        return m
