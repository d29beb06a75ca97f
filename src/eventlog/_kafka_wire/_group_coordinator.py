"""The group coordinator for Kafka-client consumer groups: Kafka's classic protocol.

The states and transitions of Kafka's ``GroupCoordinator``::

    Empty --JoinGroup--> PreparingRebalance --all joined / rebalance timeout-->
    CompletingRebalance --leader's SyncGroup--> Stable
    (a join, leave or session expiry in Stable or CompletingRebalance goes back to
    PreparingRebalance; the last member leaving goes to Empty)

A JoinGroup waits (on this connection's thread) until every known member has joined
again or the rebalance timeout passes; members that did not rejoin are removed. The
new generation's leader gets the members' metadata and computes the assignment (the
client's assignor: range, roundrobin, cooperative-sticky); SyncGroup hands it out.
A member whose heartbeats stop for ``session_timeout_ms`` is removed and the group
rebalances. Errors are Kafka's: ``MEMBER_ID_REQUIRED`` for a first join from v4,
``UNKNOWN_MEMBER_ID``, ``ILLEGAL_GENERATION``, ``REBALANCE_IN_PROGRESS``,
``INCONSISTENT_GROUP_PROTOCOL``, ``INVALID_SESSION_TIMEOUT``.

Membership lives in this server's memory (a restart starts every group Empty, as a
Kafka coordinator failover makes clients rejoin); committed offsets do not: they go to
the group's eventlog offsets file (``_group_apis``). Static membership
(``group.instance.id``) is accepted and echoed but gives no special treatment.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import _errors as E

__all__ = ["GroupCoordinator", "GroupSnapshot"]

MIN_SESSION_TIMEOUT_MS = 6_000       # Kafka's group.min.session.timeout.ms
MAX_SESSION_TIMEOUT_MS = 1_800_000   # Kafka's group.max.session.timeout.ms
_REAP_INTERVAL_S = 0.1

EMPTY = "Empty"
PREPARING = "PreparingRebalance"
COMPLETING = "CompletingRebalance"
STABLE = "Stable"
DEAD = "Dead"


@dataclass
class _Member:
    member_id: str
    instance_id: str | None
    client_id: str
    client_host: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocols: list[tuple[str, bytes]]
    last_seen: float
    awaiting_join: bool = False
    join_result: dict[str, Any] | None = None
    awaiting_sync: bool = False
    sync_result: dict[str, Any] | None = None
    assignment: bytes = b""

    def metadata(self, protocol: str) -> bytes:
        for name, meta in self.protocols:
            if name == protocol:
                return meta
        return b""


@dataclass
class _Group:
    group_id: str
    state: str = EMPTY
    generation: int = 0
    protocol_type: str = ""
    protocol: str = ""
    leader: str = ""
    members: dict[str, _Member] = field(default_factory=dict)
    pending: dict[str, float] = field(default_factory=dict)  # member id -> deadline
    rebalance_deadline: float = 0.0


@dataclass(frozen=True)
class GroupSnapshot:
    """A group as DescribeGroups shows it."""

    group_id: str
    state: str
    protocol_type: str
    protocol: str
    members: list[dict[str, Any]]


class GroupCoordinator:
    """All Kafka-client groups of one server. Thread-safe: one lock, one condition."""

    def __init__(self, stopping: threading.Event,
                 clock: Callable[[], float] = time.monotonic,
                 min_session_timeout_ms: int = MIN_SESSION_TIMEOUT_MS,
                 max_session_timeout_ms: int = MAX_SESSION_TIMEOUT_MS) -> None:
        self._stopping = stopping
        self._clock = clock
        self._min_session = min_session_timeout_ms
        self._max_session = max_session_timeout_ms
        self._cond = threading.Condition()
        self._groups: dict[str, _Group] = {}
        self._reaper = threading.Thread(target=self._reap_loop, daemon=True,
                                        name="eventlog-serve-groups")

    def start(self) -> None:
        """Start the thread that expires sessions and rebalance timeouts."""
        self._reaper.start()

    def stop(self) -> None:
        """Wake every waiting request (they answer and return) and stop the reaper."""
        with self._cond:
            self._cond.notify_all()
        if self._reaper.is_alive():
            self._reaper.join(2.0)

    # -- the requests ---------------------------------------------------------------------

    def join(self, group_id: str, member_id: str, instance_id: str | None,
             session_timeout_ms: int, rebalance_timeout_ms: int, protocol_type: str,
             protocols: list[tuple[str, bytes]], client_id: str, client_host: str,
             require_member_id: bool) -> dict[str, Any]:
        """JoinGroup: blocks until the group's next generation forms (or fails)."""
        if not group_id:
            return {"error_code": E.INVALID_GROUP_ID}
        if not self._min_session <= session_timeout_ms <= self._max_session:
            return {"error_code": E.INVALID_SESSION_TIMEOUT}
        if rebalance_timeout_ms < 0:
            rebalance_timeout_ms = session_timeout_ms
        if not protocols or not protocol_type:
            return {"error_code": E.INCONSISTENT_GROUP_PROTOCOL}
        with self._cond:
            g = self._groups.get(group_id)
            if g is None:
                g = self._groups[group_id] = _Group(group_id)
            if g.members and (protocol_type != g.protocol_type or not self._common(
                    g, [n for n, _ in protocols], exclude=member_id)):
                return {"error_code": E.INCONSISTENT_GROUP_PROTOCOL, "member_id": member_id}
            now = self._clock()
            if not member_id:
                member_id = f"{client_id or 'member'}-{uuid.uuid4()}"
                if require_member_id:
                    g.pending[member_id] = now + session_timeout_ms / 1000
                    return {"error_code": E.MEMBER_ID_REQUIRED, "member_id": member_id}
            elif member_id not in g.members and member_id not in g.pending:
                return {"error_code": E.UNKNOWN_MEMBER_ID, "member_id": member_id}
            m = g.members.get(member_id)
            if m is not None and g.state in (STABLE, COMPLETING) and m.protocols == protocols \
                    and (g.state == COMPLETING or member_id != g.leader):
                m.last_seen = now  # nothing changed: this generation stands
                return self._join_response(g, m)
            g.pending.pop(member_id, None)
            if m is None:
                m = g.members[member_id] = _Member(
                    member_id, instance_id, client_id, client_host, session_timeout_ms,
                    rebalance_timeout_ms, protocols, now)
            else:
                m.protocols = protocols
                m.session_timeout_ms = session_timeout_ms
                m.rebalance_timeout_ms = rebalance_timeout_ms
            g.protocol_type = protocol_type
            m.last_seen = now
            m.awaiting_join = True
            m.join_result = None
            if g.state != PREPARING:
                self._prepare_rebalance(g)
            self._maybe_complete_join(g, now)
            while m.join_result is None:
                if self._stopping.is_set() or g.members.get(member_id) is not m:
                    return {"error_code": E.UNKNOWN_MEMBER_ID, "member_id": member_id}
                self._cond.wait(_REAP_INTERVAL_S)
            return m.join_result

    def sync(self, group_id: str, generation: int, member_id: str,
             assignments: list[tuple[str, bytes]]) -> dict[str, Any]:
        """SyncGroup: the leader's assignment, handed to every member."""
        with self._cond:
            g = self._groups.get(group_id)
            if g is None or member_id not in g.members:
                return {"error_code": E.UNKNOWN_MEMBER_ID}
            if generation != g.generation:
                return {"error_code": E.ILLEGAL_GENERATION}
            m = g.members[member_id]
            m.last_seen = self._clock()
            if g.state == PREPARING:
                return {"error_code": E.REBALANCE_IN_PROGRESS}
            if g.state == STABLE:
                return {"error_code": 0, "assignment": m.assignment}
            m.awaiting_sync = True
            m.sync_result = None
            if member_id == g.leader:
                given = dict(assignments)
                for other in g.members.values():
                    other.assignment = given.get(other.member_id, b"")
                g.state = STABLE
                for other in g.members.values():
                    if other.awaiting_sync:
                        other.awaiting_sync = False
                        other.sync_result = {"error_code": 0, "assignment": other.assignment}
                self._cond.notify_all()
            while m.sync_result is None:
                if self._stopping.is_set() or g.members.get(member_id) is not m:
                    return {"error_code": E.UNKNOWN_MEMBER_ID}
                self._cond.wait(_REAP_INTERVAL_S)
            return m.sync_result

    def heartbeat(self, group_id: str, generation: int, member_id: str) -> int:
        """Heartbeat: an error code."""
        with self._cond:
            g = self._groups.get(group_id)
            if g is None or g.state == EMPTY or member_id not in g.members:
                return E.UNKNOWN_MEMBER_ID
            if generation != g.generation:
                return E.ILLEGAL_GENERATION
            g.members[member_id].last_seen = self._clock()
            if g.state == PREPARING:
                return E.REBALANCE_IN_PROGRESS
            return 0

    def leave(self, group_id: str, member_ids: list[str]) -> list[int]:
        """LeaveGroup: an error code per member."""
        with self._cond:
            g = self._groups.get(group_id)
            codes = []
            for member_id in member_ids:
                if g is None or member_id not in g.members:
                    codes.append(E.UNKNOWN_MEMBER_ID)
                    continue
                self._remove(g, member_id)
                codes.append(0)
            if g is not None:
                self._maybe_complete_join(g, self._clock())
                self._cond.notify_all()
            return codes

    def check_commit(self, group_id: str, generation: int, member_id: str) -> int:
        """Whether OffsetCommit may write: an error code (0 for yes)."""
        with self._cond:
            g = self._groups.get(group_id)
            if generation < 0 and not member_id:
                # a consumer outside group management (assign()) or an admin tool
                if g is not None and g.members:
                    return E.UNKNOWN_MEMBER_ID
                return 0
            if g is None or not g.members:
                return E.ILLEGAL_GENERATION if g is None else E.UNKNOWN_MEMBER_ID
            m = g.members.get(member_id)
            if m is None:
                return E.UNKNOWN_MEMBER_ID
            if generation != g.generation:
                return E.ILLEGAL_GENERATION
            if g.state == COMPLETING:
                return E.REBALANCE_IN_PROGRESS
            m.last_seen = self._clock()
            return 0

    def snapshot(self, group_id: str) -> GroupSnapshot | None:
        """A group's state and members (None if this server never saw it)."""
        with self._cond:
            g = self._groups.get(group_id)
            if g is None:
                return None
            stable = g.state == STABLE
            members = [{"member_id": m.member_id, "group_instance_id": m.instance_id,
                        "client_id": m.client_id, "client_host": m.client_host,
                        "member_metadata": m.metadata(g.protocol) if stable else b"",
                        "member_assignment": m.assignment if stable else b""}
                       for m in g.members.values()]
            protocol = g.protocol if g.state in (STABLE, COMPLETING) else ""
            return GroupSnapshot(g.group_id, g.state, g.protocol_type, protocol, members)

    def group_ids(self) -> list[tuple[str, str]]:
        """``(group id, protocol type)`` of every group with members or a past."""
        with self._cond:
            return [(g.group_id, g.protocol_type) for g in self._groups.values()
                    if g.state != DEAD]

    def _check(self) -> None:
        """Assert the invariants of every group: a known state; Empty has no members;
        a formed generation (CompletingRebalance, Stable) has its leader among the
        members and nobody waiting to join; only a rebalance has members waiting."""
        with self._cond:
            for g in self._groups.values():
                assert g.state in (EMPTY, PREPARING, COMPLETING, STABLE, DEAD), g.state
                assert g.generation >= 0
                if g.state == EMPTY:
                    assert not g.members, g
                if g.state in (COMPLETING, STABLE):
                    assert g.leader in g.members, (g.leader, list(g.members))
                    assert not any(m.awaiting_join for m in g.members.values())
                    assert g.protocol and all(
                        g.protocol in {n for n, _ in m.protocols} for m in g.members.values())
                if g.state == STABLE:
                    assert not any(m.awaiting_sync for m in g.members.values())
                assert not set(g.pending) & set(g.members)

    # -- the state machine (lock held) ------------------------------------------------------

    @staticmethod
    def _common(g: _Group, names: list[str], exclude: str = "") -> set[str]:
        common = set(names)
        for m in g.members.values():
            if m.member_id != exclude:
                common &= {n for n, _ in m.protocols}
        return common

    def _prepare_rebalance(self, g: _Group) -> None:
        if g.state == COMPLETING:
            for m in g.members.values():
                if m.awaiting_sync:
                    m.awaiting_sync = False
                    m.sync_result = {"error_code": E.REBALANCE_IN_PROGRESS}
        g.state = PREPARING
        timeout_ms = max((m.rebalance_timeout_ms for m in g.members.values()), default=0)
        g.rebalance_deadline = self._clock() + timeout_ms / 1000
        self._cond.notify_all()

    def _remove(self, g: _Group, member_id: str) -> None:
        m = g.members.pop(member_id)
        if m.awaiting_join:
            m.join_result = {"error_code": E.UNKNOWN_MEMBER_ID, "member_id": member_id}
        if m.awaiting_sync:
            m.sync_result = {"error_code": E.UNKNOWN_MEMBER_ID}
        if g.leader == member_id:
            g.leader = ""
        if g.state in (STABLE, COMPLETING):
            self._prepare_rebalance(g)
        elif g.state == PREPARING and not g.members:
            self._maybe_complete_join(g, self._clock())

    def _maybe_complete_join(self, g: _Group, now: float) -> None:
        if g.state != PREPARING:
            return
        all_joined = all(m.awaiting_join for m in g.members.values()) and not g.pending
        if not all_joined and now < g.rebalance_deadline:
            return
        for member_id in [i for i, m in g.members.items() if not m.awaiting_join]:
            del g.members[member_id]
        g.generation += 1
        if not g.members:
            g.state, g.protocol, g.leader = EMPTY, "", ""
            self._cond.notify_all()
            return
        members = list(g.members.values())
        candidates = self._common(g, [n for n, _ in members[0].protocols])
        votes: dict[str, int] = {}
        for m in members:  # each member votes for its most preferred common protocol
            choice = next(n for n, _ in m.protocols if n in candidates)
            votes[choice] = votes.get(choice, 0) + 1
        g.protocol = max(votes, key=lambda n: votes[n])
        if g.leader not in g.members:
            g.leader = members[0].member_id
        g.state = COMPLETING
        for m in members:
            m.awaiting_join = False
            m.join_result = self._join_response(g, m)
        self._cond.notify_all()

    @staticmethod
    def _join_response(g: _Group, m: _Member) -> dict[str, Any]:
        members = []
        if m.member_id == g.leader:
            members = [{"member_id": o.member_id, "group_instance_id": o.instance_id,
                        "metadata": o.metadata(g.protocol)} for o in g.members.values()]
        return {"error_code": 0, "generation_id": g.generation, "protocol_name": g.protocol,
                "leader": g.leader, "member_id": m.member_id, "members": members}

    def expire(self) -> None:
        """Remove members whose session expired and end rebalances whose timeout
        passed, now (the reaper thread does it every 0.1 s)."""
        with self._cond:
            self._reap(self._clock())

    def _reap_loop(self) -> None:
        while not self._stopping.is_set():
            with self._cond:
                self._reap(self._clock())
                self._cond.wait(_REAP_INTERVAL_S)

    def _reap(self, now: float) -> None:
        for g in list(self._groups.values()):
            for member_id, deadline in list(g.pending.items()):
                if now >= deadline:
                    del g.pending[member_id]
            for m in list(g.members.values()):
                waiting = m.awaiting_join or m.awaiting_sync
                if not waiting and now - m.last_seen > m.session_timeout_ms / 1000:
                    self._remove(g, m.member_id)
            self._maybe_complete_join(g, now)
