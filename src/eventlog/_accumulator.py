"""Records on their way to storage: pending batches, futures, and the one write path.

This room owns what happens to a record between ``Producer.send`` and its partition
(the producer's ``RecordAccumulator`` and ``Sender``, in Kafka's words):

- ``ProducerBatch``: the records waiting for one partition, column by column, and the
  ``BatchResult`` that the futures of its records share;
- ``RecordFuture`` (one per ``send``) and ``BatchMetadata`` (one per ``send_batch``),
  the public results;
- ``Accumulator``: one pending batch per partition, the linger thread, draining a
  batch when it is full, due, flushed or waited for, ``flush`` and the end of it all
  at ``close``; and ``hot``, the fast-path entries that ``Producer.send`` appends
  keyless records through without calling in here;
- ``Sender.write``, the one way a batch reaches storage, whether ``send`` or
  ``send_batch`` made it: encode the columns, stamp the producer id and sequence
  (idempotent producers), append through the backend's ``PartitionBackend``, count
  metrics, complete the batch's futures.

Locks: ``Accumulator.lock`` (the producer lock) guards the pending batches, ``hot``,
the sticky cursors of the partitioner and the completion state of the producer's
``BatchResult``s (one lock for all: a lock made per batch cost as much as the rest of
a one-record batch); a partition lock per partition (an ``RLock``, made with the
partition's first batch) lets one batch at a time be written to it, in order, and
guards its sequence number. The partition lock is taken first; callbacks run with
neither held, and a ``BatchResult`` is completed with the producer lock not held.
"""

from __future__ import annotations

import logging
import operator
import threading
import time
from array import array
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, overload

from ._format import ATTR_TRANSACTIONAL, encode_batch
from ._producer_state import SEQUENCE_MODULUS
from ._records import record_size
from ._types import RecordMetadata

if TYPE_CHECKING:
    from ._backend import Backend, PartitionBackend
    from ._partition import AppendResult
    from ._partitioner import StickyCursor
    from ._transactions import TransactionManager

__all__ = ["Accumulator", "BatchMetadata", "BatchResult", "Columns", "ProducerBatch",
           "RecordFuture", "Sender", "TopicInfo"]

_logger = logging.getLogger("eventlog")

Callback = Callable[["RecordFuture"], Any]

# How long after the newest batch the linger thread keeps waking every linger without
# being asked (so a producer sending now and then never pays for waking it); then it
# sleeps until a batch arrives.
_LINGER_TICKING_S = 1.0
_monotonic = time.monotonic


def run_callback(fn: Callback, future: RecordFuture) -> None:
    try:
        fn(future)
    except Exception:  # a callback's failure must not break the producer
        _logger.exception("exception in a send-future callback")


class BatchResult:
    """Completion state shared by the futures of the records of one batch. Thread-safe.

    Outlives its ``ProducerBatch`` (futures hold this, not the records), so an
    application that keeps futures does not keep the records they were made of.
    """

    __slots__ = ("base_offset", "callbacks", "done", "error", "event", "lock", "log_time",
                 "partition", "skipped", "stored", "topic")

    def __init__(self, topic: str, partition: int, lock: threading.Lock) -> None:
        self.topic = topic
        self.partition = partition
        self.done = False
        self.error: BaseException | None = None
        self.base_offset = -1
        self.log_time = -1
        self.skipped = 0
        self.stored: list[int] | None = None
        # Made by the first waiter (``wait``): most batches are never waited for, and
        # an Event (a Condition and two locks) costs more than the rest of a batch.
        self.event: threading.Event | None = None
        self.lock = lock  # the producer lock (Accumulator.lock), never held by the caller
        self.callbacks: list[tuple[RecordFuture, Callback]] | None = None  # (made by the
        # first add_callback: most batches have none)

    def offset_of(self, index: int) -> int:
        if index < self.skipped:
            assert self.stored is not None
            return self.stored[index]
        return self.base_offset + index - self.skipped

    def add_callback(self, future: RecordFuture, fn: Callback) -> bool:
        """Register ``fn`` for when the batch completes; False if it already has."""
        with self.lock:
            if not self.done:
                if self.callbacks is None:
                    self.callbacks = []
                self.callbacks.append((future, fn))
                return True
        return False

    def finish(self, result: AppendResult | None, error: BaseException | None
               ) -> Sequence[tuple[RecordFuture, Callback]]:
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
            callbacks, self.callbacks = self.callbacks, None
            event = self.event
        if event is not None:
            event.set()
        return callbacks or ()

    def wait(self, timeout: float | None) -> bool:
        """Block until the batch completes or ``timeout`` seconds pass; True if it
        completed. Thread-safe."""
        if self.done:
            return True
        with self.lock:
            if self.done:
                return True
            event = self.event
            if event is None:
                event = self.event = threading.Event()
        return event.wait(timeout)


