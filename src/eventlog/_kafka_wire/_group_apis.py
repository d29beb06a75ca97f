"""Handlers of the group APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat,
LeaveGroup, OffsetCommit, OffsetFetch, ListGroups, DescribeGroups.

Membership is the ``GroupCoordinator``'s. Committed offsets are eventlog's: OffsetCommit
appends to the group's offsets file through ``Backend.offset_store`` (with the end
offsets, so lag history and Burrow-style status work), and OffsetFetch reads it, so
``log.group_offsets``, ``log.group_lag`` and ``eventlog groups`` show what Kafka
clients committed, and a group's offsets reset with ``eventlog groups reset-offsets``
are what its Kafka clients resume from. The metadata string of a commit is not kept
(OffsetFetch answers ``""``).
"""

from __future__ import annotations

import threading
from typing import Any

from .._offsets import OffsetStore
from .._types import TopicPartition
from ..errors import EventLogError, InvalidGroupError
from . import _errors as E
from ._broker import NODE_ID, Broker
from ._group_coordinator import GroupCoordinator
from ._server import RequestContext

__all__ = ["GroupHandlers"]

_GROUP_KEY = 0
_MAX_STORES = 4096


class GroupHandlers:
    """The group APIs. Thread-safe."""

    def __init__(self, broker: Broker, coordinator: GroupCoordinator) -> None:
        self._broker = broker
        self._log = broker.log
        self._backend = broker.log.backend
        self._groups = coordinator
        # One OffsetStore per group, kept: a store reads only what was appended since its
        # last read, where a new one would replay the whole file at every request.
        self._stores: dict[str, OffsetStore] = {}
        self._stores_lock = threading.Lock()

    def _store(self, group_id: str) -> OffsetStore:
        with self._stores_lock:
            store = self._stores.get(group_id)
            if store is None:
                if len(self._stores) >= _MAX_STORES:  # many group ids: start afresh
                    self._stores.clear()
                store = self._stores[group_id] = self._backend.offset_store(group_id)
            return store

    def find_coordinator(self, ctx: RequestContext, req: dict[str, Any]) -> dict[str, Any]:
        """FindCoordinator: this node, for groups; transactions are not served."""
        if req["key_type"] != _GROUP_KEY:
            return {"error_code": E.COORDINATOR_NOT_AVAILABLE, "node_id": -1, "host": "",
                    "port": -1, "error_message": "transactions are not supported"}
        return {"error_code": 0, "error_message": None, "node_id": NODE_ID,
                "host": ctx.local_host, "port": ctx.local_port}

    def join_group(self, ctx: RequestContext, req: dict[str, Any]) -> dict[str, Any]:
        """JoinGroup (blocks until the generation forms)."""
        protocols = [(p["name"], p["metadata"]) for p in req["protocols"]]
        return self._groups.join(
            req["group_id"], req["member_id"], req["group_instance_id"],
            req["session_timeout_ms"], req["rebalance_timeout_ms"], req["protocol_type"],
            protocols, ctx.client_id or "", ctx.client_host, require_member_id=ctx.version >= 4)

    def sync_group(self, ctx: RequestContext, req: dict[str, Any]) -> dict[str, Any]:
        """SyncGroup (blocks until the leader's assignment arrives)."""
        assignments = [(a["member_id"], a["assignment"]) for a in req["assignments"]]
        return self._groups.sync(req["group_id"], req["generation_id"], req["member_id"],
                                 assignments)

    def heartbeat(self, ctx: RequestContext, req: dict[str, Any]) -> dict[str, Any]:
        """Heartbeat."""
        return {"error_code": self._groups.heartbeat(req["group_id"], req["generation_id"],
                                                     req["member_id"])}

    def leave_group(self, ctx: RequestContext, req: dict[str, Any]) -> dict[str, Any]:
        """LeaveGroup: one member (v0-v2) or several (v3)."""
        if ctx.version < 3:
            (code,) = self._groups.leave(req["group_id"], [req["member_id"]])
            return {"error_code": code}
        ids = [m["member_id"] for m in req["members"]]
        codes = self._groups.leave(req["group_id"], ids)
        return {"error_code": 0, "members": [
            {"member_id": m["member_id"], "group_instance_id": m["group_instance_id"],
             "error_code": c} for m, c in zip(req["members"], codes, strict=True)]}

    def offset_commit(self, ctx: RequestContext, req: dict[str, Any]) -> dict[str, Any]:
        """OffsetCommit: checked against the generation, written to eventlog."""
        group_id = req["group_id"]
        code = self._groups.check_commit(group_id, req["generation_id"], req["member_id"])
        codes: dict[tuple[str, int], int] = {}
        offsets: dict[TopicPartition, int] = {}
        ends: dict[TopicPartition, int] = {}
        for t in req["topics"]:
            for p in t["partitions"]:
                key = (t["name"], p["partition_index"])
                codes[key] = code
                if code:
                    continue
                try:
                    end = self._backend.partition(*key).end_offset
                except EventLogError as exc:
                    codes[key] = E.code_for(exc)
                    continue
                if p["committed_offset"] < 0:
                    codes[key] = E.INVALID_COMMIT_OFFSET_SIZE
                    continue
                tp = TopicPartition(*key)
                offsets[tp] = p["committed_offset"]
                ends[tp] = end
        if offsets:
            try:
                self._store(group_id).commit(
                    offsets, self._backend.clock(), req["generation_id"], req["member_id"],
                    ends=ends)
            except EventLogError as exc:
                for tp in offsets:
                    codes[tp] = E.code_for(exc)
        return {"topics": [{"name": t["name"], "partitions": [
            {"partition_index": p["partition_index"],
             "error_code": codes[(t["name"], p["partition_index"])]}
            for p in t["partitions"]]} for t in req["topics"]]}

    def offset_fetch(self, ctx: RequestContext, req: dict[str, Any]) -> dict[str, Any]:
        """OffsetFetch: committed offsets (-1 where none), all of them for null topics."""
        try:
            committed = self._store(req["group_id"]).read()
        except InvalidGroupError:
            return {"topics": [], "error_code": E.INVALID_GROUP_ID}
        except EventLogError as exc:
            return {"topics": [], "error_code": E.code_for(exc)}
        wanted = req["topics"]
        if wanted is None:
            by_topic: dict[str, list[int]] = {}
            for tp in sorted(committed):
                by_topic.setdefault(tp.topic, []).append(tp.partition)
            wanted = [{"name": n, "partition_indexes": ps} for n, ps in by_topic.items()]
        topics = []
        for t in wanted:
            parts = []
            for index in t["partition_indexes"]:
                offset = committed.get(TopicPartition(t["name"], index), -1)
                parts.append({"partition_index": index, "committed_offset": offset,
                              "metadata": "", "error_code": 0})
            topics.append({"name": t["name"], "partitions": parts})
        return {"topics": topics, "error_code": 0}

    def list_groups(self, ctx: RequestContext, req: dict[str, Any]) -> dict[str, Any]:
        """ListGroups: Kafka-client groups, and every group with committed offsets."""
        groups = dict(self._groups.group_ids())
        try:
            for name in self._log.groups():
                groups.setdefault(name, "")
        except EventLogError as exc:
            return {"error_code": E.code_for(exc), "groups": []}
        return {"error_code": 0, "groups": [{"group_id": g, "protocol_type": t}
                                            for g, t in sorted(groups.items())]}

    def describe_groups(self, ctx: RequestContext, req: dict[str, Any]) -> dict[str, Any]:
        """DescribeGroups: state, protocol and members; Empty for a group that has only
        committed offsets, Dead for one that does not exist (as Kafka says)."""
        out = []
        known = set(self._log.groups())
        for group_id in req["groups"]:
            snap = self._groups.snapshot(group_id)
            if snap is not None and (snap.state != "Empty" or group_id not in known):
                out.append({"error_code": 0, "group_id": group_id, "group_state": snap.state,
                            "protocol_type": snap.protocol_type,
                            "protocol_data": snap.protocol, "members": snap.members})
            else:
                state = "Empty" if group_id in known or snap is not None else "Dead"
                out.append({"error_code": 0, "group_id": group_id, "group_state": state,
                            "protocol_type": snap.protocol_type if snap else "",
                            "protocol_data": "", "members": []})
        return {"groups": out}
