"""Handlers of the cluster and topic APIs: Metadata, CreateTopics, DeleteTopics,
CreatePartitions, DescribeConfigs and DeleteRecords, over the log's public methods.

This node is the leader and only replica of every partition, and the controller. The
host it advertises is the address the client reached it on (``127.0.0.1`` for the
default loopback listener), never a name that might resolve to ``::1``.
"""

from __future__ import annotations

import uuid
from typing import Any

from ..errors import EventLogError, TopicExistsError, UnknownTopicError
from . import _errors as E
from ._broker import NODE_ID, Broker
from ._server import RequestContext
from ._topic_configs import describe, to_settings

__all__ = ["AdminHandlers"]

_TOPIC_RESOURCE = 2
_ID_NAMESPACE = uuid.UUID("5f0e3c2a-6d1b-4c8e-9a57-0b9a1f2e7c41")  # of eventlog topic ids
_BROKER_RESOURCE = 4


def _message(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


class AdminHandlers:
    """Metadata and topic administration. Thread-safe (the log is)."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._log = broker.log

    def metadata(self, ctx: RequestContext, req: dict[str, Any]) -> dict[str, Any]:
        """Metadata: brokers (this one), topics, partitions (led by this node)."""
        requested = req["topics"]
        auto = req["allow_auto_topic_creation"] and self._broker.auto_create_topics
        if requested is None or (ctx.version == 0 and not requested):
            topics = [self._topic_metadata(name, False) for name in self._log.topics()]
        else:
            topics = [self._topic_metadata(t["name"], auto) if t["name"] is not None
                      else self._by_id(t["topic_id"]) for t in requested]
        return {"brokers": [{"node_id": NODE_ID, "host": ctx.local_host,
                             "port": ctx.local_port, "rack": None}],
                "cluster_id": self._broker.cluster_id, "controller_id": NODE_ID,
                "topics": topics}

    def _topic_metadata(self, name: str, auto_create: bool) -> dict[str, Any]:
        backend = self._log.backend
        try:
            try:
                count = backend.metadata(name).partitions
            except UnknownTopicError:
                if not auto_create:
                    raise
                try:
                    self._log.create_topic(name, self._broker.num_partitions)
                except TopicExistsError:
                    pass  # created meanwhile by another client or process
                count = backend.metadata(name, refresh=True).partitions
        except EventLogError as exc:
            return {"error_code": E.code_for(exc), "name": name, "partitions": []}
        node = [NODE_ID]
        return {"error_code": 0, "name": name, "topic_id": self._topic_id(name),
                "is_internal": False, "partitions": [
            {"error_code": 0, "partition_index": i, "leader_id": NODE_ID, "leader_epoch": 0,
             "replica_nodes": node, "isr_nodes": node, "offline_replicas": []}
            for i in range(count)]}

    def _topic_id(self, name: str) -> uuid.UUID:
        """A topic's id (Metadata v10+): stable for the topic's life, new when a topic of
        the same name is created again, as Kafka's are (eventlog has no ids of its own:
        this one is derived from the log, the name and the creation time)."""
        created = self._log.backend.metadata(name).created_ms
        return uuid.uuid5(_ID_NAMESPACE, f"{self._broker.cluster_id}/{name}/{created}")

    def _by_id(self, topic_id: uuid.UUID | None) -> dict[str, Any]:
        for name in self._log.topics():
            try:
                if topic_id is not None and self._topic_id(name) == topic_id:
                    return self._topic_metadata(name, False)
            except EventLogError:
                continue  # deleted meanwhile
        return {"error_code": E.UNKNOWN_TOPIC_ID, "name": None, "topic_id": topic_id,
                "partitions": []}

    def create_topics(self, ctx: RequestContext, req: dict[str, Any]) -> dict[str, Any]:
        """CreateTopics: one node, so replication factor 1 (or -1, the default)."""
        names = [t["name"] for t in req["topics"]]
        results = []
        for t in req["topics"]:
            name = t["name"]
            if names.count(name) > 1:
                results.append({"name": name, "error_code": E.INVALID_REQUEST,
                                "error_message": "topic named more than once"})
                continue
            code, message = self._create_topic(t, req["validate_only"])
            results.append({"name": name, "error_code": code, "error_message": message})
        return {"topics": results}

    def _create_topic(self, t: dict[str, Any], validate_only: bool) -> tuple[int, str | None]:
        count = t["num_partitions"]
        factor = t["replication_factor"]
        if t["assignments"]:
            if count != -1 or factor != -1:
                return (E.INVALID_REQUEST, "both partition count and replica assignments "
                                           "given")
            for a in t["assignments"]:
                if a["broker_ids"] != [NODE_ID]:
                    return (E.INVALID_REPLICA_ASSIGNMENT,
                            f"replicas {a['broker_ids']} name nodes other than {NODE_ID}")
            count = len(t["assignments"])
        if count == -1:
            count = self._broker.num_partitions
        if count <= 0:
            return E.INVALID_PARTITIONS, "number of partitions must be larger than 0"
        if factor not in (-1, 1):
            return (E.INVALID_REPLICATION_FACTOR,
                    f"replication factor {factor} larger than available brokers: 1")
        try:
            settings = to_settings(t["configs"])
            if validate_only:
                if t["name"] in self._log:
                    return E.TOPIC_ALREADY_EXISTS, f"topic {t['name']!r} already exists"
                return 0, None
            self._log.create_topic(t["name"], count, **settings)
        except EventLogError as exc:
            return E.code_for(exc), _message(exc)
        return 0, None

    def delete_topics(self, ctx: RequestContext, req: dict[str, Any]) -> dict[str, Any]:
        """DeleteTopics: each topic and all its records."""
        out = []
        for name in req["topic_names"]:
            try:
                self._log.delete_topic(name)
                code = 0
            except EventLogError as exc:
                code = E.code_for(exc)
            out.append({"name": name, "error_code": code})
        return {"responses": out}

    def create_partitions(self, ctx: RequestContext, req: dict[str, Any]) -> dict[str, Any]:
        """CreatePartitions: ``count`` is the new total, which never shrinks."""
        out = []
        for t in req["topics"]:
            code, message = self._create_partitions(t, req["validate_only"])
            out.append({"name": t["name"], "error_code": code, "error_message": message})
        return {"results": out}

    def _create_partitions(self, t: dict[str, Any], validate_only: bool
                           ) -> tuple[int, str | None]:
        try:
            topic = self._log.topic(t["name"])
            current = topic.num_partitions
            if t["count"] <= current:
                return (E.INVALID_PARTITIONS, f"topic currently has {current} partitions, "
                                              f"which is not less than {t['count']}")
            if t["assignments"] is not None and (
                    len(t["assignments"]) != t["count"] - current
                    or any(a["broker_ids"] != [NODE_ID] for a in t["assignments"])):
                return E.INVALID_REPLICA_ASSIGNMENT, "invalid replica assignment"
            if not validate_only:
                topic.add_partitions(t["count"] - current)
        except EventLogError as exc:
            return E.code_for(exc), _message(exc)
        return 0, None

    def describe_configs(self, ctx: RequestContext, req: dict[str, Any]) -> dict[str, Any]:
        """DescribeConfigs: a topic's real settings under their Kafka names; a broker
        has none to show."""
        out = []
        for res in req["resources"]:
            rtype, name = res["resource_type"], res["resource_name"]
            entry: dict[str, Any] = {"error_code": 0, "error_message": None,
                                     "resource_type": rtype, "resource_name": name,
                                     "configs": []}
            if rtype == _TOPIC_RESOURCE:
                try:
                    config = self._log.backend.metadata(name).config
                    entry["configs"] = describe(config, res["configuration_keys"])
                except EventLogError as exc:
                    entry.update(error_code=E.code_for(exc), error_message=_message(exc))
            elif rtype != _BROKER_RESOURCE:
                entry.update(error_code=E.INVALID_REQUEST,
                             error_message=f"resource type {rtype} is not supported")
            out.append(entry)
        return {"results": out}

    def delete_records(self, ctx: RequestContext, req: dict[str, Any]) -> dict[str, Any]:
        """DeleteRecords: the log start offset moves up (``-1``: to the high watermark)."""
        topics = []
        for t in req["topics"]:
            parts = []
            for p in t["partitions"]:
                index, offset = p["partition_index"], p["offset"]
                low, code = -1, 0
                try:
                    if offset == -1:
                        offset = self._log.backend.partition(t["name"], index).end_offset
                    if offset < 0:
                        code = E.OFFSET_OUT_OF_RANGE
                    else:
                        low = self._log.delete_records((t["name"], index), offset)
                except EventLogError as exc:
                    code = E.code_for(exc)
                parts.append({"partition_index": index, "low_watermark": low,
                              "error_code": code})
            topics.append({"name": t["name"], "partitions": parts})
        return {"topics": topics}