class RecordFuture(tuple):  # type: ignore[type-arg]
    """The future of one sent record: ``result()`` gives its ``RecordMetadata``.

    Waiting on a future appends its batch at once rather than after ``linger_ms``.
    Thread-safe. (A tuple underneath: one is made per record, and a tuple is built in
    C.)
    """

    __slots__ = ()

    # fields: 0 BatchResult, 1 index in the batch, 2 timestamp_ms, 3 Accumulator

    def __repr__(self) -> str:
        b: BatchResult = self[0]
        state = "pending" if not b.done else ("failed" if b.error else "done")
        return f"<RecordFuture {b.topic}[{b.partition}] {state}>"

    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)

    def done(self) -> bool:
        """True once the record is stored or failed. Cost: O(1), no lock."""
        return bool(self[0].done)

    def _wait(self, timeout: float | None) -> BatchResult:
        batch: BatchResult = self[0]
        if not batch.done:
            self[3].expedite(batch, timeout)
            if not batch.wait(timeout):
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
        """Wait like ``result`` and return the error that prevented storing the record,
        or None."""
        return self._wait(timeout).error

    def add_done_callback(self, fn: Callback) -> None:
        """Call ``fn(future)`` when the record is stored or failed (at once if it is
        already done), in the thread that completes it."""
        if not self[0].add_callback(self, fn):
            run_callback(fn, self)


new_future: Callable[[tuple[Any, ...]], RecordFuture] = RecordFuture  # calling the type
# directly is the fastest way to make one (about 150 ns; partial(tuple.__new__) is 370)


# One appended run of a send_batch: (partition, indexes into the input, base offset,
# stored offsets of duplicates, one timestamp or one per record, log append time)
Chunk = tuple[int, Sequence[int], int, "list[int] | None", Any, int]


class BatchMetadata(Sequence[RecordMetadata]):
    """Where the records of one ``send_batch`` call were stored, in input order.

    A sequence of ``RecordMetadata`` built on demand: holding it costs a few numbers per
    appended batch, not an object per record. The first access costs O(n) (it lays
    out the offsets of all n records in arrays); later ones O(1).
    """

    def __init__(self, topic: str, count: int, chunks: Sequence[Chunk] = ()) -> None:
        self.topic = topic
        self._count = count
        self._chunks = list(chunks)
        self._partitions: array[int] | None = None
        self._offsets: array[int] | None = None
        self._timestamps: array[int] | None = None

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


class TopicInfo:
    """What the producer caches about a topic: refreshed from the backend's metadata
    once ``sends_left`` (counted down by both send paths, under the producer lock)
    reaches 0. A refresh makes a new one, so an old one held by ``Accumulator.hot``
    stays at 0 and sends take the general path."""

    __slots__ = ("max_message_bytes", "partitions", "sends_left")

    def __init__(self, max_message_bytes: int, partitions: int, sends_left: int) -> None:
        self.max_message_bytes = max_message_bytes
        self.partitions = partitions
        self.sends_left = sends_left


Headers = list[tuple[str, bytes]]


class Columns(NamedTuple):
    """The serialized, checked columns of a ``send_batch`` call: one entry per record
    (``timestamps`` may be one int for all; ``sizes`` are ``record_size``). Read-only."""

    values: list[bytes | None]
    keys: list[bytes | None] | None
    headers: list[Headers | None] | None
    timestamps: Sequence[int] | int
    sizes: list[int]
    largest: int | None = None  # max(sizes), when the caller knows it

    def total_bytes(self, indexes: Sequence[int]) -> int:
        sizes = self.sizes
        if isinstance(indexes, range):
            return sum(sizes if len(indexes) == len(sizes) else
                       sizes[indexes.start:indexes.stop])
        return sum(_gather(sizes, indexes))

    def take(self, indexes: Sequence[int]) -> tuple[list[bytes | None], list[bytes | None] | None,
                                                 list[Headers | None] | None,
                                                 Sequence[int] | int]:
        """``(values, keys, headers, timestamps)`` of the records at ``indexes`` (a
        slice when they are contiguous, else a gather)."""
        keys, hdrs, stamps = self.keys, self.headers, self.timestamps
        if isinstance(indexes, range) and indexes.step == 1:
            a, b = indexes.start, indexes.stop
            return (self.values[a:b], keys[a:b] if keys is not None else None,
                    hdrs[a:b] if hdrs is not None else None,
                    stamps if isinstance(stamps, int) else stamps[a:b])
        pick = _picker(indexes)
        return (pick(self.values), pick(keys) if keys is not None else None,
                pick(hdrs) if hdrs is not None else None,
                stamps if isinstance(stamps, int) else pick(stamps))


