"""KafkaConsumer: ``eventlog.Consumer`` on a Kafka cluster, over confluent-kafka.

Kafka's group coordinator runs the groups (``group_id``); librdkafka fetches. This
room keeps what eventlog promises on top: positions (the next offset ``poll`` returns,
moved by ``seek``, committed by ``commit()``), auto-commit of *returned* records every
``auto_commit_interval_ms``, before a rebalance takes partitions away and at close,
``RebalanceListener`` callbacks (run inside ``poll``, where a listener may ``seek`` or
``commit``), deserializers with ``SerializationError`` naming the record, and a
``poll`` that returns as soon as records are there.

Without a ``group_id`` a consumer given topics reads every partition of them (by
``assign``, joining no group; librdkafka still needs a group name, which is never
used to commit).
"""

from __future__ import annotations

import concurrent.futures
import re
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, OFFSET_INVALID
from confluent_kafka import Consumer as _RawConsumer
from confluent_kafka import TopicPartition as KafkaTP

from .._coordinator import CommitCallback, RebalanceListener, compile_pattern, resolve_listener
from .._types import Record, TopicPartition
from ..config import check_client_id, check_int
from ..consumer import Consumer, PartitionsCallback, callback_listener, poll_timeout
from ..errors import (
    ClosedError,
    CommitFailedError,
    EventLogError,
    InvalidConfigError,
    NotAssignedError,
)
from ..log import Log
from ..serde import Deserializer, deserializer
from ._commits import Committer
from ._config import check_membership
from ._decode import to_records
from ._errors import kafka_errors
from ._log import KafkaLog
from ._lookups import OffsetLookups

__all__ = ["KafkaConsumer"]

_STRATEGIES = {"range": "range", "roundrobin": "roundrobin", "sticky": "cooperative-sticky",
               "cooperative-sticky": "cooperative-sticky"}
_RESETS = {"earliest": "earliest", "latest": "latest", "none": "error"}
_ISOLATION = ("read_committed", "read_uncommitted")
_REFRESH_S = 5.0   # a group-less consumer looks for added partitions this often


def _tp(ktp: Any) -> TopicPartition:
    return TopicPartition(ktp.topic, ktp.partition)


def _matching(log: KafkaLog, regex: re.Pattern[str]) -> list[str]:
    return [name for name in log.topics() if regex.fullmatch(name)]


def _subscription(log: KafkaLog, topics: Iterable[str],
                  pattern: str | re.Pattern[str] | None
                  ) -> tuple[re.Pattern[str] | None, list[str], list[str]]:
    """What ``subscribe(topics, pattern=)`` asks for: ``(the compiled pattern or None,
    the topics it names now, what librdkafka subscribes to)``, or the same errors as
    on a local log (``InvalidConfigError``, ``UnknownTopicError``)."""
    if pattern is not None:
        if isinstance(topics, str) or list(topics):
            raise InvalidConfigError("subscribe takes topics or a pattern, not both")
        regex = compile_pattern(pattern)
        # librdkafka subscribes to a regex when a name starts with "^"; anchored at
        # both ends, it must match a whole name, as in Kafka's Java client
        return regex, _matching(log, regex), [f"^({regex.pattern})$"]
    if isinstance(topics, str):
        raise InvalidConfigError(f"subscribe needs a list of topic names, not the str "
                                 f"{topics!r} (write [{topics!r}])")
    names = sorted(set(topics))
    if not names or any(not isinstance(t, str) for t in names):
        raise InvalidConfigError("subscribe needs a list of topic names or a pattern=")
    for name in names:
        log.topic(name)  # UnknownTopicError now, as locally
    return None, names, names


