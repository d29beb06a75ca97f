"""Consumer-group administration of a log directory: list, describe, lag, reset, delete.

What ``Log.groups``, ``group_offsets``, ``group_lag``, ``describe_group``,
``reset_group_offsets`` and ``delete_group`` do, and the offsets-file part of
``Log.check``. It reads and writes the files of ``_group`` (membership) and
``_offsets`` (committed offsets) and the partitions' bounds through the
``TopicStore``; it never joins a group itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from . import _fileutil
from ._group import GroupFiles, group_names, remove_group_files
from ._offsets import OffsetStore, damaged_bytes
from ._partition import StorageContext
from ._topics import TopicStore
from ._types import TopicPartition
from .config import check_int
from .errors import GroupNotEmptyError, InvalidConfigError, UnknownGroupError, UnknownTopicError
from .monitoring import Problem

__all__ = ["GroupAdmin", "GroupDescription", "MemberDescription"]


@dataclass(frozen=True)
class MemberDescription:
    """One member of a consumer group, as ``Log.describe_group`` reports it."""

    member_id: str
    instance_id: str | None
    client: str
    topics: list[str]
    assignment: list[TopicPartition]
    alive: bool


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


class GroupAdmin:
    """The groups of one open log. Thread-safe (each call works on the files)."""

    def __init__(self, path: str, context: StorageContext, topics: TopicStore) -> None:
        self.path = path
        self._context = context
        self._topics = topics
        self._fsync = context.options.fsync == "always"
        self._stores: dict[str, OffsetStore] = {}

    def _files(self, group_id: str, must_exist: bool = True) -> GroupFiles:
        files = GroupFiles(self.path, group_id)
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
        return len(GroupFiles(self.path, group_id).live_members())

    def offsets(self, group_id: str) -> dict[TopicPartition, int]:
        return self._store(self._files(group_id)).read()

    def lag(self, group_id: str) -> dict[TopicPartition, int]:
        out = {}
        for tp, committed in self.offsets(group_id).items():
            try:
                end = self._topics.topic(tp.topic).partition_log(tp.partition).end_offset
            except (UnknownTopicError, IndexError):
                continue
            out[tp] = max(0, end - committed)
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
                files.member_alive(member_id)))
        offsets = self.offsets(group_id)
        alive = any(m.alive for m in members)
        return GroupDescription(group_id, "Stable" if alive else ("Empty" if offsets
                                                                   else "Dead"),
                                state["generation"], state["strategy"], members, offsets,
                                self.lag(group_id))

    def reset_offsets(self, group_id: str, topics: Iterable[str] | None, *,
                      to_earliest: bool, to_latest: bool, to_offset: int | None,
                      to_timestamp_ms: int | None, shift_by: int | None, dry_run: bool
                      ) -> dict[TopicPartition, int]:
        targets = [to_earliest, to_latest, to_offset is not None,
                   to_timestamp_ms is not None, shift_by is not None]
        if sum(bool(t) for t in targets) != 1:
            raise InvalidConfigError("give exactly one of to_earliest, to_latest, to_offset, "
                                     "to_timestamp_ms, shift_by")
        for name, value in (("to_offset", to_offset), ("to_timestamp_ms", to_timestamp_ms),
                            ("shift_by", shift_by)):
            check_int(name, value, -(2**63), optional=True)
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
            for tp in chosen:
                plog = self._topics.topic(tp.topic).partition_log(tp.partition)
                start, end = plog.bounds()
                if to_earliest:
                    offset = start
                elif to_latest:
                    offset = end
                elif to_offset is not None:
                    offset = to_offset
                elif to_timestamp_ms is not None:
                    found = plog.offset_for_time(to_timestamp_ms)
                    offset = end if found is None else found
                else:
                    assert shift_by is not None
                    offset = current.get(tp, start) + shift_by
                new[tp] = min(max(offset, start), end)
            if not dry_run:
                merged = dict(current)
                merged.update(new)
                store.replace(merged, self._context.clock())
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
            files = GroupFiles(self.path, group)
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
