"""The asyncio interface: ``AIOProducer`` and ``AIOConsumer``.

Both keep every call that may block (an append, an fsync, a flock, a sleep until
records arrive) off the event loop, in worker threads of their own. Names follow
aiokafka where the models agree (``send``, ``send_and_wait``, ``getone``,
``async for``, ``commit``, ``start``).

Producer. ``AIOProducer`` wraps a ``Producer``. ``await send(...)`` queues the record
and resolves with its ``RecordMetadata`` once it is stored. The requests of all tasks
go into one queue that a worker thread empties: it hands every queued record to the
``Producer``, then flushes once, so concurrent senders share appends the way a group
commit does, and the records of one task keep their order.

Consumer. ``AIOConsumer`` runs the same two rooms as ``Consumer`` (``_coordinator``:
assignment, group, commits; ``_fetcher``: positions and the fetch step) in one worker
thread (they are used by one thread at a time; this is that thread), runs the same
step as ``Consumer.poll`` there (``Coordinator.poll``, then ``Fetcher.fetch``), and
sleeps for new records in a second thread, on the ``Wait`` that step returned, like a
blocked ``Consumer.poll``. The wait also watches a word of its own, the *interrupt*,
that the loop bumps to end the wait at once: when the polling task is cancelled, when
the consumer closes, and after any call that moves a position or changes the
assignment. The consumer thread is therefore never blocked by a sleeping poll:
``commit`` or ``seek`` from another task run immediately.

Cancellation safety. Records fetched by the consumer thread go into a read-ahead
buffer *in that thread*, and leave it only in the step that returns them to the
application, with no ``await`` in between. So a poll cancelled at any moment loses
nothing: whatever its thread fetched is returned by the next poll. The positions the
application has been given are the fetcher's positions minus what is still buffered;
the coordinator is given those to commit (auto-commit, ``commit()``, the commit before
a rebalance revokes partitions, the commit at close), never the fetcher's, so nothing
is committed that was not returned.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import inspect
import logging
import mmap
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from . import _fileutil, _notify
from ._coordinator import Coordinator, RebalanceListener, resolve_listener
from ._fetcher import Fetcher, Wait
from ._types import Record, RecordMetadata, TopicPartition
from .config import check_client_id, check_int
from .consumer import poll_timeout
from .errors import ClosedError, InvalidConfigError, ProducerFencedError, TransactionError
from .log import Log
from .producer import BatchMetadata, Producer

if TYPE_CHECKING:
    from ._backend import Backend

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
        self._path = log.path
        self._clock = log.backend.clock
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="eventlog-aio-producer")
        self._lock = threading.Lock()       # guards _queue and _busy
        self._queue: collections.deque[_Request] = collections.deque()
        self._busy = False
        self._closing = False
        self._close_task: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        state = "closed" if self._closing else "open"
        return f"<eventlog.aio.AIOProducer {self._path!r} {state}>"

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

    # -- transactions: Producer's calls, in the worker thread, after what was sent ------

    async def _in_worker(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._closing:
            raise ClosedError("the producer is closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor,
                                                                partial(fn, *args))

    async def init_transactions(self) -> None:
        """``Producer.init_transactions``: fence older producers of the
        ``transactional_id`` and finish what they left."""
        await self._in_worker(self._producer.init_transactions)

    async def begin_transaction(self) -> None:
        """``Producer.begin_transaction``."""
        await self._in_worker(self._producer.begin_transaction)

    async def send_offsets_to_transaction(self, offsets: Mapping[TopicPartition, int],
                                          group_id: str) -> None:
        """``Producer.send_offsets_to_transaction``: the group's offsets move with the
        commit, never on abort."""
        await self._in_worker(self._producer.send_offsets_to_transaction, dict(offsets),
                              group_id)

    async def commit_transaction(self) -> None:
        """``Producer.commit_transaction``, after every record sent before this call."""
        await self.flush()
        await self._in_worker(self._producer.commit_transaction)

    async def abort_transaction(self) -> None:
        """``Producer.abort_transaction``, after every record sent before this call."""
        await self.flush()
        await self._in_worker(self._producer.abort_transaction)

    def transaction(self) -> _Transaction:
        """``async with producer.transaction():`` begins a transaction, commits it when
        the block ends normally and aborts it when the block raises."""
        return _Transaction(self)

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

    async def start(self) -> None:
        """aiokafka's ``start``: nothing needs starting (the producer is ready once
        built, its worker thread starts with the first send), so this only checks that
        it is open (``ClosedError`` otherwise). Idempotent."""
        if self._closing:
            raise ClosedError("the producer is closed")

    async def stop(self) -> None:
        """aiokafka's name for ``close()``: store everything queued, then close."""
        await self.close()

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


