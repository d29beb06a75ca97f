"""KafkaAIOConsumer: ``eventlog.aio.AIOConsumer`` on a Kafka cluster.

A ``KafkaConsumer`` runs in one worker thread of its own (librdkafka's consumer is
not to be shared between threads without a lock, and its calls block); each
coroutine hands it a call and awaits the answer, so the event loop never blocks. A
``poll`` waits in slices of at most ``_SLICE_S``; records fetched for a task that was
cancelled meanwhile are kept and returned by the next ``poll``, so none is lost.
(``AIOProducer`` needs nothing of its own: it wraps ``Producer(log)``, which is a
``KafkaProducer`` on such a log.)
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import inspect
import re
import time
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any, TypeVar

from .._coordinator import RebalanceListener
from .._types import Record, TopicPartition
from ..aio import AIOConsumer
from ..config import check_client_id, check_int
from ..consumer import poll_timeout
from ..errors import ClosedError, InvalidConfigError
from ..log import Log
from ._consumer import KafkaConsumer

__all__ = ["KafkaAIOConsumer"]

_T = TypeVar("_T")
_SLICE_S = 0.2


class KafkaAIOConsumer(AIOConsumer):
    """``aio.AIOConsumer(log, ...)`` for a log opened on ``kafka://``: the options of
    ``KafkaConsumer``. Coroutine-safe (polls take turns)."""

    def __init__(self, log: Log, *topics: str, **options: Any) -> None:
        # What the local AIOConsumer refuses at once is refused at once here too (the
        # KafkaConsumer itself is made in the worker thread, by start()): an unknown
        # option, and the numbers this class uses itself.
        inspect.signature(KafkaConsumer).bind(log, *topics, **options)
        check_int("auto_commit_interval_ms", options.get("auto_commit_interval_ms", 5000), 1)
        check_int("max_poll_records", options.get("max_poll_records", 500), 1)
        check_int("consumer_timeout_ms", options.get("consumer_timeout_ms"), 0, optional=True)
        self._log = log
        self._topics = topics
        self._kafka_options = options
        self.group_id = options.get("group_id")
        self.client_id = check_client_id(options.get("client_id"))
        self._max_poll_records = int(options.get("max_poll_records", 500))
        timeout_ms = options.get("consumer_timeout_ms")
        self._consumer_timeout_ms = timeout_ms
        self._consumer: KafkaConsumer | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="eventlog-kafka-aio-consumer")
        self._buffer: collections.deque[Record] = collections.deque()
        self._poll_lock = asyncio.Lock()
        self._start_task: asyncio.Future[None] | None = None
        self._close_task: asyncio.Future[None] | None = None
        self._closing = False

    def __repr__(self) -> str:
        group = f" group={self.group_id!r}" if self.group_id else ""
        return f"<eventlog.aio.AIOConsumer{group} on Kafka>"

    async def __aenter__(self) -> KafkaAIOConsumer:
        await self.start()
        return self

    # -- the worker thread --------------------------------------------------------------

    async def _in_thread(self, fn: Callable[..., _T], *args: Any) -> _T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, partial(fn, *args))
        except RuntimeError as exc:
            if self._closing:
                raise ClosedError("the consumer is closed") from exc
            raise

    def _create(self) -> None:
        self._consumer = KafkaConsumer(self._log, *self._topics, **self._kafka_options)

    async def start(self) -> None:
        """Create the consumer (joining its group, if it has one). Idempotent."""
        self._check_open()
        if self._start_task is None:
            self._start_task = asyncio.ensure_future(self._in_thread(self._create))
        await asyncio.shield(self._start_task)

    async def _run(self, method: str, *args: Any) -> Any:
        self._check_open()
        if self._consumer is None:
            await self.start()
        assert self._consumer is not None
        return await self._in_thread(getattr(self._consumer, method), *args)

    def _subscribe(self, topics: list[str], listener: object | None,
                   pattern: str | re.Pattern[str] | None) -> None:
        assert self._consumer is not None
        self._consumer.subscribe(topics, listener, pattern=pattern)

    # -- polling ---------------------------------------------------------------------------

    async def poll(self, timeout: float | None = 1.0, max_records: int | None = None, *,
                   timeout_ms: int | None = None) -> list[Record]:
        """Records, as ``Consumer.poll`` returns them; ``[]`` after ``timeout`` s (or
        ``timeout_ms`` milliseconds)."""
        timeout = poll_timeout(timeout, timeout_ms)
        if max_records is None:
            max_records = self._max_poll_records
        elif type(max_records) is not int or max_records < 1:
            raise InvalidConfigError(f"max_records must be a positive int, not {max_records!r}")
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._consumer is None:
            await self.start()
        async with self._poll_lock:
            while True:
                self._check_open()
                if self._buffer:
                    count = min(max_records, len(self._buffer))
                    return [self._buffer.popleft() for _ in range(count)]
                left = _SLICE_S if deadline is None else \
                    min(_SLICE_S, deadline - time.monotonic())
                loop = asyncio.get_running_loop()
                assert self._consumer is not None
                future = loop.run_in_executor(self._executor, self._consumer.poll,
                                              max(0.0, left), max_records)
                try:
                    records = await asyncio.shield(future)
                except asyncio.CancelledError:
                    future.add_done_callback(self._keep)
                    raise
                if records:
                    return records
                if deadline is not None and time.monotonic() >= deadline:
                    return []

    def _keep(self, future: asyncio.Future[list[Record]]) -> None:
        if not future.cancelled() and future.exception() is None:
            self._buffer.extend(future.result())

    async def getone(self) -> Record:
        """The next record, waiting as long as it takes."""
        return (await self.poll(timeout=None, max_records=1))[0]

    def __aiter__(self) -> KafkaAIOConsumer:
        return self

    # -- the rest: the synchronous consumer's calls, in its thread ---------------------------

    async def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        """Commit ``offsets`` or the positions after the records returned."""
        await self._run("commit", offsets)

    async def committed(self, tp: TopicPartition) -> int | None:
        return await self._run("committed", tp)  # type: ignore[no-any-return]

    def assignment(self) -> set[TopicPartition]:
        return set() if self._consumer is None else self._consumer.assignment()

    async def position(self, tp: TopicPartition) -> int:
        return await self._run("position", tp)  # type: ignore[no-any-return]

    async def seek(self, tp: TopicPartition, offset: int) -> None:
        self._buffer.clear()
        await self._run("seek", tp, offset)

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        self._buffer.clear()
        await self._run("seek_to_beginning", *partitions)

    async def seek_to_end(self, *partitions: TopicPartition) -> None:
        self._buffer.clear()
        await self._run("seek_to_end", *partitions)

    async def pause(self, *partitions: TopicPartition) -> None:
        await self._run("pause", *partitions)

    async def resume(self, *partitions: TopicPartition) -> None:
        await self._run("resume", *partitions)

    async def subscribe(self, topics: Iterable[str] = (),
                        pattern: str | re.Pattern[str] | None = None,
                        listener: RebalanceListener | object | None = None) -> None:
        """Read ``topics``, or every topic matching ``pattern`` (as
        ``Consumer.subscribe``)."""
        self._check_open()
        if self._consumer is None:
            await self.start()
        self._buffer.clear()
        await self._in_thread(self._subscribe, list(topics), listener, pattern)

    async def assign(self, partitions: Iterable[TopicPartition]) -> None:
        await self._run("assign", list(partitions))

    async def unsubscribe(self) -> None:
        await self._run("unsubscribe")

    async def lag(self) -> dict[TopicPartition, int]:
        return await self._run("lag")  # type: ignore[no-any-return]

    async def beginning_offsets(self, partitions: Iterable[TopicPartition]
                                ) -> dict[TopicPartition, int]:
        return await self._run("beginning_offsets", list(partitions))  # type: ignore[no-any-return]

    async def end_offsets(self, partitions: Iterable[TopicPartition]
                          ) -> dict[TopicPartition, int]:
        return await self._run("end_offsets", list(partitions))  # type: ignore[no-any-return]

    async def offsets_for_times(self, timestamps: Mapping[TopicPartition, int]
                                ) -> dict[TopicPartition, int | None]:
        return await self._run("offsets_for_times", dict(timestamps))  # type: ignore[no-any-return]

    async def close(self, autocommit: bool = True) -> None:
        """Commit (with auto-commit on), leave the group, stop the worker. Idempotent."""
        if self._close_task is None:
            self._closing = True
            self._close_task = asyncio.ensure_future(self._close(autocommit))
        await asyncio.shield(self._close_task)

    async def _close(self, autocommit: bool) -> None:
        loop = asyncio.get_running_loop()
        try:
            if self._start_task is not None:
                await asyncio.gather(self._start_task, return_exceptions=True)
            if self._consumer is not None:
                await loop.run_in_executor(self._executor, self._consumer.close, autocommit)
        finally:
            self._executor.shutdown(wait=False)