def _picker(indexes: Sequence[int]) -> Callable[[Sequence[Any]], list[Any]]:
    """A function that gathers the items at ``indexes`` of a column into a list.

    One ``operator.itemgetter`` call per column: the items are fetched in C, where
    ``map(column.__getitem__, indexes)`` makes a slot-wrapper call per item (measured:
    the gathers of a keyed ``send_batch`` over 64 partitions were a fifth of its time).
    """
    if len(indexes) == 1:  # itemgetter of one index returns the item, not a tuple
        (only,) = indexes
        return lambda column: [column[only]]
    getter = operator.itemgetter(*indexes)
    return lambda column: list(getter(column))


def _gather(column: Sequence[Any], indexes: Sequence[int]) -> list[Any]:
    return [] if not indexes else _picker(indexes)(column)


class ProducerBatch:
    """Records for one partition, column by column, and their shared ``BatchResult``.

    A pending batch is open until it is drained: records are added under the producer
    lock (``Accumulator.append``, or ``Producer.send``'s fast path while ``plain``).
    ``plain`` is True while no record has a key or headers and the batch is open:
    then ``send``'s fast path may add keyless records to it directly.
    """

    __slots__ = ("bytes", "created", "headers", "keys", "partition", "plain", "result",
                 "timestamps", "topic", "values")

    def __init__(self, topic: str, partition: int, lock: threading.Lock) -> None:
        self.topic = topic
        self.partition = partition
        self.values: list[bytes | None] = []
        self.timestamps: list[int] = []
        # Created when the first key / headers arrive (back-filled with None).
        self.keys: list[bytes | None] | None = None
        self.headers: list[Headers | None] | None = None
        self.bytes = 0                 # sum of record_size of the records
        self.created = _monotonic()
        self.result = BatchResult(topic, partition, lock)
        self.plain = True

    def __repr__(self) -> str:
        return f"<ProducerBatch {self.topic}[{self.partition}] {len(self.values)} records>"


def _check_batch(batch: ProducerBatch) -> None:
    """The invariants of an open batch: it holds a record, its columns line up,
    ``bytes`` is the sum of its record sizes, ``plain`` says whether it has keys or
    headers, and its result and callbacks belong to it (part of
    ``Accumulator._check``)."""
    count = len(batch.values)
    assert count > 0, batch  # a batch is opened for the record that goes in at once
    assert len(batch.timestamps) == count
    assert batch.keys is None or len(batch.keys) == count
    assert batch.headers is None or len(batch.headers) == count
    assert batch.plain == (batch.keys is None and batch.headers is None)
    keys = batch.keys or [None] * count
    headers = batch.headers or [None] * count
    assert batch.bytes == sum(map(record_size, keys, batch.values, headers)), batch
    result = batch.result
    assert not result.done and (result.topic, result.partition) == (batch.topic,
                                                                      batch.partition)
    for future, _fn in result.callbacks or ():
        assert future[0] is result and 0 <= future[1] < count


# The fast path of Producer.send for a topic: its sticky partition's open batch (None
# once drained: send then opens the next with ``Accumulator.reopen``), the topic's
# cached info, and the cursor that put the batch there (see Accumulator.hot).
Hot = tuple["ProducerBatch | None", TopicInfo, "StickyCursor"]


# Sender's counters, by index into its list.
_METRICS = ("records_sent", "bytes_sent", "batches_sent", "errors", "duplicates")
_RECORDS, _BYTES, _BATCHES, _ERRORS, _DUPLICATES = range(len(_METRICS))


