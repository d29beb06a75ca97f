"""KafkaLog, KafkaTopic, KafkaPartition: ``Log``, ``Topic`` and ``Partition`` over an
Apache Kafka cluster.

The façades keep the local classes' names, arguments and errors; each call becomes an
admin request (``_admin.Admin``) with the log's ``request_timeout_ms``. Topic settings are
Kafka topic configs (``_config``); the partitions' offsets come from ``ListOffsets``;
groups are Kafka's consumer groups. What belongs to the brokers (fsync, retention and
compaction runs, checks and repair, a partition's direct append) raises
``UnsupportedOperationError`` saying why.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, NoReturn

from .._format import EncodedBatch
from .._group_admin import ResetTarget, partition_lag
from .._types import Record, TopicPartition
from ..config import TopicConfig, TopicMetadata, _wall_clock_ms, check_int
from ..errors import (
    ClosedError,
    GroupNotEmptyError,
    InvalidConfigError,
    InvalidTopicError,
    ReadOnlyError,
    TopicExistsError,
    UnknownGroupError,
    UnknownPartitionError,
    UnsupportedOperationError,
)
from ..log import GroupDescription, Log, MemberDescription
from ..monitoring import (
    CheckReport,
    GroupStatus,
    LogMetrics,
    PartitionDescription,
    TopicDescription,
)
from ..topic import Partition, Topic, validate_topic_name
from ._admin import Admin
from ._config import client_config, from_kafka, parse_address, to_kafka

__all__ = ["KafkaLog", "KafkaPartition", "KafkaTopic"]

DEFAULT_REQUEST_TIMEOUT_MS = 30_000
_RDKAFKA_CLIENT_ID = "rdkafka"   # librdkafka's client.id default
_LOCAL_ONLY_OPTIONS = {
    "fsync": "durability on a cluster is replication: set acks on the producer and "
             "min.insync.replicas on the topic or broker",
    "fsync_interval_ms": "the brokers flush their logs (log.flush.* broker settings)",
    "recovery": "the brokers recover their own logs",
    "maintenance_interval_ms": "retention and compaction run in the brokers",
}


def unsupported(call: str, why: str) -> NoReturn:
    raise UnsupportedOperationError(f"{call} is not supported on a Kafka cluster: {why}")


class KafkaBackend:
    """``Log.backend`` of a ``KafkaLog``: what the shared client code (``aio``) asks of
    any backend. The storage-level parts of the seam have no meaning on a cluster."""

    def __init__(self, log: KafkaLog) -> None:
        self._log = log
        self.path = log.path
        self.clock: Callable[[], int] = log.clock

    @property
    def closed(self) -> bool:
        return self._log.closed

    @property
    def read_only(self) -> bool:
        return self._log.read_only

    def check_open(self) -> None:
        self._log.check_open()

    def metadata(self, topic: str, refresh: bool = False) -> TopicMetadata:
        return self._log.topic(topic).metadata

    def partition(self, topic: str, partition: int) -> NoReturn:
        unsupported("direct partition access", "partitions live in the brokers; use a "
                    "Producer or Consumer")

    def offset_store(self, group_id: str) -> NoReturn:
        unsupported("the offsets sidecar", "Kafka keeps committed offsets in "
                    "__consumer_offsets; use Consumer.commit or Log.group_offsets")

    def topics(self) -> list[str]:
        return self._log.topics()

    def group_member(self, group_id: str, *, strategy: str, session_timeout_ms: int,
                     max_poll_interval_ms: int, heartbeat_interval_ms: int,
                     instance_id: str | None, partition_count: Callable[[str], int],
                     client_id: str | None = None) -> NoReturn:
        unsupported("local group membership", "Kafka's group coordinator runs groups")

    def producer_id_lock_path(self, producer_id: int) -> NoReturn:
        unsupported("producer id locks", "the brokers fence producers (transactional.id)")

    def transactions(self) -> NoReturn:
        unsupported("the local transaction coordinator", "the brokers' transaction "
                    "coordinator runs transactions (Producer(transactional_id=...))")


class KafkaLog(Log):
    """A ``Log`` over an Apache Kafka cluster: ``eventlog.open("kafka://h:p,...")``.

    Options: ``kafka_config`` (librdkafka settings for every client this log makes:
    security and the like; they win over eventlog's), ``request_timeout_ms`` (30000:
    how long an admin call or a metadata lookup may take before
    ``BrokerUnavailableError``), ``auto_create_topics`` (False: sending to a missing
    topic creates it with the defaults), ``replication_factor`` (-1: the broker's
    ``default.replication.factor``), ``read_only``, ``clock``, and defaults for new
    topics (``partitions``, ``retention_ms``, ...). Thread-safe.
    """

    client_classes: ClassVar[Mapping[str, type]] = {}  # filled in by _kafka._clients

    def __init__(self, url: str, *, kafka_config: Mapping[str, Any] | None = None,
                 request_timeout_ms: int = DEFAULT_REQUEST_TIMEOUT_MS,
                 auto_create_topics: bool = False, replication_factor: int = -1,
                 read_only: bool = False, clock: Callable[[], int] | None = None,
                 partitions: int = 1, **options: Any) -> None:
        for name, why in _LOCAL_ONLY_OPTIONS.items():
            if name in options:
                unsupported(f"the option {name}=", why)
        check_int("request_timeout_ms", request_timeout_ms, 1)
        check_int("partitions", partitions, 1)
        check_int("replication_factor", replication_factor, -1)
        self._topic_defaults = TopicConfig.from_mapping(options)  # validates the names
        self._given_defaults = dict(options)
        self.url = url
        self.path = url
        self.bootstrap_servers = parse_address(url)
        self.kafka_config: dict[str, Any] = dict(kafka_config or {})
        self.request_timeout_s = request_timeout_ms / 1000
        self.auto_create_topics = bool(auto_create_topics)
        self.default_partitions = partitions
        self.replication_factor = replication_factor
        self._read_only = bool(read_only)
        self.clock = clock or _wall_clock_ms
        self._closed = False
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self.admin = Admin(self.client_config(), self.request_timeout_s)
        self.admin.metadata()  # fails now, with BrokerUnavailableError, if nobody answers
        self._backend_facade = KafkaBackend(self)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<eventlog.Log {self.url!r} {state}>"

    def client_config(self, **settings: Any) -> dict[str, Any]:
        """librdkafka settings for a client of this log (``kafka_config`` wins)."""
        return client_config(self.bootstrap_servers, self.kafka_config, **settings)

    # -- state ----------------------------------------------------------------------------

    def check_open(self) -> None:
        """Raise ``ClosedError`` once the log is closed (or used in a forked child)."""
        if self._closed or os.getpid() != self._pid:
            raise ClosedError(f"the log {self.url} is closed")

    def _check_open(self) -> None:
        self.check_open()

    def check_writable(self, what: str) -> None:
        """``ClosedError`` or ``ReadOnlyError`` unless ``what`` may change the cluster."""
        self.check_open()
        if self._read_only:
            raise ReadOnlyError(f"the log {self.url} was opened with read_only=True: "
                                f"{what} is refused")

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def read_only(self) -> bool:
        return self._read_only

    @property
    def failed(self) -> bool:
        return False

    @property
    def backend(self) -> KafkaBackend:
        return self._backend_facade

    # -- topics ---------------------------------------------------------------------------

    def topics(self) -> list[str]:
        """Sorted names of the cluster's topics (without Kafka's internal ``__`` ones)."""
        self.check_open()
        return self.admin.topic_names()

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        self.check_open()
        try:
            validate_topic_name(name)
        except (InvalidConfigError, InvalidTopicError):
            return False
        return self.admin.partition_count(name) is not None

    def topic(self, name: str) -> KafkaTopic:
        """The topic ``name``; raises ``UnknownTopicError`` if the cluster has none
        (creates it with the defaults, with ``auto_create_topics=True``, as on a
        directory)."""
        self.check_open()
        validate_topic_name(name)
        if self.auto_create_topics and self.admin.partition_count(name) is None:
            with contextlib.suppress(TopicExistsError):   # (created meanwhile)
                return self.create_topic(name)
        self.admin.check_topic(name)
        return KafkaTopic(self, name)

    def create_topic(self, name: str, partitions: int | None = None, *,
                     replication_factor: int | None = None, **config: Any) -> KafkaTopic:
        """Create a topic with ``partitions`` partitions and eventlog's topic settings,
        as Kafka topic configs (``retention_ms`` -> ``retention.ms``, ...);
        ``replication_factor`` defaults to the log's. Returns once every partition has
        a leader. Raises ``TopicExistsError``, ``InvalidTopicError``,
        ``InvalidConfigError``."""
        self.check_writable("creating a topic")
        validate_topic_name(name)
        count = self.default_partitions if partitions is None else partitions
        check_int("partitions", count, 1)
        settings = {**self._given_defaults, **config}
        TopicConfig.from_mapping(settings)  # the same checks as a local create
        rf = self.replication_factor if replication_factor is None else replication_factor
        check_int("replication_factor", rf, -1)
        self.admin.create_topic(name, count, rf, to_kafka(settings))
        return KafkaTopic(self, name)

    def delete_topic(self, name: str) -> None:
        """Delete a topic and its records (returns once it is gone from the metadata)."""
        self.check_writable("deleting a topic")
        validate_topic_name(name)
        self.admin.check_topic(name)
        self.admin.delete_topic(name)

    def alter_topic(self, name: str, **config: Any) -> KafkaTopic:
        """Change topic settings (Kafka's incremental alter configs)."""
        self.check_writable("changing a topic")
        topic = self.topic(name)
        TopicConfig.from_mapping(config, topic.config)
        self.admin.alter_topic_configs(name, to_kafka(config))
        return topic

    def describe_topic(self, name: str) -> TopicDescription:
        """Partitions (start and end offsets) and settings. Sizes and segment counts are
        the brokers' own and read as 0 here."""
        topic = self.topic(name)
        bounds = self.admin.bounds(TopicPartition(name, i) for i in range(topic.num_partitions))
        parts = [PartitionDescription(tp.partition, start, end, 0, 0)
                 for tp, (start, end) in sorted(bounds.items())]
        return TopicDescription(name, topic.config, parts)

    def delete_records(self, tp: TopicPartition | tuple[str, int], before_offset: int) -> int:
        """Kafka's deleteRecords: the partition's start offset moves to
        ``before_offset``. Returns the new start offset."""
        self.check_writable("deleting records")
        topic, partition = tp
        check_int("before_offset", before_offset, 0)
        self.topic(topic).partition(partition)
        return self.admin.delete_records(TopicPartition(topic, partition), before_offset)

    def enforce_retention(self, topics: Iterable[str] | None = None) -> NoReturn:
        unsupported("enforce_retention()", "the brokers apply retention on their own "
                    "schedule (log.retention.check.interval.ms)")

    def compact(self, topics: Iterable[str] | None = None) -> NoReturn:
        unsupported("compact()", "the brokers' log cleaner compacts topics with "
                    "cleanup.policy=compact")

    def check(self, fix: bool = False, progress: Callable[[int, int], None] | None = None
              ) -> CheckReport:
        unsupported("check()", "segment files live on the brokers, which verify and "
                    "recover them themselves")

    def metrics(self) -> LogMetrics:
        unsupported("metrics()", "a cluster's metrics come from the brokers (JMX); "
                    "use group_lag() and describe_topic() for offsets and lag")

    def flush(self) -> None:
        unsupported("Log.flush()", "the brokers decide when to fsync; durability comes "
                    "from replication (acks=all, min.insync.replicas)")

    # -- groups -----------------------------------------------------------------------------

    def groups(self) -> list[str]:
        """The cluster's consumer groups."""
        self.check_open()
        return self.admin.group_ids()

    def group_offsets(self, group_id: str) -> dict[TopicPartition, int]:
        """The group's committed offsets (the next offset each partition will read);
        ``UnknownGroupError`` for a group the cluster does not know (Kafka itself
        answers an empty list)."""
        self.check_open()
        offsets = self.admin.group_offsets(group_id)
        if not offsets and group_id not in self.admin.group_ids():
            raise UnknownGroupError(f"no consumer group {group_id!r} in the Kafka cluster")
        return dict(sorted(offsets.items()))

    def group_lag(self, group_id: str) -> dict[TopicPartition, int]:
        """Records the group is behind, by the rule of a log directory
        (``_group_admin.partition_lag``): every partition of every topic it committed
        to or its members are assigned, counted from the start where it has no
        commit in the stored range. Cost: a describe, an OffsetFetch, ListOffsets."""
        committed = self.group_offsets(group_id)
        members = self.admin.describe_group(group_id).members
        topics = {tp.topic for tp in committed} | {
            ktp.topic for m in members for ktp in m.assignment.topic_partitions}
        tps = [TopicPartition(t, p) for t in sorted(topics) if t in self
               for p in range(self.admin.check_topic(t))]
        bounds = self.admin.bounds(tps)
        return {tp: partition_lag(committed.get(tp), *bounds[tp]) for tp in tps}

    def group_status(self, group_id: str, *, window: int = 10) -> GroupStatus:
        unsupported("group_status()", "Burrow's rules need the history of commits, which "
                    "Kafka does not keep; run Burrow against the cluster")

    def describe_group(self, group_id: str) -> GroupDescription:
        """Kafka's description of the group: state, members and their assignments,
        committed offsets and lag. ``status`` is not available (see group_status) and
        reads as OK with no partitions judged."""
        self.check_open()
        desc = self.admin.describe_group(group_id)
        state = str(getattr(desc.state, "name", desc.state)).title()
        if state == "Dead" and not self.group_offsets(group_id):
            raise UnknownGroupError(f"no consumer group {group_id!r} in the Kafka cluster")
        members = [MemberDescription(
            m.member_id, m.group_instance_id, m.client_id,
            sorted({tp.topic for tp in m.assignment.topic_partitions}),
            sorted(TopicPartition(tp.topic, tp.partition)
                   for tp in m.assignment.topic_partitions), True,
            # librdkafka names a client "rdkafka" when it was given no client.id
            None if m.client_id == _RDKAFKA_CLIENT_ID else m.client_id)
            for m in desc.members]
        offsets = self.group_offsets(group_id)
        lag = self.group_lag(group_id)
        status = GroupStatus(group_id, "OK", {}, self.clock(), 0)
        return GroupDescription(group_id, state, 0, desc.partition_assignor or None,
                                members, offsets, lag, status)

    def reset_group_offsets(self, group_id: str, topics: Iterable[str] | None = None, *,
                            to_earliest: bool = False, to_latest: bool = False,
                            to_offset: int | None = None, to_timestamp_ms: int | None = None,
                            shift_by: int | None = None, dry_run: bool = False
                            ) -> dict[TopicPartition, int]:
        """Set a group's committed offsets while it has no live members, as
        ``kafka-consumer-groups.sh --reset-offsets`` does (same targets as locally;
        ``GroupNotEmptyError`` while members are live)."""
        self.check_writable("resetting group offsets")
        target = ResetTarget(to_earliest, to_latest, to_offset, to_timestamp_ms, shift_by)
        committed = self.group_offsets(group_id)
        if topics is None:
            tps = sorted(committed)
        else:
            tps = [TopicPartition(t, i) for t in topics
                   for i in range(self.topic(t).num_partitions)]
        bounds = self.admin.bounds(tps)
        times = self.admin.offsets_for_times({tp: to_timestamp_ms for tp in tps}) \
            if to_timestamp_ms is not None else {}
        new: dict[TopicPartition, int] = {}
        for tp in tps:
            start, end = bounds[tp]
            new[tp] = target.offset(start, end, committed.get(tp), times.get(tp))
        if not dry_run:
            self._check_group_empty(group_id)
            self.admin.alter_group_offsets(group_id, new)
        return new

    def delete_group(self, group_id: str) -> None:
        """Delete a group and its committed offsets (``GroupNotEmptyError`` while it
        has live members, ``UnknownGroupError`` if there is none)."""
        self.check_writable("deleting a group")
        if group_id not in self.groups():
            raise UnknownGroupError(f"no consumer group {group_id!r} in the Kafka cluster")
        self._check_group_empty(group_id)
        self.admin.delete_group(group_id)

    def _check_group_empty(self, group_id: str) -> None:
        desc = self.admin.describe_group(group_id)
        if desc.members:
            raise GroupNotEmptyError(f"group {group_id!r} has {len(desc.members)} live "
                                     "member(s); stop them first")

    # -- closing ------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the log (the clients made from it should be closed first). Idempotent."""
        self._closed = True

    def _abandon(self) -> None:
        self._closed = True


class KafkaTopic(Topic):
    """A topic of a Kafka cluster: name, partitions, settings (read from the cluster at
    each access)."""

    def __init__(self, log: KafkaLog, name: str) -> None:
        self._kafka_log = log
        self.name = name
        self.directory = f"{log.url}/{name}"

    def __repr__(self) -> str:
        return f"<Topic {self.name!r} on {self._kafka_log.url}>"

    @property
    def log(self) -> KafkaLog:
        return self._kafka_log

    def clock(self) -> int:
        return self._kafka_log.clock()

    @property
    def metadata(self) -> TopicMetadata:
        """Partition count and settings, read from the cluster now."""
        self._kafka_log.check_open()
        admin = self._kafka_log.admin
        count = admin.check_topic(self.name)
        return TopicMetadata(self.name, count, from_kafka(admin.topic_configs(self.name)), 0)

    def refresh(self) -> TopicMetadata:
        return self.metadata

    @property
    def config(self) -> TopicConfig:
        return self.metadata.config

    @property
    def num_partitions(self) -> int:
        self._kafka_log.check_open()
        return self._kafka_log.admin.check_topic(self.name)

    @property
    def partitions(self) -> list[Partition]:
        return [KafkaPartition(self, i) for i in range(self.num_partitions)]

    def partition(self, partition_id: int) -> KafkaPartition:
        """Partition ``partition_id``; ``UnknownPartitionError`` if out of range."""
        count = self.num_partitions
        if type(partition_id) is not int or not 0 <= partition_id < count:
            raise UnknownPartitionError(f"topic {self.name!r} has {count} partitions, "
                                        f"no partition {partition_id!r}")
        return KafkaPartition(self, partition_id)

    def add_partitions(self, count: int) -> None:
        """Add ``count`` partitions (Kafka's CreatePartitions; the count never shrinks)."""
        check_int("count", count, 1)
        self._kafka_log.check_writable("adding partitions")
        self._kafka_log.admin.add_partitions(self.name, self.num_partitions + count)


class KafkaPartition(Partition):
    """A partition of a Kafka topic: its offsets. Records go through a Producer and
    come back through a Consumer."""

    def __init__(self, topic: KafkaTopic, partition_id: int) -> None:
        self.topic = topic
        self.id = partition_id
        self._admin = topic.log.admin
        self._check_open = topic.log.check_open

    def __repr__(self) -> str:
        return f"<Partition {self.topic.name}[{self.id}] on Kafka>"

    def bounds(self) -> tuple[int, int]:
        """``(start_offset, end_offset)`` from the partition leader."""
        self._check_open()
        return self._admin.bounds([self.topic_partition])[self.topic_partition]

    @property
    def start_offset(self) -> int:
        """The log start offset, from the partition leader."""
        return self.bounds()[0]

    @property
    def end_offset(self) -> int:
        """The high watermark, from the partition leader."""
        self._check_open()
        return self._admin.end_offsets([self.topic_partition])[self.topic_partition]

    def offset_for_time(self, timestamp_ms: int) -> int | None:
        """The earliest offset with a timestamp >= ``timestamp_ms`` (None if none)."""
        check_int("timestamp_ms", timestamp_ms, 0)
        return self._admin.offsets_for_times({self.topic_partition: timestamp_ms})[
            self.topic_partition]

    def read(self, offset: int, max_records: int | None = None,
             max_bytes: int | None = None) -> list[Record]:
        unsupported("Partition.read()", "reading goes through the brokers' fetch "
                    "protocol; use a Consumer with assign() and seek()")

    def append(self, values: Sequence[bytes | None], **kwargs: Any) -> int:
        unsupported("Partition.append()", "only the partition leader appends; use a "
                    "Producer with partition=")

    def encode(self, values: Sequence[bytes | None], **kwargs: Any) -> EncodedBatch:
        unsupported("Partition.encode()", "Kafka clients build their own record batches")

    def append_encoded(self, batch: EncodedBatch) -> int:
        unsupported("Partition.append_encoded()", "only the partition leader appends; "
                    "use a Producer")

    def roll(self) -> None:
        unsupported("Partition.roll()", "the brokers roll segments (segment.bytes, "
                    "segment.ms)")

