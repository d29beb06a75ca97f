"""Kafka topic config names (``retention.ms``...) to eventlog topic settings and back.

A Kafka client creating a topic passes configs as strings; each one eventlog has is
translated to its setting (``-1`` retention means "keep forever", ``None`` here). Kafka
configs that mean nothing on one node without replication (``min.insync.replicas``,
``unclean.leader.election.enable``, ...) are accepted and ignored, as a single-broker
cluster would in effect ignore them; any other name is ``INVALID_CONFIG``, as Kafka says.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..config import TopicConfig
from ..errors import InvalidConfigError

__all__ = ["IGNORED", "describe", "to_settings"]

_LONG_MAX = 2**63 - 1


def _int(text: str) -> int:
    return int(text)


def _forever(text: str) -> int | None:
    n = int(text)
    return None if n < 0 else n


def _segment_ms(text: str) -> int | None:
    n = int(text)
    return None if n >= _LONG_MAX else n


def _policy(text: str) -> str:
    parts = sorted(p.strip() for p in text.split(","))
    return ",".join(parts)


def _ts_type(text: str) -> str:
    try:
        return {"CreateTime": "create_time", "LogAppendTime": "log_append_time"}[text]
    except KeyError:
        raise ValueError(f"message.timestamp.type must be CreateTime or LogAppendTime, "
                         f"not {text!r}") from None


def _show_forever(v: Any) -> str:
    return "-1" if v is None else str(v)


# Kafka name -> (eventlog setting, parse, show)
_MAP: dict[str, tuple[str, Callable[[str], Any], Callable[[Any], str]]] = {
    "cleanup.policy": ("cleanup_policy", _policy, str),
    "retention.ms": ("retention_ms", _forever, _show_forever),
    "retention.bytes": ("retention_bytes", _forever, _show_forever),
    "segment.bytes": ("segment_bytes", _int, str),
    "segment.ms": ("segment_ms", _segment_ms,
                   lambda v: str(_LONG_MAX) if v is None else str(v)),
    "max.message.bytes": ("max_message_bytes", _int, str),
    "index.interval.bytes": ("index_interval_bytes", _int, str),
    "delete.retention.ms": ("delete_retention_ms", _int, str),
    "min.compaction.lag.ms": ("min_compaction_lag_ms", _int, str),
    "min.cleanable.dirty.ratio": ("min_cleanable_dirty_ratio", float, str),
    "message.timestamp.type": ("timestamp_type", _ts_type,
                               lambda v: "LogAppendTime" if v == "log_append_time"
                               else "CreateTime"),
}

IGNORED = frozenset((
    "compression.type", "file.delete.delay.ms", "flush.messages", "flush.ms",
    "follower.replication.throttled.replicas", "leader.replication.throttled.replicas",
    "local.retention.bytes", "local.retention.ms", "max.compaction.lag.ms",
    "message.downconversion.enable", "message.format.version",
    "message.timestamp.after.max.ms", "message.timestamp.before.max.ms",
    "message.timestamp.difference.max.ms", "min.insync.replicas", "preallocate",
    "remote.storage.enable", "segment.index.bytes", "segment.jitter.ms",
    "unclean.leader.election.enable",
))


def to_settings(configs: list[dict[str, Any]]) -> dict[str, Any]:
    """eventlog settings for Kafka ``configs`` (``[{"name", "value"}]``); raises
    ``InvalidConfigError`` for an unknown name or a value that does not parse."""
    out: dict[str, Any] = {}
    for c in configs:
        name, value = c["name"], c["value"]
        if name in IGNORED:
            continue
        entry = _MAP.get(name)
        if entry is None:
            raise InvalidConfigError(f"unknown topic config {name!r}")
        if value is None:
            continue  # null: the default
        setting, parse, _ = entry
        try:
            out[setting] = parse(value)
        except ValueError as exc:
            raise InvalidConfigError(f"invalid value {value!r} for {name}: {exc}") from exc
    TopicConfig.from_mapping(out)  # validates ranges before anything is created
    return out


def describe(config: TopicConfig, keys: list[str] | None) -> list[dict[str, Any]]:
    """DescribeConfigs entries of a topic's real settings (``keys``: only those)."""
    defaults = TopicConfig()
    out = []
    for name, (setting, _, show) in sorted(_MAP.items()):
        if keys is not None and name not in keys:
            continue
        value = getattr(config, setting)
        is_default = value == getattr(defaults, setting)
        source = 5 if is_default else 1  # DEFAULT_CONFIG / DYNAMIC_TOPIC_CONFIG
        out.append({"name": name, "value": show(value), "read_only": False,
                    "is_default": is_default, "config_source": source,
                    "is_sensitive": False,
                    "synonyms": [{"name": name, "value": show(value), "source": source}]})
    return out
