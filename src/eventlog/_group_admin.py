"""Consumer-group administration of a log directory: list, describe, lag, status, reset,
delete.

What ``Log.groups``, ``group_offsets``, ``group_lag``, ``group_status``,
``describe_group``, ``reset_group_offsets`` and ``delete_group`` do, and the
offsets-file part of ``Log.check``. It reads and writes the files of ``_group``
(membership) and ``_offsets`` (committed offsets and their history) and the partitions'
bounds through the ``TopicStore``; it never joins a group itself. The status rules are
``_status``'s; this module gathers their inputs.

Lag has one rule, ``partition_lag``, and one scope, ``_group_partitions``, used by
every report (``group_lag``, ``describe_group``, ``group_status``, ``metrics``, the CLI
and the Prometheus exporter): every partition of the group's topics, where the group's
topics are those it has committed offsets for (what Kafka's tools report) and those
its members subscribe to. A partition never committed, or committed outside the range
the partition stores, counts from the partition's start offset: where a consumer of
the group with the default ``auto_offset_reset="earliest"`` would begin reading it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from . import _fileutil, _status
from ._group import GroupFiles, group_names, remove_group_files
from ._offsets import HISTORY_MAX, Commit, OffsetStore, damaged_bytes
from ._partition import PartitionLog, StorageContext
from ._topics import TopicStore
from ._types import TopicPartition
from .config import check_int
from .errors import (
    GroupNotEmptyError,
    InvalidConfigError,
    OffsetOutOfRangeError,
    UnknownGroupError,
    UnknownTopicError,
)
from .monitoring import GroupStatus, PartitionStatus, Problem

__all__ = ["GroupAdmin", "GroupDescription", "MemberDescription", "ResetTarget",
           "partition_lag"]


@dataclass(frozen=True)
class MemberDescription:
    """One member of a consumer group, as ``Log.describe_group`` reports it."""

    member_id: str
    instance_id: str | None
    client: str
    topics: list[str]
    assignment: list[TopicPartition]
    alive: bool
    client_id: str | None = None   # the consumer's client_id (Kafka's client.id)


@dataclass(frozen=True)
class GroupDescription:
    """A consumer group: members, assignment, committed offsets and lag.

    ``state`` is "Stable" (live members), "Empty" (committed offsets, no live member) or
    "Dead" (nothing but files)."""

    group_id: str
    state: str
    generation: int
    strategy: str | None
    members: list[MemberDescription]
    offsets: dict[TopicPartition, int]
    lag: dict[TopicPartition, int]
    status: GroupStatus       # by Burrow's rules, over the default window


class GroupAdmin:
    """The groups of one open log. Thread-safe (each call works on the files)."""

    def __init__(self, path: str, context: StorageContext, topics: TopicStore) -> None:
        self.path = path
        self._context = context
        self._topics = topics
        self._fsync = context.options.fsync == "always"
        self._read_only = context.options.read_only
        self._stores: dict[str, OffsetStore] = {}

    def _files(self, group_id: str, must_exist: bool = True) -> GroupFiles:
        files = GroupFiles(self.path, group_id, self._read_only)
        if must_exist and group_id not in group_names(self.path):
            raise UnknownGroupError(f"consumer group {group_id!r} does not exist in "
                                    f"{self.path}")
        return files

    def _store(self, files: GroupFiles) -> OffsetStore:
        """One store per group: its cache makes repeated reads incremental."""
        store = self._stores.get(files.offsets_path)
        if store is None:
            store = OffsetStore(files.offsets_path, fsync=self._fsync)
            self._stores[files.offsets_path] = store
        return store

    def names(self) -> list[str]:
        return group_names(self.path)

    def live_members(self, group_id: str) -> int:
        return len(GroupFiles(self.path, group_id, self._read_only).live_members())

    def offsets(self, group_id: str) -> dict[TopicPartition, int]:
        """The group's committed offsets, by topic and partition."""
        return dict(sorted(self._store(self._files(group_id)).read().items()))

    def lag(self, group_id: str) -> dict[TopicPartition, int]:
        """Records behind (``partition_lag``) on every partition of the group's topics.
        Cost: the offsets file's new records, the group state, a head read per
        partition."""
        files = self._files(group_id)
        offsets = self._store(files).read()
        return {tp: partition_lag(offsets.get(tp), *plog.bounds())
                for tp, plog in self._group_partitions(files, offsets)}

    def _group_partitions(self, files: GroupFiles, offsets: dict[TopicPartition, int]
                          ) -> list[tuple[TopicPartition, PartitionLog]]:
        """Every partition of the group's topics, in order: the topics it committed
        offsets for and those its members subscribe to. A topic deleted since is left
        out (its offsets are moot)."""
        topics = {tp.topic for tp in offsets}
        for entry in files.read_state()["members"].values():
            topics.update(t for t in entry.get("topics", []) if isinstance(t, str))
        out = []
        for topic in sorted(topics):
            try:
                plogs = self._topics.topic(topic).partition_logs()
            except UnknownTopicError:
                continue
            out += [(TopicPartition(topic, p), plog) for p, plog in enumerate(plogs)]
        return out

    def describe(self, group_id: str) -> GroupDescription:
        files = self._files(group_id)
        state = files.read_state()
        members = []
        for member_id, entry in sorted(state["members"].items()):
            members.append(MemberDescription(
                member_id, entry.get("instance"), entry.get("client", ""),
                list(entry.get("topics", [])),
                [TopicPartition(*tp) for tp in state["assignment"].get(member_id, [])],
                files.member_alive(member_id), entry.get("client_id")))
        offsets = self.offsets(group_id)
        alive = any(m.alive for m in members)
        return GroupDescription(group_id, "Stable" if alive else ("Empty" if offsets
                                                                   else "Dead"),
                                state["generation"], state["strategy"], members, offsets,
                                self.lag(group_id), self.status(group_id))

    def status(self, group_id: str, window: int = _status.DEFAULT_WINDOW) -> GroupStatus:
        """Every partition of the topics the group committed or its members subscribe
        to, judged over its last ``window`` commits (2..``HISTORY_MAX``) by ``_status``
        at the log clock's now. Cost: the offsets file's new records, a head read per
        partition, and one batch read per partition with lag (for ``lag_ms``)."""
        check_int("window", window, 2, HISTORY_MAX)
        files = self._files(group_id)
        offsets, history = self._store(files).read_history()
        now = self._context.clock()
        windows = {tp: commits[-window:] for tp, commits in history.items()}
        span = _status.group_span_ms(windows.values())
        partitions: dict[TopicPartition, PartitionStatus] = {}
        for tp, plog in self._group_partitions(files, offsets):
            partitions[tp] = self._partition_status(tp, plog, offsets.get(tp),
                                                    windows.get(tp, []), span, now)
        return GroupStatus(group_id,
                           _status.group_status(ps.status for ps in partitions.values()),
                           partitions, now, window)

    @staticmethod
    def _partition_status(tp: TopicPartition, plog: PartitionLog, committed: int | None,
                          commits: list[Commit], span_ms: int | None, now: int
                          ) -> PartitionStatus:
        start, end = plog.bounds()
        lag = partition_lag(committed, start, end)
        lag_ms = _record_age_ms(plog, end - lag, now) if lag else 0
        if commits:
            status = _status.partition_status(commits, lag, now)
        else:
            status = _status.uncommitted_status(lag, lag_ms, span_ms)
        return PartitionStatus(tp.topic, tp.partition, status, lag, lag_ms, committed, end,
                               len(commits))

    def reset_offsets(self, group_id: str, topics: Iterable[str] | None, *,
                      to_earliest: bool, to_latest: bool, to_offset: int | None,
                      to_timestamp_ms: int | None, shift_by: int | None, dry_run: bool
                      ) -> dict[TopicPartition, int]:
        target = ResetTarget(to_earliest, to_latest, to_offset, to_timestamp_ms, shift_by)
        files = self._files(group_id, must_exist=topics is None)
        store = self._store(files)
        with files.locked():
            live = files.live_members()
            if live:
                raise GroupNotEmptyError(f"group {group_id!r} has {len(live)} live member(s); "
                                         "stop them before resetting offsets")
            current = store.read()
            if topics is None:
                chosen = sorted(current)
            else:
                chosen = [TopicPartition(t, p) for t in topics
                          for p in range(self._topics.topic(t).metadata().partitions)]
            new: dict[TopicPartition, int] = {}
            ends: dict[TopicPartition, int] = {}
            for tp in chosen:
                plog = self._topics.topic(tp.topic).partition_log(tp.partition)
                start, end = plog.bounds()
                ends[tp] = end
                found = plog.offset_for_time(to_timestamp_ms) \
                    if to_timestamp_ms is not None else None
                new[tp] = target.offset(start, end, current.get(tp), found)
            if not dry_run:
                merged = dict(current)
                merged.update(new)
                # a reset is a commit: each partition reset gets a history entry
                store.replace(merged, self._context.clock(), ends)
        return new

    def delete(self, group_id: str) -> None:
        files = self._files(group_id)
        with files.locked():
            live = files.live_members()
            if live:
                raise GroupNotEmptyError(f"group {group_id!r} has {len(live)} live member(s)")
            remove_group_files(files)

    def check(self, fix: bool) -> list[Problem]:
        """Damaged commit records in each group's offsets file (with ``fix``: rewrite the
        file from its last good commits)."""
        problems = []
        for group in group_names(self.path):
            files = GroupFiles(self.path, group, self._read_only)
            try:
                data = _fileutil.read_file(files.offsets_path, 1 << 30)
            except FileNotFoundError:
                continue
            damaged = damaged_bytes(data)
            if damaged:
                if fix:
                    store = self._store(files)
                    store.replace(store.read(), self._context.clock())
                problems.append(Problem(files.offsets_path, "offsets",
                                        f"{damaged} damaged bytes among the commit records "
                                        "(reads use the last good commit of each "
                                        "partition)", fix))
        return problems


