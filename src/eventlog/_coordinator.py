"""Which partitions a consumer reads, its consumer-group membership, and its commits.

This room owns, for one consumer (``Consumer`` or ``aio.AIOConsumer``, which share it):

- the assignment: nothing; ``subscribe`` (topics: with a ``group_id`` as a member of
  the group, without one every partition of them, re-read every second so that added
  partitions are read too); or ``assign`` (exactly the given partitions, no
  membership);
- group membership, through a ``GroupMember`` from the backend (``_group`` locally):
  joining, the heartbeat and the reaction to rebalances at every poll, taking ownership
  of a newly assigned partition once its previous owner has let go, rejoining after
  being removed, leaving; and the ``RebalanceListener`` calls around these
  (``on_revoked`` before partitions go, while still owned; ``on_assigned`` once owned;
  ``on_lost`` when the member was removed and its partitions may be someone else's);
- commits: synchronous, in a background thread (``commit_async``, in call order), and
  automatic (every ``auto_commit_interval_ms``, before a rebalance revokes partitions,
  and at close). A member's commits are fenced: it commits only partitions whose
  ownership lock it holds, and nothing once it was removed from the group.

It tells the ``Fetcher`` below it (``_fetcher``) which partitions are assigned and
owned, and reads its positions to commit them (or, for ``AIOConsumer``, the positions
of the records it returned); the fetcher never calls up.

Thread-safety: one thread at a time (the consumer's), except that the commit thread
runs commits alongside it.
"""

from __future__ import annotations

import logging
import math
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from . import _fileutil
from ._fetcher import DEFAULT_FETCH_MAX_BYTES, Fetcher
from ._group import STRATEGIES, GroupMember, validate_group_id
from ._types import TopicPartition
from .config import check_client_id, check_int
from .errors import (
    CommitFailedError,
    InvalidConfigError,
    OffsetOutOfRangeError,
    UnknownPartitionError,
    UnknownTopicError,
)
from .serde import Deserializer

if TYPE_CHECKING:
    import concurrent.futures

    from ._backend import Backend

__all__ = ["Coordinator", "RebalanceListener", "resolve_listener"]

_logger = logging.getLogger("eventlog")
SLICE_IDLE_S = 0.25       # longest sleep between looks at the group
SLICE_WAITING_S = 0.02    # while waiting for a partition's previous owner to let go
_STANDALONE_REFRESH_S = 1.0   # how often a subscription without a group re-reads topics

CommitCallback = Callable[[dict[TopicPartition, int], BaseException | None], Any]


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


# Which methods of a listener object answer each call: eventlog's names first, then
# kafka-python's (``ConsumerRebalanceListener``) and the Java client's ``onPartitionsLost``.
_LISTENER_METHODS = {
    "on_revoked": ("on_revoked", "on_partitions_revoked"),
    "on_assigned": ("on_assigned", "on_partitions_assigned"),
    "on_lost": ("on_lost", "on_partitions_lost"),
}


def resolve_listener(listener: object) -> RebalanceListener | None:
    """The ``RebalanceListener`` that calls ``listener``'s methods: a subclass of
    ``RebalanceListener`` as it is, any other object by its methods, with eventlog's
    names (``on_revoked``, ``on_assigned``, ``on_lost``) or kafka-python's
    (``on_partitions_revoked``, ``on_partitions_assigned``, ``on_partitions_lost``).
    A method the listener lacks does nothing (``on_lost`` falls back to revoked).

    Raises ``InvalidConfigError`` for an object with none of these methods, so a
    listener that would never be called fails at ``subscribe``, not silently."""
    if listener is None:
        return None
    base = {name: getattr(RebalanceListener, name) for name in _LISTENER_METHODS}
    found: dict[str, Callable[[set[TopicPartition]], Any]] = {}
    for call, names in _LISTENER_METHODS.items():
        for name in names:
            method = getattr(type(listener), name, None)
            if callable(method) and method is not base.get(name):
                found[call] = getattr(listener, name)
                break
    kafka_python = {names[1] for names in _LISTENER_METHODS.values()}
    if isinstance(listener, RebalanceListener) and not kafka_python & set(dir(listener)):
        return listener
    if not found.keys() & {"on_revoked", "on_assigned"}:
        raise InvalidConfigError(
            f"a rebalance listener needs on_revoked(partitions) and/or "
            f"on_assigned(partitions) (kafka-python's on_partitions_revoked and "
            f"on_partitions_assigned work too); {type(listener).__name__} has none of them")
    return _MethodListener(found)


