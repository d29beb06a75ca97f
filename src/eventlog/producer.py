"""Producer: batching, partitioning, serializers, futures, idempotence.

``send`` serializes a record, picks its partition, and adds it to that partition's
pending batch; a batch is appended (as one batch) when it reaches ``batch_bytes``,
when it has waited ``linger_ms`` (a background thread appends it), on ``flush``, or as
soon as someone waits for one of its futures. Each partition's batches are appended
in send order, one at a time, so a producer's records keep their order per
partition, whatever threads send them.

``send_batch`` is the bulk path: one call serializes a whole column of values with
one C-level map and appends it in large batches, close to the speed of writing the
bytes to a file.

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
import logging
import operator
import os
import random
import struct
import threading
import time
import weakref
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import repeat
from typing import Any, overload

import msgpack
import xxhash

from . import _fileutil
from ._format import EncodedBatch, encode_batch
from ._partition import AppendResult
from ._producer_state import SEQUENCE_MODULUS
from ._records import byte_sizes, check_headers, record_size
from ._types import RecordMetadata
from .config import _wall_clock_ms
from .errors import (
    ClosedError,
    InvalidConfigError,
    InvalidRecordError,
    ProducerFencedError,
    RecordTooLargeError,
    SerializationError,
)
from .log import Log
from .serde import BUILTINS, Serializer, column_packer, is_builtin, serializer
from .topic import Topic

__all__ = ["BatchMetadata", "Producer", "RecordFuture", "murmur2"]

DEFAULT_LINGER_MS = 5
_REFRESH_EVERY = 256  # sends between checks for topic changes by other processes
DEFAULT_BATCH_BYTES = 128 * 1024
_BULK_BATCH_BYTES = 1 << 20
PRODUCERS_DIR = "producers"

Partitioner = Callable[[str, "bytes | None", int], int]

_logger = logging.getLogger("eventlog")

_time_ns = time.time_ns

_M32 = 0xFFFFFFFF
_WORDS = struct.Struct("<I")


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash of ``data`` (a signed 32-bit int, as Java returns it).

    Kafka's default partitioner puts a keyed record on partition
    ``(murmur2(key_bytes) & 0x7fffffff) % num_partitions``.

    >>> murmur2(b"21"), murmur2(b"foobar")
    (-973932308, -790332482)
    """
    length = len(data)
    m = 0x5BD1E995
    h = (0x9747B28C ^ length) & _M32
    whole = length & ~3
    for (k,) in _WORDS.iter_unpack(data[:whole]):
        k = (k * m) & _M32
        k ^= k >> 24
        k = (k * m) & _M32
        h = ((h * m) & _M32) ^ k
    rest = length & 3
    if rest == 3:
        h ^= data[whole + 2] << 16
    if rest >= 2:
        h ^= data[whole + 1] << 8
    if rest >= 1:
        h ^= data[whole]
        h = (h * m) & _M32
    h ^= h >> 13
    h = (h * m) & _M32
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def _murmur2_partition(topic: str, key: bytes | None, partitions: int) -> int:
    assert key is not None
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def _xxhash_partition(topic: str, key: bytes | None, partitions: int) -> int:
    assert key is not None
    return int(xxhash.xxh3_64_intdigest(key) % partitions)


_PARTITIONERS: dict[str, Partitioner] = {"xxhash": _xxhash_partition,
                                         "murmur2": _murmur2_partition}


class _Batch:
    """Completion state shared by the futures of the records of one pending batch."""

    __slots__ = ("base_offset", "callbacks", "done", "error", "event", "lock", "log_time",
                 "partition", "skipped", "stored", "topic")

    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition
        self.done = False
        self.error: BaseException | None = None
        self.base_offset = -1
        self.log_time = -1
        self.skipped = 0
        self.stored: list[int] | None = None
        self.event = threading.Event()
        self.lock = threading.Lock()
        self.callbacks: list[tuple[RecordFuture, Callable[[RecordFuture], Any]]] = []

    def offset_of(self, index: int) -> int:
        if index < self.skipped:
            assert self.stored is not None
            return self.stored[index]
        return self.base_offset + index - self.skipped

    def finish(self, result: AppendResult | None, error: BaseException | None
               ) -> list[tuple[RecordFuture, Callable[[RecordFuture], Any]]]:
        """Complete the futures; return the callbacks for the caller to run (outside
        any lock: a callback may send again)."""
        if result is not None:
            stored = result.stored_offsets
            self.stored = stored
            self.skipped = len(stored) if stored else 0
            self.base_offset = result.base_offset
            self.log_time = result.log_append_time_ms
        self.error = error
        with self.lock:
            self.done = True
            callbacks, self.callbacks = self.callbacks, []
        self.event.set()
        return callbacks


def _run_callback(fn: Callable[[RecordFuture], Any], future: RecordFuture) -> None:
    try:
        fn(future)
    except Exception:  # a callback's failure must not break the producer
        _logger.exception("exception in a send-future callback")


