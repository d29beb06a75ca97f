"""The AdminClient calls behind ``KafkaLog``: each with a timeout, each error translated,
and the waits that make a change visible before the call returns (a topic Kafka has
just created is not yet in every broker's metadata)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from typing import Any, TypeVar

from confluent_kafka import ConsumerGroupTopicPartitions, IsolationLevel, KafkaException
from confluent_kafka import TopicPartition as KafkaTP
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported, untyped
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
    ResourceType,
)

from .._types import TopicPartition
from ..errors import BrokerUnavailableError, ClusterError, UnknownTopicError
from ._errors import UNREACHABLE, kafka_errors, translate

_T = TypeVar("_T")
_POLL_S = 0.05
# a partition's leader not known to the broker asked yet (librdkafka does not always
# mark these retriable)
_MOVING_LEADER = frozenset({"NOT_LEADER_FOR_PARTITION", "LEADER_NOT_AVAILABLE",
                            "REPLICA_NOT_AVAILABLE"})
# How long after a change this client made a broker may still answer from before it:
# librdkafka sends each metadata or config request to any broker, and each broker
# replays the controller's records on its own, a moment after the controller answered.
SETTLE_S = 5.0


class Admin:
    """One ``AdminClient`` and the calls eventlog makes with it. Thread-safe
    (librdkafka's admin client is)."""

    def __init__(self, config: dict[str, Any], timeout_s: float) -> None:
        self.timeout_s = timeout_s
        # topic -> when this client created it (until it deletes it): a broker that has
        # not replayed the creation yet must not make it look unknown (partition_count)
        self._created: dict[str, float] = {}
        with kafka_errors("connecting to Kafka"):
            self.client = AdminClient(config)

    def _wait(self, future: Future[_T], what: str) -> _T:
        try:
            return future.result(timeout=self.timeout_s)
        except KafkaException as exc:
            raise translate(exc, what) from exc
        except TimeoutError as exc:
            raise BrokerUnavailableError(f"{what}: no answer from Kafka within "
                                         f"{self.timeout_s:g} s") from exc

    def _until(self, done: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self.timeout_s
        while not done():
            if time.monotonic() > deadline:
                raise BrokerUnavailableError(f"{what}: not visible in the cluster's metadata "
                                             f"after {self.timeout_s:g} s")
            time.sleep(_POLL_S)

    # -- topics -------------------------------------------------------------------------

    def metadata(self, topic: str | None = None) -> Any:
        """Cluster metadata (all topics, or one)."""
        with kafka_errors("reading the cluster's metadata"):
            try:
                return self.client.list_topics(topic, timeout=self.timeout_s)
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                if getattr(error, "code", lambda: None)() in UNREACHABLE:
                    raise BrokerUnavailableError(
                        f"no Kafka broker at {self.client} answered within "
                        f"{self.timeout_s:g} s ({error})") from exc
                raise

    def partition_count(self, topic: str) -> int | None:
        """The partitions of ``topic``, or None if it does not exist. A topic this
        client created less than ``SETTLE_S`` ago is asked for again until a broker
        knows it (or that time is up): the one asked may not have replayed its
        creation yet, and code that creates a topic and then uses it must not see it
        missing."""
        count = self._count(topic)
        created = self._created.get(topic) if count is None else None
        if created is not None:
            while count is None and time.monotonic() < created + SETTLE_S:
                time.sleep(_POLL_S)
                count = self._count(topic)
        return count

    def _count(self, topic: str) -> int | None:
        meta = self.metadata(topic).topics.get(topic)
        if meta is None or meta.error is not None:
            return None
        return len(meta.partitions)

    def topic_names(self) -> list[str]:
        return sorted(name for name, meta in self.metadata().topics.items()
                      if meta.error is None and not name.startswith("__"))

    def create_topic(self, name: str, partitions: int, replication_factor: int,
                     configs: Mapping[str, str]) -> None:
        topic = NewTopic(name, partitions, replication_factor, config=dict(configs))
        futures = self.client.create_topics([topic], request_timeout=self.timeout_s)
        self._wait(futures[name], f"creating topic {name!r}")
        now = time.monotonic()
        # (entries older than SETTLE_S serve no more: dropped, so the table stays small)
        self._created = {t: at for t, at in self._created.items() if now - at < SETTLE_S}
        self._created[name] = now
        self._until(lambda: self._has_leaders(name, partitions), f"topic {name!r}")

    def _has_leaders(self, name: str, partitions: int) -> bool:
        meta = self.metadata(name).topics.get(name)
        return meta is not None and meta.error is None and len(meta.partitions) == partitions \
            and all(p.leader >= 0 for p in meta.partitions.values())

    def delete_topic(self, name: str) -> None:
        futures = self.client.delete_topics([name], request_timeout=self.timeout_s)
        self._wait(futures[name], f"deleting topic {name!r}")
        self._created.pop(name, None)
        self._until(lambda: self._count(name) is None, f"deleting topic {name!r}")

    def add_partitions(self, name: str, total: int) -> None:
        futures = self.client.create_partitions([NewPartitions(name, total)],
                                                request_timeout=self.timeout_s)
        self._wait(futures[name], f"adding partitions to topic {name!r}")
        self._until(lambda: self._has_leaders(name, total), f"partitions of {name!r}")

    def topic_configs(self, name: str) -> dict[str, str | None]:
        resource = ConfigResource(ResourceType.TOPIC, name)
        futures = self.client.describe_configs([resource], request_timeout=self.timeout_s)
        entries = self._wait(futures[resource], f"reading the settings of topic {name!r}")
        return {key: entry.value for key, entry in entries.items()}

    def alter_topic_configs(self, name: str, configs: Mapping[str, str]) -> None:
        entries = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
                   for k, v in configs.items()]
        resource = ConfigResource(ResourceType.TOPIC, name, incremental_configs=entries)
        futures = self.client.incremental_alter_configs([resource],
                                                        request_timeout=self.timeout_s)
        self._wait(futures[resource], f"changing the settings of topic {name!r}")
        # The controller has the change; the brokers apply it as they replay it. Wait
        # (at most SETTLE_S) until the settings read back as set, so that a record sent
        # next meets them: a broker may normalize a value, so a mismatch is no error.
        deadline = time.monotonic() + SETTLE_S
        while time.monotonic() < deadline:
            current = self.topic_configs(name)
            if all(current.get(key) == value for key, value in configs.items()):
                return
            time.sleep(_POLL_S)

    # -- offsets -------------------------------------------------------------------------

    def list_offsets(self, specs: Mapping[TopicPartition, Any], committed: bool = False
                     ) -> dict[TopicPartition, int]:
        """``ListOffsets`` for each partition: ``OffsetSpec.earliest()``, ``.latest()`` or
        ``.for_timestamp(ms)``; -1 where a time lookup found nothing. ``committed``:
        as a read_committed reader sees them (``.latest()`` is then the LSO)."""
        if not specs:
            return {}
        request = {KafkaTP(tp.topic, tp.partition): spec for tp, spec in specs.items()}
        isolation = IsolationLevel.READ_COMMITTED if committed else \
            IsolationLevel.READ_UNCOMMITTED
        deadline = time.monotonic() + self.timeout_s
        while True:
            futures = self.client.list_offsets(request, isolation_level=isolation,
                                               request_timeout=self.timeout_s)
            try:
                return {TopicPartition(ktp.topic, ktp.partition): int(self._wait(
                            f, f"reading offsets of {ktp.topic}[{ktp.partition}]").offset)
                        for ktp, f in futures.items()}
            except ClusterError as exc:
                # NOT_LEADER_FOR_PARTITION and the like, while a topic just created or
                # a new leader is still reaching every broker's metadata: try again,
                # as Java's AdminClient does
                if not (exc.retriable or exc.code in _MOVING_LEADER) or \
                        time.monotonic() > deadline:
                    raise
            time.sleep(_POLL_S)

    def end_offsets(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return self.list_offsets({tp: OffsetSpec.latest()  # type: ignore[no-untyped-call]
                                  for tp in tps})

    def last_stable_offsets(self, tps: Iterable[TopicPartition]
                            ) -> dict[TopicPartition, int]:
        """Each partition's last stable offset: its first offset of an open
        transaction, or its end offset when none is open."""
        return self.list_offsets({tp: OffsetSpec.latest()  # type: ignore[no-untyped-call]
                                  for tp in tps}, committed=True)

    def bounds(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, tuple[int, int]]:
        tps = list(tps)
        start = self.list_offsets({tp: OffsetSpec.earliest() for tp in tps})  # type: ignore[no-untyped-call]
        end = self.list_offsets({tp: OffsetSpec.latest() for tp in tps})  # type: ignore[no-untyped-call]
        return {tp: (start[tp], end[tp]) for tp in tps}

    def offsets_for_times(self, times: Mapping[TopicPartition, int]
                          ) -> dict[TopicPartition, int | None]:
        found = self.list_offsets({tp: OffsetSpec.for_timestamp(ts)
                                   for tp, ts in times.items()})
        return {tp: (None if off < 0 else off) for tp, off in found.items()}

    def delete_records(self, tp: TopicPartition, before_offset: int) -> int:
        futures = self.client.delete_records([KafkaTP(tp.topic, tp.partition, before_offset)],
                                             request_timeout=self.timeout_s)
        deleted = self._wait(next(iter(futures.values())),
                             f"deleting records of {tp.topic}[{tp.partition}]")
        return int(deleted.low_watermark)

    # -- groups --------------------------------------------------------------------------

    def group_ids(self) -> list[str]:
        result = self._wait(self.client.list_consumer_groups(request_timeout=self.timeout_s),
                            "listing consumer groups")
        return sorted(g.group_id for g in result.valid)

    def describe_group(self, group_id: str) -> Any:
        futures = self.client.describe_consumer_groups([group_id],
                                                       request_timeout=self.timeout_s)
        return self._wait(futures[group_id], f"describing group {group_id!r}")

    def group_offsets(self, group_id: str) -> dict[TopicPartition, int]:
        futures = self.client.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group_id)], request_timeout=self.timeout_s)
        result = self._wait(futures[group_id], f"reading offsets of group {group_id!r}")
        return {TopicPartition(ktp.topic, ktp.partition): int(ktp.offset)
                for ktp in result.topic_partitions if ktp.offset >= 0}

    def alter_group_offsets(self, group_id: str, offsets: Mapping[TopicPartition, int]) -> None:
        if not offsets:
            return
        request = ConsumerGroupTopicPartitions(
            group_id, [KafkaTP(tp.topic, tp.partition, off) for tp, off in offsets.items()])
        futures = self.client.alter_consumer_group_offsets([request],
                                                           request_timeout=self.timeout_s)
        result = self._wait(futures[group_id], f"changing offsets of group {group_id!r}")
        for ktp in result.topic_partitions:
            if ktp.error is not None:
                raise translate(ktp.error, f"changing offsets of group {group_id!r}")

    def delete_group(self, group_id: str) -> None:
        futures = self.client.delete_consumer_groups([group_id], request_timeout=self.timeout_s)
        self._wait(futures[group_id], f"deleting group {group_id!r}")

    def check_topic(self, name: str) -> int:
        """The partition count of ``name``; ``UnknownTopicError`` if it does not exist."""
        count = self.partition_count(name)
        if count is None:
            raise UnknownTopicError(f"no topic {name!r} in the Kafka cluster")
        return count