class _MethodListener(RebalanceListener):
    """A listener object whose methods were looked up by name (``resolve_listener``)."""

    def __init__(self, methods: Mapping[str, Callable[[set[TopicPartition]], Any]]) -> None:
        self._methods = dict(methods)

    def on_revoked(self, partitions: set[TopicPartition]) -> None:
        method = self._methods.get("on_revoked")
        if method is not None:
            method(partitions)

    def on_assigned(self, partitions: set[TopicPartition]) -> None:
        method = self._methods.get("on_assigned")
        if method is not None:
            method(partitions)

    def on_lost(self, partitions: set[TopicPartition]) -> None:
        method = self._methods.get("on_lost")
        if method is None:
            self.on_revoked(partitions)
        else:
            method(partitions)


def compile_pattern(pattern: str | re.Pattern[str]) -> re.Pattern[str]:
    """A subscription pattern as a compiled regex (``InvalidConfigError`` if it is not
    one). It must match a topic's whole name, as in Kafka's Java client."""
    if isinstance(pattern, re.Pattern):
        return pattern
    if not isinstance(pattern, str):
        raise InvalidConfigError(f"pattern must be a str or re.Pattern, not "
                                 f"{type(pattern).__name__}")
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise InvalidConfigError(f"invalid subscription pattern {pattern!r}: {exc}") from exc