class _Transaction:
    """``AIOProducer.transaction()``'s context manager."""

    def __init__(self, producer: AIOProducer) -> None:
        self._producer = producer

    async def __aenter__(self) -> AIOProducer:
        await self._producer.begin_transaction()
        return self._producer

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: object,
                        tb: object) -> None:
        if exc_type is None:
            await self._producer.commit_transaction()
            return
        try:
            await self._producer.abort_transaction()
        except (ProducerFencedError, TransactionError):
            pass  # fenced (the successor aborted it), or nothing left to abort


class _Listener(RebalanceListener):
    """Sits between the coordinator and the application's listener: drops the
    read-ahead records of partitions that leave this consumer (with auto-commit on, the
    coordinator has committed, before, what the application was given)."""

    def __init__(self, drop: Callable[[set[TopicPartition]], None],
                 user: RebalanceListener | None) -> None:
        self._drop = drop
        self._user = user

    def on_revoked(self, partitions: set[TopicPartition]) -> None:
        self._drop(partitions)
        if self._user is not None:
            self._user.on_revoked(partitions)

    def on_assigned(self, partitions: set[TopicPartition]) -> None:
        if self._user is not None:
            self._user.on_assigned(partitions)

    def on_lost(self, partitions: set[TopicPartition]) -> None:
        self._drop(partitions)
        if self._user is not None:
            self._user.on_lost(partitions)


