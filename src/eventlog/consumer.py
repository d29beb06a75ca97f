"""Consumer: poll, seek, commit, assignment, consumer groups.

A consumer reads the partitions assigned to it, in offset order within each partition
and fairly across partitions. Without a ``group_id`` it reads every partition of the
topics it is given. With one, it joins the group: the members (in this process or
others) share the partitions, each partition owned by exactly one live member, and
commits go to the group's offsets sidecar (see ``_group`` and ``_offsets``).

A blocked ``poll`` sleeps in the kernel on the partitions' notify words (``_notify``)
and wakes within microseconds of an append in any process.

``Consumer`` is a facade over two rooms that ``aio.AIOConsumer`` shares: the
coordinator (``_coordinator``: assignment, group membership, rebalance listener,
commits) and the fetcher it owns (``_fetcher``: positions, pausing, the fetch step).
A poll is their step, again until records come or the timeout passes::

    slice_s = coordinator.poll()              # heartbeat, rebalances, auto-commit
    got = fetcher.fetch(max_records, slice_s) # records, or a Wait: what to sleep on
    got.sleep(left)                           # woken by an append, in any process

Both talk to the log only through its backend (``Log.backend``, see ``_backend``).
"""

from __future__ import annotations

import inspect
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from . import _fileutil
from ._coordinator import CommitCallback, Coordinator, RebalanceListener
from ._types import Record, TopicPartition
from .config import check_int
from .errors import ClosedError, InvalidConfigError, LogDirectoryError
from .log import Log
from .serde import Deserializer

if TYPE_CHECKING:
    import concurrent.futures

__all__ = ["Consumer", "RebalanceListener"]


def poll_timeout(timeout: float | None, timeout_ms: int | None) -> float | None:
    """The seconds a poll may wait, from ``timeout`` (seconds) or ``timeout_ms``
    (milliseconds, given instead of it); ``InvalidConfigError`` for a bad value."""
    if timeout_ms is not None:
        if timeout not in (None, 1.0):
            raise InvalidConfigError("give poll either timeout (seconds) or timeout_ms, "
                                     "not both")
        check_int("timeout_ms", timeout_ms, 0)
        return timeout_ms / 1000
    if timeout is None:
        return None
    if type(timeout) not in (int, float) or math.isnan(timeout):
        raise InvalidConfigError(f"timeout must be a number of seconds or None, not "
                                 f"{timeout!r}")
    return max(0.0, float(timeout))


PartitionsCallback = Callable[["Consumer", list[TopicPartition]], Any]


class _CallbackListener(RebalanceListener):
    """confluent-kafka's ``on_assign`` / ``on_revoke`` / ``on_lost`` callbacks, each
    called as ``fn(consumer, partitions)``; a lost partition without ``on_lost`` goes
    to ``on_revoke``, as confluent-kafka does."""

    def __init__(self, consumer: Consumer,
                 callbacks: Mapping[str, PartitionsCallback | None]) -> None:
        self._consumer = consumer
        self._callbacks = dict(callbacks)

    def _call(self, name: str, partitions: set[TopicPartition]) -> None:
        fn = self._callbacks.get(name)
        if fn is not None:
            fn(self._consumer, sorted(partitions))

    def on_assigned(self, partitions: set[TopicPartition]) -> None:
        self._call("on_assigned", partitions)

    def on_revoked(self, partitions: set[TopicPartition]) -> None:
        self._call("on_revoked", partitions)

    def on_lost(self, partitions: set[TopicPartition]) -> None:
        self._call("on_lost" if self._callbacks.get("on_lost") else "on_revoked",
                    partitions)


def callback_listener(consumer: Consumer, listener: object | None,
                      on_assign: PartitionsCallback | None,
                      on_revoke: PartitionsCallback | None,
                      on_lost: PartitionsCallback | None) -> object | None:
    """``subscribe``'s listener: ``listener`` as given, or a listener calling
    confluent-kafka's ``on_assign``/``on_revoke``/``on_lost`` callbacks with
    ``consumer`` (``InvalidConfigError`` for both at once, or one not callable)."""
    given = {"on_assign": on_assign, "on_revoke": on_revoke, "on_lost": on_lost}
    if all(fn is None for fn in given.values()):
        return listener
    if listener is not None:
        raise InvalidConfigError("subscribe takes a listener or confluent-kafka's "
                                 "on_assign/on_revoke/on_lost callbacks, not both")
    for name, fn in given.items():
        if fn is not None and not callable(fn):
            raise InvalidConfigError(f"{name} must be callable, not {fn!r}")
    return _CallbackListener(consumer, {"on_assigned": on_assign,
                                        "on_revoked": on_revoke, "on_lost": on_lost})