class Coordinator:
    """The assignment, group membership and commits of one consumer; owns its
    ``fetcher``. The options are those of ``Consumer`` (validated here, so both
    consumers raise the same errors); ``positions``, if given, says what ``commit()``
    and auto-commits commit instead of the fetcher's positions.

    Not thread-safe: one thread at a time, the one that polls (``commit_async`` runs its
    commits in a thread of its own; ``GroupMember.commit`` is safe against polling).
    """

    def __init__(self, backend: Backend, *, group_id: str | None = None,
                 auto_offset_reset: str = "earliest", enable_auto_commit: bool = True,
                 auto_commit_interval_ms: int = 5000,
                 key_deserializer: str | Deserializer | None = None,
                 value_deserializer: str | Deserializer | None = None,
                 fetch_max_bytes: int = DEFAULT_FETCH_MAX_BYTES,
                 partition_assignment_strategy: str = "range",
                 session_timeout_ms: int = 10_000, heartbeat_interval_ms: int = 1_000,
                 max_poll_interval_ms: int = 300_000, group_instance_id: str | None = None,
                 listener: object | None = None, client_id: str | None = None,
                 positions: Callable[[], dict[TopicPartition, int]] | None = None,
                 isolation_level: str = "read_uncommitted") -> None:
        for name, value in (("auto_commit_interval_ms", auto_commit_interval_ms),
                            ("session_timeout_ms", session_timeout_ms),
                            ("heartbeat_interval_ms", heartbeat_interval_ms),
                            ("max_poll_interval_ms", max_poll_interval_ms)):
            check_int(name, value, 1)
        if partition_assignment_strategy not in STRATEGIES:
            raise InvalidConfigError(f"partition_assignment_strategy must be one of "
                                     f"{', '.join(STRATEGIES)}")
        self.group_id = validate_group_id(group_id) if group_id is not None else None
        self.client_id = check_client_id(client_id)
        if group_instance_id is not None and group_id is None:
            raise InvalidConfigError("group_instance_id needs a group_id")
        self._store = backend.offset_store(group_id) if group_id is not None else None
        self.fetcher = Fetcher(backend, self._store, auto_offset_reset=auto_offset_reset,
                               key_deserializer=key_deserializer,
                               value_deserializer=value_deserializer,
                               fetch_max_bytes=fetch_max_bytes,
                               isolation_level=isolation_level, group_id=group_id)
        self._backend = backend
        self._clock = backend.clock
        self._listener = resolve_listener(listener)
        self._positions = positions if positions is not None else self.fetcher.positions
        self._auto_commit = enable_auto_commit and group_id is not None
        self._auto_commit_s = auto_commit_interval_ms / 1000
        self._next_auto_commit = time.monotonic() + self._auto_commit_s
        self._group_options: dict[str, Any] = {
            "strategy": partition_assignment_strategy,
            "session_timeout_ms": session_timeout_ms,
            "max_poll_interval_ms": max_poll_interval_ms,
            "heartbeat_interval_ms": heartbeat_interval_ms,
            "instance_id": group_instance_id}
        if self.client_id is not None:  # (a backend without client ids still works)
            self._group_options["client_id"] = self.client_id
        self._heartbeat_s = heartbeat_interval_ms / 1000
        self._member: GroupMember | None = None
        self._mode: str | None = None                 # None, "subscribe" or "assign"
        self._subscription: list[str] = []
        self._pattern: re.Pattern[str] | None = None
        self._next_refresh = 0.0
        # poll's step runs again at this time.monotonic() (0: at the next poll), and
        # until then a poll may sleep this long
        self._next_upkeep = 0.0
        self._slice_s = SLICE_IDLE_S
        self._commit_queue: queue.Queue[Any] | None = None
        self._commit_thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return (f"<Coordinator group={self.group_id!r} mode={self._mode} "
                f"partitions={len(self.fetcher.assigned())}>")

    # -- assignment ---------------------------------------------------------------------

    def subscribe(self, topics: Iterable[str] = (), listener: object | None = None,
                  pattern: str | re.Pattern[str] | None = None) -> None:
        """Read ``topics`` (raises ``UnknownTopicError``/``InvalidTopicError`` now), or
        every topic whose whole name matches ``pattern`` (a regex), now and later: the
        topic list is re-read every second and a change of the matching set changes the
        subscription (a rebalance, in a group). In a group, join it (or change the
        subscription). Cost: a metadata read per topic, for a pattern a ``listdir`` of
        the topics each second, and for a member the group lock and a rebalance."""
        if pattern is not None:
            if isinstance(topics, str) or list(topics):
                raise InvalidConfigError("subscribe takes topics or a pattern, not both")
            regex = compile_pattern(pattern)
            names = self._matching(regex)
        else:
            regex = None
            if isinstance(topics, str):
                raise InvalidConfigError(f"subscribe needs a list of topic names, not the "
                                         f"str {topics!r} (write [{topics!r}])")
            names = sorted(set(topics))
            if not names or any(not isinstance(t, str) for t in names):
                raise InvalidConfigError("subscribe needs a list of topic names or a "
                                         "pattern=")
            for name in names:
                self._backend.metadata(name)
        if listener is not None:
            self._listener = resolve_listener(listener)
        if self._mode == "assign":
            self._drop(self.fetcher.assigned())
        self._next_upkeep = 0.0
        self._mode = "subscribe"
        self._pattern = regex
        self._subscription = names
        if self.group_id is None:
            self._refresh_standalone()
            return
        if self._member is None:
            self._member = self._backend.group_member(
                self.group_id, partition_count=self._partition_count, **self._group_options)
        self._member.join(names)
        self._next_refresh = time.monotonic() + _STANDALONE_REFRESH_S
        self._maintain()

    def _matching(self, regex: re.Pattern[str]) -> list[str]:
        return [name for name in self._backend.topics() if regex.fullmatch(name)]

    def _refresh_subscription(self) -> None:
        """A second has passed: pick up topics that now match the pattern (or no longer
        do) and, without a group, partitions added to the subscribed topics."""
        if self._pattern is not None:
            names = self._matching(self._pattern)
            if names != self._subscription:
                _logger.info("pattern %r now matches %s", self._pattern.pattern,
                             ", ".join(names) or "no topic")
                self._subscription = names
                if self._member is not None:
                    self._member.join(names)  # a rebalance, picked up by _maintain
        if self._member is None:
            self._refresh_standalone()
        else:
            self._next_refresh = time.monotonic() + _STANDALONE_REFRESH_S

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Read exactly ``partitions`` (leaving the group, if subscribed in one)."""
        wanted = {TopicPartition(*tp) for tp in partitions}
        for tp in wanted:
            self.fetcher.partition(tp)  # validates topic and partition
        if self._mode == "subscribe":
            self.unsubscribe()
        self._mode = "assign"
        self._next_upkeep = 0.0
        self._drop(self.fetcher.assigned() - wanted)
        for tp in wanted:
            self.fetcher.add(tp, owned=True)

    def unsubscribe(self) -> None:
        """Stop reading everything (leaving the group, if in one)."""
        self._leave()
        self._drop(self.fetcher.assigned())
        self._mode = None
        self._next_upkeep = 0.0
        self._pattern = None
        self._subscription = []

    def subscription(self) -> set[str]:
        """The subscribed topics (for a pattern, the topics it matches now)."""
        return set(self._subscription)

    @property
    def pattern(self) -> re.Pattern[str] | None:
        """The regex of a pattern subscription, else None."""
        return self._pattern

    def _partition_count(self, topic: str) -> int:
        try:
            return self._backend.metadata(topic).partitions
        except UnknownTopicError:
            return 0

    def _drop(self, tps: set[TopicPartition]) -> None:
        for tp in tps:
            self.fetcher.remove(tp)
            if self._member is not None:
                self._member.release(tp)

    def _refresh_standalone(self) -> None:
        wanted: set[TopicPartition] = set()
        for topic in self._subscription:
            count = self._partition_count(topic)
            wanted.update(TopicPartition(topic, p) for p in range(count))
        self._drop(self.fetcher.assigned() - wanted)
        for tp in wanted:
            self.fetcher.add(tp, owned=True)
        self._next_refresh = time.monotonic() + _STANDALONE_REFRESH_S

    # -- the poll step --------------------------------------------------------------------

    def poll(self) -> float:
        """What a poll does before it fetches: heartbeat and react to rebalances (or
        re-read the topics of a subscription without a group), and auto-commit when it
        is due. Returns the longest the poll may then sleep before calling this again.

        Cost: one ``time.monotonic()`` while nothing is due (the deadline of the next
        of these steps is kept: ``_upkeep``); nothing more for a manual assignment; for
        a member a stat of the group state at most every 5 ms and, at most every
        ``heartbeat_interval_ms``, a heartbeat write and a look at the other members
        under the group lock.
        """
        if time.monotonic() < self._next_upkeep and not self.fetcher.found_deleted:
            return self._slice_s
        return self._upkeep()

    def _upkeep(self) -> float:
        """The steps of ``poll``, and when the next one falls due (``_next_upkeep``)."""
        slice_s = SLICE_IDLE_S
        self._drop_deleted()
        now = time.monotonic()
        due = math.inf
        if self._mode == "subscribe":
            if now >= self._next_refresh:
                self._refresh_subscription()
            due = self._next_refresh
        member = self._member
        if member is not None:
            if self._maintain():
                slice_s = SLICE_WAITING_S
                due = now  # try to take the partitions at every poll
            else:
                due = min(due, member.next_maintain)
            slice_s = min(slice_s, self._heartbeat_s)
        if self._auto_commit:
            if now >= self._next_auto_commit:
                self._commit_quietly(None)
            due = min(due, self._next_auto_commit)
        self._next_upkeep = due
        self._slice_s = slice_s
        return slice_s

    def _drop_deleted(self) -> None:
        """Partitions whose topic a fetch found deleted: an explicit assignment raises
        ``UnknownTopicError`` (until it is changed); a subscription drops them, as a
        rebalance would (a group's next check rebalances without the topic)."""
        deleted = self.fetcher.deleted()
        if not deleted:
            return
        if self._mode == "assign":
            raise next(iter(deleted.values()))
        self._drop(set(deleted))

    def _maintain(self) -> bool:
        """React to rebalances and take ownership of newly assigned partitions.
        Returns True while some assigned partition is still held by its previous owner."""
        member = self._member
        assert member is not None
        fetcher = self.fetcher
        change = member.maintain()
        if change is not None:
            current = fetcher.assigned()
            if change.lost:
                lost = fetcher.owned()
                self._drop(current)
                self._call("on_lost", lost)
                member.join(self._subscription)  # rejoin as a new generation
                return self._maintain()
            gone = current - change.assignment
            owned_gone = gone & fetcher.owned()
            if owned_gone:
                if self._auto_commit:
                    self._commit_quietly({tp: offset for tp, offset in self._positions().items()
                                          if tp in owned_gone})
                self._call("on_revoked", owned_gone)
            self._drop(gone)
            for tp in change.assignment - current:
                try:
                    fetcher.add(tp, owned=False)
                except UnknownTopicError:
                    continue
        if not fetcher.waiting():
            return False
        acquired = set()
        waiting = False
        for tp in fetcher.assigned() - fetcher.owned():
            if member.try_own(tp):
                fetcher.own(tp)
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
            try:
                self._call("on_revoked", self.fetcher.owned())
            finally:
                self._member.leave()
                self._member = None

    # -- commits ------------------------------------------------------------------------

    def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        """Commit ``offsets`` (default: the positions). Atomic and crash-safe; raises
        ``CommitFailedError`` without a group, or for partitions this member does not
        own, and ``OffsetOutOfRangeError`` (committing nothing) for an offset beyond
        its partition's end offset. Cost: one append to the group's offsets file (and
        its fsync with ``fsync="always"``), under the group lock for a member."""
        self._commit(dict(self._positions() if offsets is None else offsets))

    @_fileutil.translate_errors("consumer")
    def _commit(self, offsets: dict[TopicPartition, int], quiet: bool = False) -> None:
        """With ``quiet`` (auto-commits), a position beyond its partition's end (a
        ``seek`` past it, not read yet) is left out, with a log line, instead of failing
        the commit of the others."""
        if self._store is None:
            raise CommitFailedError("this consumer has no group_id: there is nowhere to "
                                    "commit offsets")
        clean = {}
        for tp, offset in offsets.items():
            tp = TopicPartition(*tp)
            check_int(f"offset for {tp}", offset, 0)
            clean[tp] = offset
        if not clean:
            return
        ends = self._end_offsets(clean)
        for tp, offset in list(clean.items()):
            if offset > ends.get(tp, offset):
                if quiet:
                    _logger.info("auto-commit leaves out %s[%d]: position %d is beyond the "
                                 "end offset %d", tp.topic, tp.partition, offset, ends[tp])
                    del clean[tp]
                    continue
                # Kafka's brokers store such a commit; the consumer that resumes from it
                # then resets, silently rereading or skipping. The end is known here.
                raise OffsetOutOfRangeError(
                    f"cannot commit offset {offset} for {tp.topic}[{tp.partition}]: beyond "
                    f"its end offset {ends[tp]} (a committed offset is the next record to "
                    "read, at most the end)", offset=offset, end_offset=ends[tp])
        if not clean:
            return
        member = self._member
        if member is None:  # manual assignment: not fenced
            self._store.commit(clean, self._clock(), ends=ends)
        else:
            member.commit(self._store, clean, ends)

    def _end_offsets(self, offsets: Mapping[TopicPartition, int]) -> dict[TopicPartition, int]:
        """The end offset of each partition now, for the commit's history entries (what
        ``group_status`` judges lag by). A partition whose end cannot be read (its topic
        was deleted) just gets no entry: the commit itself goes ahead as before. Cost:
        one head read per partition."""
        ends = {}
        for tp in offsets:
            try:
                ends[tp] = self._backend.partition(tp.topic, tp.partition).end_offset
            except (UnknownTopicError, UnknownPartitionError):
                continue
        return ends

    def _commit_quietly(self, offsets: dict[TopicPartition, int] | None) -> None:
        """Auto-commit: positions of records already returned; failures are logged."""
        self._next_auto_commit = time.monotonic() + self._auto_commit_s
        try:
            self._commit(self._positions() if offsets is None else offsets, quiet=True)
        except CommitFailedError as exc:
            _logger.info("auto-commit skipped: %s", exc)

    def commit_async(self, offsets: Mapping[TopicPartition, int] | None = None,
                     callback: CommitCallback | None = None
                     ) -> concurrent.futures.Future[dict[TopicPartition, int]]:
        """Commit in a background thread (commits run in call order); ``callback(offsets,
        error)`` runs in that thread when it is done, and the future resolves likewise."""
        import concurrent.futures  # noqa: PLC0415 - costs `import eventlog` 4 ms

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

    def committed(self, tp: TopicPartition) -> int | None:
        """The group's committed offset of ``tp`` (None if none, or without a group).
        Cost: a stat of the offsets file, and a read of what it gained since."""
        if self._store is None:
            return None
        return self._store.read().get(TopicPartition(*tp))

    # -- closing ------------------------------------------------------------------------

    def close(self, autocommit: bool = True) -> None:
        """Auto-commit (with ``autocommit``), leave the group, stop the commit thread
        (after the commits queued before), forget every partition."""
        try:
            if not self._backend.closed:
                if autocommit and self._auto_commit:
                    self._commit_quietly(None)
                self._leave()
        finally:
            if self._commit_queue is not None:
                self._commit_queue.put(None)
                if self._commit_thread is not None:
                    self._commit_thread.join(10)
            self.fetcher.clear()

    # -- invariants -------------------------------------------------------------------------

    def _check(self) -> None:
        """Assert the invariants of the assignment and membership. Tests call it after
        every change (with the fetcher's and the member's own). Cost: O(partitions)."""
        assigned, owned = self.fetcher.assigned(), self.fetcher.owned()
        assert owned <= assigned, owned - assigned
        assert (self._store is None) == (self.group_id is None)
        assert not self._auto_commit or self._store is not None
        assert self._mode in (None, "subscribe", "assign"), self._mode
        if self._mode != "subscribe":
            assert self._pattern is None
        if self._mode is None:
            assert not assigned and not self._subscription and self._member is None
        elif self._mode == "assign":
            assert self._member is None and not self._subscription
            assert owned == assigned, assigned - owned
        else:
            assert self._subscription or self._pattern is not None, "subscribed to nothing"
            assert self._subscription == sorted(set(self._subscription)), self._subscription
            assert {tp.topic for tp in assigned} <= set(self._subscription), assigned
        member = self._member
        if member is None:
            assert owned == assigned, assigned - owned  # only members wait for owners
        else:
            assert self._mode == "subscribe" and self.group_id == member.group_id
            assert member.topics == self._subscription, (member.topics, self._subscription)
            # exactly the partitions we read are those whose ownership lock we hold
            assert member.owned() == owned, (member.owned(), owned)