class AIOConsumer:
    """Reads records from asyncio code: ``await poll(...)``, ``async for``, ``getone()``.
    An async context manager (entering starts it, leaving closes it).

    The options are those of ``eventlog.Consumer``. ``enable_auto_commit`` (with a
    ``group_id``) commits, every ``auto_commit_interval_ms``, before a rebalance revokes
    partitions, and at close, the positions of the records this consumer has
    *returned*. ``max_poll_records`` is how many records one fetch reads ahead
    (``poll`` returns at most its own ``max_records``). ``consumer_timeout_ms`` ends
    ``async for`` after that long without a record. A ``listener`` is called in the
    consumer's worker thread, while no other call runs on the consumer; it must not
    call this ``AIOConsumer``.

    Coroutine-safe: tasks of one event loop may share it (polls take turns). A cancelled
    ``poll`` loses no record and commits nothing it did not return.
    """

    def __new__(cls, log: Log, *args: Any, **kwargs: Any) -> AIOConsumer:
        # A log on another backend (a Kafka cluster) brings its own consumer class.
        klass = cls
        if cls is AIOConsumer and isinstance(log, Log):
            klass = log.client_classes.get("aio_consumer", cls)
        return super().__new__(klass)

    def __init__(self, log: Log, *topics: str, group_id: str | None = None,
                 enable_auto_commit: bool = True, auto_commit_interval_ms: int = 5000,
                 max_poll_records: int = 500, consumer_timeout_ms: int | None = None,
                 listener: RebalanceListener | object | None = None, **options: Any) -> None:
        check_int("auto_commit_interval_ms", auto_commit_interval_ms, 1)
        check_int("max_poll_records", max_poll_records, 1)
        check_int("consumer_timeout_ms", consumer_timeout_ms, 0, optional=True)
        self._log = log
        self._topics = topics
        self.group_id = group_id
        self.client_id = check_client_id(options.get("client_id"))
        # The coordinator commits what _returned_positions says: never read-ahead records.
        self._options = dict(options, group_id=group_id, enable_auto_commit=enable_auto_commit,
                             auto_commit_interval_ms=auto_commit_interval_ms,
                             listener=_Listener(self._drop_buffered,
                                                resolve_listener(listener)),
                             positions=self._returned_positions)
        inspect.signature(Coordinator).bind(None, **self._options)  # unknown: TypeError
        self._max_poll_records = max_poll_records
        self._consumer_timeout_ms = consumer_timeout_ms
        self._backend: Backend | None = None
        self._coordinator: Coordinator | None = None
        self._fetcher: Fetcher | None = None
        # While polls are served from the read-ahead buffer, the coordinator's step
        # (heartbeat, rebalances, auto-commit) still runs at least this often.
        self._next_maintain = 0.0
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

    # The dispatch above takes (log, *args, **kwargs): help(), inspect.signature and the
    # API reference show __init__'s parameters instead.
    __new__.__signature__ = inspect.signature(__init__).replace(  # type: ignore[attr-defined]
        return_annotation=inspect.Signature.empty)

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
        if not isinstance(self._log, Log):
            raise TypeError(f"AIOConsumer needs an eventlog.Log, not "
                            f"{type(self._log).__name__}")
        backend = self._log.backend
        backend.check_open()
        coordinator = Coordinator(backend, **self._options)
        self._fetcher = coordinator.fetcher      # what _returned_positions reads
        if self._topics:
            try:
                coordinator.subscribe(self._topics)
            except BaseException:
                self._fetcher = None
                coordinator.close(autocommit=False)
                raise
        self._backend, self._coordinator = backend, coordinator

    def _check_open(self) -> None:
        if self._closing:
            raise ClosedError("the consumer is closed")

    async def _ready(self) -> Coordinator:
        self._check_open()
        if self._coordinator is None:
            await self.start()
        assert self._coordinator is not None
        return self._coordinator

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
        """Consumer thread: one call, as a ``Consumer`` method makes it (the log must
        be open; an ``OSError`` becomes a ``LogDirectoryError``)."""
        try:
            with _fileutil.os_errors(f"consumer ({getattr(fn, '__name__', 'call')})"):
                if self._backend is not None:
                    self._backend.check_open()
                return fn(*args)
        finally:
            self._after_call()

    def _after_call(self) -> None:
        """Consumer thread, after every call: publish the assignment, forget read-ahead
        records of partitions that are no longer assigned."""
        if self._coordinator is None or self._fetcher is None:
            return
        assignment = frozenset(self._fetcher.assigned())
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

    def _returned_positions(self) -> dict[TopicPartition, int]:
        """What the coordinator commits: the offset after the last record returned to
        the application, for every owned partition with a known position (consumer
        thread)."""
        assert self._fetcher is not None
        positions = self._fetcher.positions()
        with self._lock:
            first = self._first_buffered()
        return {tp: first.get(tp, position) for tp, position in positions.items()}

    def _unbuffer(self, partitions: Iterable[TopicPartition], rewind: bool) -> None:
        """Drop read-ahead records of ``partitions``; with ``rewind``, move the fetcher
        back to the first of them, so they are fetched again (consumer thread)."""
        wanted = {TopicPartition(*tp) for tp in partitions}
        with self._lock:
            first = {tp: offset for tp, offset in self._first_buffered().items()
                     if tp in wanted}
            if first:
                self._buffer = collections.deque(
                    r for r in self._buffer if (r.topic, r.partition) not in first)
        if rewind:
            assert self._fetcher is not None
            for tp, offset in first.items():
                self._fetcher.seek(tp, offset)

    def _drop_buffered(self, partitions: set[TopicPartition]) -> None:
        """Listener, consumer thread: partitions are leaving this consumer."""
        self._unbuffer(partitions, rewind=False)

    def _take(self, max_records: int) -> list[Record]:
        """Event-loop thread: hand buffered records to the application. The caller
        returns them in the same step (no await in between), so they cannot be lost."""
        with self._lock:
            count = min(max_records, len(self._buffer))
            return [self._buffer.popleft() for _ in range(count)]

    # -- polling ---------------------------------------------------------------------------

    async def poll(self, timeout: float | None = 1.0, max_records: int | None = None, *,
                   timeout_ms: int | None = None) -> list[Record]:
        """Records from the assigned partitions, as ``Consumer.poll`` returns them: in
        offset order within a partition, at most ``max_records`` (default
        ``max_poll_records``); as soon as some are ready, else ``[]`` if none came
        within ``timeout`` **seconds** (default 1.0; None: wait until some do), or
        ``timeout_ms`` milliseconds if that is given instead.

        Waiting does not block the event loop, and wakes within microseconds of an
        append in any process. Cancelling the awaiting task at any moment loses no
        record: what was fetched for it is returned by the next poll. Raises
        ``ClosedError`` if the consumer is closed meanwhile.
        """
        timeout = poll_timeout(timeout, timeout_ms)
        if max_records is None:
            max_records = self._max_poll_records
        elif type(max_records) is not int or max_records < 1:
            raise InvalidConfigError(f"max_records must be a positive int, not {max_records!r}")
        deadline = None if timeout is None else time.monotonic() + timeout
        await self._ready()
        async with self._poll_lock:
            while True:
                self._check_open()
                if self._buffer and time.monotonic() >= self._next_maintain:
                    # Before taking: a rebalance may revoke partitions whose records
                    # are buffered (they are dropped, and go to their new owner).
                    await self._in_thread(self._maintain)
                records = self._take(max_records)
                if records:
                    return records
                wait = await self._in_thread(self._fetch)
                records = self._take(max_records)
                if records:
                    return records
                if wait is None:
                    continue  # fetched, and the buffer emptied meanwhile: fetch again
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return []
                await self._sleep(*wait, left)

    def _maintain(self) -> None:
        """Consumer thread: the coordinator's step (heartbeat, rebalances, auto-commit),
        as a poll runs it, while the application is served from the buffer (so a member
        that keeps polling is never taken for a stuck one, however slowly it works
        through its records)."""
        assert self._coordinator is not None
        self._next_maintain = time.monotonic() + self._coordinator.poll()

    def _fetch(self) -> tuple[Wait, int] | None:
        """Consumer thread: the step of ``Consumer.poll``, into the buffer. With nothing
        to fetch, say what to sleep on: the fetch step's ``Wait`` and the interrupt
        word's value before it (so a wake during the fetch ends the sleep at once)."""
        assert self._coordinator is not None and self._fetcher is not None
        interrupt = self._interrupt.load()
        slice_s = self._coordinator.poll()
        self._next_maintain = time.monotonic() + slice_s
        got = self._fetcher.fetch(self._max_poll_records, slice_s)
        if isinstance(got, list):
            with self._lock:
                self._buffer.extend(got)
            return None
        return got, interrupt

    async def _sleep(self, wait: Wait, interrupt: int, timeout: float | None) -> None:
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(
                self._wait_executor, wait.sleep, timeout,
                (self._interrupt, self._interrupt_waiters, interrupt))
        except RuntimeError as exc:
            raise ClosedError("the consumer is closed") from exc
        try:
            await future
        except asyncio.CancelledError:
            self._wake()  # the wait thread must not sleep on for a task that is gone
            raise

    async def getmany(self, timeout_ms: int = 1000, max_records: int | None = None
                      ) -> dict[TopicPartition, list[Record]]:
        """aiokafka's ``getmany``: the records of one ``poll``, grouped by partition
        (each list in offset order); ``{}`` if none came within ``timeout_ms``
        milliseconds (default 1000, where aiokafka's is 0: a loop of ``getmany()``
        does not spin). Cancellation-safe as ``poll``."""
        check_int("timeout_ms", timeout_ms, 0)
        records = await self.poll(timeout_ms / 1000, max_records)
        out: dict[TopicPartition, list[Record]] = {}
        for record in records:
            out.setdefault(TopicPartition(record.topic, record.partition), []).append(record)
        return out

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
        coordinator = await self._ready()
        await self._in_thread(coordinator.commit, None if offsets is None else dict(offsets))

    async def committed(self, tp: TopicPartition) -> int | None:
        """The group's last committed offset of ``tp`` (None if none)."""
        coordinator = await self._ready()
        return await self._in_thread(coordinator.committed, tp)

    # -- positions and assignment ----------------------------------------------------------

    def assignment(self) -> set[TopicPartition]:
        """The partitions assigned to this consumer, as of its last call (no waiting)."""
        return set(self._assignment)

    async def position(self, tp: TopicPartition) -> int:
        """The offset of the next record ``poll`` returns for ``tp``."""
        return await self._call(self._position, TopicPartition(*tp))

    def _position(self, tp: TopicPartition) -> int:
        assert self._fetcher is not None
        with self._lock:
            first = self._first_buffered().get(tp)
        return self._fetcher.position(tp) if first is None else first

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
        """Return records of these paused partitions again, from their positions."""
        await self._call(self._moved, "resume", [TopicPartition(*tp) for tp in partitions],
                         None)

    def _moved(self, what: str, partitions: list[TopicPartition], offset: int | None
               ) -> None:
        """Consumer thread: a call that changes which records come next."""
        fetcher = self._fetcher
        assert fetcher is not None
        if what in ("pause", "resume"):
            affected = partitions
        else:  # seeks without partitions move every assigned partition
            affected = partitions or list(fetcher.assigned())
        self._unbuffer(affected, rewind=what == "pause")
        if what == "seek":
            assert offset is not None
            fetcher.seek(partitions[0], offset)
        else:
            getattr(fetcher, what)(*partitions)
        self._wake()

    async def subscribe(self, topics: Iterable[str] = (),
                        pattern: str | re.Pattern[str] | None = None,
                        listener: RebalanceListener | object | None = None) -> None:
        """Read ``topics``, or every topic matching ``pattern`` now and later, instead
        (as ``Consumer.subscribe``; the arguments in aiokafka's order). A ``listener``
        replaces the one given to the constructor."""
        if isinstance(topics, str):
            raise InvalidConfigError(f"subscribe needs a list of topic names, not the "
                                     f"str {topics!r} (write [{topics!r}])")
        wrapped = None if listener is None else \
            _Listener(self._drop_buffered, resolve_listener(listener))
        await self._call(self._reassign, "subscribe", [list(topics), wrapped, pattern])

    async def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Read exactly ``partitions`` (as ``Consumer.assign``)."""
        await self._call(self._reassign, "assign", [TopicPartition(*tp) for tp in partitions])

    async def unsubscribe(self) -> None:
        """Stop reading everything (leaving the group, if in one)."""
        await self._call(self._reassign, "unsubscribe", None)

    def _reassign(self, what: str, argument: list[Any] | None) -> None:
        assert self._coordinator is not None and self._fetcher is not None
        # Partitions that stay keep their position: rewind it to what was returned.
        self._unbuffer(self._fetcher.assigned(), rewind=True)
        if argument is None:
            getattr(self._coordinator, what)()
        elif what == "subscribe":
            self._coordinator.subscribe(*argument)
        else:
            getattr(self._coordinator, what)(argument)
        self._wake()

    async def lag(self) -> dict[TopicPartition, int]:
        """End offset minus position, per assigned partition (records read ahead but
        not returned count as lag)."""
        return await self._call(self._lag)

    def _lag(self) -> dict[TopicPartition, int]:
        fetcher = self._fetcher
        assert fetcher is not None
        lag = fetcher.lag()
        with self._lock:
            first = self._first_buffered()
        for tp, offset in first.items():
            if tp in lag:
                lag[tp] += fetcher.position(tp) - offset
        return lag

    async def beginning_offsets(self, partitions: Iterable[TopicPartition]
                                ) -> dict[TopicPartition, int]:
        """The start offset of each partition (as ``Consumer.beginning_offsets``)."""
        coordinator = await self._ready()
        return await self._in_thread(coordinator.fetcher.beginning_offsets, list(partitions))

    async def end_offsets(self, partitions: Iterable[TopicPartition]
                          ) -> dict[TopicPartition, int]:
        """The end offset of each partition (as ``Consumer.end_offsets``)."""
        coordinator = await self._ready()
        return await self._in_thread(coordinator.fetcher.end_offsets, list(partitions))

    async def offsets_for_times(self, timestamps: Mapping[TopicPartition, int]
                                ) -> dict[TopicPartition, int | None]:
        """For each partition, the earliest offset with a timestamp >= the given one."""
        coordinator = await self._ready()
        return await self._in_thread(coordinator.fetcher.offsets_for_times, dict(timestamps))

    # -- closing ---------------------------------------------------------------------------

    async def stop(self) -> None:
        """aiokafka's name for ``close()``: commit what was returned (with auto-commit
        on), leave the group, stop the worker threads. Idempotent."""
        await self.close()

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
            if self._coordinator is not None:
                await loop.run_in_executor(self._executor, self._close_consumer, autocommit)
        finally:
            self._executor.shutdown(wait=False)
            self._wait_executor.shutdown(wait=False)

    def _close_consumer(self, autocommit: bool) -> None:
        assert self._coordinator is not None
        try:
            with _fileutil.os_errors("consumer (close)"):
                self._coordinator.close(autocommit)
        finally:
            with self._lock:
                self._buffer.clear()
                self._assignment = frozenset()