class RecordFuture(tuple):  # type: ignore[type-arg]
    """The future of one sent record: ``result()`` gives its ``RecordMetadata``.

    Waiting on a future appends its batch at once rather than after ``linger_ms``.
    (A tuple underneath: one is made per record, and a tuple is built in C.)
    """

    __slots__ = ()

    # fields: 0 batch, 1 index in the batch, 2 timestamp_ms, 3 producer

    def __repr__(self) -> str:
        b: _Batch = self[0]
        state = "pending" if not b.done else ("failed" if b.error else "done")
        return f"<RecordFuture {b.topic}[{b.partition}] {state}>"

    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)

    def done(self) -> bool:
        return bool(self[0].done)

    def _wait(self, timeout: float | None) -> _Batch:
        batch: _Batch = self[0]
        if not batch.done:
            self[3]._expedite(batch, timeout)
            if not batch.event.wait(timeout):
                raise TimeoutError(f"record for {batch.topic}[{batch.partition}] was not "
                                   f"appended within {timeout} s")
        return batch

    def result(self, timeout: float | None = None) -> RecordMetadata:
        """Wait (up to ``timeout`` seconds; None: forever) and return where the record
        was stored. Raises the error that prevented storing it."""
        batch = self._wait(timeout)
        if batch.error is not None:
            raise batch.error
        ts = batch.log_time if batch.log_time >= 0 else self[2]
        return RecordMetadata(batch.topic, batch.partition, batch.offset_of(self[1]), ts)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        return self._wait(timeout).error

    def add_done_callback(self, fn: Callable[[RecordFuture], Any]) -> None:
        """Call ``fn(future)`` when the record is stored or failed (at once if it is
        already done), in the thread that completes it."""
        batch: _Batch = self[0]
        with batch.lock:
            if not batch.done:
                batch.callbacks.append((self, fn))
                return
        _run_callback(fn, self)


_new_future: Callable[[tuple[Any, ...]], RecordFuture] = RecordFuture  # calling the type
# directly is the fastest way to make one (about 150 ns; partial(tuple.__new__) is 370)


class _Pending:
    """Records waiting to be appended to one partition, column by column."""

    __slots__ = ("batch", "bytes", "created", "headers", "keys", "partition", "plain",
                 "timestamps", "values")

    def __init__(self, topic: str, partition: int) -> None:
        self.partition = partition
        self.values: list[bytes | None] = []
        self.timestamps: list[int] = []
        # Created when the first key / headers arrive (back-filled with None).
        self.keys: list[bytes | None] | None = None
        self.headers: list[list[tuple[str, bytes]] | None] | None = None
        self.bytes = 0
        self.created = time.monotonic()
        self.batch = _Batch(topic, partition)
        # True while every record has neither key nor headers and the batch is still
        # waiting: send() may then add keyless records to it directly (Producer._hot).
        self.plain = True