@dataclass(frozen=True)
class ResetTarget:
    """Where ``reset_group_offsets`` moves a group's partitions (Kafka's
    ``--to-earliest``, ``--to-latest``, ``--to-offset``, ``--to-datetime``,
    ``--shift-by``): exactly one of them, checked at construction. The one rule both
    backends apply."""

    to_earliest: bool = False
    to_latest: bool = False
    to_offset: int | None = None
    to_timestamp_ms: int | None = None
    shift_by: int | None = None

    def __post_init__(self) -> None:
        given = [self.to_earliest, self.to_latest, self.to_offset is not None,
                 self.to_timestamp_ms is not None, self.shift_by is not None]
        if sum(bool(g) for g in given) != 1:
            raise InvalidConfigError("give exactly one of to_earliest, to_latest, to_offset, "
                                     "to_timestamp_ms, shift_by")
        for name, value in (("to_offset", self.to_offset),
                            ("to_timestamp_ms", self.to_timestamp_ms),
                            ("shift_by", self.shift_by)):
            check_int(name, value, -(2**63), optional=True)

    def offset(self, start: int, end: int, committed: int | None,
               found: int | None) -> int:
        """The new offset of a partition storing ``[start, end)``, now committed at
        ``committed`` (None: never), where ``found`` is its first offset at or after
        ``to_timestamp_ms`` (None: none). Kept within ``[start, end]``. O(1)."""
        if self.to_earliest:
            offset = start
        elif self.to_latest:
            offset = end
        elif self.to_offset is not None:
            offset = self.to_offset
        elif self.to_timestamp_ms is not None:
            offset = end if found is None else found
        else:
            assert self.shift_by is not None
            offset = (start if committed is None else committed) + self.shift_by
        return min(max(offset, start), end)


def partition_lag(committed: int | None, start: int, end: int) -> int:
    """Records a group is behind on a partition storing ``[start, end)``: ``end`` minus
    where the group would read next. That is the committed offset if it lies in
    ``[start, end]``; otherwise (never committed, records deleted under it by retention,
    or beyond the end, as after the topic was recreated) the start offset, where
    ``auto_offset_reset="earliest"`` resumes. O(1).

    >>> partition_lag(None, 0, 5), partition_lag(2, 0, 5), partition_lag(9, 0, 5)
    (5, 3, 5)
    """
    position = committed if committed is not None and start <= committed <= end else start
    return max(0, end - position)


def _record_age_ms(plog: PartitionLog, offset: int, now: int) -> int:
    """How long ago (on the log clock) the first record at or after ``offset`` was
    written; 0 if there is none. Cost: one fetch of one batch."""
    try:
        batches = plog.fetch(offset, max_bytes=1, max_records=1)
    except OffsetOutOfRangeError:  # retention moved the start meanwhile
        return 0
    for batch in batches:
        i = batch.index_of(offset)
        if i < batch.header.record_count:
            return max(0, now - batch.timestamps()[i])
    return 0