class Sender:
    """The one write path: a batch, encoded, stamped and appended through the backend.

    ``write`` is called with the partition lock of the batch's partition held (the
    sequence numbers of an idempotent producer are counted per partition under it);
    ``metrics`` from any thread.
    """

    def __init__(self, backend: Backend, producer_id: int | None) -> None:
        self._backend = backend
        self._producer_id = producer_id
        self._txn: TransactionManager | None = None
        self._partitions: dict[tuple[str, int], PartitionBackend] = {}
        self._sequences: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()  # guards _counts
        self._counts = [0] * len(_METRICS)  # in _METRICS' order (a list: the hot path)

    def write(self, result: BatchResult, values: list[bytes | None],
              keys: list[bytes | None] | None, headers: list[Headers | None] | None,
              timestamps: Sequence[int] | int) -> Sequence[tuple[RecordFuture, Callback]]:
        """Store one batch of records in ``result``'s partition: encode the columns,
        stamp the producer id and the partition's next sequence (idempotent
        producers), append, count, and complete ``result`` (its futures). An error is
        delivered to ``result``, not raised; a failed append consumes no sequence
        number. Returns the callbacks for the caller to run.

        Cost: the encoding (one msgpack call for the columns) and one
        ``PartitionBackend.append``.
        """
        key = (result.topic, result.partition)
        count = len(values)
        pid = self._producer_id
        try:
            part = self._partitions.get(key)
            if part is None:
                part = self._partitions[key] = self._backend.partition(*key)
            if pid is None:
                # (a record alone: its timestamp as an int, the same batch at less cost)
                encoded = encode_batch(values, keys, timestamps[0] if count == 1 and type(
                    timestamps) is list else timestamps, headers)
                appended = part.append(encoded)
            elif self._txn is not None:
                # The partition joins the transaction (durably) before its first record.
                pid, epoch = self._txn.before_write(key)
                sequence = self._sequences.get(key, 0)
                encoded = encode_batch(values, keys, timestamps, headers, producer_id=pid,
                                       producer_epoch=epoch, base_sequence=sequence,
                                       attributes=ATTR_TRANSACTIONAL)
                appended = part.append(encoded)
                self._sequences[key] = (sequence + count) % SEQUENCE_MODULUS
            else:
                sequence = self._sequences.get(key, 0)
                encoded = encode_batch(values, keys, timestamps, headers, producer_id=pid,
                                       base_sequence=sequence)
                appended = part.append(encoded)
                self._sequences[key] = (sequence + count) % SEQUENCE_MODULUS
        except Exception as exc:
            # A topic deleted (and created again) leaves a closed partition behind:
            # look it up afresh next time.
            self._partitions.pop(key, None)
            if self._txn is not None:
                self._txn.record_error(exc)
            with self._lock:
                self._counts[_ERRORS] += count
            return result.finish(None, exc)
        skipped = len(appended.stored_offsets) if appended.stored_offsets else 0
        with self._lock:
            counts = self._counts
            counts[_RECORDS] += count - skipped
            counts[_BYTES] += len(encoded.payload)
            counts[_BATCHES] += 1
            counts[_DUPLICATES] += skipped
        return result.finish(appended, None)

    def set_transactional(self, txn: TransactionManager, producer_id: int) -> None:
        """Write as ``producer_id`` from now on, inside ``txn``'s transactions, at the
        epoch it gives (``init_transactions``): sequences start again at 0, as a new
        epoch allows. Call with no batch being written."""
        self._txn, self._producer_id = txn, producer_id
        self._sequences.clear()

    def metrics(self) -> dict[str, int]:
        """A copy of the counters. Cost: O(1)."""
        with self._lock:
            return dict(zip(_METRICS, self._counts, strict=True))


