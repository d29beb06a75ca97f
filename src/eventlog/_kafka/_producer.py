"""KafkaProducer: ``eventlog.Producer`` on a Kafka cluster, over confluent-kafka.

The user-facing half is eventlog's: serializers (``serde``), the record checks
(``_records``), the partitioners (``_partitioner``: a keyed record goes where eventlog's
partitioner puts it, so ``"murmur2"`` lands keys where Java clients do and the default
``"xxhash"`` where a local log does; keyless records use librdkafka's sticky
partitioner), ``RecordMetadata`` futures, ``flush`` and ``send_batch``. Batching,
retries, acks and idempotence are librdkafka's: ``linger_ms`` and ``batch_bytes`` map
to ``linger.ms`` and ``batch.size`` (``batch_bytes`` unset leaves librdkafka's
default, 1,000,000 bytes, not the 128 KiB of a log directory: fewer produce requests,
less broker CPU, docs/kafka-backend.md); ``acks`` is ``"all"`` by default, so a future
resolves once every in-sync replica has the record.

A delivery report resolves a future when librdkafka serves it: in the sending thread
(every ``_CHECK_EVERY`` sends of a topic, as librdkafka's examples poll), in a
thread waiting on ``result()`` or ``flush()``, or in a background thread that serves
the records no one waits for and stays out of the others' way (``_delivery.py``).
Transactions map straight onto librdkafka's transactional producer.

The per-record path costs about what the raw client costs once it is told each
record's fate (benchmarks/bench_kafka.py, docs/kafka-backend.md): per ``send``, one
dict lookup and one counter for the topic's settings, the owner thread's bound
``Packer.pack``, one size check, a future made without ``__init__``
(``future_class``) and one ``produce()`` with its arguments by position; no
partitioner call where librdkafka's own gives eventlog's placement (keyless records;
``"murmur2"`` keys: librdkafka's ``murmur2_random`` is Java's), no lock, no clock.
``send_batch`` serializes columns in C-level maps and gives each record a
``partial`` of one callback (``_batch.py``) instead of a future.
"""

from __future__ import annotations

import atexit
import contextlib
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import partial
from itertools import repeat
from threading import get_ident
from typing import Any, ClassVar

from confluent_kafka import Consumer as _RawConsumer
from confluent_kafka import KafkaException
from confluent_kafka import Producer as _RawProducer
from confluent_kafka import TopicPartition as KafkaTP

from .._accumulator import BatchMetadata
from .._group import validate_group_id
from .._partitioner import RecordPartitioner, check_partition, murmur2_partition
from .._records import (
    MAX_TIMESTAMP_MS,
    batch_sizes,
    check_headers,
    check_size,
    check_timestamps,
    record_size,
    serialization_error,
)
from .._txn_state import validate_transactional_id
from .._types import RecordMetadata, TopicPartition
from ..config import _wall_clock_ms, check_client_id, check_int
from ..errors import (
    ClosedError,
    EventLogError,
    InvalidConfigError,
    InvalidRecordError,
    ReadOnlyError,
    SerializationError,
    TransactionError,
    UnknownTopicError,
)
from ..log import Log
from ..producer import Producer
from ..producer import _serialize_column as serialize_column
from ..serde import Serializer, column_packer, serializer
from ._batch import DeliveredBatch
from ._delivery import POLL_S as _POLL_S
from ._delivery import DeliveryReports
from ._errors import kafka_errors, translate
from ._log import KafkaLog, KafkaTopic

__all__ = ["KafkaFuture", "KafkaProducer"]

_METADATA_TTL_S = 5.0     # how long a topic's partition count is trusted
_LOCAL_BATCH = 128 * 1024  # Producer's batch_bytes default on a log directory
_CHECK_EVERY = 1000       # sends of a topic between two servings of delivery reports
                          # by the sender, and two looks at the clock for that TTL
_ACKS = {"all": "all", -1: "all", 1: "1", 0: "0", "1": "1", "0": "0"}


_live: weakref.WeakSet[KafkaProducer] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    # As for a local producer: records sent but not yet acknowledged would be lost when
    # the interpreter exits without close(); flush them (best effort, bounded).
    for producer in list(_live):
        with contextlib.suppress(Exception):
            producer.close(timeout=5)


def _identity(obj: Any) -> Any:
    return obj


