"""Descriptions, metrics snapshots and check reports: what a log holds and how it is doing.

``Log.describe_topic``, ``Log.metrics`` and ``Log.check`` return these plain, frozen
data classes; ``to_dict()`` gives JSON-ready dictionaries (for the CLI's ``--json``,
dashboards and alerting). ``eventlog.prometheus`` exposes the same numbers to
Prometheus.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ._offsets import HISTORY_MAX
from ._types import TopicPartition
from .config import TopicConfig

__all__ = ["HISTORY_MAX", "STATUS_VALUES", "CheckReport", "GroupMetrics", "GroupStatus",
           "LogMetrics", "PartitionDescription", "PartitionMetrics", "PartitionStatus",
           "Problem", "TopicDescription", "TopicMetrics"]


def _tp_key(tp: TopicPartition) -> str:
    return f"{tp.topic}:{tp.partition}"


@dataclass(frozen=True)
class PartitionDescription:
    partition: int
    start_offset: int
    end_offset: int
    size_bytes: int   # bytes of stored batches
    segments: int

    @property
    def records(self) -> int:
        """Offsets in [start, end): the records stored, gaps left by compaction
        included."""
        return self.end_offset - self.start_offset


@dataclass(frozen=True)
class TopicDescription:
    name: str
    config: TopicConfig
    partitions: list[PartitionDescription]

    @property
    def size_bytes(self) -> int:
        """Bytes of stored batches, all partitions together."""
        return sum(p.size_bytes for p in self.partitions)

    def to_dict(self) -> dict[str, Any]:
        """This snapshot as plain JSON-ready values (what the CLI's ``--json`` prints)."""
        return {"name": self.name, "config": self.config.to_dict(),
                "size_bytes": self.size_bytes,
                "partitions": [{**asdict(p), "records": p.records} for p in self.partitions]}


@dataclass(frozen=True)
class PartitionMetrics:
    topic: str
    partition: int
    start_offset: int
    end_offset: int
    size_bytes: int
    segments: int
    append_rate: float | None  # records/s since the previous metrics() of this Log
    disk_bytes: int            # space its files take on disk (allocated blocks)


@dataclass(frozen=True)
class TopicMetrics:
    """A topic's partitions summed (``LogMetrics.topics``)."""

    topic: str
    partitions: int
    size_bytes: int            # bytes of stored batches
    disk_bytes: int            # space its partitions' files take on disk


@dataclass(frozen=True)
class GroupMetrics:
    group_id: str
    members: int                              # live members
    offsets: dict[TopicPartition, int]        # committed
    lag: dict[TopicPartition, int]            # end offset - committed
    max_lag: int
    status: GroupStatus                       # Burrow's rules, default window

    def to_dict(self) -> dict[str, Any]:
        """This snapshot as plain JSON-ready values (what the CLI's ``--json`` prints)."""
        return {"group_id": self.group_id, "members": self.members,
                "offsets": {_tp_key(tp): v for tp, v in self.offsets.items()},
                "lag": {_tp_key(tp): v for tp, v in self.lag.items()},
                "max_lag": self.max_lag, "status": self.status.to_dict()}


@dataclass(frozen=True)
class LogMetrics:
    """A snapshot of a whole log: partitions, consumer groups, disk usage.

    The ``fs_`` fields describe the file system holding the log directory (``df``'s
    view): ``fs_free_bytes`` is what the log can still write (blocks reserved for root
    excluded), ``fs_used_ratio`` is used / (used + free), as ``df``'s ``Use%``."""

    timestamp_ms: int
    partitions: list[PartitionMetrics]
    groups: list[GroupMetrics]
    disk_bytes: int            # space the log directory takes on disk (allocated)
    fs_free_bytes: int         # free to the log on its file system
    fs_total_bytes: int        # size of that file system
    fs_used_ratio: float       # share of the file system used, 0.0 .. 1.0

    @property
    def topics(self) -> list[TopicMetrics]:
        """Per topic, its partitions summed, in the order of ``partitions``."""
        sums: dict[str, list[int]] = {}
        for p in self.partitions:
            total = sums.setdefault(p.topic, [0, 0, 0])
            total[0] += 1
            total[1] += p.size_bytes
            total[2] += p.disk_bytes
        return [TopicMetrics(name, *total) for name, total in sums.items()]

    def topic(self, name: str) -> TopicMetrics:
        """The sums of topic ``name`` (``KeyError`` if it has none). Cost: O(topics)."""
        for t in self.topics:
            if t.topic == name:
                return t
        raise KeyError(name)

    def partition(self, topic: str, partition: int) -> PartitionMetrics:
        """The metrics of one partition (``KeyError`` if absent). Cost: O(partitions)."""
        for p in self.partitions:
            if (p.topic, p.partition) == (topic, partition):
                return p
        raise KeyError((topic, partition))

    def group(self, group_id: str) -> GroupMetrics:
        """The metrics of one consumer group (``KeyError`` if absent). Cost: O(groups)."""
        for g in self.groups:
            if g.group_id == group_id:
                return g
        raise KeyError(group_id)

    def to_dict(self) -> dict[str, Any]:
        """This snapshot as plain JSON-ready values (what the CLI's ``--json`` prints)."""
        return {"timestamp_ms": self.timestamp_ms, "disk_bytes": self.disk_bytes,
                "fs_free_bytes": self.fs_free_bytes, "fs_total_bytes": self.fs_total_bytes,
                "fs_used_ratio": self.fs_used_ratio,
                "topics": [asdict(t) for t in self.topics],
                "partitions": [asdict(p) for p in self.partitions],
                "groups": [g.to_dict() for g in self.groups]}


# Statuses as numbers, for Prometheus gauges and exit codes (higher is worse).
STATUS_VALUES = {"OK": 0, "WARN": 1, "STALL": 2, "STOP": 3, "ERR": 2}


@dataclass(frozen=True)
class PartitionStatus:
    """One partition of a group, judged by Burrow's rules (``Log.group_status``).

    ``status`` is "OK", "WARN" (moving, but lag grew at every commit of the window),
    "STALL" (committing the same offset while lag does not fall) or "STOP" (no commit
    for longer than the window spans, with lag); ``lag`` is records behind now and
    ``lag_ms`` the age of the oldest unconsumed record (0 without lag)."""

    topic: str
    partition: int
    status: str
    lag: int
    lag_ms: int
    committed: int | None      # the last committed offset (None: never committed)
    end_offset: int
    commits: int               # commits in the window it was judged on

    def to_dict(self) -> dict[str, Any]:
        """This snapshot as plain JSON-ready values (what the CLI's ``--json`` prints)."""
        return asdict(self)


@dataclass(frozen=True)
class GroupStatus:
    """A group's status: "ERR" if any partition is STALL or STOP, else "WARN" if any is
    WARN, else "OK"; evaluated at ``evaluated_ms`` on the log's clock."""

    group_id: str
    status: str
    partitions: dict[TopicPartition, PartitionStatus]
    evaluated_ms: int
    window: int

    def to_dict(self) -> dict[str, Any]:
        """This snapshot as plain JSON-ready values (what the CLI's ``--json`` prints)."""
        return {"group_id": self.group_id, "status": self.status,
                "evaluated_ms": self.evaluated_ms, "window": self.window,
                "partitions": {_tp_key(tp): p.to_dict() for tp, p in self.partitions.items()}}


@dataclass(frozen=True)
class Problem:
    path: str
    kind: str      # "corrupt", "gap", "index", "leftover", "head", "offsets"
    message: str
    fixed: bool


@dataclass(frozen=True)
class CheckReport:
    """What ``Log.check`` verified and found."""

    problems: list[Problem] = field(default_factory=list)
    segments: int = 0
    batches: int = 0
    records: int = 0
    bytes: int = 0

    @property
    def ok(self) -> bool:
        """True when nothing is wrong (or everything found was fixed)."""
        return all(p.fixed for p in self.problems)

    def to_dict(self) -> dict[str, Any]:
        """This snapshot as plain JSON-ready values (what the CLI's ``--json`` prints)."""
        return {"ok": self.ok, "segments": self.segments, "batches": self.batches,
                "records": self.records, "bytes": self.bytes,
                "problems": [asdict(p) for p in self.problems]}
