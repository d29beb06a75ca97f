"""The asyncio interface: ``AIOProducer`` and ``AIOConsumer``.

Both wrap the synchronous classes and keep every call that may block (an append, an
fsync, a flock, a sleep until records arrive) off the event loop, in worker threads
of their own. Names follow aiokafka where the models agree (``send``,
``send_and_wait``, ``getone``, ``async for``, ``commit``, ``start``).

Producer. ``await send(...)`` queues the record and resolves with its
``RecordMetadata`` once it is stored. The requests of all tasks go into one queue that
a worker thread empties: it hands every queued record to the ``Producer``, then
flushes once, so concurrent senders share appends the way a group commit does, and
the records of one task keep their order.

Consumer. ``AIOConsumer`` runs a ``Consumer`` with ``enable_auto_commit=False`` in
one worker thread (a ``Consumer`` is used by one thread at a time; this is that
thread), and sleeps for new records in a second thread, on the partitions' notify
words (``_notify``), like a blocked ``Consumer.poll``. The wait also watches a word of
its own, the *interrupt*, that the loop bumps to end the wait at once: when the
polling task is cancelled, when the consumer closes, and after any call that moves a
position or changes the assignment. The consumer thread is therefore never blocked by
a sleeping poll: ``commit`` or ``seek`` from another task run immediately.

Cancellation safety. Records fetched by the consumer thread go into a read-ahead
buffer *in that thread*, and leave it only in the step that returns them to the
application, with no ``await`` in between. So a poll cancelled at any moment loses
nothing: whatever its thread fetched is returned by the next poll. The positions the
application has been given are the underlying positions minus what is still buffered;
auto-commit, ``commit()`` and the commit before a rebalance revokes partitions use
those, never the underlying consumer's positions, so nothing is committed that was not
returned.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import mmap
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any, NamedTuple, TypeVar

from . import _notify
from ._types import Record, RecordMetadata, TopicPartition
from .consumer import _SLICE_IDLE_S, _SLICE_WAITING_S, Consumer, RebalanceListener
from .errors import ClosedError, CommitFailedError, InvalidConfigError
from .log import Log
from .producer import BatchMetadata, Producer

__all__ = ["AIOConsumer", "AIOProducer"]

_logger = logging.getLogger("eventlog")
_T = TypeVar("_T")

_SEND, _SEND_BATCH, _FLUSH = "send", "send_batch", "flush"


class _Request:
    """One queued producer call and the asyncio future of the task awaiting it."""

    __slots__ = ("args", "kind", "kwargs", "loop", "waiter")

    def __init__(self, kind: str, loop: asyncio.AbstractEventLoop,
                 waiter: asyncio.Future[Any], args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> None:
        self.kind = kind
        self.loop = loop
        self.waiter = waiter
        self.args = args
        self.kwargs = kwargs


def _deliver(outcomes: list[tuple[_Request, Any, BaseException | None]]) -> None:
    """Resolve waiters (in their loop's thread); a cancelled waiter is skipped."""
    for request, result, error in outcomes:
        if request.waiter.done():
            continue
        if error is not None:
            request.waiter.set_exception(error)
        else:
            request.waiter.set_result(result)


class AIOProducer:
    """Sends records from asyncio code. An async context manager (leaving it closes the
    producer, which flushes it).

    ``options`` are those of ``eventlog.Producer`` (serializers, partitioner,
    ``linger_ms``, ``batch_bytes``, idempotence). Coroutine-safe: any number of tasks
    of one event loop may send at once. Nothing here blocks the event loop: sending,
    appending and flushing happen in a worker thread of this producer.

    A cancelled ``send`` does not take its record back: once called, the record is
    stored (or fails) whether or not anyone still awaits it, as with a Kafka producer.
    """

    def __init__(self, log: Log, **options: Any) -> None:
        self._producer = Producer(log, **options)
        self._clock = log._ctx.clock
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="eventlog-aio-producer")
        self._lock = threading.Lock()       # guards _queue and _busy
        self._queue: collections.deque[_Request] = collections.deque()
        self._busy = False
        self._closing = False
        self._close_task: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        state = "closed" if self._closing else "open"
        return f"<eventlog.aio.AIOProducer {self._producer._log.path!r} {state}>"

    async def __aenter__(self) -> AIOProducer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def producer(self) -> Producer:
        """The synchronous ``Producer`` underneath (for ``metrics()``, say)."""
        return self._producer

    async def send(self, topic: str, value: Any = None, *, key: Any = None,
                   headers: Iterable[tuple[str, bytes]] | None = None,
                   partition: int | None = None,
                   timestamp_ms: int | None = None) -> RecordMetadata:
        """Send one record; return its ``RecordMetadata`` once it is stored.

        The arguments and errors are those of ``Producer.send`` (errors found before
        storing, such as ``UnknownTopicError`` or ``SerializationError``, are raised
        here too). The timestamp, when not given, is the log clock's time of this call.
        Cost: a hand-off to the worker thread, shared by all records queued meanwhile,
        and an append per partition and round.
        """
        if timestamp_ms is None:
            timestamp_ms = self._clock()
        result: RecordMetadata = await self._submit(
            _SEND, (topic, value),
            {"key": key, "headers": headers, "partition": partition,
             "timestamp_ms": timestamp_ms})
        return result

    async def send_and_wait(self, topic: str, value: Any = None, *, key: Any = None,
                            headers: Iterable[tuple[str, bytes]] | None = None,
                            partition: int | None = None,
                            timestamp_ms: int | None = None) -> RecordMetadata:
        """The same as ``send`` (aiokafka's name for a send that waits for storage)."""
        return await self.send(topic, value, key=key, headers=headers, partition=partition,
                               timestamp_ms=timestamp_ms)

    async def send_batch(self, topic: str, values: Sequence[Any], *,
                         keys: Sequence[Any] | None = None,
                         headers: Sequence[Iterable[tuple[str, bytes]] | None] | None = None,
                         partition: int | None = None,
                         timestamps_ms: Sequence[int] | int | None = None) -> BatchMetadata:
        """``Producer.send_batch`` in the worker thread: many records at once, stored
        when it returns, in order after the records sent before it."""
        if timestamps_ms is None:
            timestamps_ms = self._clock()
        result: BatchMetadata = await self._submit(
            _SEND_BATCH, (topic, values),
            {"keys": keys, "headers": headers, "partition": partition,
             "timestamps_ms": timestamps_ms})
        return result

    async def flush(self) -> None:
        """Return when every record sent before this call is stored (or failed)."""
        await self._submit(_FLUSH, (), {})

    async def _submit(self, kind: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                      closing: bool = False) -> Any:
        if self._closing and not closing:
            raise ClosedError("the producer is closed")
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Any] = loop.create_future()
        with self._lock:
            self._queue.append(_Request(kind, loop, waiter, args, kwargs))
            start = not self._busy
            self._busy = True
        if start:
            self._executor.submit(self._work)
        return await waiter

    def _work(self) -> None:
        """Worker thread: empty the queue, one round at a time, until it stays empty."""
        while True:
            with self._lock:
                if not self._queue:
                    self._busy = False
                    return
                requests = list(self._queue)
                self._queue.clear()
            try:
                outcomes = self._round(requests)
            except Exception as exc:  # never leave a waiter hanging
                outcomes = [(r, None, exc) for r in requests]
            by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
            for outcome in outcomes:
                by_loop.setdefault(outcome[0].loop, []).append(outcome)
            for loop, group in by_loop.items():
                try:
                    loop.call_soon_threadsafe(_deliver, group)
                except RuntimeError:  # that loop is closed: nobody awaits these any more
                    continue

    def _round(self, requests: list[_Request]
               ) -> list[tuple[_Request, Any, BaseException | None]]:
        producer = self._producer
        outcomes: list[tuple[_Request, Any, BaseException | None]] = []
        sent = []
        flushes = []
        for request in requests:
            if request.kind == _FLUSH:
                flushes.append(request)
                continue
            try:
                if request.kind == _SEND:
                    sent.append((request, producer.send(*request.args, **request.kwargs)))
                else:
                    outcomes.append((request, producer.send_batch(*request.args,
                                                                  **request.kwargs), None))
            except Exception as exc:
                outcomes.append((request, None, exc))
        # Everybody in this round waits for storage: append now, not after linger_ms.
        flush_error: BaseException | None = None
        try:
            producer.flush()
        except Exception as exc:
            flush_error = exc
        for request, future in sent:
            # Stored by the flush above (or by the linger thread, which may still be
            # finishing the batch: result() waits for that, briefly).
            try:
                outcomes.append((request, future.result(), None))
            except Exception as exc:
                outcomes.append((request, None, exc))
        outcomes += [(request, None, flush_error) for request in flushes]
        return outcomes

    async def close(self) -> None:
        """Store everything queued, then close the producer (later sends raise
        ``ClosedError``). Idempotent; safe to call from several tasks."""
        if self._close_task is None:
            self._closing = True
            self._close_task = asyncio.ensure_future(self._close())
        await asyncio.shield(self._close_task)

    async def _close(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await self._submit(_FLUSH, (), {}, closing=True)
        finally:
            try:
                await loop.run_in_executor(self._executor, self._producer.close)
            finally:
                self._executor.shutdown(wait=False)


class _WaitSpec(NamedTuple):
    """What the wait thread sleeps on: notify words, their waiters flags, the values
    seen before the last fetch, and the longest sleep before looking at the group."""

    counters: list[_notify.Word]
    waiters: list[_notify.Word]
    expected: list[int]
    slice_s: float


class _Listener(RebalanceListener):
    """Sits between the ``Consumer`` and the application's listener: before partitions
    are revoked it commits what the application was given (with auto-commit on) and
    drops their read-ahead records."""

    def __init__(self, owner: AIOConsumer, user: RebalanceListener | None) -> None:
        self._owner = owner
        self._user = user

    def on_revoked(self, partitions: set[TopicPartition]) -> None:
        self._owner._revoke(partitions, commit=True)
        if self._user is not None:
            self._user.on_revoked(partitions)

    def on_assigned(self, partitions: set[TopicPartition]) -> None:
        if self._user is not None:
            self._user.on_assigned(partitions)

    def on_lost(self, partitions: set[TopicPartition]) -> None:
        self._owner._revoke(partitions, commit=False)
        if self._user is not None:
            self._user.on_lost(partitions)


class AIOConsumer:
    """Reads records from asyncio code: ``await poll(...)``, ``async for``, ``getone()``.
    An async context manager (entering starts it, leaving closes it).

    The options are those of ``eventlog.Consumer``. ``enable_auto_commit`` (with a
    ``group_id``) commits, every ``auto_commit_interval_ms`` and at close, the positions
    of the records this consumer has *returned*. ``max_poll_records`` is how many
    records one fetch reads ahead (``poll`` returns at most its own ``max_records``).
    ``consumer_timeout_ms`` ends ``async for`` after that long without a record. A
    ``listener`` is called in the consumer's worker thread, while no other call runs on
    the consumer; it must not call this ``AIOConsumer``.

    Coroutine-safe: tasks of one event loop may share it (polls take turns). A cancelled
    ``poll`` loses no record and commits nothing it did not return.
    """

    def __init__(self, log: Log, *topics: str, group_id: str | None = None,
                 enable_auto_commit: bool = True, auto_commit_interval_ms: int = 5000,
                 max_poll_records: int = 500, consumer_timeout_ms: int | None = None,
                 listener: RebalanceListener | None = None, **options: Any) -> None:
        for name, value in (("auto_commit_interval_ms", auto_commit_interval_ms),
                            ("max_poll_records", max_poll_records)):
            if type(value) is not int or value < 1:
                raise InvalidConfigError(f"{name} must be an int >= 1, not {value!r}")
        if consumer_timeout_ms is not None and (type(consumer_timeout_ms) is not int
                                                or consumer_timeout_ms < 0):
            raise InvalidConfigError("consumer_timeout_ms must be an int >= 0 or None")
        if "enable_auto_commit" in options:
            raise InvalidConfigError("enable_auto_commit given twice")
        self._log = log
        self._topics = topics
        self.group_id = group_id
        self._consumer_options = dict(options, group_id=group_id, enable_auto_commit=False,
                                      max_poll_records=max_poll_records,
                                      listener=_Listener(self, listener))
        self._auto_commit = enable_auto_commit and group_id is not None
        self._auto_commit_s = auto_commit_interval_ms / 1000
        self._next_auto_commit = 0.0
        # Group members look after the group (heartbeat, rebalances) at least this often
        # while polls are served from the read-ahead buffer; None outside a group.
        self._maintain_s: float | None = None
        self._next_maintain = 0.0
        self._max_poll_records = max_poll_records
        self._consumer_timeout_ms = consumer_timeout_ms
        self._consumer: Consumer | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="eventlog-aio-consumer")
        self._wait_executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="eventlog-aio-wait")
        self._lock = threading.Lock()   # guards _buffer and _assignment across threads
        self._buffer: collections.deque[Record] = collections.deque()
        self._assignment: frozenset[TopicPartition] = frozenset()
        self._poll_lock = asyncio.Lock()
        self._interrupt_map = mmap.mmap(-1, mmap.PAGESIZE)
        self._interrupt = _notify.Word(self._interrupt_map, 0)
        self._interrupt_waiters = _notify.Word(self._interrupt_map, 4)
        self._interrupt_lock = threading.Lock()
        self._start_task: asyncio.Future[None] | None = None
        self._close_task: asyncio.Future[None] | None = None
        self._closing = False

    def __repr__(self) -> str:
        group = f" group={self.group_id!r}" if self.group_id else ""
        state = " closed" if self._closing else ""
        return f"<eventlog.aio.AIOConsumer{group} partitions={len(self._assignment)}{state}>"

    async def __aenter__(self) -> AIOConsumer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- running calls in the consumer thread ---------------------------------------------

    async def start(self) -> None:
        """Create the consumer (joining its group, if it has one). Idempotent; the
        first call that needs the consumer starts it anyway."""
        self._check_open()
        if self._start_task is None:
            self._start_task = asyncio.ensure_future(self._in_thread(self._create))
        await asyncio.shield(self._start_task)

    def _create(self) -> None:
        self._consumer = Consumer(self._log, *self._topics, **self._consumer_options)
        self._next_auto_commit = time.monotonic() + self._auto_commit_s

    def _check_open(self) -> None:
        if self._closing:
            raise ClosedError("the consumer is closed")

    async def _ready(self) -> Consumer:
        self._check_open()
        if self._consumer is None:
            await self.start()
        assert self._consumer is not None
        return self._consumer

    async def _in_thread(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run ``fn(*args)`` in the consumer thread, after the calls queued before it."""
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(self._executor, partial(self._job, fn, *args))
        except RuntimeError as exc:  # the executor is shut down
            raise ClosedError("the consumer is closed") from exc
        return await future

    async def _call(self, fn: Callable[..., _T], *args: Any) -> _T:
        await self._ready()
        return await self._in_thread(fn, *args)

    def _job(self, fn: Callable[..., _T], *args: Any) -> _T:
        try:
            return fn(*args)
        finally:
            self._after_call()

    def _after_call(self) -> None:
        """Consumer thread, after every call: publish the assignment, forget read-ahead
        records of partitions that are no longer assigned."""
        consumer = self._consumer
        if consumer is None:
            return
        member = consumer._member
        self._maintain_s = None if member is None else member.heartbeat_interval_ms / 1000
        assignment = frozenset(consumer.assignment())
        with self._lock:
            self._assignment = assignment
            if any((r.topic, r.partition) not in assignment for r in self._buffer):
                self._buffer = collections.deque(
                    r for r in self._buffer if (r.topic, r.partition) in assignment)

    def _wake(self) -> None:
        """End a wait in progress at once (any thread)."""
        with self._interrupt_lock:
            self._interrupt.store(self._interrupt.load() + 1)
        _notify.wake(self._interrupt, self._interrupt_waiters)

    # -- read-ahead buffer (under self._lock) ---------------------------------------------

    def _first_buffered(self) -> dict[TopicPartition, int]:
        first: dict[TopicPartition, int] = {}
        for record in self._buffer:
            tp = TopicPartition(record.topic, record.partition)
            if tp not in first:
                first[tp] = record.offset
        return first

    def _returned_positions(self, consumer: Consumer,
                            only: set[TopicPartition] | None = None
                            ) -> dict[TopicPartition, int]:
        """The offset after the last record returned to the application, for every
        owned partition with a known position (consumer thread; lock held)."""
        first = self._first_buffered()
        return {tp: first.get(tp, position) for tp, position in consumer._positions().items()
                if only is None or tp in only}

    def _unbuffer(self, consumer: Consumer, partitions: Iterable[TopicPartition],
                  rewind: bool) -> None:
        """Drop read-ahead records of ``partitions``; with ``rewind``, move the consumer
        back to the first of them, so they are fetched again (consumer thread)."""
        wanted = {TopicPartition(*tp) for tp in partitions}
        with self._lock:
            first = {tp: offset for tp, offset in self._first_buffered().items()
                     if tp in wanted}
            if first:
                self._buffer = collections.deque(
                    r for r in self._buffer if (r.topic, r.partition) not in first)
        if rewind:
            for tp, offset in first.items():
                consumer.seek(tp, offset)

    def _revoke(self, partitions: set[TopicPartition], commit: bool) -> None:
        """Listener, consumer thread: partitions are leaving this member."""
        consumer = self._consumer
        if consumer is None:
            return
        with self._lock:
            positions = self._returned_positions(consumer, partitions)
        if commit and self._auto_commit and positions:
            try:
                consumer.commit(positions)
            except CommitFailedError as exc:
                _logger.info("auto-commit before revocation skipped: %s", exc)
        self._unbuffer(consumer, partitions, rewind=False)

    def _take(self, max_records: int) -> list[Record]:
        """Event-loop thread: hand buffered records to the application. The caller
        returns them in the same step (no await in between), so they cannot be lost."""
        with self._lock:
            count = min(max_records, len(self._buffer))
            return [self._buffer.popleft() for _ in range(count)]

    # -- polling ---------------------------------------------------------------------------

    async def poll(self, timeout: float | None = 0.0, max_records: int | None = None
                   ) -> list[Record]:
        """Records from the assigned partitions, as ``Consumer.poll`` returns them: in
        offset order within a partition, at most ``max_records`` (default
        ``max_poll_records``); ``[]`` if none came within ``timeout`` seconds (None:
        wait until some do).

        Waiting does not block the event loop, and wakes within microseconds of an
        append in any process. Cancelling the awaiting task at any moment loses no
        record: what was fetched for it is returned by the next poll. Raises
        ``ClosedError`` if the consumer is closed meanwhile.
        """
        if max_records is None:
            max_records = self._max_poll_records
        elif type(max_records) is not int or max_records < 1:
            raise InvalidConfigError(f"max_records must be a positive int, not {max_records!r}")
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        await self._ready()
        async with self._poll_lock:
            while True:
                self._check_open()
                now = time.monotonic()
                if self._auto_commit and now >= self._next_auto_commit:
                    await self._in_thread(self._commit_returned, True)
                if self._maintain_s is not None and now >= self._next_maintain and \
                        self._buffer:  # (with an empty buffer, the fetch below does it)
                    # Before taking: a rebalance may revoke partitions whose records
                    # are buffered (they are dropped, and go to their new owner).
                    await self._in_thread(self._maintain)
                records = self._take(max_records)
                if records:
                    return records
                spec = await self._in_thread(self._fetch)
                records = self._take(max_records)
                if records:
                    return records
                if spec is None:
                    continue  # the assignment moved during the fetch: fetch again
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return []
                await self._sleep(spec, spec.slice_s if left is None else
                                  min(spec.slice_s, left))

    def _maintain(self) -> None:
        """Consumer thread: heartbeat and react to rebalances, as a poll would, while
        the application is served from the buffer (so a member that keeps polling is
        never taken for a stuck one, however slowly it works through its records)."""
        consumer = self._consumer
        assert consumer is not None
        if consumer._member is not None:
            consumer._maintain_group()
        if self._maintain_s is not None:
            self._next_maintain = time.monotonic() + self._maintain_s

    def _fetch(self) -> _WaitSpec | None:
        """Consumer thread: fetch into the buffer. With nothing to fetch, say what to
        sleep on: the notify words as they were *before* the fetch (so an append during
        the fetch ends the sleep at once) and the interrupt word."""
        consumer = self._consumer
        assert consumer is not None
        interrupt = self._interrupt.load()
        ready = [p for p in consumer._parts.values() if p.owned and not p.paused]
        expected = [p.counter.load() for p in ready]
        records = consumer.poll(0.0, self._max_poll_records)
        if self._maintain_s is not None:
            self._next_maintain = time.monotonic() + self._maintain_s
        if records:
            with self._lock:
                self._buffer.extend(records)
            return None
        parts = consumer._parts.values()
        if [p.tp for p in parts if p.owned and not p.paused] != [p.tp for p in ready]:
            return None
        # The sleeps of a blocked Consumer.poll: short while a partition's previous
        # owner has not let go, never past the next heartbeat.
        slice_s = (_SLICE_WAITING_S if not ready or any(not p.owned for p in parts)
                   else _SLICE_IDLE_S)
        member = consumer._member
        if member is not None:
            slice_s = min(slice_s, member.heartbeat_interval_ms / 1000)
        return _WaitSpec([p.counter for p in ready] + [self._interrupt],
                         [p.waiters for p in ready] + [self._interrupt_waiters],
                         [*expected, interrupt], slice_s)

    async def _sleep(self, spec: _WaitSpec, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(self._wait_executor, _notify.wait, spec.counters,
                                          spec.waiters, spec.expected, timeout)
        except RuntimeError as exc:
            raise ClosedError("the consumer is closed") from exc
        try:
            await future
        except asyncio.CancelledError:
            self._wake()  # the wait thread must not sleep on for a task that is gone
            raise

    async def getone(self) -> Record:
        """The next record, waiting as long as it takes."""
        records = await self.poll(timeout=None, max_records=1)
        return records[0]

    def __aiter__(self) -> AIOConsumer:
        return self

    async def __anext__(self) -> Record:
        """``async for record in consumer``: one record at a time (a break or a
        cancellation leaves the rest for later). Ends when the consumer is closed, or
        after ``consumer_timeout_ms`` without a record."""
        timeout = None if self._consumer_timeout_ms is None else \
            self._consumer_timeout_ms / 1000
        try:
            records = await self.poll(timeout=timeout, max_records=1)
        except ClosedError:
            raise StopAsyncIteration from None
        if not records:
            raise StopAsyncIteration
        return records[0]

    # -- commits ---------------------------------------------------------------------------

    async def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        """Commit ``offsets``, or by default the position after the last record returned
        to the application in each owned partition (records read ahead but not returned
        are not committed). Raises as ``Consumer.commit`` does."""
        if offsets is None:
            await self._call(self._commit_returned, False)
        else:
            consumer = await self._ready()
            await self._in_thread(consumer.commit, dict(offsets))

    def _commit_returned(self, quietly: bool) -> None:
        consumer = self._consumer
        assert consumer is not None
        self._next_auto_commit = time.monotonic() + self._auto_commit_s
        with self._lock:
            positions = self._returned_positions(consumer)
        try:
            consumer.commit(positions)
        except CommitFailedError as exc:
            if not quietly:
                raise
            _logger.info("auto-commit skipped: %s", exc)

    async def committed(self, tp: TopicPartition) -> int | None:
        """The group's last committed offset of ``tp`` (None if none)."""
        consumer = await self._ready()
        return await self._in_thread(consumer.committed, tp)

    # -- positions and assignment ----------------------------------------------------------

    def assignment(self) -> set[TopicPartition]:
        """The partitions assigned to this consumer, as of its last call (no waiting)."""
        return set(self._assignment)

    async def position(self, tp: TopicPartition) -> int:
        """The offset of the next record ``poll`` returns for ``tp``."""
        return await self._call(self._position, TopicPartition(*tp))

    def _position(self, tp: TopicPartition) -> int:
        consumer = self._consumer
        assert consumer is not None
        with self._lock:
            first = self._first_buffered().get(tp)
        return consumer.position(tp) if first is None else first

    async def seek(self, tp: TopicPartition, offset: int) -> None:
        """Make the next ``poll`` read ``tp`` from ``offset``."""
        await self._call(self._moved, "seek", [TopicPartition(*tp)], offset)

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        """Move to the start of ``partitions`` (default: all assigned)."""
        await self._call(self._moved, "seek_to_beginning",
                         [TopicPartition(*tp) for tp in partitions], None)

    async def seek_to_end(self, *partitions: TopicPartition) -> None:
        """Move to the end of ``partitions`` (default: all assigned)."""
        await self._call(self._moved, "seek_to_end",
                         [TopicPartition(*tp) for tp in partitions], None)

    async def pause(self, *partitions: TopicPartition) -> None:
        """Stop returning records of ``partitions`` until ``resume`` (records read
        ahead for them are dropped and fetched again after ``resume``)."""
        await self._call(self._moved, "pause", [TopicPartition(*tp) for tp in partitions],
                         None)

    async def resume(self, *partitions: TopicPartition) -> None:
        await self._call(self._moved, "resume", [TopicPartition(*tp) for tp in partitions],
                         None)

    def _moved(self, what: str, partitions: list[TopicPartition], offset: int | None
               ) -> None:
        """Consumer thread: a call that changes which records come next."""
        consumer = self._consumer
        assert consumer is not None
        if what in ("pause", "resume"):
            affected = partitions
        else:  # seeks without partitions move every assigned partition
            affected = partitions or list(consumer.assignment())
        self._unbuffer(consumer, affected, rewind=what == "pause")
        if what == "seek":
            assert offset is not None
            consumer.seek(partitions[0], offset)
        else:
            getattr(consumer, what)(*partitions)
        self._wake()

    async def subscribe(self, topics: Iterable[str]) -> None:
        """Read ``topics`` instead (as ``Consumer.subscribe``)."""
        await self._call(self._reassign, "subscribe", list(topics))

    async def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Read exactly ``partitions`` (as ``Consumer.assign``)."""
        await self._call(self._reassign, "assign", [TopicPartition(*tp) for tp in partitions])

    async def unsubscribe(self) -> None:
        await self._call(self._reassign, "unsubscribe", None)

    def _reassign(self, what: str, argument: list[Any] | None) -> None:
        consumer = self._consumer
        assert consumer is not None
        # Partitions that stay keep their position: rewind it to what was returned.
        self._unbuffer(consumer, consumer.assignment(), rewind=True)
        if argument is None:
            getattr(consumer, what)()
        else:
            getattr(consumer, what)(argument)
        self._wake()

    async def lag(self) -> dict[TopicPartition, int]:
        """End offset minus position, per assigned partition (records read ahead but
        not returned count as lag)."""
        return await self._call(self._lag)

    def _lag(self) -> dict[TopicPartition, int]:
        consumer = self._consumer
        assert consumer is not None
        lag = consumer.lag()
        with self._lock:
            first = self._first_buffered()
        for tp, offset in first.items():
            if tp in lag:
                lag[tp] += consumer.position(tp) - offset
        return lag

    async def beginning_offsets(self, partitions: Iterable[TopicPartition]
                                ) -> dict[TopicPartition, int]:
        consumer = await self._ready()
        return await self._in_thread(consumer.beginning_offsets, list(partitions))

    async def end_offsets(self, partitions: Iterable[TopicPartition]
                          ) -> dict[TopicPartition, int]:
        consumer = await self._ready()
        return await self._in_thread(consumer.end_offsets, list(partitions))

    async def offsets_for_times(self, timestamps: Mapping[TopicPartition, int]
                                ) -> dict[TopicPartition, int | None]:
        """For each partition, the earliest offset with a timestamp >= the given one."""
        consumer = await self._ready()
        return await self._in_thread(consumer.offsets_for_times, dict(timestamps))

    # -- closing ---------------------------------------------------------------------------

    async def close(self, autocommit: bool = True) -> None:
        """Commit what was returned (with auto-commit on and ``autocommit``), leave the
        group, stop the worker threads. A poll in progress raises ``ClosedError``;
        records read ahead and not returned are left for the group. Idempotent."""
        if self._close_task is None:
            self._closing = True
            self._wake()
            self._close_task = asyncio.ensure_future(self._close(autocommit))
        await asyncio.shield(self._close_task)

    async def _close(self, autocommit: bool) -> None:
        loop = asyncio.get_running_loop()
        try:
            if self._start_task is not None:
                await asyncio.gather(self._start_task, return_exceptions=True)
            if self._consumer is not None:
                await loop.run_in_executor(self._executor, self._close_consumer, autocommit)
        finally:
            self._executor.shutdown(wait=False)
            self._wait_executor.shutdown(wait=False)

    def _close_consumer(self, autocommit: bool) -> None:
        consumer = self._consumer
        assert consumer is not None
        self._auto_commit = self._auto_commit and autocommit
        try:
            if self._auto_commit and not self._log.closed:
                self._commit_returned(True)
        finally:
            consumer.close(autocommit=False)
            with self._lock:
                self._buffer.clear()
                self._assignment = frozenset()

