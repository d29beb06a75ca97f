"""Settings on a Kafka cluster: eventlog's topic settings as Kafka's topic configs, the
``kafka://`` address, and the librdkafka configuration of the clients.

Topic settings map one to one, with Kafka's conventions: ``None`` (keep forever) is
``-1``, ``timestamp_type`` is ``CreateTime`` or ``LogAppendTime``. A Kafka config with
no eventlog setting is left to the broker's default.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from .._group import validate_group_id
from ..config import TopicConfig
from ..errors import InvalidConfigError

SCHEME = "kafka://"
# librdkafka's log lines (connection refused, retries, ...) go to Python's logging
# rather than straight to stderr.
_LOGGER = logging.getLogger("eventlog.kafka")

#: eventlog topic setting -> Kafka topic config
TOPIC_CONFIGS: dict[str, str] = {
    "segment_bytes": "segment.bytes",
    "segment_ms": "segment.ms",
    "retention_ms": "retention.ms",
    "retention_bytes": "retention.bytes",
    "cleanup_policy": "cleanup.policy",
    "max_message_bytes": "max.message.bytes",
    "index_interval_bytes": "index.interval.bytes",
    "delete_retention_ms": "delete.retention.ms",
    "min_compaction_lag_ms": "min.compaction.lag.ms",
    "min_cleanable_dirty_ratio": "min.cleanable.dirty.ratio",
    "timestamp_type": "message.timestamp.type",
}
_TIMESTAMP_TYPES = {"create_time": "CreateTime", "log_append_time": "LogAppendTime"}
_FOREVER = ("retention_ms", "retention_bytes", "segment_ms")


def check_membership(group_id: str | None, group_instance_id: str | None) -> None:
    """A consumer's ``group_id`` and static ``group_instance_id``, checked as on a log
    directory: ``InvalidGroupError`` for a bad name, ``InvalidConfigError`` for an
    instance id without a group."""
    if group_instance_id is not None:
        if group_id is None:
            raise InvalidConfigError("group_instance_id needs a group_id")
        validate_group_id(group_instance_id, "group_instance_id")
    if group_id is not None:
        validate_group_id(group_id)


def parse_address(url: str) -> str:
    """``kafka://h1:9092,h2:9092`` -> ``h1:9092,h2:9092`` (bootstrap servers)."""
    servers = url[len(SCHEME):].strip("/")
    hosts = [h.strip() for h in servers.split(",") if h.strip()]
    if not url.startswith(SCHEME) or not hosts:
        raise InvalidConfigError(f"a Kafka address looks like kafka://host:port[,host:port...],"
                                 f" not {url!r}")
    for host in hosts:
        name, _, port = host.rpartition(":")
        if not name or not port.isdigit():
            raise InvalidConfigError(f"{url!r}: {host!r} is not host:port")
    return ",".join(hosts)


def to_kafka(config: Mapping[str, Any]) -> dict[str, str]:
    """eventlog topic settings (already validated by ``TopicConfig``) -> Kafka configs."""
    out: dict[str, str] = {}
    for name, value in config.items():
        if name == "timestamp_type":
            out[TOPIC_CONFIGS[name]] = _TIMESTAMP_TYPES[value]
        elif value is None and name in _FOREVER:
            out[TOPIC_CONFIGS[name]] = "-1" if name != "segment_ms" else str(7 * 86_400_000)
        else:
            out[TOPIC_CONFIGS[name]] = str(value)
    return out


def from_kafka(configs: Mapping[str, str | None]) -> TopicConfig:
    """Kafka topic configs (name -> value, as ``describe_configs`` gives them) ->
    ``TopicConfig``; Kafka values eventlog cannot hold keep eventlog's default."""
    values: dict[str, Any] = {}
    defaults = TopicConfig()
    for name, kafka_name in TOPIC_CONFIGS.items():
        raw = configs.get(kafka_name)
        if raw is None:
            continue
        parse: Callable[[str], Any]
        if name == "timestamp_type":
            reverse = {v: k for k, v in _TIMESTAMP_TYPES.items()}
            if raw in reverse:
                values[name] = reverse[raw]
            continue
        if name == "cleanup_policy":
            policy = ",".join(sorted(p.strip() for p in raw.split(",")))
            values[name] = {"compact,delete": "compact,delete"}.get(policy, policy)
            continue
        parse = float if name == "min_cleanable_dirty_ratio" else int
        try:
            number = parse(raw)
        except ValueError:
            continue
        if name in _FOREVER and number < 0:
            values[name] = None
        elif name == "segment_ms" and number == 7 * 86_400_000:
            values[name] = None  # Kafka's default: roll weekly, as eventlog's "never" maps
        else:
            values[name] = number
    try:
        return TopicConfig.from_mapping(values)
    except InvalidConfigError:
        # a cluster's values outside eventlog's ranges: keep what fits, one by one
        fitting: dict[str, Any] = {}
        for name, value in values.items():
            try:
                TopicConfig.from_mapping({**fitting, name: value})
            except InvalidConfigError:
                continue
            fitting[name] = value
        return TopicConfig.from_mapping(fitting) if fitting else defaults


def client_config(bootstrap: str, user: Mapping[str, Any] | None,
                  **settings: Any) -> dict[str, Any]:
    """librdkafka settings: the bootstrap servers and ``settings`` (what eventlog's own
    options decide), then the user's ``kafka_config`` (security and the like), which
    wins: it is the user's explicit word."""
    config: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": _LOGGER}
    config.update(settings)
    config.update(user or {})
    return config
