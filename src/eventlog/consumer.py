"""Consumer: poll, seek, commit, assignment, consumer groups.

A consumer reads the partitions assigned to it, in offset order within each partition
and fairly across partitions. Without a ``group_id`` it reads every partition of the
topics it is given. With one, it joins the group: the members (in this process or
others) share the partitions, each partition owned by exactly one live member, and
commits go to the group's offsets sidecar (see ``_group`` and ``_offsets``).

A blocked ``poll`` sleeps in the kernel on the partitions' notify words (``_notify``)
and wakes within microseconds of an append in any process.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from . import _fileutil, _notify
from ._format import DecodedBatch
from ._group import STRATEGIES, GroupFiles, GroupMember, validate_group_id
from ._offsets import OffsetStore
from ._partition import PartitionLog
from ._types import Record, TopicPartition, records_from_batches
from .errors import (
    ClosedError,
    CommitFailedError,
    InvalidConfigError,
    NotAssignedError,
    OffsetOutOfRangeError,
    SerializationError,
    UnknownTopicError,
)
from .log import Log
from .serde import Deserializer, deserializer

__all__ = ["Consumer", "RebalanceListener"]

_logger = logging.getLogger("eventlog")
_RESETS = ("earliest", "latest", "none")
_DEFAULT_FETCH_BYTES = 4 << 20
_SLICE_IDLE_S = 0.25      # longest sleep between looks at the group
_SLICE_WAITING_S = 0.02   # while waiting for a partition's previous owner to let go
_STANDALONE_REFRESH_S = 1.0
# Fewest records a poll takes from a partition before moving on (unless max_records
# is under four times that): with many partitions an equal share of max_records would
# be a few records each, and every visit to a partition has a fixed cost (its head, a
# fetch, building records).
_MIN_SHARE = 16


class RebalanceListener:
    """Callbacks around a rebalance of a group's partitions. Subclass and override.

    ``on_revoked`` runs before partitions are taken away (this consumer still owns them
    and may commit their offsets); ``on_assigned`` runs after this consumer has taken
    ownership of new partitions (it may ``seek``). ``on_lost`` runs instead of
    ``on_revoked`` when the consumer was removed from the group (it stopped polling for
    longer than ``max_poll_interval_ms``): the partitions may already be someone else's
    and commits would fail.
    """

    def on_revoked(self, partitions: set[TopicPartition]) -> None:
        """Partitions about to be taken away."""

    def on_assigned(self, partitions: set[TopicPartition]) -> None:
        """Partitions newly owned."""

    def on_lost(self, partitions: set[TopicPartition]) -> None:
        """Partitions lost without a chance to commit."""
        self.on_revoked(partitions)


class _Part:
    """Fetch state of one assigned partition."""

    __slots__ = ("counter", "log", "owned", "paused", "position", "tp", "waiters")

    def __init__(self, tp: TopicPartition, log: PartitionLog, owned: bool) -> None:
        self.tp = tp
        self.log = log
        self.owned = owned             # group: we hold its ownership lock
        self.paused = False
        self.position: int | None = None
        self.counter = log._head.counter
        self.waiters = log._head.waiters


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
    ``consumer_timeout_ms`` (stop iterating after this long without records).
    """

    def __init__(self, log: Log, *topics: str, group_id: str | None = None,
                 auto_offset_reset: str = "earliest", enable_auto_commit: bool = True,
                 auto_commit_interval_ms: int = 5000,
                 key_deserializer: str | Deserializer | None = None,
                 value_deserializer: str | Deserializer | None = None,
                 max_poll_records: int = 500, fetch_max_bytes: int = _DEFAULT_FETCH_BYTES,
                 partition_assignment_strategy: str = "range",
                 session_timeout_ms: int = 10_000, heartbeat_interval_ms: int = 1_000,
                 max_poll_interval_ms: int = 300_000, group_instance_id: str | None = None,
                 listener: RebalanceListener | None = None,
                 consumer_timeout_ms: int | None = None) -> None:
        if not isinstance(log, Log):
            raise TypeError(f"Consumer needs an eventlog.Log, not {type(log).__name__}")
        log._check_open()
        if auto_offset_reset not in _RESETS:
            raise InvalidConfigError(f"auto_offset_reset must be 'earliest', 'latest' or "
                                     f"'none', not {auto_offset_reset!r}")
        for name, value, low in (("auto_commit_interval_ms", auto_commit_interval_ms, 1),
                                 ("max_poll_records", max_poll_records, 1),
                                 ("fetch_max_bytes", fetch_max_bytes, 1),
                                 ("session_timeout_ms", session_timeout_ms, 1),
                                 ("heartbeat_interval_ms", heartbeat_interval_ms, 1),
                                 ("max_poll_interval_ms", max_poll_interval_ms, 1)):
            if type(value) is not int or value < low:
                raise InvalidConfigError(f"{name} must be an int >= {low}, not {value!r}")
        if consumer_timeout_ms is not None and (type(consumer_timeout_ms) is not int
                                                or consumer_timeout_ms < 0):
            raise InvalidConfigError("consumer_timeout_ms must be an int >= 0 or None")
        if partition_assignment_strategy not in STRATEGIES:
            raise InvalidConfigError(f"partition_assignment_strategy must be one of "
                                     f"{', '.join(STRATEGIES)}")
        self._log = log
        self._clock = log._ctx.clock
        self.group_id = validate_group_id(group_id) if group_id is not None else None
        self._reset = auto_offset_reset
        self._auto_commit = enable_auto_commit and group_id is not None
        self._auto_commit_ms = auto_commit_interval_ms
        self._next_auto_commit = time.monotonic() + auto_commit_interval_ms / 1000
        self._key_des = deserializer(key_deserializer)
        self._value_des = deserializer(value_deserializer)
        self._max_poll_records = max_poll_records
        self._fetch_max_bytes = fetch_max_bytes
        self._consumer_timeout_ms = consumer_timeout_ms
        self._listener = listener
        self._group_options = {"strategy": partition_assignment_strategy,
                               "session_timeout_ms": session_timeout_ms,
                               "max_poll_interval_ms": max_poll_interval_ms,
                               "heartbeat_interval_ms": heartbeat_interval_ms,
                               "instance_id": group_instance_id}
        if group_instance_id is not None and group_id is None:
            raise InvalidConfigError("group_instance_id needs a group_id")
        self._store = (OffsetStore(GroupFiles(log.path, group_id).offsets_path,
                                   fsync=log.options.fsync == "always")
                       if group_id is not None else None)
        self._member: GroupMember | None = None
        self._mode: str | None = None                 # "subscribe" or "assign"
        self._subscription: list[str] = []
        self._parts: dict[TopicPartition, _Part] = {}
        self._rr = 0
        self._pending_error: BaseException | None = None
        self._next_refresh = 0.0
        self._closed = False
        self._commit_queue: queue.Queue[Any] | None = None
        self._commit_thread: threading.Thread | None = None
        if topics:
            self.subscribe(list(topics))

    def __repr__(self) -> str:
        group = f" group={self.group_id!r}" if self.group_id else ""
        return f"<eventlog.Consumer{group} partitions={len(self._parts)}>"

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("the consumer is closed")
        self._log._check_open()

    # -- assignment ---------------------------------------------------------------------

    @_fileutil.translate_errors("consumer")
    def subscribe(self, topics: Iterable[str], listener: RebalanceListener | None = None
                  ) -> None:
        """Read ``topics``: with a ``group_id`` as a member of the group (partitions are
        shared with the other members), without one every partition of them."""
        self._check_open()
        names = sorted(set(topics))
        if not names or any(not isinstance(t, str) for t in names):
            raise InvalidConfigError("subscribe needs a list of topic names")
        for name in names:
            self._log.topic(name)  # UnknownTopicError, InvalidTopicError now
        if listener is not None:
            self._listener = listener
        if self._mode == "assign":
            self._drop(set(self._parts))
        self._mode = "subscribe"
        self._subscription = names
        if self.group_id is None:
            self._refresh_standalone()
            return
        if self._member is None:
            self._member = GroupMember(self._log.path, self.group_id,
                                       partition_count=self._partition_count,
                                       clock=self._clock,
                                       **self._group_options)  # type: ignore[arg-type]
        self._member.join(names)
        self._maintain_group()

    @_fileutil.translate_errors("consumer")
    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Read exactly ``partitions`` (no group membership; commits, if a ``group_id`` is
        set, are not fenced)."""
        self._check_open()
        wanted = {TopicPartition(*tp) for tp in partitions}
        for tp in wanted:
            self._partition_log(tp)  # validates topic and partition
        if self._mode == "subscribe":
            self.unsubscribe()
        self._mode = "assign"
        self._drop(set(self._parts) - wanted)
        for tp in wanted - set(self._parts):
            self._parts[tp] = _Part(tp, self._partition_log(tp), owned=True)

    @_fileutil.translate_errors("consumer")
    def unsubscribe(self) -> None:
        """Stop reading everything (leaving the group, if in one)."""
        self._check_open()
        self._leave()
        self._drop(set(self._parts))
        self._mode = None
        self._subscription = []

    def assignment(self) -> set[TopicPartition]:
        """The partitions assigned to this consumer."""
        return set(self._parts)

    def subscription(self) -> set[str]:
        return set(self._subscription)

    def _partition_log(self, tp: TopicPartition) -> PartitionLog:
        if not (isinstance(tp, tuple) and len(tp) == 2 and isinstance(tp[0], str)
                and type(tp[1]) is int):
            raise InvalidConfigError(f"not a TopicPartition: {tp!r}")
        topic = self._log.topic(tp[0])
        return topic.partition(tp[1])._log

    def _partition_count(self, topic: str) -> int:
        try:
            return self._log.topic(topic).num_partitions
        except UnknownTopicError:
            return 0

    def _drop(self, tps: set[TopicPartition]) -> None:
        for tp in tps:
            self._parts.pop(tp, None)
            if self._member is not None:
                self._member.release(tp)

    def _refresh_standalone(self) -> None:
        wanted: set[TopicPartition] = set()
        for topic in self._subscription:
            try:
                count = self._log.topic(topic).num_partitions
            except UnknownTopicError:
                continue
            wanted.update(TopicPartition(topic, p) for p in range(count))
        self._drop(set(self._parts) - wanted)
        for tp in wanted - set(self._parts):
            self._parts[tp] = _Part(tp, self._partition_log(tp), owned=True)
        self._next_refresh = time.monotonic() + _STANDALONE_REFRESH_S

    # -- group maintenance ----------------------------------------------------------------

    def _maintain_group(self) -> bool:
        """React to rebalances and take ownership of newly assigned partitions.
        Returns True while some assigned partition is still held by its previous owner."""
        member = self._member
        assert member is not None
        change = member.maintain()
        if change is not None:
            current = set(self._parts)
            gone = current - change.assignment
            if change.lost:
                lost = {tp for tp in current if self._parts[tp].owned}
                self._drop(current)
                self._call("on_lost", lost)
                member.join(self._subscription)  # rejoin as a new generation
                return self._maintain_group()
            owned_gone = {tp for tp in gone if self._parts[tp].owned}
            if owned_gone:
                if self._auto_commit:
                    self._commit_quietly({tp: self._parts[tp].position for tp in owned_gone
                                          if self._parts[tp].position is not None})
                self._call("on_revoked", owned_gone)
            self._drop(gone)
            for tp in change.assignment - current:
                try:
                    self._parts[tp] = _Part(tp, self._partition_log(tp), owned=False)
                except UnknownTopicError:
                    continue
        acquired = set()
        waiting = False
        for tp, part in self._parts.items():
            if not part.owned:
                if member.try_own(tp):
                    part.owned = True
                    part.position = None  # read the previous owner's commit now
                    acquired.add(tp)
                else:
                    waiting = True
        if acquired:
            self._call("on_assigned", acquired)
        return waiting

    def _call(self, name: str, partitions: set[TopicPartition]) -> None:
        if self._listener is not None and partitions:
            getattr(self._listener, name)(set(partitions))

    def _leave(self) -> None:
        if self._member is not None:
            owned = {tp for tp, p in self._parts.items() if p.owned}
            try:
                self._call("on_revoked", owned)
            finally:
                self._member.leave()
                self._member = None

    # -- positions -----------------------------------------------------------------------

    def _resolve(self, part: _Part) -> int:
        """The position of a partition whose position is not known yet: the committed
        offset if it is in range, else ``auto_offset_reset``."""
        st = part.log.state()
        if self._store is not None:
            committed = self._store.read().get(part.tp)
            if committed is not None and st.start_offset <= committed <= st.end_offset:
                part.position = committed
                return committed
        return self._apply_reset(part, st.start_offset, st.end_offset)

    def _apply_reset(self, part: _Part, start: int, end: int) -> int:
        if self._reset == "none":
            raise OffsetOutOfRangeError(
                f"no valid position for {part.tp.topic}[{part.tp.partition}] and "
                f"auto_offset_reset='none'", offset=part.position if part.position is not None
                else -1, start_offset=start, end_offset=end)
        part.position = start if self._reset == "earliest" else end
        return part.position

    def _part(self, tp: TopicPartition) -> _Part:
        part = self._parts.get(TopicPartition(*tp))
        if part is None:
            raise NotAssignedError(f"{tp} is not assigned to this consumer")
        return part

    @_fileutil.translate_errors("consumer")
    def position(self, tp: TopicPartition) -> int:
        """The offset of the next record ``poll`` will return for ``tp``."""
        self._check_open()
        part = self._part(tp)
        return part.position if part.position is not None else self._resolve(part)

    @_fileutil.translate_errors("consumer")
    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Make the next ``poll`` read ``tp`` from ``offset`` (an offset outside the log
        is handled by ``auto_offset_reset`` at the next read)."""
        self._check_open()
        if type(offset) is not int or offset < 0:
            raise InvalidConfigError(f"offset must be an int >= 0, not {offset!r}")
        self._part(tp).position = offset
        self._pending_error = None

    @_fileutil.translate_errors("consumer")
    def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        self._check_open()
        for tp in partitions or tuple(self._parts):
            part = self._part(tp)
            part.position = part.log.state().start_offset
        self._pending_error = None

    @_fileutil.translate_errors("consumer")
    def seek_to_end(self, *partitions: TopicPartition) -> None:
        self._check_open()
        for tp in partitions or tuple(self._parts):
            part = self._part(tp)
            part.position = part.log.state().end_offset
        self._pending_error = None

    def pause(self, *partitions: TopicPartition) -> None:
        """Stop returning records of these partitions until ``resume``."""
        for tp in partitions:
            self._part(tp).paused = True

    def resume(self, *partitions: TopicPartition) -> None:
        for tp in partitions:
            self._part(tp).paused = False

    def paused(self) -> set[TopicPartition]:
        return {tp for tp, p in self._parts.items() if p.paused}

    @_fileutil.translate_errors("consumer")
    def beginning_offsets(self, partitions: Iterable[TopicPartition]
                          ) -> dict[TopicPartition, int]:
        self._check_open()
        return {TopicPartition(*tp): self._partition_log(tp).state().start_offset
                for tp in partitions}

    @_fileutil.translate_errors("consumer")
    def end_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        self._check_open()
        return {TopicPartition(*tp): self._partition_log(tp).state().end_offset
                for tp in partitions}

    @_fileutil.translate_errors("consumer")
    def offsets_for_times(self, timestamps: Mapping[TopicPartition, int]
                          ) -> dict[TopicPartition, int | None]:
        """For each partition, the earliest offset whose timestamp is >= the given one
        (None if there is none), through the time index: O(log n)."""
        self._check_open()
        return {TopicPartition(*tp): self._partition_log(tp).offset_for_time(ts)
                for tp, ts in timestamps.items()}

    @_fileutil.translate_errors("consumer")
    def lag(self) -> dict[TopicPartition, int]:
        """End offset minus position, for every assigned partition."""
        self._check_open()
        out = {}
        for tp, part in self._parts.items():
            position = part.position if part.position is not None else self._resolve(part)
            out[tp] = max(0, part.log.state().end_offset - position)
        return out

    # -- polling -------------------------------------------------------------------------

    @_fileutil.translate_errors("consumer")
    def poll(self, timeout: float | None = 0.0, max_records: int | None = None
             ) -> list[Record]:
        """Records from the assigned partitions: in offset order within a partition and
        fair across partitions; at most ``max_records`` (default ``max_poll_records``).

        Waits up to ``timeout`` seconds (None: until records arrive) and returns ``[]``
        if none came. The wait sleeps in the kernel and wakes within microseconds of an
        append in any process.
        """
        self._check_open()
        if self._pending_error is not None:
            error, self._pending_error = self._pending_error, None
            raise error
        if max_records is None:
            max_records = self._max_poll_records
        elif type(max_records) is not int or max_records < 1:
            raise InvalidConfigError(f"max_records must be a positive int, not {max_records!r}")
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        if self._auto_commit and time.monotonic() >= self._next_auto_commit:
            self._commit_quietly(None)
        while True:
            waiting = False
            if self._member is not None:
                waiting = self._maintain_group()
            elif self._mode == "subscribe" and time.monotonic() >= self._next_refresh:
                self._refresh_standalone()
            ready = [p for p in self._parts.values() if p.owned and not p.paused]
            expected = [p.counter.load() for p in ready]
            records = self._fetch(ready, max_records) if ready else []
            if records:
                return records
            if self._pending_error is not None:
                error, self._pending_error = self._pending_error, None
                raise error
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return []
            pause = _SLICE_WAITING_S if waiting or not ready else _SLICE_IDLE_S
            if self._member is not None:
                pause = min(pause, self._member.heartbeat_interval_ms / 1000)
            if left is not None:
                pause = min(pause, left)
            if ready:
                _notify.wait([p.counter for p in ready], [p.waiters for p in ready],
                             expected, pause)
            else:
                time.sleep(pause)

    def _fetch(self, ready: list[_Part], max_records: int) -> list[Record]:
        n = len(ready)
        start = self._rr % n
        order = ready[start:] + ready[:start]
        out: list[Record] = []
        share = max(1, max_records // n, min(_MIN_SHARE, max_records // 4))
        hungry = []
        for i, part in enumerate(order):
            self._rr = start + i + 1  # the next poll starts after the last one visited
            got = self._fetch_partition(part, min(share, max_records - len(out)))
            out.extend(got)
            if len(got) == share:
                hungry.append(part)
            if self._pending_error is not None or len(out) >= max_records:
                return out
        for part in hungry:  # room left: let partitions with more records fill it
            if len(out) >= max_records:
                break
            out.extend(self._fetch_partition(part, max_records - len(out)))
            if self._pending_error is not None:
                break
        return out

    def _fetch_partition(self, part: _Part, want: int) -> list[Record]:
        if want <= 0:
            return []
        position = part.position if part.position is not None else self._resolve(part)
        try:
            batches = part.log.fetch(position, self._fetch_max_bytes, want)
        except OffsetOutOfRangeError as exc:
            position = self._apply_reset(part, exc.start_offset, exc.end_offset)
            batches = part.log.fetch(position, self._fetch_max_bytes, want)
        if not batches:
            return []
        tp = part.tp
        try:
            records = records_from_batches(batches, position, tp.topic, tp.partition, want,
                                           self._keys, self._values)
        except _DeserializeError:
            salvaged = self._salvage(batches, position, part, want)
            if salvaged:
                part.position = salvaged[-1].offset + 1
            if self._pending_error is not None:  # the position stays at the bad record
                part.position = self._pending_error.offset  # type: ignore[attr-defined]
            return salvaged
        if not records or len(records) < want or records[-1].offset == _last_offset(batches):
            # Everything the batches hold from the position was returned: move past
            # their whole span, over gaps compaction left (else lag never reaches 0).
            part.position = batches[-1].header.next_offset
        else:
            part.position = records[-1].offset + 1
        return records

    def _column(self, fn: Deserializer, column: list[Any]) -> list[Any]:
        try:
            if None in column:
                return [None if x is None else fn(x) for x in column]
            return list(map(fn, column))
        except Exception as exc:
            raise _DeserializeError() from exc

    def _keys(self, column: list[Any]) -> list[Any]:
        return self._column(self._key_des, column)

    def _values(self, column: list[Any]) -> list[Any]:
        return self._column(self._value_des, column)

    def _salvage(self, batches: list[DecodedBatch], position: int, part: _Part,
                 want: int) -> list[Record]:
        """A record failed to deserialize: return the records before it, remember an
        error naming it for the next poll, and stop the position at it."""
        raw = records_from_batches(batches, position, part.tp.topic, part.tp.partition, want)
        out: list[Record] = []
        for record in raw:
            for what, fn, data in (("key", self._key_des, record.key),
                                   ("value", self._value_des, record.value)):
                if data is None:
                    continue
                try:
                    fn(data)
                except Exception as exc:
                    error = SerializationError(
                        f"topic {record.topic!r} partition {record.partition} offset "
                        f"{record.offset}: could not deserialize the {what} "
                        f"({type(exc).__name__}: {exc}); seek past it to skip it")
                    error.topic, error.partition, error.offset = (record.topic,
                                                                  record.partition,
                                                                  record.offset)
                    error.__cause__ = exc
                    self._pending_error = error
                    part.position = record.offset
                    return out
            key = None if record.key is None else self._key_des(record.key)
            value = None if record.value is None else self._value_des(record.value)
            out.append(record._replace(key=key, value=value))
        return out

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

    def _positions(self) -> dict[TopicPartition, int]:
        return {tp: p.position for tp, p in self._parts.items()
                if p.owned and p.position is not None}

    @_fileutil.translate_errors("consumer")
    def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        """Commit ``offsets`` (default: the positions of the assigned partitions, i.e. the
        next record to read). Atomic and crash-safe. Raises ``CommitFailedError`` without
        a ``group_id``, or when this consumer no longer owns the partitions."""
        self._check_open()
        self._commit(dict(self._positions() if offsets is None else offsets))

    @_fileutil.translate_errors("consumer")
    def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        if self._store is None:
            raise CommitFailedError("this consumer has no group_id: there is nowhere to "
                                    "commit offsets")
        clean = {}
        for tp, offset in offsets.items():
            tp = TopicPartition(*tp)
            if type(offset) is not int or offset < 0:
                raise InvalidConfigError(f"offset for {tp} must be an int >= 0, "
                                         f"not {offset!r}")
            clean[tp] = offset
        if not clean:
            return
        member = self._member
        if member is None:  # manual assignment: not fenced
            self._store.commit(clean, self._clock())
            return
        with member.files.locked():
            generation = member.commit_allowed(sorted(clean))
            self._store.commit(clean, self._clock(), generation, member.member_id)

    def _commit_quietly(self, offsets: dict[TopicPartition, int | None] | None) -> None:
        """Auto-commit: positions of records already returned; failures are logged."""
        self._next_auto_commit = time.monotonic() + self._auto_commit_ms / 1000
        chosen = self._positions() if offsets is None else \
            {tp: off for tp, off in offsets.items() if off is not None}
        try:
            self._commit(chosen)
        except CommitFailedError as exc:
            _logger.info("auto-commit skipped: %s", exc)

    def commit_async(self, offsets: Mapping[TopicPartition, int] | None = None,
                     callback: Callable[[dict[TopicPartition, int], BaseException | None],
                                        Any] | None = None
                     ) -> concurrent.futures.Future[dict[TopicPartition, int]]:
        """Commit in a background thread (commits run in call order). ``callback(offsets,
        error)`` is called when it is done; the returned future resolves the same way."""
        self._check_open()
        chosen = dict(self._positions() if offsets is None else offsets)
        future: concurrent.futures.Future[dict[TopicPartition, int]] = \
            concurrent.futures.Future()
        if self._commit_queue is None:
            self._commit_queue = queue.Queue()
            self._commit_thread = threading.Thread(target=self._commit_loop, daemon=True,
                                                   name="eventlog-commit")
            self._commit_thread.start()
        self._commit_queue.put((chosen, callback, future))
        return future

    def _commit_loop(self) -> None:
        assert self._commit_queue is not None
        while True:
            item = self._commit_queue.get()
            if item is None:
                return
            offsets, callback, future = item
            error: BaseException | None = None
            try:
                self._commit(offsets)
                future.set_result(offsets)
            except Exception as exc:
                error = exc
                future.set_exception(exc)
            if callback is not None:
                try:
                    callback(offsets, error)
                except Exception:
                    _logger.exception("exception in a commit_async callback")

    @_fileutil.translate_errors("consumer")
    def committed(self, tp: TopicPartition) -> int | None:
        """The last committed offset of ``tp`` for this consumer's group (None if none)."""
        self._check_open()
        if self._store is None:
            return None
        return self._store.read().get(TopicPartition(*tp))

    # -- closing -------------------------------------------------------------------------

    @_fileutil.translate_errors("consumer")
    def close(self, autocommit: bool = True) -> None:
        """Commit positions (with auto-commit on), leave the group, release everything.
        Idempotent."""
        if self._closed:
            return
        try:
            if not self._log.closed:
                if autocommit and self._auto_commit:
                    self._commit_quietly(None)
                self._leave()
        finally:
            self._closed = True
            if self._commit_queue is not None:
                self._commit_queue.put(None)
                if self._commit_thread is not None:
                    self._commit_thread.join(10)
            self._parts.clear()


def _last_offset(batches: list[DecodedBatch]) -> int:
    for batch in reversed(batches):
        offsets = batch.offsets()
        if offsets:
            return offsets[-1]
    return -1


class _DeserializeError(Exception):
    """Internal: a deserializer failed somewhere in a column."""