class Accumulator:
    """The pending batches of one producer, one per partition, and their way out.

    A batch is drained (written by ``Sender.write``) when it reaches ``batch_bytes``,
    when it has waited ``linger_s`` (by the linger thread), on ``flush``, when someone
    waits for one of its futures, or before a ``send_batch`` to its partition. Each
    partition's batches are written one at a time, in the order they were filled.
    Thread-safe; see the module docstring for the locks.

    ``hot`` maps a topic to the fast-path entry of ``Producer.send`` (``Hot``): valid
    while its batch is ``plain`` (drained batches are not), its ``TopicInfo`` has sends
    left and its cursor has room (a cursor that moved on has none). Only ``append``
    and ``reopen`` set an entry's batch and only a drain clears it (keeping the info
    and cursor, so that the next keyless ``send`` opens the next batch without the
    general path); ``_check`` verifies the rest.
    """

    def __init__(self, sender: Sender, batch_bytes: int, linger_s: float) -> None:
        self.sender = sender
        self.batch_bytes = batch_bytes
        self.linger_s = linger_s
        self.lock = threading.Lock()
        self.hot: dict[str, Hot] = {}
        self._cond = threading.Condition(self.lock)
        self._pending: dict[str, list[ProducerBatch | None]] = {}  # topic -> by partition
        self._partition_locks: dict[tuple[str, int], threading.RLock] = {}
        self._urgent: set[tuple[str, int]] = set()           # the linger thread drains now
        # The batch each partition last took to write (done once written: drain never
        # removes it, it is replaced by the next; flush with a timeout waits for it).
        self._taken: dict[tuple[str, int], BatchResult] = {}
        self._stopping = False
        self._linger_thread: threading.Thread | None = None
        self._linger_until: float | None = None  # the linger thread's next look (None: none)
        self._newest = 0.0                       # when the newest batch was created

    # -- adding records (producer lock held) --------------------------------------------

    def append(self, topic: str, partition: int, value: bytes | None, key: bytes | None,
               headers: Headers | None, timestamp_ms: int, size: int,
               hot: tuple[TopicInfo, StickyCursor] | None = None
               ) -> tuple[RecordFuture, bool]:
        """Add a record to its partition's pending batch; return its future and whether
        the batch is now due (full, or ``linger_s == 0``: the caller drains it).
        ``hot``: the record was placed by the sticky cursor, so ``send``'s fast path
        may add the next keyless records of the topic to the same batch.

        Call with ``lock`` held. Cost: O(1) (amortized; O(n) back-fill once when the
        first key or headers join a batch of n keyless records).
        """
        slots = self._pending.get(topic)
        if slots is None or len(slots) <= partition:
            slots = self._pending.setdefault(topic, [])
            slots.extend([None] * (partition + 1 - len(slots)))
        batch = slots[partition]
        if batch is None:
            batch = self._open(topic, partition, slots)
            if (topic, partition) not in self._partition_locks:  # (reopen's has one)
                self._partition_locks[(topic, partition)] = threading.RLock()
        values = batch.values
        index = len(values)
        future = new_future((batch.result, index, timestamp_ms, self))
        values.append(value)
        batch.timestamps.append(timestamp_ms)
        if key is not None or batch.keys is not None:
            if batch.keys is None:
                batch.keys = [None] * index
                batch.plain = False
            batch.keys.append(key)
        if headers or batch.headers is not None:
            if batch.headers is None:
                batch.headers = [None] * index
                batch.plain = False
            batch.headers.append(headers)
        batch.bytes += size
        due = self.linger_s == 0 or batch.bytes >= self.batch_bytes
        if hot is not None and batch.plain and not due:
            self.hot[topic] = (batch, hot[0], hot[1])
        return future, due

    def _open(self, topic: str, partition: int, slots: list[ProducerBatch | None]
              ) -> ProducerBatch:
        """A new pending batch in the free slot of ``partition`` (lock held). Its
        partition must get a partition lock (``append`` makes it) so that ``flush``
        finds every partition with a batch among the partition locks."""
        batch = slots[partition] = ProducerBatch(topic, partition, self.lock)
        if self.linger_s > 0:
            if self._linger_thread is None:
                self._ensure_linger_thread()
            self._newest = batch.created
            until = self._linger_until
            if until is None or until > batch.created + self.linger_s:
                # Wake the thread only when it would sleep past this batch's
                # deadline: a wake-up costs the sending thread a GIL hand-over
                # (about 15 us, half a one-record send + flush).
                self._cond.notify()
        return batch

    def reopen(self, topic: str, info: TopicInfo, cursor: StickyCursor
               ) -> ProducerBatch | None:
        """``Producer.send``'s fast path found the hot batch of ``topic`` drained: open
        the next one where ``cursor`` points and make it the hot batch, as the general
        path (``StickyPartitioner.place``, then ``append``) would for a keyless record
        with ``info`` current. (The partition is the drained batch's, so it has its
        partition lock.) None when the cursor's block is full or that partition
        has a batch pending already: the caller then takes the general path.

        Call with ``lock`` held. Cost: O(1).
        """
        if cursor.filled >= self.batch_bytes:
            return None
        partition = cursor.index % info.partitions
        slots = self._pending.get(topic)
        if slots is None or len(slots) <= partition or slots[partition] is not None:
            return None
        batch = self._open(topic, partition, slots)
        self.hot[topic] = (batch, info, cursor)
        return batch

    # -- draining -------------------------------------------------------------------------

    def _partition_lock(self, topic: str, partition: int) -> threading.RLock:
        key = (topic, partition)
        lock = self._partition_locks.get(key)
        if lock is None:
            with self.lock:
                lock = self._partition_locks.setdefault(key, threading.RLock())
        return lock

    def _take(self, topic: str, partition: int, only: BatchResult | None
              ) -> ProducerBatch | None:
        """Close and remove the pending batch of a partition (lock held)."""
        slots = self._pending.get(topic)
        batch = slots[partition] if slots and partition < len(slots) else None
        if batch is None or (only is not None and batch.result is not only):
            return None
        slots[partition] = None  # type: ignore[index]
        batch.plain = False
        hot = self.hot.get(topic)
        if hot is not None and hot[0] is batch:  # let its records go with it
            self.hot[topic] = (None, hot[1], hot[2])
        return batch

    def drain(self, topic: str, partition: int, timeout: float | None = None,
              only: BatchResult | None = None) -> None:
        """Write the pending batch of one partition (after any being written); with
        ``only``, just that batch if it is still pending. Errors go to its futures.
        ``TimeoutError`` if the partition lock is not had within ``timeout`` seconds.

        Cost: one ``Sender.write``; waits for a write in progress on the partition.
        """
        key = (topic, partition)
        lock = self._partition_locks.get(key)
        if lock is None:
            lock = self._partition_lock(topic, partition)
        if not (lock.acquire() if timeout is None else lock.acquire(timeout=max(timeout, 0))):
            raise TimeoutError(f"timed out waiting to append to {topic}[{partition}]")
        try:
            with self.lock:
                batch = self._take(topic, partition, only)
                if batch is None:
                    return
                result = self._taken[key] = batch.result
            # Complete the futures before letting go of the partition, so that a flush
            # that waited for this lock sees them done...
            callbacks = self.sender.write(result, batch.values, batch.keys, batch.headers,
                                          batch.timestamps)
        finally:
            lock.release()
        # ...and run callbacks outside it: they may send to this partition again.
        for future, fn in callbacks:
            run_callback(fn, future)

    def write_columns(self, topic: str, partition: int, indexes: Sequence[int],
                      columns: Columns, chunk_bytes: int, out: list[Chunk]) -> None:
        """``send_batch``'s step: after what is pending for the partition, write the
        records at ``indexes`` now, in batches of about ``chunk_bytes``, each through
        ``Sender.write``; record where they went in ``out``. Raises the first error
        (the batches before it stay written).

        Cost: one ``Sender.write`` per ``chunk_bytes``.
        """
        self.drain(topic, partition)  # records sent earlier go first
        if columns.largest is not None and len(indexes) * columns.largest <= chunk_bytes:
            per_chunk = len(indexes)  # one chunk, whatever the sizes: no gather of them
        else:
            per_chunk = max(1, len(indexes) * chunk_bytes
                            // max(1, columns.total_bytes(indexes)))
        with self._partition_lock(topic, partition):
            for start in range(0, len(indexes), per_chunk):
                chunk = indexes[start:start + per_chunk]
                values, keys, headers, stamps = columns.take(chunk)
                result = BatchResult(topic, partition, self.lock)
                self.sender.write(result, values, keys, headers, stamps)  # (no futures)
                if result.error is not None:
                    raise result.error
                out.append((partition, chunk, result.base_offset, result.stored, stamps,
                            result.log_time))

    def expedite(self, result: BatchResult, timeout: float | None) -> None:
        """Someone waits for ``result``: write its batch now instead of after linger.

        Without a timeout the waiter writes it itself (the fastest path for a
        synchronous send). With one, the linger thread does, so that the waiter can
        give up in time even if another process holds the partition's file lock.
        """
        if timeout is None:
            try:
                self.drain(result.topic, result.partition, only=result)
            except Exception:  # noqa: S110 - the waiter sees the batch's own error instead
                pass
            return
        self._request_urgent([(result.topic, result.partition)])

    def _request_urgent(self, targets: Iterable[tuple[str, int]]) -> None:
        with self._cond:
            self._urgent.update(targets)
            self._ensure_linger_thread()
            self._cond.notify()

    def _ensure_linger_thread(self) -> None:
        if self._linger_thread is None:
            self._linger_thread = threading.Thread(target=self._linger_loop, daemon=True,
                                                   name="eventlog-producer-linger")
            self._linger_thread.start()

    def _linger_loop(self) -> None:
        linger = self.linger_s
        while True:
            with self._cond:
                while True:
                    now = time.monotonic()
                    due: list[tuple[str, int]] = []
                    wake: float | None = None
                    for topic, slots in self._pending.items():
                        for batch in slots:
                            if batch is None:
                                continue
                            deadline = batch.created + linger
                            if deadline <= now or (topic, batch.partition) in self._urgent:
                                due.append((topic, batch.partition))
                            elif wake is None or deadline < wake:
                                wake = deadline
                    self._urgent.clear()
                    if due:
                        break
                    if self._stopping:
                        return
                    if wake is None and now - self._newest < _LINGER_TICKING_S:
                        # A busy producer: look again after a linger anyway, so that
                        # its next batch finds the thread due to wake and need not
                        # wake it (see append).
                        wake = now + linger
                    self._linger_until = wake
                    self._cond.wait(None if wake is None else wake - now)
            for topic, partition in due:
                try:
                    self.drain(topic, partition)
                except Exception:  # noqa: S112 - delivered to the batch's futures
                    continue

    # -- flushing and closing -------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> None:
        """Write every batch pending now; return when all are stored or failed.

        Without a timeout this thread writes them; with one, the linger thread does and
        this thread waits, raising ``TimeoutError`` when time is up (the batches stay
        queued). Cost: one ``Sender.write`` per pending batch.
        """
        if timeout is None:
            with self.lock:
                # Every partition with a pending batch has a lock (``_open``), and a
                # drain of one with none waits for a write under way there.
                targets = list(self._partition_locks)
            if len(targets) > 1:
                targets.sort()
            for topic, partition in targets:
                self.drain(topic, partition)
            return
        deadline = time.monotonic() + timeout
        with self.lock:
            results = [b.result for slots in self._pending.values() for b in slots
                       if b is not None]
            results += [r for r in self._taken.values() if not r.done]
        self._request_urgent({(r.topic, r.partition) for r in results})
        for r in results:
            if not r.wait(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"flush did not finish within {timeout} s "
                                   f"({r.topic}[{r.partition}] is still pending)")

    def close(self, timeout: float | None, error: BaseException) -> None:
        """Stop the linger thread (waiting up to ``timeout`` seconds for it) and fail
        what is still pending with ``error``. Idempotent."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        thread = self._linger_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        with self.lock:
            leftovers = [self._take(topic, b.partition, None)
                         for topic, slots in self._pending.items() for b in slots
                         if b is not None]
        for batch in leftovers:
            assert batch is not None
            for future, fn in batch.result.finish(None, error):
                run_callback(fn, future)

    def pending_records(self) -> int:
        """How many records wait in pending batches. Cost: O(partitions)."""
        with self.lock:
            return sum(len(b.values) for slots in self._pending.values() for b in slots
                       if b is not None)

    def _check(self) -> None:
        with self.lock:
            open_batches = set()
            for topic, slots in self._pending.items():
                for partition, batch in enumerate(slots):
                    if batch is None:
                        continue
                    assert (batch.topic, batch.partition) == (topic, partition), batch
                    assert (topic, partition) in self._partition_locks, batch  # (flush)
                    _check_batch(batch)
                    open_batches.add(id(batch))
                    assert self._linger_thread is not None or self.linger_s == 0
            for topic, (batch, info, cursor) in self.hot.items():
                if batch is None:  # drained: reopen opens the next, in a partition
                    if info.sends_left > 0 and cursor.filled < self.batch_bytes:  # with a
                        where = (topic, cursor.partition(info.partitions))  # lock
                        assert where in self._partition_locks, where
                    continue
                assert batch.topic == topic and id(batch) in open_batches, batch
                if batch.plain and info.sends_left > 0 and cursor.filled < self.batch_bytes:
                    # the entry is live: the fast path adds to the cursor's partition
                    assert cursor.partition(info.partitions) == batch.partition, batch
                    assert batch.bytes < self.batch_bytes, batch
            for (topic, partition), result in self._taken.items():
                assert (result.topic, result.partition) == (topic, partition)