class Consumer:
    """Reads records from the topics of a ``Log``. A context manager.

    Not thread-safe (like Kafka's consumer): use one consumer per thread, or guard it.

    Options (Kafka's names, with units): ``group_id``, ``auto_offset_reset``
    ("earliest" default, "latest", or "none" to raise), ``enable_auto_commit`` (True),
    ``auto_commit_interval_ms`` (5000), ``key_deserializer`` / ``value_deserializer``
    (names or callables; msgpack by default), ``max_poll_records`` (500),
    ``fetch_max_bytes`` (per partition per poll, 4 MiB), ``partition_assignment_strategy``
    ("range", "roundrobin", "sticky"), ``session_timeout_ms`` (10000),
    ``heartbeat_interval_ms`` (1000), ``max_poll_interval_ms`` (300000),
    ``group_instance_id`` (static membership), ``listener`` (a ``RebalanceListener``),
    ``consumer_timeout_ms`` (stop iterating after this long without records),
    ``isolation_level`` ("read_uncommitted" default, as Kafka's; "read_committed" returns
    only committed transactions' records, up to the last stable offset: see
    docs/transactions.md).
    ``client_id`` (Kafka's ``client.id``: names this consumer in ``groups describe``,
    ``Log.describe_group`` and ``metrics()``).
    """

    def __new__(cls, log: Log, *args: Any, **kwargs: Any) -> Consumer:
        # A log on another backend (a Kafka cluster) brings its own consumer class.
        klass = cls
        if cls is Consumer and isinstance(log, Log):
            klass = log.client_classes.get("consumer", cls)
        return super().__new__(klass)

    def __init__(self, log: Log, *topics: str, group_id: str | None = None,
                 auto_offset_reset: str = "earliest", enable_auto_commit: bool = True,
                 auto_commit_interval_ms: int = 5000,
                 key_deserializer: str | Deserializer | None = None,
                 value_deserializer: str | Deserializer | None = None,
                 max_poll_records: int = 500, fetch_max_bytes: int = 4 << 20,
                 partition_assignment_strategy: str = "range",
                 session_timeout_ms: int = 10_000, heartbeat_interval_ms: int = 1_000,
                 max_poll_interval_ms: int = 300_000, group_instance_id: str | None = None,
                 listener: RebalanceListener | object | None = None,
                 consumer_timeout_ms: int | None = None,
                 client_id: str | None = None,
                 isolation_level: str = "read_uncommitted") -> None:
        if not isinstance(log, Log):
            raise TypeError(f"Consumer needs an eventlog.Log, not {type(log).__name__}")
        backend = log.backend
        backend.check_open()
        check_int("max_poll_records", max_poll_records, 1)
        check_int("consumer_timeout_ms", consumer_timeout_ms, 0, optional=True)
        self._backend = backend
        self._check_log = backend.check_open
        self._coordinator = Coordinator(
            backend, group_id=group_id, auto_offset_reset=auto_offset_reset,
            enable_auto_commit=enable_auto_commit,
            auto_commit_interval_ms=auto_commit_interval_ms,
            key_deserializer=key_deserializer, value_deserializer=value_deserializer,
            fetch_max_bytes=fetch_max_bytes,
            partition_assignment_strategy=partition_assignment_strategy,
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=heartbeat_interval_ms,
            max_poll_interval_ms=max_poll_interval_ms, group_instance_id=group_instance_id,
            listener=listener, client_id=client_id, isolation_level=isolation_level)
        self._fetcher = self._coordinator.fetcher
        self.group_id = self._coordinator.group_id
        self.client_id = self._coordinator.client_id
        self._max_poll_records = max_poll_records
        self._consumer_timeout_ms = consumer_timeout_ms
        self._closed = False
        if topics:
            self.subscribe(list(topics))

    # The dispatch above takes (log, *args, **kwargs): help(), inspect.signature and the
    # API reference show __init__'s parameters instead.
    __new__.__signature__ = inspect.signature(__init__).replace(  # type: ignore[attr-defined]
        return_annotation=inspect.Signature.empty)

    def __repr__(self) -> str:
        group = f" group={self.group_id!r}" if self.group_id else ""
        return f"<eventlog.Consumer{group} partitions={len(self._fetcher.assigned())}>"

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("the consumer is closed")
        self._backend.check_open()

    # -- assignment ---------------------------------------------------------------------

    @_fileutil.translate_errors("consumer")
    def subscribe(self, topics: Iterable[str] = (),
                  listener: RebalanceListener | object | None = None, *,
                  pattern: str | re.Pattern[str] | None = None,
                  on_assign: PartitionsCallback | None = None,
                  on_revoke: PartitionsCallback | None = None,
                  on_lost: PartitionsCallback | None = None) -> None:
        """Read ``topics``, or with ``pattern=`` (a regex that must match a topic's
        whole name, as in Kafka's Java client) every matching topic, now and later:
        topics created or deleted afterwards join or leave the subscription within a
        second (a rebalance, in a group). With a ``group_id`` as a member of the group
        (partitions are shared with the other members), without one every partition.

        ``listener`` is a ``RebalanceListener``, or any object with kafka-python's
        ``on_partitions_revoked`` / ``on_partitions_assigned`` methods; one with
        neither naming raises ``InvalidConfigError``. confluent-kafka's callbacks work
        too: ``on_assign``, ``on_revoke`` and ``on_lost`` are called as
        ``fn(consumer, partitions)`` (a sorted list), instead of a listener. Replaces an
        earlier subscription or assignment."""
        self._check_open()
        listener = callback_listener(self, listener, on_assign, on_revoke, on_lost)
        self._coordinator.subscribe(topics, listener, pattern)

    @_fileutil.translate_errors("consumer")
    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Read exactly ``partitions`` (no group membership; commits, if a ``group_id`` is
        set, are not fenced)."""
        self._check_open()
        self._coordinator.assign(partitions)

    @_fileutil.translate_errors("consumer")
    def unsubscribe(self) -> None:
        """Stop reading everything (leaving the group, if in one)."""
        self._check_open()
        self._coordinator.unsubscribe()

    def assignment(self) -> set[TopicPartition]:
        """The partitions assigned to this consumer."""
        return self._fetcher.assigned()

    def subscription(self) -> set[str]:
        """The subscribed topics (for a pattern subscription, those it matches now;
        empty after ``assign``)."""
        return self._coordinator.subscription()

    # -- positions -----------------------------------------------------------------------

    @_fileutil.translate_errors("consumer")
    def position(self, tp: TopicPartition) -> int:
        """The offset of the next record ``poll`` will return for ``tp``."""
        self._check_open()
        return self._fetcher.position(tp)

    @_fileutil.translate_errors("consumer")
    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Make the next ``poll`` read ``tp`` from ``offset`` (an offset outside the log
        is handled by ``auto_offset_reset`` at the next read)."""
        self._check_open()
        self._fetcher.seek(tp, offset)

    @_fileutil.translate_errors("consumer")
    def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        """Move ``partitions`` (default: all assigned) to their start offsets."""
        self._check_open()
        self._fetcher.seek_to_beginning(*partitions)

    @_fileutil.translate_errors("consumer")
    def seek_to_end(self, *partitions: TopicPartition) -> None:
        """Move ``partitions`` (default: all assigned) to their end offsets."""
        self._check_open()
        self._fetcher.seek_to_end(*partitions)

    def pause(self, *partitions: TopicPartition) -> None:
        """Stop returning records of these partitions until ``resume``."""
        self._fetcher.pause(*partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        """Return records of these paused partitions again, from their positions."""
        self._fetcher.resume(*partitions)

    def paused(self) -> set[TopicPartition]:
        """The partitions paused by ``pause`` (and not resumed)."""
        return self._fetcher.paused()

    @_fileutil.translate_errors("consumer")
    def beginning_offsets(self, partitions: Iterable[TopicPartition]
                          ) -> dict[TopicPartition, int]:
        """The start offset (the first offset still stored) of each partition, any
        partition of the log, assigned or not. Cost: a head read each."""
        self._check_open()
        return self._fetcher.beginning_offsets(partitions)

    @_fileutil.translate_errors("consumer")
    def end_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """The end offset (the offset the next record appended will get, Kafka's high
        watermark) of each partition, assigned or not. Cost: a head read each."""
        self._check_open()
        return self._fetcher.end_offsets(partitions)

    @_fileutil.translate_errors("consumer")
    def offsets_for_times(self, timestamps: Mapping[TopicPartition, int]
                          ) -> dict[TopicPartition, int | None]:
        """For each partition, the earliest offset whose timestamp is >= the given one
        (None if there is none), through the time index: O(log n)."""
        self._check_open()
        return self._fetcher.offsets_for_times(timestamps)

    @_fileutil.translate_errors("consumer")
    def lag(self, stable: bool = False) -> dict[TopicPartition, int]:
        """End offset minus position, for every assigned partition (Kafka's
        ``records-lag``); with ``stable=True``, the last stable offset minus position:
        what a ``read_committed`` consumer can read now (markers and aborted records
        count in both)."""
        self._check_open()
        return self._fetcher.lag(stable)

    def last_stable_offsets(self, partitions: Iterable[TopicPartition]
                            ) -> dict[TopicPartition, int]:
        """The last stable offset of each partition: the first offset of its oldest
        open transaction, or its end offset when none is open. Cost: a read of the
        partition from the consumer's position (from its start, if not assigned)."""
        self._check_open()
        return self._fetcher.last_stable_offsets(partitions)

    @_fileutil.translate_errors("consumer")
    def metrics(self) -> dict[str, Any]:
        """This consumer now, with Kafka's metric names where they exist: its
        ``client_id`` and ``group_id``; counters since it was created:
        ``records_consumed`` (records ``poll`` returned) and ``offset_resets``
        (committed offsets or positions found outside their partition and moved by
        ``auto_offset_reset``, each also logged as a warning); and now: the partitions
        assigned and paused, ``records_lag`` / ``records_lag_max`` (the sum and the
        largest of ``lag()``, Kafka's ``records-lag-max``). Cost: a head read per
        assigned partition."""
        self._check_open()
        m = self._fetcher.metrics()
        lag = self._fetcher.lag()
        return {"client_id": self.client_id, "group_id": self.group_id,
                "records_consumed": m["records_fetched"], "offset_resets": m["offset_resets"],
                "assigned_partitions": len(self._fetcher.assigned()),
                "paused_partitions": len(self._fetcher.paused()),
                "records_lag": sum(lag.values()),
                "records_lag_max": max(lag.values(), default=0)}

    # -- polling -------------------------------------------------------------------------

    def poll(self, timeout: float | None = 1.0, max_records: int | None = None, *,
             timeout_ms: int | None = None) -> list[Record]:
        """Records from the assigned partitions: in offset order within a partition and
        fair across partitions; at most ``max_records`` (default ``max_poll_records``).

        Returns as soon as records are ready; else waits up to ``timeout`` **seconds**
        (default 1.0; None: until records arrive) and returns ``[]`` if none came. The
        wait sleeps in the kernel (an idle loop of polls costs no CPU) and wakes within
        microseconds of an append in any process. ``timeout_ms=`` (milliseconds, as
        kafka-python's ``poll(timeout_ms=)``) may be given instead of ``timeout``.
        Cost with one record ready: about 20 Python-level calls (docs/benchmarks.md).
        """
        # The hot path of every consumer: OSError is translated here rather than by a
        # translate_errors wrapper, and the checks of the common arguments are inline
        # (each Python call on this path costs ~0.1 us warm, twice that after a sleep).
        try:
            if self._closed:
                raise ClosedError("the consumer is closed")
            self._check_log()
            if timeout_ms is not None or not (type(timeout) is float or type(timeout) is int
                                              ) or not timeout >= 0:  # (NaN, negative)
                timeout = poll_timeout(timeout, timeout_ms)
            if max_records is None:
                max_records = self._max_poll_records
            elif type(max_records) is not int or max_records < 1:
                raise InvalidConfigError(f"max_records must be a positive int, not "
                                         f"{max_records!r}")
            deadline = None if timeout is None else time.monotonic() + timeout
            coordinator, fetcher = self._coordinator, self._fetcher
            while True:
                got = fetcher.fetch(max_records, coordinator.poll())
                if isinstance(got, list):
                    return got
                if deadline is None:
                    got.sleep(None)
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                got.sleep(left)
        except OSError as exc:
            if isinstance(exc, LogDirectoryError):
                raise
            raise _fileutil.translate_os_error(exc, "consumer (poll)") from exc

    def __iter__(self) -> Iterator[Record]:
        """Yield records as they arrive, blocking while waiting. Ends when the consumer
        is closed, or after ``consumer_timeout_ms`` without a record."""
        idle_ms = self._consumer_timeout_ms
        while not self._closed:
            timeout = None if idle_ms is None else idle_ms / 1000
            try:
                records = self.poll(timeout=timeout)
            except ClosedError:
                return
            if not records and idle_ms is not None:
                return
            yield from records

    # -- commits -------------------------------------------------------------------------

    @_fileutil.translate_errors("consumer")
    def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        """Commit ``offsets`` (default: the positions of the assigned partitions, i.e. the
        next record to read). Atomic and crash-safe. Raises ``CommitFailedError`` without
        a ``group_id``, or when this consumer no longer owns the partitions."""
        self._check_open()
        self._coordinator.commit(offsets)

    def commit_async(self, offsets: Mapping[TopicPartition, int] | None = None,
                     callback: CommitCallback | None = None
                     ) -> concurrent.futures.Future[dict[TopicPartition, int]]:
        """Commit in a background thread (commits run in call order). ``callback(offsets,
        error)`` is called when it is done; the returned future resolves the same way."""
        self._check_open()
        return self._coordinator.commit_async(offsets, callback)

    @_fileutil.translate_errors("consumer")
    def committed(self, tp: TopicPartition) -> int | None:
        """The last committed offset of ``tp`` for this consumer's group (None if none)."""
        self._check_open()
        return self._coordinator.committed(tp)

    # -- closing -------------------------------------------------------------------------

    @_fileutil.translate_errors("consumer")
    def close(self, autocommit: bool = True) -> None:
        """Commit positions (with auto-commit on), leave the group, release everything.
        Idempotent."""
        if self._closed:
            return
        try:
            self._coordinator.close(autocommit)
        finally:
            self._closed = True