class BatchMetadata(Sequence[RecordMetadata]):
    """Where the records of one ``send_batch`` call were stored, in input order.

    A sequence of ``RecordMetadata`` built on demand: holding it costs a few numbers per
    appended batch, not an object per record.
    """

    def __init__(self, topic: str, count: int) -> None:
        self.topic = topic
        self._count = count
        # (partition, indexes, base offset, stored offsets, timestamp or list, log time)
        self._chunks: list[tuple[int, Sequence[int], int, list[int] | None, Any, int]] = []
        self._partitions: array[int] | None = None
        self._offsets: array[int] | None = None
        self._timestamps: array[int] | None = None

    def _add(self, partition: int, indexes: Sequence[int], result: AppendResult,
             timestamps: Any) -> None:
        self._chunks.append((partition, indexes, result.base_offset, result.stored_offsets,
                             timestamps, result.log_append_time_ms))
        self._partitions = None

    def __len__(self) -> int:
        return self._count

    def _materialize(self) -> tuple[array[int], array[int], array[int]]:
        if self._partitions is None or self._offsets is None or self._timestamps is None:
            parts = array("i", bytes(4 * self._count))
            offsets = array("q", bytes(8 * self._count))
            stamps = array("q", bytes(8 * self._count))
            for partition, indexes, base, stored, ts, log_time in self._chunks:
                skipped = len(stored) if stored else 0
                for j, i in enumerate(indexes):
                    parts[i] = partition
                    offsets[i] = stored[j] if stored and j < skipped else base + j - skipped
                    if log_time >= 0:
                        stamps[i] = log_time
                    else:
                        stamps[i] = ts if isinstance(ts, int) else ts[j]
            self._partitions, self._offsets, self._timestamps = parts, offsets, stamps
        return self._partitions, self._offsets, self._timestamps

    @overload
    def __getitem__(self, index: int) -> RecordMetadata: ...

    @overload
    def __getitem__(self, index: slice) -> list[RecordMetadata]: ...

    def __getitem__(self, index: int | slice) -> RecordMetadata | list[RecordMetadata]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._count))]
        if index < 0:
            index += self._count
        if not 0 <= index < self._count:
            raise IndexError("BatchMetadata index out of range")
        parts, offsets, stamps = self._materialize()
        return RecordMetadata(self.topic, parts[index], offsets[index], stamps[index])

    def offsets(self) -> list[int]:
        """The offset of each record, in input order."""
        return list(self._materialize()[1])

    def partitions(self) -> list[int]:
        """The partition of each record, in input order."""
        return list(self._materialize()[0])


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
    """

    def __init__(self, log: Log, *, key_serializer: str | Serializer | None = None,
                 value_serializer: str | Serializer | None = None,
                 partitioner: str | Partitioner = "xxhash",
                 linger_ms: int = DEFAULT_LINGER_MS, batch_bytes: int = DEFAULT_BATCH_BYTES,
                 enable_idempotence: bool = False, producer_id: int | None = None) -> None:
        if not isinstance(log, Log):
            raise TypeError(f"Producer needs an eventlog.Log, not {type(log).__name__}")
        log._check_open()
        if type(linger_ms) is not int or linger_ms < 0:
            raise InvalidConfigError(f"linger_ms must be an int >= 0, not {linger_ms!r}")
        if type(batch_bytes) is not int or batch_bytes < 1:
            raise InvalidConfigError(f"batch_bytes must be a positive int, not {batch_bytes!r}")
        self._log = log
        self._key_ser = serializer(key_serializer)
        self._value_ser = serializer(value_serializer)
        if isinstance(partitioner, str):
            if partitioner not in _PARTITIONERS:
                raise InvalidConfigError(f"unknown partitioner {partitioner!r}; use "
                                         f"'xxhash', 'murmur2' or a callable")
            self._partitioner = _PARTITIONERS[partitioner]
            self._custom_partitioner = False
        elif callable(partitioner):
            self._partitioner = partitioner
            self._custom_partitioner = True
        else:
            raise InvalidConfigError(f"partitioner must be a name or a callable, "
                                     f"not {partitioner!r}")
        self._linger_s = linger_ms / 1000
        self._batch_bytes = batch_bytes
        self._clock = log._ctx.clock
        # The default wall clock is inlined on the hot path.
        self._wall_clock = log._ctx.clock is _wall_clock_ms
        # Built-in serializers run under the producer lock with this producer's own
        # msgpack Packer (a Packer is not thread-safe; the lock makes it so).
        self._fast = not self._custom_partitioner and all(
            any(is_builtin(fn, name) for name in BUILTINS)
            for fn in (self._key_ser, self._value_ser))
        self._vpack = self._own_packer(self._value_ser)
        self._kpack = self._own_packer(self._key_ser)
        self._info: dict[str, list[Any]] = {}
        self._lock = threading.Lock()
        self._acquire, self._release = self._lock.acquire, self._lock.release
        self._cond = threading.Condition(self._lock)
        self._topics: dict[str, Topic] = {}
        self._pending: dict[str, list[_Pending | None]] = {}
        self._drain_locks: dict[tuple[str, int], threading.RLock] = {}
        self._sticky: dict[str, list[int]] = {}       # topic -> [partition, bytes in block]
        # topic -> (pending batch of its sticky partition, _info entry, _sticky entry):
        # send()'s fast path, valid while the batch is plain, the info is fresh and the
        # sticky block has room (anything else takes _send_general, which renews it).
        self._hot: dict[str, tuple[_Pending, list[Any], list[int]]] = {}
        self._sequences: dict[tuple[str, int], int] = {}
        self._urgent: set[tuple[str, int]] = set()            # drain these now (linger thread)
        self._inflight: dict[tuple[str, int], _Batch] = {}    # batches being appended
        self._closing = False
        self._closed = False
        self._linger_thread: threading.Thread | None = None
        self._id_lock_fd = -1
        self._metrics = {"records_sent": 0, "bytes_sent": 0, "batches_sent": 0, "errors": 0,
                         "duplicates": 0}
        if producer_id is not None:
            if type(producer_id) is not int or not 0 <= producer_id < 2**63:
                raise InvalidConfigError(f"producer_id must be an int in [0, 2**63), "
                                         f"not {producer_id!r}")
            self._lock_producer_id(producer_id)
            enable_idempotence = True
        elif enable_idempotence:
            producer_id = int.from_bytes(os.urandom(8), "little") >> 1
        self.producer_id = producer_id if enable_idempotence else None
        # Chooses where keyless records start; not security relevant.
        self._rng = random.Random(producer_id)  # noqa: S311
        _live_producers.add(self)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<eventlog.Producer {self._log.path!r} {state}>"

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _own_packer(fn: Serializer) -> Callable[[Any], bytes]:
        if is_builtin(fn, "msgpack"):
            return msgpack.Packer(use_bin_type=True, autoreset=True).pack  # type: ignore[no-any-return]
        return fn

    def _lock_producer_id(self, producer_id: int) -> None:
        directory = os.path.join(self._log.path, PRODUCERS_DIR)
        with _fileutil.os_errors("locking the producer id"):
            _fileutil.makedirs(directory)
            fd = _fileutil.open_fd(os.path.join(directory, f"{producer_id}.lock"),
                                   os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ProducerFencedError(f"producer_id {producer_id} is in use by another live "
                                      "producer (in this or another process)") from None
        self._id_lock_fd = fd

    # -- sending ------------------------------------------------------------------------

    @_fileutil.translate_errors("producer")
    def _topic(self, name: str) -> Topic:
        topic = self._topics.get(name)
        if topic is None:
            topic = self._log.topic(name)
            self._topics[name] = topic
        return topic

    def _serialize(self, fn: Serializer, obj: Any, topic: str, what: str) -> bytes:
        try:
            data = fn(obj)
        except Exception as exc:
            raise SerializationError(f"topic {topic!r}: could not serialize the {what} "
                                     f"({type(exc).__name__}: {exc})") from exc
        if type(data) is not bytes:
            if isinstance(data, (bytearray, memoryview)):
                return bytes(data)
            raise SerializationError(f"topic {topic!r}: the {what} serializer returned "
                                     f"{type(data).__name__}, not bytes")
        return data

    def _choose(self, topic: str, key: bytes | None, partitions: int, size: int) -> int:
        if self._custom_partitioner or key is not None:
            p = self._partitioner(topic, key, partitions)
            if type(p) is not int or not 0 <= p < partitions:
                raise InvalidConfigError(f"partitioner returned {p!r} for topic {topic!r} "
                                         f"with {partitions} partitions")
            return p
        return self._sticky_partition(topic, partitions, size)

    def _sticky_partition(self, topic: str, partitions: int, size: int) -> int:
        """Keyless records fill ``batch_bytes`` on one partition, then move on. The
        sequence depends only on record sizes and order (and, for an idempotent
        producer, its id), so a replay puts records where they went before."""
        state = self._sticky.get(topic)
        if state is None:
            start = (self.producer_id % partitions if self.producer_id is not None
                     else self._rng.randrange(partitions))
            state = self._sticky[topic] = [start, 0]
        if state[1] >= self._batch_bytes:
            state[0] += 1
            state[1] = 0
        state[1] += size + 1
        return state[0] % partitions

    def _topic_info(self, topic: str) -> list[Any]:
        """Cached [max_message_bytes, partitions, sends until the next refresh] of a
        topic; ``Topic._refresh`` re-reads its file at most every half second."""
        meta = self._topic(topic)._refresh()
        info = [meta.config.max_message_bytes, meta.partitions, _REFRESH_EVERY]
        self._info[topic] = info
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
        elif type(timestamp_ms) is not int or timestamp_ms < 0:
            raise InvalidRecordError(f"timestamp_ms must be an int >= 0, not {timestamp_ms!r}")
        else:
            ts = timestamp_ms
        if key is not None or headers is not None or partition is not None or not self._fast:
            return self._send_general(topic, value, key, headers, partition, ts)
        # The common case, a keyless record with built-in serializers, inlined: it is
        # the hot path of every producer (see benchmarks/bench_producer.py). The lock's
        # bound methods are faster than a with statement (about 120 ns against 230).
        self._acquire()
        try:
            if self._closing:
                raise ClosedError("the producer is closed")
            # The pending batch of the topic's sticky partition, when _send_general
            # left one that is still valid (see _hot in __init__).
            hot = self._hot.get(topic)
            if hot is not None:
                pending, info, sticky = hot
                if not pending.plain or info[2] <= 0 or sticky[1] >= self._batch_bytes:
                    hot = None
            if hot is not None:
                info[2] -= 1
                if value is None:
                    v = None
                    size = 0
                else:
                    try:
                        v = self._vpack(value)
                    except Exception as exc:
                        raise SerializationError(f"topic {topic!r}: could not serialize the "
                                                 f"value ({type(exc).__name__}: {exc})") from exc
                    size = len(v)
                    if size > info[0]:
                        raise RecordTooLargeError(f"topic {topic!r}: the record is {size} "
                                                  f"bytes, more than max_message_bytes="
                                                  f"{info[0]}")
                sticky[1] += size + 1
                values = pending.values
                future = _new_future((pending.batch, len(values), ts, self))
                values.append(v)
                pending.timestamps.append(ts)
                pending.bytes += size
                full = pending.bytes >= self._batch_bytes
        finally:
            self._release()
        if hot is None:  # the first record of a batch, or something changed
            return self._send_general(topic, value, None, None, None, ts)
        if full:
            self._drain(topic, pending.partition)
        return future

    def _send_general(self, topic: str, value: Any, key: Any,
                      headers: Iterable[tuple[str, bytes]] | None, partition: int | None,
                      ts: int) -> RecordFuture:
        hdrs = None if headers is None else check_headers(headers, f"topic {topic!r}")
        fast = self._fast
        if not fast:  # user callables run outside the lock
            v = None if value is None else self._serialize(self._value_ser, value, topic,
                                                            "value")
            k = None if key is None else self._serialize(self._key_ser, key, topic, "key")
        with self._lock:
            if self._closing:
                raise ClosedError("the producer is closed")
            info = self._info.get(topic)
            if info is None or info[2] <= 0:
                info = self._topic_info(topic)
            info[2] -= 1
            if fast:
                v = None if value is None else self._pack_locked(self._vpack, value, topic,
                                                                 "value")
                k = None if key is None else self._pack_locked(self._kpack, key, topic, "key")
            size = (0 if v is None else len(v)) + (0 if k is None else len(k))
            if hdrs:
                size = record_size(k, v, hdrs)
            if size > info[0]:
                raise RecordTooLargeError(f"topic {topic!r}: the record is {size} bytes, "
                                          f"more than max_message_bytes={info[0]}")
            if partition is not None:
                if type(partition) is not int or not 0 <= partition < info[1]:
                    raise InvalidRecordError(f"topic {topic!r} has partitions "
                                             f"0..{info[1] - 1}, not {partition!r}")
                p = partition
            elif k is None and not self._custom_partitioner:
                p = self._sticky_partition(topic, info[1], size)
            elif fast:
                p = self._choose(topic, k, info[1], size)
            else:
                p = -1  # a custom partitioner: called below, outside the lock
            if p >= 0:
                future, full = self._enqueue(topic, p, v, k, hdrs, ts, size)
                if fast and partition is None and k is None and not hdrs and not full:
                    # send() takes its fast path for the next records of this batch
                    pending = self._pending[topic][p]
                    if pending is not None and pending.plain:
                        self._hot[topic] = (pending, info, self._sticky[topic])
        if p < 0:
            p = self._choose(topic, k, info[1], size)
            with self._lock:
                if self._closing:
                    raise ClosedError("the producer is closed")
                future, full = self._enqueue(topic, p, v, k, hdrs, ts, size)
        if full:
            self._drain(topic, p)
        return future

    def _pack_locked(self, pack: Callable[[Any], bytes], obj: Any, topic: str, what: str
                     ) -> bytes:
        try:
            return pack(obj)
        except Exception as exc:
            raise SerializationError(f"topic {topic!r}: could not serialize the {what} "
                                     f"({type(exc).__name__}: {exc})") from exc

    def _enqueue(self, topic: str, p: int, v: bytes | None, k: bytes | None,
                 hdrs: list[tuple[str, bytes]] | None, ts: int, size: int
                 ) -> tuple[RecordFuture, bool]:
        """Add a record to its partition's pending batch (producer lock held)."""
        slots = self._pending.get(topic)
        if slots is None or len(slots) <= p:
            slots = self._grow_slots(topic, p + 1)
        pending = slots[p]
        if pending is None:
            pending = slots[p] = _Pending(topic, p)
            if self._linger_s > 0:
                self._ensure_linger_thread()
                self._cond.notify()
        values = pending.values
        index = len(values)
        future = _new_future((pending.batch, index, ts, self))
        values.append(v)
        pending.timestamps.append(ts)
        if k is not None or pending.keys is not None:
            if pending.keys is None:
                pending.keys = [None] * index
                pending.plain = False
            pending.keys.append(k)
        if hdrs or pending.headers is not None:
            if pending.headers is None:
                pending.headers = [None] * index
                pending.plain = False
            pending.headers.append(hdrs)
        pending.bytes += size
        return future, self._linger_s == 0 or pending.bytes >= self._batch_bytes

    def _grow_slots(self, topic: str, size: int) -> list[_Pending | None]:
        slots = self._pending.setdefault(topic, [])
        slots.extend([None] * (size - len(slots)))
        return slots

    def _drain_lock(self, topic: str, partition: int) -> threading.RLock:
        key = (topic, partition)
        lock = self._drain_locks.get(key)
        if lock is None:
            with self._lock:
                lock = self._drain_locks.setdefault(key, threading.RLock())
        return lock

    def _drain(self, topic: str, partition: int, timeout: float | None = None,
               only: _Batch | None = None) -> None:
        """Append the pending batch of one partition (after any being appended)."""
        lock = self._drain_lock(topic, partition)
        if not lock.acquire(timeout=-1 if timeout is None else max(timeout, 0)):
            raise TimeoutError(f"timed out waiting to append to {topic}[{partition}]")
        try:
            with self._lock:
                slots = self._pending.get(topic)
                pending = slots[partition] if slots and partition < len(slots) else None
                if pending is None or (only is not None and pending.batch is not only):
                    return
                slots[partition] = None  # type: ignore[index]
                pending.plain = False
                hot = self._hot.get(topic)
                if hot is not None and hot[0] is pending:  # let its records go with it
                    del self._hot[topic]
                self._inflight[(topic, partition)] = pending.batch
            result, error = self._append_pending(topic, pending)
            # Complete the futures before letting go of the partition, so that a flush
            # that waited for this lock sees them done...
            callbacks = pending.batch.finish(result, error)
            with self._lock:
                self._inflight.pop((topic, partition), None)
        finally:
            lock.release()
        # ...and run callbacks outside it: they may send to this partition again.
        for future, fn in callbacks:
            _run_callback(fn, future)

    def _append_pending(self, topic: str, pending: _Pending
                        ) -> tuple[AppendResult | None, Exception | None]:
        try:
            encoded = encode_batch(pending.values, pending.keys, pending.timestamps,
                                   pending.headers)
            result = self._append(topic, pending.partition, encoded)
        except Exception as exc:
            with self._lock:
                self._metrics["errors"] += len(pending.values)
            return None, exc
        self._count(len(pending.values), len(encoded.payload), result)
        return result, None

    def _append(self, topic: str, partition: int, encoded: EncodedBatch) -> AppendResult:
        """Append under the partition's drain lock, with sequence numbers if idempotent."""
        part = self._topic(topic).partition(partition)
        if self.producer_id is None:
            return part._log.append(encoded)
        key = (topic, partition)
        sequence = self._sequences.get(key, 0)
        encoded.producer_id = self.producer_id
        encoded.base_sequence = sequence
        result = part._log.append(encoded)  # on an error the sequence is not consumed
        self._sequences[key] = (sequence + encoded.record_count) % SEQUENCE_MODULUS
        return result

    def _count(self, records: int, payload_bytes: int, result: AppendResult) -> None:
        with self._lock:
            m = self._metrics
            skipped = len(result.stored_offsets) if result.stored_offsets else 0
            m["duplicates"] += skipped
            m["records_sent"] += records - skipped
            m["bytes_sent"] += payload_bytes
            m["batches_sent"] += 1

    def _expedite(self, batch: _Batch, timeout: float | None) -> None:
        """Someone waits for ``batch``: append it now instead of after linger_ms.

        Without a timeout the waiter appends it itself (the fastest path for a
        synchronous send). With one, the linger thread does, so that the waiter can
        give up in time even if another process holds the partition lock.
        """
        if timeout is None:
            try:
                self._drain(batch.topic, batch.partition, only=batch)
            except Exception:  # noqa: S110 - the waiter sees the batch's own error instead
                pass
            return
        self._request_urgent([(batch.topic, batch.partition)])

    def _request_urgent(self, targets: Iterable[tuple[str, int]]) -> None:
        with self._cond:
            self._urgent.update(targets)
            self._ensure_linger_thread()
            self._cond.notify()

    # -- bulk -------------------------------------------------------------------------

    def _serialize_column(self, fn: Serializer, items: Sequence[Any], topic: str, what: str
                          ) -> list[bytes | None]:
        if is_builtin(fn, "bytes") and set(map(type, items)) <= {bytes, type(None)}:
            return items if type(items) is list else list(items)
        fn = column_packer(fn)
        try:
            if None in items:
                out = [None if x is None else fn(x) for x in items]
            else:
                out = list(map(fn, items))
        except Exception:
            for i, x in enumerate(items):  # find and name the record that failed
                if x is not None:
                    try:
                        fn(x)
                    except Exception as exc:
                        raise SerializationError(
                            f"topic {topic!r}: could not serialize the {what} of record {i} "
                            f"({type(exc).__name__}: {exc})") from exc
            raise
        if not set(map(type, out)) <= {bytes, type(None)}:
            return [None if x is None else self._serialize(lambda b: b, x, topic, what)
                    for x in out]
        return out

    @_fileutil.translate_errors("producer")
    def send_batch(self, topic: str, values: Sequence[Any], *, keys: Sequence[Any] | None = None,
                   headers: Sequence[Iterable[tuple[str, bytes]] | None] | None = None,
                   partition: int | None = None,
                   timestamps_ms: Sequence[int] | int | None = None) -> BatchMetadata:
        """Serialize and append many records at once; return where each was stored.

        Synchronous: when it returns, every record is appended and visible, after any
        records this producer had pending for the same partitions. Every record is
        serialized and checked before anything is written. Cost: per record, one
        serializer call (in a C-level map); per 1 MiB, one append.
        """
        if self._closing:
            raise ClosedError("the producer is closed")
        count = len(values)
        result = BatchMetadata(topic, count)
        if count == 0:
            return result
        topic_obj = self._topic(topic)
        where = f"topic {topic!r}"
        vals = self._serialize_column(self._value_ser, values, topic, "value")
        ks = None
        if keys is not None:
            if len(keys) != count:
                raise InvalidRecordError(f"{where}: {len(keys)} keys for {count} values")
            ks = self._serialize_column(self._key_ser, keys, topic, "key")
            if ks.count(None) == count:
                ks = None
        hdrs = None
        if headers is not None:
            if len(headers) != count:
                raise InvalidRecordError(f"{where}: {len(headers)} headers for {count} values")
            hdrs = [check_headers(h, where) for h in headers]
            if not any(hdrs):
                hdrs = None
        sizes = byte_sizes(vals)
        if ks is not None:
            sizes = list(map(operator.add, sizes, byte_sizes(ks)))
        if hdrs is not None:
            sizes = [s + record_size(None, None, h) for s, h in zip(sizes, hdrs, strict=True)]
        meta = topic_obj._refresh()
        limit = meta.config.max_message_bytes
        if max(sizes) > limit:
            i = next(i for i, s in enumerate(sizes) if s > limit)
            raise RecordTooLargeError(f"{where}: record {i} is {sizes[i]} bytes, more than "
                                      f"max_message_bytes={limit}")
        stamps: Sequence[int] | int
        if timestamps_ms is None:
            stamps = self._clock()
        elif isinstance(timestamps_ms, int):
            if type(timestamps_ms) is not int or timestamps_ms < 0:
                raise InvalidRecordError(f"{where}: timestamps_ms must be an int >= 0")
            stamps = timestamps_ms
        else:
            stamps = list(timestamps_ms)
            if len(stamps) != count or not set(map(type, stamps)) <= {int} or min(stamps) < 0:
                raise InvalidRecordError(f"{where}: timestamps_ms must be one int >= 0, or "
                                         "one per record")
        for p, indexes in self._assign(topic, meta.partitions, ks, sizes, partition):
            self._drain(topic, p)  # records sent earlier go first
            self._bulk_append(topic, p, indexes, vals, ks, hdrs, stamps, sizes, result)
        return result

    def _assign(self, topic: str, partitions: int, keys: list[bytes | None] | None,
                sizes: list[int], partition: int | None
                ) -> Iterator[tuple[int, Sequence[int]]]:
        count = len(sizes)
        if partition is not None:
            if type(partition) is not int or not 0 <= partition < partitions:
                raise InvalidRecordError(f"topic {topic!r} has partitions "
                                         f"0..{partitions - 1}, not {partition!r}")
            yield partition, range(count)
            return
        if keys is None and not self._custom_partitioner:
            # Contiguous runs of about 1 MiB per partition (larger blocks than send()'s
            # batch_bytes: fewer, larger appends), deterministic like the sticky blocks.
            block = max(self._batch_bytes, _BULK_BATCH_BYTES)
            self._hot.pop(topic, None)  # the sticky partition moves on
            state = self._sticky.get(topic)
            if state is None:
                self._sticky_partition(topic, partitions, 0)
                state = self._sticky[topic]
            start = 0
            while start < count:
                if state[1] >= block:
                    state[0] += 1
                    state[1] = 0
                room = max(1, (block - state[1]) // max(1, sizes[start] + 1))
                stop = min(count, start + room)
                state[1] += sum(sizes[start:stop]) + (stop - start)
                yield state[0] % partitions, range(start, stop)
                start = stop
            return
        groups: dict[int, list[int]] = {}
        if keys is not None and not self._custom_partitioner and None not in keys \
                and self._partitioner is _xxhash_partition:
            # The default partitioner over a whole column: one C call per key, no
            # per-record checks (the same placement as _choose).
            hashes = map(xxhash.xxh3_64_intdigest, keys)  # type: ignore[arg-type]
            parts = list(map(operator.mod, hashes, repeat(partitions, count)))
            for p in set(parts):
                groups[p] = []
            for i, p in enumerate(parts):
                groups[p].append(i)
            yield from groups.items()
            return
        for i in range(count):
            k = keys[i] if keys is not None else None
            groups.setdefault(self._choose(topic, k, partitions, sizes[i]), []).append(i)
        yield from groups.items()

    def _bulk_append(self, topic: str, partition: int, indexes: Sequence[int],
                     vals: list[bytes | None], keys: list[bytes | None] | None,
                     hdrs: list[list[tuple[str, bytes]] | None] | None,
                     stamps: Sequence[int] | int, sizes: list[int],
                     result: BatchMetadata) -> None:
        if isinstance(indexes, range) and len(indexes) == len(sizes):
            total = sum(sizes)
        elif isinstance(indexes, range):
            total = sum(sizes[indexes.start:indexes.stop])
        else:
            total = sum(map(sizes.__getitem__, indexes))
        per_chunk = max(1, len(indexes) * _BULK_BATCH_BYTES // max(1, total))
        with self._drain_lock(topic, partition):
            for start in range(0, len(indexes), per_chunk):
                chunk = indexes[start:start + per_chunk]
                if isinstance(chunk, range) and chunk.step == 1:
                    a, b = chunk.start, chunk.stop
                    cv: list[bytes | None] = vals[a:b]
                    ck = keys[a:b] if keys is not None else None
                    ch = hdrs[a:b] if hdrs is not None else None
                    ct = stamps if isinstance(stamps, int) else stamps[a:b]
                else:
                    cv = list(map(vals.__getitem__, chunk))
                    ck = list(map(keys.__getitem__, chunk)) if keys is not None else None
                    ch = list(map(hdrs.__getitem__, chunk)) if hdrs is not None else None
                    ct = (stamps if isinstance(stamps, int)
                          else list(map(stamps.__getitem__, chunk)))
                encoded = encode_batch(cv, ck, ct, ch)
                try:
                    appended = self._append(topic, partition, encoded)
                except Exception:
                    with self._lock:
                        self._metrics["errors"] += len(chunk)
                    raise
                self._count(len(chunk), len(encoded.payload), appended)
                result._add(partition, chunk, appended, ct)

    # -- flushing and closing ---------------------------------------------------------

    def _ensure_linger_thread(self) -> None:
        if self._linger_thread is None:
            self._linger_thread = threading.Thread(target=self._linger_loop, daemon=True,
                                                   name="eventlog-producer-linger")
            self._linger_thread.start()

    def _linger_loop(self) -> None:
        linger = self._linger_s
        while True:
            with self._cond:
                while True:
                    now = time.monotonic()
                    due: list[tuple[str, int]] = []
                    wake: float | None = None
                    for topic, slots in self._pending.items():
                        for pending in slots:
                            if pending is None:
                                continue
                            deadline = pending.created + linger
                            if deadline <= now or (topic, pending.partition) in self._urgent:
                                due.append((topic, pending.partition))
                            elif wake is None or deadline < wake:
                                wake = deadline
                    self._urgent.clear()
                    if due:
                        break
                    if self._closing:
                        return
                    self._cond.wait(None if wake is None else wake - now)
            for topic, partition in due:
                try:
                    self._drain(topic, partition)
                except Exception:  # noqa: S112 - delivered to the batch's futures
                    continue

    @_fileutil.translate_errors("producer")
    def flush(self, timeout: float | None = None) -> None:
        """Append every record sent before this call; return when all are stored (or
        failed: see their futures). Raises ``TimeoutError`` after ``timeout`` seconds
        (the records stay queued and are appended later)."""
        if timeout is None:
            with self._lock:
                targets = set(self._drain_locks)
                for topic, slots in self._pending.items():
                    targets.update((topic, p.partition) for p in slots if p is not None)
            for topic, partition in sorted(targets):
                self._drain(topic, partition)
            return
        # With a deadline the linger thread appends, and this thread only waits.
        deadline = time.monotonic() + timeout
        with self._lock:
            batches = [p.batch for slots in self._pending.values() for p in slots
                       if p is not None]
            batches += self._inflight.values()
            targets = {(b.topic, b.partition) for b in batches}
        self._request_urgent(targets)
        for batch in batches:
            if not batch.event.wait(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"flush did not finish within {timeout} s "
                                   f"({batch.topic}[{batch.partition}] is still pending)")

    @_fileutil.translate_errors("producer")
    def close(self, timeout: float | None = None) -> None:
        """Flush, then refuse further sends (``ClosedError``). Idempotent."""
        if self._closed:
            return
        self._closing = True
        try:
            if not self._log.closed:
                try:
                    self.flush(timeout)
                except TimeoutError:
                    pass  # what is still pending fails with ClosedError below
        finally:
            self._closed = True
            with self._cond:
                self._cond.notify_all()
            if self._linger_thread is not None and \
                    self._linger_thread is not threading.current_thread():
                self._linger_thread.join(timeout)
            self._fail_pending(ClosedError("the producer was closed before this record "
                                           "was appended"))
            if self._id_lock_fd >= 0:
                os.close(self._id_lock_fd)
                self._id_lock_fd = -1
            _live_producers.discard(self)

    def _fail_pending(self, error: BaseException) -> None:
        with self._lock:
            leftovers = [p for slots in self._pending.values() for p in slots if p is not None]
            self._pending.clear()
            self._hot.clear()
        for pending in leftovers:
            for future, fn in pending.batch.finish(None, error):
                _run_callback(fn, future)

    # -- introspection ----------------------------------------------------------------

    @_fileutil.translate_errors("producer")
    def partitions_for(self, topic: str) -> list[int]:
        """The partition ids of ``topic``."""
        return list(range(self._topic(topic)._refresh().partitions))

    def metrics(self) -> dict[str, float]:
        """Counters since the producer was created: records and bytes appended,
        batches, average batch size, records that failed, and duplicates skipped."""
        with self._lock:
            m: dict[str, float] = dict(self._metrics)
            pending = sum(len(p.values) for slots in self._pending.values() for p in slots
                          if p is not None)
        batches = m["batches_sent"]
        m["records_pending"] = pending
        m["records_per_batch"] = (m["records_sent"] + m["duplicates"]) / batches if batches \
            else 0.0
        m["bytes_per_batch"] = m["bytes_sent"] / batches if batches else 0.0
        return m