class KafkaConsumer(Consumer):
    """``Consumer(log, ...)`` for a log opened on ``kafka://``: the same options, plus
    ``isolation_level`` ("read_uncommitted", the default as on a log directory, returns
    everything; "read_committed" never returns records of aborted or open
    transactions) and
    ``kafka_config`` (librdkafka settings for this consumer). ``partition_assignment_
    strategy="sticky"`` is Kafka's cooperative-sticky assignor. Not thread-safe."""

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
                 isolation_level: str = "read_uncommitted",
                 kafka_config: Mapping[str, Any] | None = None) -> None:
        if not isinstance(log, KafkaLog):
            raise TypeError(f"KafkaConsumer needs a Log opened on kafka://, not {log!r}")
        log.check_open()
        check_int("max_poll_records", max_poll_records, 1)
        check_int("consumer_timeout_ms", consumer_timeout_ms, 0, optional=True)
        check_int("auto_commit_interval_ms", auto_commit_interval_ms, 1)
        check_int("fetch_max_bytes", fetch_max_bytes, 1)
        check_int("session_timeout_ms", session_timeout_ms, 1)
        check_int("heartbeat_interval_ms", heartbeat_interval_ms, 1)
        check_int("max_poll_interval_ms", max_poll_interval_ms, 1)
        for name, value, choices in (
                ("auto_offset_reset", auto_offset_reset, _RESETS),
                ("partition_assignment_strategy", partition_assignment_strategy, _STRATEGIES),
                ("isolation_level", isolation_level, _ISOLATION)):
            if value not in choices:
                raise InvalidConfigError(f"{name} must be one of {', '.join(choices)}, "
                                         f"not {value!r}")
        check_membership(group_id, group_instance_id)
        self.client_id = check_client_id(client_id)
        self._log = log
        self._backend = log.backend
        self.group_id = group_id
        self._key_de = deserializer(key_deserializer)
        self._value_de = deserializer(value_deserializer)
        self._max_poll_records = max_poll_records
        self._consumer_timeout_ms = consumer_timeout_ms
        self._auto_commit = enable_auto_commit and group_id is not None
        self._auto_commit_s = auto_commit_interval_ms / 1000
        self._next_auto_commit = time.monotonic() + self._auto_commit_s
        self._reset = auto_offset_reset
        self._cooperative = _STRATEGIES[partition_assignment_strategy] == "cooperative-sticky"
        self._listener = resolve_listener(listener)
        settings: dict[str, Any] = {
            "group.id": group_id or f"eventlog-no-group-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": _RESETS[auto_offset_reset],
            "partition.assignment.strategy": _STRATEGIES[partition_assignment_strategy],
            "session.timeout.ms": session_timeout_ms,
            "heartbeat.interval.ms": heartbeat_interval_ms,
            "max.poll.interval.ms": max_poll_interval_ms,
            "max.partition.fetch.bytes": fetch_max_bytes,
            "isolation.level": isolation_level,
            "allow.auto.create.topics": False,
            # how soon a pattern subscription sees topics created or deleted
            "topic.metadata.refresh.interval.ms": int(_REFRESH_S * 1000),
        }
        if client_id is not None:
            settings["client.id"] = client_id
        if group_instance_id is not None:
            settings["group.instance.id"] = group_instance_id
        config = log.client_config(**settings)
        config.update(kafka_config or {})
        with kafka_errors("creating a Kafka consumer"):
            self._consumer = _RawConsumer(config)
        self._timeout_s = log.request_timeout_s
        self._lookups = OffsetLookups(self._consumer, self._timeout_s)
        self._assigned: set[TopicPartition] = set()
        self._positions: dict[TopicPartition, int] = {}
        self._pending_seeks: dict[TopicPartition, int] = {}
        self._paused: set[TopicPartition] = set()
        self._subscription: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._manual = False
        self._all_of: list[str] = []     # a group-less consumer reads all of these
        self._next_refresh = 0.0
        self._in_rebalance = False
        self._committer = Committer(self._consumer, self._cooperative, session_timeout_ms / 1000)
        self._consumed = 0    # records poll returned
        self._closed = False
        if topics:
            self.subscribe(list(topics))

    def __repr__(self) -> str:
        group = f" group={self.group_id!r}" if self.group_id else ""
        return f"<eventlog.Consumer{group} on {self._log.url} partitions={len(self._assigned)}>"

    def __enter__(self) -> KafkaConsumer:
        return self

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("the consumer is closed")
        self._log.check_open()

    # -- assignment ---------------------------------------------------------------------

    def subscribe(self, topics: Iterable[str] = (),
                  listener: RebalanceListener | object | None = None, *,
                  pattern: str | re.Pattern[str] | None = None,
                  on_assign: PartitionsCallback | None = None,
                  on_revoke: PartitionsCallback | None = None,
                  on_lost: PartitionsCallback | None = None) -> None:
        """Read ``topics``, or with ``pattern=`` every topic whose whole name matches
        the regex (in a group, librdkafka's ``^`` subscription); topics created or
        deleted later join or leave it within a few seconds. With a ``group_id`` as a
        member of the Kafka group, without one every partition of them. ``listener``
        and the callbacks are those of ``Consumer.subscribe``."""
        self._check_open()
        listener = callback_listener(self, listener, on_assign, on_revoke, on_lost)
        regex, names, wanted = _subscription(self._log, topics, pattern)
        if listener is not None:
            self._listener = resolve_listener(listener)
        self._pattern = regex
        self._subscription = set(names)
        self._manual = False
        if self.group_id is None:
            self._all_of = names
            self._assign_all()
            return
        with kafka_errors("subscribing"):
            self._consumer.subscribe(wanted, on_assign=self._on_assign,
                                     on_revoke=self._on_revoke, on_lost=self._on_lost)

    def _assign_all(self) -> None:
        if self._pattern is not None:
            self._all_of = _matching(self._log, self._pattern)
            self._subscription = set(self._all_of)
        tps = [TopicPartition(t, i) for t in self._all_of
               for i in range(self._log.admin.check_topic(t))]
        self._next_refresh = time.monotonic() + _REFRESH_S
        if set(tps) != self._assigned:
            self._assign(tps)

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Read exactly ``partitions`` (no group membership; commits, with a
        ``group_id``, go to the group unfenced)."""
        self._check_open()
        tps = [TopicPartition(*tp) for tp in partitions]
        for tp in tps:
            self._log.topic(tp.topic).partition(tp.partition)
        self._manual = True
        self._all_of = []
        self._subscription = set()
        self._pattern = None
        with kafka_errors("unsubscribing"):
            self._consumer.unsubscribe()
        self._assign(tps)

    def _assign(self, tps: list[TopicPartition]) -> None:
        keep = {tp: off for tp, off in self._positions.items() if tp in tps}
        self._positions = keep
        # Without a group nothing is committed: start where auto_offset_reset says
        # (OFFSET_INVALID would look up the committed offsets of a group that is none).
        start = OFFSET_INVALID if self.group_id is not None else \
            (OFFSET_END if self._reset == "latest" else OFFSET_BEGINNING)
        request = [KafkaTP(tp.topic, tp.partition, keep.get(tp, start)) for tp in tps]
        with kafka_errors("assigning partitions"):
            self._consumer.assign(request)
        self._assigned = set(tps)
        self._paused &= self._assigned

    def unsubscribe(self) -> None:
        """Stop reading everything (leaving the group, if in one)."""
        self._check_open()
        with kafka_errors("unsubscribing"):
            if self._manual or self.group_id is None:
                self._consumer.unassign()
            else:
                self._consumer.unsubscribe()
        self._assigned.clear()
        self._positions.clear()
        self._subscription = set()
        self._pattern = None
        self._all_of = []

    def assignment(self) -> set[TopicPartition]:
        """The partitions assigned to this consumer."""
        return set(self._assigned)

    def subscription(self) -> set[str]:
        """The topics subscribed to (for a pattern, those matching it now)."""
        if self._pattern is not None:
            self._subscription = set(_matching(self._log, self._pattern))
        return set(self._subscription)

    # -- rebalances (called by librdkafka inside poll) ------------------------------------------

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        tps = [_tp(k) for k in partitions]
        self._in_rebalance = True
        try:
            added = set(tps) - self._assigned
            if self._cooperative:
                consumer.incremental_assign(partitions)
                self._assigned |= set(tps)
            else:
                consumer.assign(partitions)
                self._assigned = set(tps)
            if self._listener is not None and added:
                self._listener.on_assigned(added)
        finally:
            self._in_rebalance = False
        self._apply_seeks()

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        tps = {_tp(k) for k in partitions}
        self._in_rebalance = True
        try:
            if self._listener is not None and tps:
                self._listener.on_revoked(tps)
            if self._auto_commit:
                try:
                    self._committer.commit({tp: off for tp, off in self._positions.items()
                                       if tp in tps})
                except EventLogError:
                    pass  # a later owner re-reads from the last good commit
        finally:
            self._in_rebalance = False
            self._drop(tps)
            if self._cooperative:
                consumer.incremental_unassign(partitions)
            else:
                consumer.unassign()

    def _on_lost(self, consumer: Any, partitions: list[Any]) -> None:
        tps = {_tp(k) for k in partitions}
        try:
            if self._listener is not None and tps:
                self._listener.on_lost(tps)
        finally:
            self._drop(tps)
            if self._cooperative:
                consumer.incremental_unassign(partitions)
            else:
                consumer.unassign()

    def _drop(self, tps: set[TopicPartition]) -> None:
        self._assigned -= tps
        self._paused -= tps
        for tp in tps:
            self._positions.pop(tp, None)
            self._pending_seeks.pop(tp, None)

    # -- positions -----------------------------------------------------------------------

    def _check_assigned(self, tp: TopicPartition) -> TopicPartition:
        tp = TopicPartition(*tp)
        if tp not in self._assigned:
            raise NotAssignedError(f"{tp.topic}[{tp.partition}] is not assigned to this "
                                   "consumer")
        return tp

    def position(self, tp: TopicPartition) -> int:
        """The offset of the next record ``poll`` will return for ``tp``."""
        self._check_open()
        tp = self._check_assigned(tp)
        with kafka_errors("reading a position"):
            known = int(self._consumer.position([KafkaTP(tp.topic, tp.partition)])[0].offset)
        if tp in self._positions:  # librdkafka's moves past transaction markers, ours not
            return max(self._positions[tp], -1 if tp in self._pending_seeks else known)
        return known if known >= 0 else \
            self._lookups.reset_position(tp, self.committed(tp), self._reset)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Make the next ``poll`` read ``tp`` from ``offset``."""
        self._check_open()
        tp = self._check_assigned(tp)
        check_int("offset", offset, 0)
        self._positions[tp] = offset
        self._pending_seeks[tp] = offset
        if not self._in_rebalance:
            self._apply_seeks()

    def _apply_seeks(self) -> None:
        for tp, offset in list(self._pending_seeks.items()):
            try:
                self._consumer.seek(KafkaTP(tp.topic, tp.partition, offset))
            except Exception:  # noqa: S112 - not fetching yet: retried at the next poll
                continue
            del self._pending_seeks[tp]

    def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        """Move ``partitions`` (default: all assigned) to their start offsets."""
        for tp in partitions or tuple(self._assigned):
            self.seek(tp, self._lookups.bounds(TopicPartition(*tp))[0])

    def seek_to_end(self, *partitions: TopicPartition) -> None:
        """Move ``partitions`` (default: all assigned) to their end offsets."""
        for tp in partitions or tuple(self._assigned):
            self.seek(tp, self._lookups.bounds(TopicPartition(*tp))[1])

    def pause(self, *partitions: TopicPartition) -> None:
        """Stop returning records of these partitions until ``resume``."""
        tps = [self._check_assigned(tp) for tp in partitions]
        with kafka_errors("pausing"):
            self._consumer.pause([KafkaTP(tp.topic, tp.partition) for tp in tps])
        self._paused |= set(tps)

    def resume(self, *partitions: TopicPartition) -> None:
        tps = [TopicPartition(*tp) for tp in partitions]
        with kafka_errors("resuming"):
            self._consumer.resume([KafkaTP(tp.topic, tp.partition) for tp in tps])
        self._paused -= set(tps)

    def paused(self) -> set[TopicPartition]:
        return set(self._paused)

    def beginning_offsets(self, partitions: Iterable[TopicPartition]
                          ) -> dict[TopicPartition, int]:
        self._check_open()
        return self._lookups.starts(partitions)

    def end_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        self._check_open()
        return self._lookups.ends(partitions)

    def offsets_for_times(self, timestamps: Mapping[TopicPartition, int]
                          ) -> dict[TopicPartition, int | None]:
        """For each partition, the earliest offset whose timestamp is >= the given one
        (None if there is none): Kafka's ListOffsets by time."""
        self._check_open()
        return self._lookups.for_times(timestamps)

    def lag(self, stable: bool = False) -> dict[TopicPartition, int]:
        """End offset (the high watermark) minus position, for every assigned
        partition; with ``stable=True``, the last stable offset minus position: what a
        ``read_committed`` consumer can read now. Cost: a ListOffsets request."""
        self._check_open()
        tps = sorted(self._assigned)
        admin = self._log.admin
        ends = admin.last_stable_offsets(tps) if stable else admin.end_offsets(tps)
        return {tp: max(0, ends[tp] - self.position(tp)) for tp in tps}

    def last_stable_offsets(self, partitions: Iterable[TopicPartition]
                            ) -> dict[TopicPartition, int]:
        """The last stable offset of each partition: the first offset of its oldest
        open transaction, or its end offset when none is open (Kafka's LSO, from a
        read_committed ListOffsets request)."""
        self._check_open()
        return self._log.admin.last_stable_offsets([TopicPartition(*tp)
                                                     for tp in partitions])

    def metrics(self) -> dict[str, Any]:
        """This consumer now, with the names of ``Consumer.metrics``: its ``client_id``
        and ``group_id``, ``records_consumed`` (records ``poll`` returned), the
        partitions assigned and paused, ``records_lag`` / ``records_lag_max`` (of
        ``lag()``). (``offset_resets`` is librdkafka's to count, not reported.) Cost:
        a ListOffsets request."""
        self._check_open()
        lag = self.lag()
        return {"client_id": self.client_id, "group_id": self.group_id,
                "records_consumed": self._consumed,
                "assigned_partitions": len(self._assigned),
                "paused_partitions": len(self._paused),
                "records_lag": sum(lag.values()),
                "records_lag_max": max(lag.values(), default=0)}

    # -- polling -------------------------------------------------------------------------

    def poll(self, timeout: float | None = 1.0, max_records: int | None = None, *,
             timeout_ms: int | None = None) -> list[Record]:
        """Records from the assigned partitions, in offset order within a partition; at
        most ``max_records``. Waits up to ``timeout`` seconds (default 1.0; None: until
        records arrive; or ``timeout_ms`` milliseconds instead) and returns ``[]`` if
        none came; returns as soon as any are there."""
        self._check_open()
        timeout = poll_timeout(timeout, timeout_ms)
        if max_records is None:
            max_records = self._max_poll_records
        elif type(max_records) is not int or max_records < 1:
            raise InvalidConfigError(f"max_records must be a positive int, not {max_records!r}")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._maintain()
            left = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
            first = self._consumer.poll(max(0.0, left))
            if first is not None:
                more = self._consumer.consume(max_records - 1, 0) if max_records > 1 else []
                records = self._records([first, *more])
                if records:
                    self._consumed += len(records)
                    return records
            if deadline is not None and time.monotonic() >= deadline:
                return []

    def _maintain(self) -> None:
        if self._pending_seeks:
            self._apply_seeks()
        now = time.monotonic()
        # (only without a group: a member's partitions, a pattern's too, are the group's)
        if self.group_id is None and now >= self._next_refresh and (
                self._all_of or self._pattern is not None):
            self._assign_all()
        if self._auto_commit and now >= self._next_auto_commit:
            self._next_auto_commit = now + self._auto_commit_s
            if self._positions:
                self._committer.commit_quietly(dict(self._positions))

    def _records(self, messages: list[Any]) -> list[Record]:
        out, rest, error = to_records(messages, self._assigned, self._key_de, self._value_de,
                                      self._positions)
        if error is None:
            return out
        return self._fail(out, rest, error)

    def _fail(self, out: list[Record], rest: list[Any], error: EventLogError) -> list[Record]:
        """What Kafka's consumer does at a record it cannot return: the records before
        it are returned, and the error is raised when nothing precedes it. Every
        partition reads again from its first record not returned, so a failing
        record is raised again until the application seeks past it."""
        for msg in rest:
            if msg.error() is None:
                tp = TopicPartition(msg.topic(), msg.partition())
                if tp in self._assigned and tp not in self._pending_seeks:
                    self._positions[tp] = msg.offset()
                    self._pending_seeks[tp] = msg.offset()
        self._apply_seeks()
        if out:
            return out
        raise error

    # -- commits -------------------------------------------------------------------------

    def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        """Commit ``offsets`` (default: the positions of the assigned partitions, i.e. the
        next record to read) to the Kafka group, synchronously. ``CommitFailedError``
        without a ``group_id`` or when the group took the partitions away."""
        self._check_open()
        if self.group_id is None:
            raise CommitFailedError("this consumer has no group_id: there is nothing to "
                                    "commit to")
        if offsets is None:
            offsets = {tp: self.position(tp) for tp in self._assigned}
        else:
            offsets = {TopicPartition(*tp): off for tp, off in offsets.items()}
            for off in offsets.values():
                check_int("offset", off, 0)
        self._committer.commit(offsets)

    def commit_async(self, offsets: Mapping[TopicPartition, int] | None = None,
                     callback: CommitCallback | None = None
                     ) -> concurrent.futures.Future[dict[TopicPartition, int]]:
        """Commit in a background thread (in call order); ``callback(offsets, error)``
        runs when done, and the returned future resolves the same way."""
        self._check_open()
        if self.group_id is None:
            raise CommitFailedError("this consumer has no group_id: there is nothing to "
                                    "commit to")
        chosen = dict(self._positions) if offsets is None else \
            {TopicPartition(*tp): off for tp, off in offsets.items()}
        return self._committer.submit(chosen, callback)

    def committed(self, tp: TopicPartition) -> int | None:
        """The group's committed offset of ``tp`` (None if none, or without a group)."""
        self._check_open()
        return None if self.group_id is None else \
            self._committer.committed(tp, self._timeout_s)

    # -- closing ---------------------------------------------------------------------------

    def close(self, autocommit: bool = True) -> None:
        """Commit positions (with auto-commit on), leave the group, release everything.
        Idempotent."""
        if self._closed:
            return
        try:
            if self._listener is not None and self._assigned and self.group_id and not self._manual:
                # revoke in poll(), where the listener may still look up and commit
                # (inside librdkafka's close() a lookup waits out the request timeout)
                with kafka_errors("leaving the group"):
                    self._consumer.unsubscribe()
                deadline = time.monotonic() + self._timeout_s
                while self._assigned and time.monotonic() < deadline:
                    self._consumer.poll(0.05)
            self._committer.shutdown()
            if autocommit and self._auto_commit and self._positions:
                try:
                    self._committer.commit({tp: off for tp, off in self._positions.items()
                                       if tp in self._assigned})
                except EventLogError:
                    pass  # no longer the owner: the new owner reads from the last commit
        finally:  # librdkafka revokes in close(): a listener may still commit, as in Java
            self._consumer.close()
            self._closed = True