class KafkaFuture:
    """The future of one record sent to Kafka; librdkafka's delivery report resolves
    it. ``result()``, ``exception()``, ``done()``, ``add_done_callback(fn)``, as
    ``RecordFuture``. Thread-safe.

    One is made per record, so making one costs one C-level allocation and no
    ``__init__`` call: its producer and topic are class attributes of a subclass made
    once per producer and topic (``future_class``), and ``_state`` stays unset while
    the record is pending. Then it holds librdkafka's delivered message (turned into
    ``RecordMetadata`` when first asked for: four accessor calls most senders never
    make), or the error. Callbacks wait in the producer's ``waiting`` table, which is
    empty unless someone added one."""

    __slots__ = ("_state",)
    _producer: ClassVar[KafkaProducer]
    _topic: ClassVar[str]
    _state: Any

    def __repr__(self) -> str:
        state = getattr(self, "_state", None)
        what = "pending" if state is None else (
            "failed" if isinstance(state, BaseException) else "done")
        return f"<KafkaFuture {self._topic} {what}>"

    def __call__(self, err: Any, msg: Any) -> None:
        # librdkafka's delivery report (on_delivery=future)
        self._state = msg if err is None else \
            translate(err, f"sending to topic {self._topic!r}")
        if self._producer.waiting:
            self._run_callbacks()

    def _run_callbacks(self) -> None:
        producer = self._producer
        with producer.callback_lock:
            callbacks = producer.waiting.pop(id(self), None)
        for fn in callbacks[1] if callbacks else ():
            with contextlib.suppress(Exception):
                fn(self)

    def fail(self, error: BaseException) -> None:
        """Resolve a pending future with ``error`` (a record that was never sent)."""
        if not hasattr(self, "_state"):
            self._state = error
            self._run_callbacks()

    def done(self) -> bool:
        """True once the record is stored or failed."""
        return hasattr(self, "_state")

    def _wait(self, timeout: float | None) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not hasattr(self, "_state"):
            left = _POLL_S if deadline is None else min(_POLL_S, deadline - time.monotonic())
            if left <= 0:
                raise TimeoutError(f"record for topic {self._topic!r} was not acknowledged "
                                   f"within {timeout} s")
            self._producer.serve(left)
        return self._state

    def result(self, timeout: float | None = None) -> RecordMetadata:
        """Wait (up to ``timeout`` s; None: forever) and return where the record was
        stored; raise the error that kept it from being stored."""
        state = self._wait(timeout)
        if isinstance(state, RecordMetadata):
            return state
        if isinstance(state, BaseException):
            raise state
        self._state = md = RecordMetadata(state.topic(), state.partition(), state.offset(),
                                          state.timestamp()[1])
        return md

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Wait like ``result`` and return the error, or None."""
        state = self._wait(timeout)
        return state if isinstance(state, BaseException) else None

    def add_done_callback(self, fn: Callable[[KafkaFuture], None]) -> None:
        """Call ``fn(future)`` once the record is stored or failed (at once if done)."""
        if not hasattr(self, "_state"):
            producer = self._producer
            with producer.callback_lock:
                entry = producer.waiting.setdefault(id(self), (self, []))
                entry[1].append(fn)
            if hasattr(self, "_state"):  # delivered meanwhile: whoever pops first runs it
                self._run_callbacks()
            return
        with contextlib.suppress(Exception):
            fn(self)


def future_class(producer: KafkaProducer, topic: str) -> type[KafkaFuture]:
    """The ``KafkaFuture`` subclass of one producer's records for ``topic``: made once
    (about 10 us), so that each future costs only its allocation."""
    return type("KafkaFuture", (KafkaFuture,), {
        "__slots__": (), "__module__": __name__, "__qualname__": "KafkaFuture",
        "_producer": producer, "_topic": topic})


class _TopicInfo:
    """A topic's partition count (trusted for ``_METADATA_TTL_S``; the clock is read
    once every ``_CHECK_EVERY`` sends, off the hot path), its record limit and
    timestamp type (read once), and the class of its records' futures."""

    __slots__ = ("expires", "future", "keyless_partition", "log_append_time",
                 "max_message_bytes", "partitions", "sends_left")

    def __init__(self, partitions: int, max_message_bytes: int, log_append_time: bool,
                 future: type[KafkaFuture]) -> None:
        self.max_message_bytes = max_message_bytes
        self.log_append_time = log_append_time
        self.future = future
        self.refresh(partitions)

    def refresh(self, partitions: int) -> None:
        """Trust ``partitions`` for another ``_METADATA_TTL_S``."""
        self.partitions = partitions
        # librdkafka's sticky partitioner (-1) has nothing to choose from in a topic of
        # one partition, and naming it saves produce() 35 ns
        self.keyless_partition = 0 if partitions == 1 else -1
        self.expires = time.monotonic() + _METADATA_TTL_S
        self.sends_left = _CHECK_EVERY


