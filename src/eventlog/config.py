"""Topic and log settings: names with units, defaults, validation, persistence.

A topic's configuration is a ``TopicConfig``, stored as JSON in the topic's
directory (written to a temp file, fsynced, renamed) so it survives reopen. Log
options (``LogOptions``) belong to one ``eventlog.open`` call and are not stored.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidConfigError

__all__ = ["FSYNC_MODES", "LogOptions", "TopicConfig"]

MiB = 2**20

# Segments index positions with 32-bit integers; Kafka caps segment.bytes the same way.
MAX_SEGMENT_BYTES = 2**30
MIN_SEGMENT_BYTES = 128
FSYNC_MODES = ("never", "interval", "always")
CLEANUP_POLICIES = ("delete", "compact", "compact,delete")
TIMESTAMP_TYPES = ("create_time", "log_append_time")
RECOVERY_MODES = ("strict", "truncate")


def check_int(name: str, value: Any, lo: int, hi: int | None = None,
               optional: bool = False) -> None:
    if value is None and optional:
        return
    if type(value) is not int:
        kind = "an int or None" if optional else "an int"
        raise InvalidConfigError(f"{name} must be {kind}, not {value!r}")
    if value < lo or (hi is not None and value > hi):
        upper = f" and at most {hi}" if hi is not None else ""
        raise InvalidConfigError(f"{name} must be at least {lo}{upper}, not {value}")


# Kafka's topic-level config names (kafka-topics --config, AdminClient) and the
# TopicConfig field each one is: the one table the library and the CLI both use.
KAFKA_TOPIC_SETTINGS = {
    "cleanup.policy": "cleanup_policy",
    "delete.retention.ms": "delete_retention_ms",
    "index.interval.bytes": "index_interval_bytes",
    "max.message.bytes": "max_message_bytes",
    "message.timestamp.type": "timestamp_type",
    "min.cleanable.dirty.ratio": "min_cleanable_dirty_ratio",
    "min.compaction.lag.ms": "min_compaction_lag_ms",
    "retention.bytes": "retention_bytes",
    "retention.ms": "retention_ms",
    "segment.bytes": "segment_bytes",
    "segment.ms": "segment_ms",
}
# Kafka's spellings of values: message.timestamp.type's, and -1 ("no limit") for the
# retention limits given by their Kafka names.
_KAFKA_TIMESTAMP_TYPES = {"CreateTime": "create_time", "LogAppendTime": "log_append_time"}
_KAFKA_UNLIMITED = ("retention.ms", "retention.bytes")


def setting_name(name: str) -> str:
    """The ``TopicConfig`` field a setting names: its own name, or Kafka's dotted
    name (``retention.ms`` is ``retention_ms``, ``message.timestamp.type`` is
    ``timestamp_type``; see ``KAFKA_TOPIC_SETTINGS``). Raises ``InvalidConfigError``
    for an unknown name, listing the known ones."""
    if name in TopicConfig.names():
        return name
    key = name.strip().lower() if isinstance(name, str) else name
    if key in KAFKA_TOPIC_SETTINGS:
        return KAFKA_TOPIC_SETTINGS[key]
    if key in TopicConfig.names():
        return str(key)
    known = ", ".join(sorted(TopicConfig.names()))
    raise InvalidConfigError(f"unknown topic setting {name!r} (known: {known}, or Kafka's "
                             f"dotted names: {', '.join(sorted(KAFKA_TOPIC_SETTINGS))})")


def topic_settings(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with Kafka's names and value spellings (``retention.ms=-1``,
    ``message.timestamp.type="LogAppendTime"``) turned into ``TopicConfig``'s.
    Raises ``InvalidConfigError`` for an unknown name or a setting given twice."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        key = setting_name(name)
        if key in out:
            raise InvalidConfigError(f"topic setting {key} is given twice (as {name!r} "
                                     "and under its other name)")
        if isinstance(name, str) and name.strip().lower() in _KAFKA_UNLIMITED \
                and value == -1 and type(value) is int:
            value = None
        if key == "timestamp_type" and value in _KAFKA_TIMESTAMP_TYPES:
            value = _KAFKA_TIMESTAMP_TYPES[value]
        out[key] = value
    return out


MAX_CLIENT_ID_CHARS = 255


def check_client_id(client_id: object) -> str | None:
    """A ``client_id`` (Kafka's ``client.id``): None, or a str of 1 to 255 printable
    characters naming the application in ``groups describe`` and in metrics."""
    if client_id is None:
        return None
    if not isinstance(client_id, str) or not client_id \
            or len(client_id) > MAX_CLIENT_ID_CHARS or not client_id.isprintable():
        raise InvalidConfigError(f"client_id must be a str of 1 to {MAX_CLIENT_ID_CHARS} "
                                 f"printable characters, not {client_id!r}")
    return client_id


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InvalidConfigError(f"{name} must be one of {', '.join(map(repr, choices))}, "
                                 f"not {value!r}")


@dataclass(frozen=True)
class TopicConfig:
    """Settings of one topic. Every name carries its unit.

    ``None`` for a retention limit means "keep forever".
    """

    segment_bytes: int = 64 * MiB          # roll the active segment at this size
    segment_ms: int | None = None          # ... or when it is this old (None: never)
    retention_ms: int | None = None        # delete closed segments older than this
    retention_bytes: int | None = None     # ... or beyond this partition size
    cleanup_policy: str = "delete"         # "delete", "compact" or "compact,delete"
    max_message_bytes: int = 1 * MiB       # largest serialized record (key+value+headers)
    index_interval_bytes: int = 4096       # bytes between sparse index entries
    delete_retention_ms: int = 86_400_000  # how long compaction keeps tombstones
    min_compaction_lag_ms: int = 0         # records younger than this are not compacted
    min_cleanable_dirty_ratio: float = 0.5  # compact at roll once this share is uncleaned
    timestamp_type: str = "create_time"    # or "log_append_time"

    def __post_init__(self) -> None:
        check_int("segment_bytes", self.segment_bytes, MIN_SEGMENT_BYTES, MAX_SEGMENT_BYTES)
        check_int("segment_ms", self.segment_ms, 1, optional=True)
        check_int("retention_ms", self.retention_ms, 0, optional=True)
        check_int("retention_bytes", self.retention_bytes, 0, optional=True)
        _check_choice("cleanup_policy", self.cleanup_policy, CLEANUP_POLICIES)
        check_int("max_message_bytes", self.max_message_bytes, 1, MAX_SEGMENT_BYTES)
        check_int("index_interval_bytes", self.index_interval_bytes, 1, MAX_SEGMENT_BYTES)
        check_int("delete_retention_ms", self.delete_retention_ms, 0)
        check_int("min_compaction_lag_ms", self.min_compaction_lag_ms, 0)
        ratio = self.min_cleanable_dirty_ratio
        if type(ratio) not in (int, float) or not 0 <= ratio <= 1:
            raise InvalidConfigError(f"min_cleanable_dirty_ratio must be a number in [0, 1], "
                                     f"not {ratio!r}")
        _check_choice("timestamp_type", self.timestamp_type, TIMESTAMP_TYPES)

    @classmethod
    def names(cls) -> frozenset[str]:
        """The names of every setting (the dataclass's fields)."""
        return frozenset(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], base: TopicConfig | None = None
                     ) -> TopicConfig:
        """Build a config from ``values`` over ``base``; the names are ``TopicConfig``'s
        or Kafka's dotted ones (``topic_settings``); unknown names are an error."""
        return dataclasses.replace(base or cls(), **topic_settings(values))

    def to_dict(self) -> dict[str, Any]:
        """Every setting by name, as stored in ``topic.json``."""
        return dataclasses.asdict(self)

    @property
    def compacted(self) -> bool:
        """True when the cleanup policy includes key compaction."""
        return "compact" in self.cleanup_policy


@dataclass(frozen=True)
class TopicMetadata:
    """What is stored in a topic's ``topic.json``: its partition count and config."""

    name: str
    partitions: int
    config: TopicConfig
    created_ms: int

    def to_json(self) -> bytes:
        doc = {"format": 1, "name": self.name, "partitions": self.partitions,
               "created_ms": self.created_ms, "config": self.config.to_dict()}
        return json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes, source: str) -> TopicMetadata:
        try:
            doc = json.loads(data)
            if doc.get("format") != 1:
                raise InvalidConfigError(f"{source}: unsupported format {doc.get('format')!r}")
            partitions = doc["partitions"]
            check_int("partitions", partitions, 1)
            config = TopicConfig.from_mapping(doc["config"])
            return cls(str(doc["name"]), partitions, config, int(doc.get("created_ms", 0)))
        except InvalidConfigError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidConfigError(f"{source} is not a valid topic file: {exc}") from exc


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class LogOptions:
    """Options of one ``eventlog.open`` call (not stored in the directory).

    fsync              "never": the OS writes pages back when it likes; survives a
                       process crash. "interval": also fsync every fsync_interval_ms
                       (from a background thread). "always": fsync before an append
                       returns (before a send future resolves).
    recovery           "strict": corruption of data that was already durable raises
                       CorruptRecordError on open. "truncate": cut the log at the
                       corruption (the cut bytes are moved aside, never deleted).
    auto_create_topics create a topic on first use by a producer or consumer.
    read_only          open without creating, writing or locking any file (a read-only
                       mount, or beside running writers): nothing is recovered, and
                       producing, committing and every change raise ReadOnlyError.
    clock              a callable returning epoch milliseconds (tests set time with it).
    topic_defaults     TopicConfig used for topics created through this Log.
    default_partitions partitions of auto-created topics and create_topic's default.
    """

    fsync: str = "interval"
    fsync_interval_ms: int = 1000
    recovery: str = "strict"
    auto_create_topics: bool = False
    read_only: bool = False
    clock: Callable[[], int] = _wall_clock_ms
    topic_defaults: TopicConfig = field(default_factory=TopicConfig)
    default_partitions: int = 1

    def __post_init__(self) -> None:
        _check_choice("fsync", self.fsync, FSYNC_MODES)
        check_int("fsync_interval_ms", self.fsync_interval_ms, 1)
        _check_choice("recovery", self.recovery, RECOVERY_MODES)
        if type(self.auto_create_topics) is not bool:
            raise InvalidConfigError("auto_create_topics must be a bool")
        if type(self.read_only) is not bool:
            raise InvalidConfigError("read_only must be a bool")
        if not callable(self.clock):
            raise InvalidConfigError("clock must be a callable returning epoch milliseconds")
        check_int("default_partitions", self.default_partitions, 1)

    @classmethod
    def from_kwargs(cls, options: Mapping[str, Any]) -> LogOptions:
        """Split ``eventlog.open(**options)`` into log options and topic defaults."""
        own = {f.name for f in dataclasses.fields(cls)} - {"topic_defaults", "default_partitions"}
        log_kwargs = {k: v for k, v in options.items() if k in own}
        rest = {k: v for k, v in options.items() if k not in own}
        partitions = rest.pop("partitions", 1)
        if log_kwargs.get("clock") is None:
            log_kwargs.pop("clock", None)
        unknown = [k for k in rest
                   if k not in TopicConfig.names() and k not in KAFKA_TOPIC_SETTINGS]
        if unknown:
            raise InvalidConfigError(f"unknown option(s) for eventlog.open: "
                                     f"{', '.join(sorted(unknown))}")
        return cls(**log_kwargs, topic_defaults=TopicConfig.from_mapping(rest),
                   default_partitions=partitions)