class KafkaProducer(Producer):
    """``Producer(log)`` for a log opened on ``kafka://``: the same options, plus
    ``acks`` ("all" default, 1, 0), ``compression_type`` ("none", "gzip", "snappy",
    "lz4", "zstd"), ``transactional_id`` / ``transaction_timeout_ms``, and
    ``kafka_config`` (librdkafka settings for this producer, over the log's).
    ``batch_bytes`` is librdkafka's ``batch.size``; left unset, librdkafka's default
    (1,000,000 bytes). ``enable_idempotence`` is librdkafka's (exactly-once and in
    order per partition across retries), always on with ``acks="all"``;
    an explicit ``producer_id`` has no meaning on Kafka, which assigns them.
    Thread-safe."""

    def __init__(self, log: Log, *, key_serializer: str | Serializer | None = None,
                 value_serializer: str | Serializer | None = None,
                 partitioner: str | Callable[[str, bytes | None, int], int] = "xxhash",
                 linger_ms: int = 5, batch_bytes: int | None = None,
                 enable_idempotence: bool = False, producer_id: int | None = None,
                 acks: str | int = "all", compression_type: str = "none",
                 transactional_id: str | None = None, transaction_timeout_ms: int = 60_000,
                 client_id: str | None = None,
                 kafka_config: Mapping[str, Any] | None = None) -> None:
        if not isinstance(log, KafkaLog):
            raise TypeError(f"KafkaProducer needs a Log opened on kafka://, not {log!r}")
        log.check_open()
        if log.read_only:
            raise ReadOnlyError(f"the log {log.url} was opened with read_only=True: "
                                "a producer is refused")
        if producer_id is not None:
            raise InvalidConfigError("producer_id= has no meaning on Kafka, which assigns "
                                     "producer ids; use enable_idempotence=True or "
                                     "transactional_id=")
        check_int("linger_ms", linger_ms, 0)
        if batch_bytes is not None:  # (None: librdkafka's; the message is a log's)
            check_int("batch_bytes", batch_bytes, 1)
        check_int("transaction_timeout_ms", transaction_timeout_ms, 1)
        if transactional_id is not None:
            validate_transactional_id(transactional_id)
        if acks not in _ACKS:
            raise InvalidConfigError(f"acks must be 'all', 1 or 0, not {acks!r}")
        self.client_id = check_client_id(client_id)
        self._log = log
        self._backend = log.backend
        self._key_ser = serializer(key_serializer)
        self._value_ser = serializer(value_serializer)
        # The value serializer's cheapest equivalent: for the built-in msgpack one, a
        # bound Packer.pack (one C call, where calling the serializer costs two Python
        # frames and a thread-local lookup). A Packer must not be shared between
        # threads: the thread that made the producer has its own, others one each.
        self._owner = get_ident()
        self._owner_pack = column_packer(self._value_ser)
        self._packers = threading.local()
        # (its sticky blocks are never used here: keyless records are librdkafka's)
        self._partitioner = RecordPartitioner(partitioner, batch_bytes or _LOCAL_BATCH,
                                              None)
        self._custom = self._partitioner.custom
        # librdkafka's "murmur2_random" partitioner is Java's: keys need no Python hash
        self._librdkafka_hashes = self._partitioner.function is murmur2_partition
        self.producer_id = None
        self.transactional_id = transactional_id
        self._clock = log.clock
        self._wall_clock = log.clock is _wall_clock_ms
        self._plain = self._wall_clock and not self._custom  # send's inlined path applies
        settings: dict[str, Any] = {
            "linger.ms": linger_ms,
            "acks": _ACKS[acks], "compression.type": compression_type,
            # idempotence keeps a partition's records in send order through retries
            # (a batch retried after NOT_LEADER_FOR_PARTITION would otherwise land
            # behind later ones), as Java's producer does by default since Kafka 3.0
            "enable.idempotence": bool(enable_idempotence or transactional_id
                                       or acks == "all"),
            # the topic's max_message_bytes is checked per record before sending
            "message.max.bytes": 1_000_000_000,
            "allow.auto.create.topics": False,
            "partitioner": "murmur2_random",
        }
        if batch_bytes is not None:  # else librdkafka's batch.size (1,000,000 bytes)
            settings["batch.size"] = batch_bytes
        if client_id is not None:
            settings["client.id"] = client_id
        if transactional_id is not None:
            settings["transactional.id"] = transactional_id
            settings["transaction.timeout.ms"] = transaction_timeout_ms
        config = log.client_config(**settings)
        config.update(kafka_config or {})
        with kafka_errors("creating a Kafka producer"):
            self._producer = _RawProducer(config)
        self._produce = self._producer.produce
        self._topics: dict[str, _TopicInfo] = {}
        self._info_lock = threading.Lock()
        self.callback_lock = threading.Lock()
        # futures with callbacks still to run, by id (see KafkaFuture)
        self.waiting: dict[int, tuple[KafkaFuture, list[Callable[[KafkaFuture], None]]]] = {}
        self._group_metadata: dict[str, Any] = {}
        self._in_transaction = False
        self._closing = False
        self._closed = False
        # the topics whose keyless records take send's inlined path (if self._plain)
        self._keyless: dict[str, _TopicInfo] = {}
        self._reports = DeliveryReports(self._producer)
        self._reports.start()
        _live.add(self)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<eventlog.Producer {self._log.url!r} {state}>"

    def __enter__(self) -> KafkaProducer:
        return self

    # -- delivery reports ----------------------------------------------------------------

    def serve(self, timeout: float) -> None:
        """Someone waits on a future: send what librdkafka holds back for ``linger.ms``
        at once (as waiting on a future appends its batch on a log directory), and run
        the delivery reports that are due, for up to ``timeout`` seconds."""
        self._reports.serve(timeout)

    # -- metadata -------------------------------------------------------------------------

    def _topic_info(self, topic: str, *, refresh: bool = False) -> _TopicInfo:
        info = self._topics.get(topic)
        if info is not None and not refresh:
            info.sends_left -= 1
            if info.sends_left > 0:
                return info
            # Every _CHECK_EVERY sends of a topic the sender serves delivery reports
            # itself, as librdkafka's own examples do (the poller thread then stays out
            # of its way rather than contend for the GIL), and looks at the clock.
            info.sends_left = _CHECK_EVERY
            self._reports.poll_now()
            if info.expires > time.monotonic():
                return info
        with self._info_lock:
            self._log.check_open()
            admin = self._log.admin
            count = admin.partition_count(topic)
            if count is None:
                if not self._log.auto_create_topics:
                    raise UnknownTopicError(f"no topic {topic!r} in the Kafka cluster (open "
                                            "the log with auto_create_topics=True to create "
                                            "it on first send)")
                self._log.create_topic(topic)
                count = admin.check_topic(topic)
            info = self._topics.get(topic)
            if info is None:
                # (not log.topic(): that asks the metadata again, and on a cluster
                # another broker may not know a topic created a moment ago)
                config = KafkaTopic(self._log, topic).config
                info = self._topics[topic] = _TopicInfo(
                    count, config.max_message_bytes,
                    config.timestamp_type == "log_append_time", future_class(self, topic))
                if self._plain:
                    self._keyless[topic] = info
            else:
                info.refresh(count)
            return info

    # -- sending ------------------------------------------------------------------------

    @staticmethod
    def _serialize(fn: Serializer, obj: Any, topic: str, what: str) -> bytes:
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

    def _thread_pack(self, value: Any) -> bytes:
        # _owner_pack for a thread other than the producer's owner
        try:
            pack: Serializer = self._packers.pack
        except AttributeError:
            pack = self._packers.pack = column_packer(self._value_ser)
        return pack(value)

    def send(self, topic: str, value: Any = None, *, key: Any = None,  # type: ignore[override]
             headers: Iterable[tuple[str, bytes]] | None = None, partition: int | None = None,
             timestamp_ms: int | None = None) -> KafkaFuture:
        """Queue one record for Kafka and return its future; the same checks and
        errors as ``Producer.send`` (raised at once, nothing queued). Thread-safe.

        Cost: the serializer calls and one ``produce()``; the partitioner only when
        librdkafka's own cannot place the record as eventlog's would (keyless
        records, and keys with ``partitioner="murmur2"``, are librdkafka's)."""
        if key is None and headers is None and partition is None and timestamp_ms is None:
            # The common case, inlined (benchmarks/bench_kafka.py): a keyless record,
            # librdkafka's sticky partition, its clock. Every _CHECK_EVERY sends of a
            # topic (and once the producer is closing) the general path below runs.
            info = self._keyless.get(topic)
            if info is not None and info.sends_left > 1:
                info.sends_left -= 1
                if value is None:
                    v = None
                else:
                    try:
                        v = self._owner_pack(value) if get_ident() == self._owner else \
                            self._thread_pack(value)
                    except Exception as exc:
                        raise serialization_error(topic, "value", exc) from exc
                    if type(v) is not bytes:
                        v = self._serialize(_identity, v, topic, "value")
                    if len(v) > info.max_message_bytes:
                        check_size(len(v), info.max_message_bytes, topic)
                future = info.future()
                try:
                    # arguments by position: see _produce_one
                    self._produce(topic, v, None, info.keyless_partition, future)
                except BufferError:
                    self._produce_one(topic, v, None, -1, 0, None, future)
                except KafkaException as exc:
                    raise self._send_error(exc, topic) from exc
                return future
        if self._closing:
            raise ClosedError("the producer is closed")
        if timestamp_ms is None:
            ts = 0 if self._wall_clock else self._clock()  # 0: librdkafka stamps it now
        elif type(timestamp_ms) is not int or not 0 <= timestamp_ms <= MAX_TIMESTAMP_MS:
            raise InvalidRecordError(f"timestamp_ms must be an int from 0 to "
                                     f"{MAX_TIMESTAMP_MS}, not {timestamp_ms!r}")
        else:
            ts = timestamp_ms
        info = self._topic_info(topic)
        v = None if value is None else self._serialize(self._value_ser, value, topic, "value")
        k = None if key is None else self._serialize(self._key_ser, key, topic, "key")
        hdrs = None if headers is None else check_headers(headers, f"topic {topic!r}")
        check_size(record_size(k, v, hdrs), info.max_message_bytes, topic)
        if partition is not None:
            if type(partition) is int and partition >= info.partitions:
                info = self._topic_info(topic, refresh=True)
            p = check_partition(partition, info.partitions, topic)
        elif (k is None or self._librdkafka_hashes) and not self._custom and k != b"":
            p = -1  # librdkafka's sticky partitioner, or its murmur2 (Java's placement)
        else:
            p = self._partitioner.choose(topic, k, info.partitions)
        future = info.future()
        self._produce_one(topic, v, k, p, ts, hdrs, future)
        return future

    def _produce_one(self, topic: str, v: bytes | None, k: bytes | None, p: int, ts: int,
                     hdrs: list[tuple[str, bytes]] | None,
                     on_delivery: Callable[[Any, Any], None]) -> None:
        # produce()'s arguments are passed by position: (topic, value, key, partition,
        # callback, on_delivery, timestamp, headers), "callback" and "on_delivery" being
        # one. confluent-kafka parses keywords with PyArg_ParseTupleAndKeywords, which
        # looks up every optional name: 400 ns of a 800 ns call (benchmarks/bench_kafka.py).
        while True:
            try:
                self._produce(topic, v, k, p, on_delivery, None, ts,
                              hdrs)  # type: ignore[arg-type]  # pairs are accepted
                return
            except BufferError:
                # librdkafka's queue is full: wait for deliveries, as Java's send blocks
                self._producer.poll(_POLL_S)
            except KafkaException as exc:
                raise self._send_error(exc, topic) from exc
            if self._closing:
                raise ClosedError("the producer is closed")

    def _send_error(self, exc: KafkaException, topic: str) -> EventLogError:
        """librdkafka's refusal to queue a record, as eventlog's error."""
        if self.transactional_id is not None and exc.args and \
                getattr(exc.args[0], "code", lambda: 0)() == -172:  # _STATE
            return TransactionError(f"sending to topic {topic!r} outside a transaction: "
                                    "call begin_transaction() first")
        return translate(exc, f"sending to topic {topic!r}")

    def send_batch(self, topic: str, values: Sequence[Any], *, keys: Sequence[Any] | None = None,
                   headers: Sequence[Iterable[tuple[str, bytes]] | None] | None = None,
                   partition: int | None = None,
                   timestamps_ms: Sequence[int] | int | None = None) -> BatchMetadata:
        """Send many records and wait until Kafka acknowledged all of them; return where
        each was stored. Every record is serialized and checked before any is sent;
        records without a timestamp get one, the time of the call, as on a log
        directory. Raises the error of the first record (in input order) that could
        not be stored. Thread-safe.

        Cost: per record, one serializer call (in a C-level map), one ``produce()`` and
        one small delivery callback that stores the record's offset (``_batch.py``);
        then one ``flush()``, which waits for the whole batch."""
        if self._closing:
            raise ClosedError("the producer is closed")
        count = len(values)
        if count == 0:
            return BatchMetadata(topic, 0)
        where = f"topic {topic!r}"
        if keys is not None and len(keys) != count:
            raise InvalidRecordError(f"{where}: {len(keys)} keys for {count} values")
        if headers is not None and len(headers) != count:
            raise InvalidRecordError(f"{where}: {len(headers)} headers for {count} values")
        stamps = self._clock() if timestamps_ms is None else \
            check_timestamps(timestamps_ms, count, where)
        info = self._topic_info(topic)
        vals = serialize_column(self._value_ser, values, topic, "value")
        ks = None if keys is None else serialize_column(self._key_ser, keys, topic, "key")
        if ks is not None and ks.count(None) == count:
            ks = None
        hdrs = None if headers is None else [check_headers(h, where) for h in headers]
        if hdrs is not None and not any(hdrs):
            hdrs = None
        batch_sizes(vals, ks, hdrs, info.max_message_bytes, where)  # checks them
        if partition is not None:
            if type(partition) is int and partition >= info.partitions:
                info = self._topic_info(topic, refresh=True)
            parts: list[int] | int = check_partition(partition, info.partitions, topic)
        elif self._custom:
            choose, n = self._partitioner.choose, info.partitions
            parts = [choose(topic, k, n) for k in (ks or repeat(None, count))]
        elif info.partitions == 1:
            parts = 0
        elif ks is None or (self._librdkafka_hashes and b"" not in ks):
            parts = -1  # librdkafka places them: its sticky partitioner, its murmur2
        else:
            function, n = self._partitioner.function, info.partitions
            parts = [-1 if k is None else function(topic, k, n) for k in ks]
        batch = DeliveredBatch(count, parts, stamps, info.log_append_time)
        produce = self._produce
        try:
            if ks is None and hdrs is None and type(parts) is int and type(stamps) is int:
                # The common case: a tight loop, its names local. Every _CHECK_EVERY
                # records it serves delivery reports, as send() does: the poller thread
                # then stays idle rather than contend for the GIL.
                p, ts, report, poll_now = parts, stamps, batch.report, self._reports.poll_now
                for start in range(0, count, _CHECK_EVERY):
                    end = min(start + _CHECK_EVERY, count)
                    for i, v in zip(range(start, end), vals[start:end], strict=True):
                        try:  # arguments by position: see _produce_one
                            produce(topic, v, None, p, partial(report, i), None, ts)
                        except BufferError:
                            self._produce_one(topic, v, None, p, ts, None,
                                              partial(report, i))
                    poll_now()
            else:
                each_p = repeat(parts, count) if isinstance(parts, int) else parts
                each_ts = repeat(stamps, count) if isinstance(stamps, int) else stamps
                for i, v, k, p, ts, h in zip(range(count), vals, ks or repeat(None, count),
                                             each_p, each_ts, hdrs or repeat(None, count),
                                             strict=True):
                    self._produce_one(topic, v, k, p, ts, h, partial(batch.report, i))
        except KafkaException as exc:
            raise self._send_error(exc, topic) from exc
        self.flush()
        return batch.metadata(topic)

    # -- transactions ------------------------------------------------------------------------

    def _check_not_closed(self) -> None:
        if self._closing:
            raise ClosedError("the producer is closed")

    def _call_txn(self, what: str, call: Callable[[], None]) -> None:
        if self.transactional_id is None:
            raise TransactionError(f"{what} needs a producer with transactional_id=")
        if self._closing:
            raise ClosedError("the producer is closed")
        try:
            call()
        except KafkaException as exc:
            error = translate(exc, what)
            if type(error).__name__ == "ClusterError" and exc.args and \
                    exc.args[0].code() in (-172, 48):  # _STATE, INVALID_TXN_STATE
                raise TransactionError(str(error)) from exc
            raise error from exc

    def init_transactions(self, timeout: float | None = None) -> None:
        """Register ``transactional_id`` with the cluster: fences older producers with
        the id and aborts what they left open (librdkafka's ``init_transactions``)."""
        self._call_txn("init_transactions", lambda: self._producer.init_transactions(
            -1 if timeout is None else timeout))

    def begin_transaction(self) -> None:
        """Start a transaction: the records sent until commit or abort belong to it."""
        if self._in_transaction:
            raise TransactionError("a transaction is already open")
        self._call_txn("begin_transaction", self._producer.begin_transaction)
        self._in_transaction = True

    def send_offsets_to_transaction(self, offsets: Mapping[TopicPartition, int],
                                    group_id: str, timeout: float | None = None) -> None:
        """Commit ``offsets`` (next offsets to read) for ``group_id`` with the open
        transaction."""
        self._check_not_closed()
        if not self._in_transaction:
            raise TransactionError("send_offsets_to_transaction needs an open "
                                        "transaction (begin_transaction first)")
        validate_group_id(group_id)      # the same checks as on a directory
        for offset in offsets.values():
            check_int("offset", offset, 0)
        metadata = self._group_metadata.get(group_id)
        if metadata is None:
            # A group's metadata without a member: what Java's
            # sendOffsetsToTransaction(offsets, String groupId) sends.
            probe = _RawConsumer(self._log.client_config(**{"group.id": group_id}))
            metadata = self._group_metadata[group_id] = probe.consumer_group_metadata()
            probe.close()
        tps = [KafkaTP(tp.topic, tp.partition, off) for tp, off in offsets.items()]
        self._call_txn("send_offsets_to_transaction", lambda: self._producer.
                  send_offsets_to_transaction(tps, metadata,
                                              -1 if timeout is None else timeout))

    def commit_transaction(self, timeout: float | None = None) -> None:
        """Flush and commit the open transaction: its records and offsets take effect."""
        self._check_not_closed()
        if not self._in_transaction:
            raise TransactionError("commit_transaction without begin_transaction")
        self._call_txn("commit_transaction", lambda: self._producer.commit_transaction(
            -1 if timeout is None else timeout))
        self._in_transaction = False

    def abort_transaction(self, timeout: float | None = None) -> None:
        """Abort the open transaction: ``read_committed`` consumers never see it."""
        self._check_not_closed()
        if not self._in_transaction:
            raise TransactionError("abort_transaction without begin_transaction")
        self._call_txn("abort_transaction", lambda: self._producer.abort_transaction(
            -1 if timeout is None else timeout))
        self._in_transaction = False

    @contextlib.contextmanager
    def transaction(self) -> Iterator[KafkaProducer]:
        """Begin; commit on normal exit, abort on an exception."""
        self.begin_transaction()
        try:
            yield self
        except BaseException:
            if self._in_transaction:
                self.abort_transaction()
            raise
        self.commit_transaction()

    # -- flushing and closing -------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every record sent before this call is acknowledged (or failed: see
        its future). Raises ``TimeoutError`` after ``timeout`` seconds."""
        left = self._reports.flush(-1 if timeout is None else timeout)
        if left:
            raise TimeoutError(f"{left} record(s) not acknowledged within {timeout} s")

    def close(self, timeout: float | None = None) -> None:
        """Flush, then refuse further sends (``ClosedError``). Records still unsent
        after ``timeout`` fail with ``ClosedError``. Idempotent."""
        if self._closed:
            return
        self._closing = True
        self._keyless.clear()  # sends take the general path, which refuses them
        try:
            with contextlib.suppress(TimeoutError):
                self.flush(timeout)
        finally:
            self._closed = True
            self._reports.stop()
            self._producer.purge()
            self._producer.poll(0)  # purged records' futures fail with ClosedError
            _live.discard(self)

    # -- introspection ------------------------------------------------------------------------

    def partitions_for(self, topic: str) -> list[int]:
        """The partition ids of ``topic``."""
        return list(range(self._topic_info(topic).partitions))

    def metrics(self) -> dict[str, Any]:
        """librdkafka's queue: the records waiting to be acknowledged, and the
        ``client_id`` they belong to (None if none was given)."""
        return {"client_id": self.client_id, "records_pending": float(len(self._producer))}
