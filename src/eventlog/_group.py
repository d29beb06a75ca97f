"""Consumer-group membership and partition assignment, across threads and processes.

Files of group ``g`` (besides the offsets sidecar ``groups/g.offsets``)::

    groups/g/lock                  flock: serializes membership changes and commits
    groups/g/state.json            generation, strategy, members, assignment (atomic)
    groups/g/members/<member>      each live member holds an flock on its own file and
                                   writes its last poll time (ms) into it
    groups/g/owners/<topic>.<p>    ownership lock of a partition: a member consumes a
                                   partition only while it holds this flock

Liveness comes from the kernel: a member that dies (even ``kill -9``) loses its flocks
at once, so the others see it is gone (``member_alive``) at their next check. The
ownership locks make exclusivity hold at every instant, during rebalances too: a new
owner waits until the old one has run its ``on_revoked`` callback (where it commits)
and released the lock.

Any live member that notices a change (a join, a leave, a dead member, an expired poll
interval, new partitions) recomputes the assignment under the group lock, bumps the
generation and writes the state; every member adopts the new generation at its next
poll. A member no longer in the state (evicted while it did not poll) has lost its
partitions and may not commit (generation fencing); it rejoins.

Static members (``group_instance_id``) keep their partitions reserved for
``session_timeout_ms`` after they die, so a restart gets them back without moving
anything.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NamedTuple

from . import _fileutil
from ._types import TopicPartition
from .errors import (
    CommitFailedError,
    InvalidConfigError,
    InvalidGroupError,
    LogDirectoryError,
)

if TYPE_CHECKING:
    from ._offsets import OffsetStore

GROUPS_DIR = "groups"
OFFSETS_SUFFIX = ".offsets"
# A group id names files (``<id>.offsets``, and its temp files ``.tmp-<pid>-<thread>``,
# up to 33 more characters) and a static instance id a member file (``static-<id>``):
# 200 characters keep every such name within the 255 bytes a file name may have.
MAX_ID_CHARS = 200
_NAME = re.compile(rf"[A-Za-z0-9._-]{{1,{MAX_ID_CHARS}}}")
STRATEGIES = ("range", "roundrobin", "sticky")
_STATE_FORMAT = 1
# How often a polling member looks for a new generation between heartbeats (seconds).
_STATE_LOOK_S = 0.005
_MAX_STATE_BYTES = 64 << 20

Assignment = dict[str, list[TopicPartition]]


def validate_group_id(group_id: object, what: str = "group id") -> str:
    """Group ids (and static instance ids) become file names: the topic-name rule."""
    if not isinstance(group_id, str):
        raise InvalidGroupError(f"a {what} must be a str, not {type(group_id).__name__}")
    if group_id in (".", "..") or not _NAME.fullmatch(group_id):
        shown = group_id if len(group_id) <= 60 else group_id[:57] + "..."
        raise InvalidGroupError(f"invalid {what} {shown!r}: use 1 to {MAX_ID_CHARS} of the "
                                "characters A-Z a-z 0-9 . _ -, and not '.' or '..'")
    return group_id


# -- assignors -------------------------------------------------------------------------

def _all_partitions(members: Mapping[str, list[str]], partitions: Mapping[str, int]
                    ) -> list[TopicPartition]:
    wanted = {t for topics in members.values() for t in topics}
    return [TopicPartition(t, p) for t in sorted(wanted) for p in range(partitions.get(t, 0))]


def assign_range(members: Mapping[str, list[str]], partitions: Mapping[str, int],
                 previous: Assignment) -> Assignment:
    """Kafka's range assignor: per topic, contiguous ranges of partitions in member order;
    the first (partitions % members) members get one more."""
    out: Assignment = {m: [] for m in members}
    for topic in sorted({t for ts in members.values() for t in ts}):
        subs = sorted(m for m, ts in members.items() if topic in ts)
        count = partitions.get(topic, 0)
        per, extra = divmod(count, len(subs))
        start = 0
        for i, m in enumerate(subs):
            n = per + (1 if i < extra else 0)
            out[m].extend(TopicPartition(topic, p) for p in range(start, start + n))
            start += n
    return out


def assign_roundrobin(members: Mapping[str, list[str]], partitions: Mapping[str, int],
                      previous: Assignment) -> Assignment:
    """Kafka's round-robin assignor: all partitions in order, dealt to members in order
    (skipping members not subscribed to the topic)."""
    out: Assignment = {m: [] for m in members}
    order = sorted(members)
    i = 0
    for tp in _all_partitions(members, partitions):
        for _ in range(len(order)):
            m = order[i % len(order)]
            i += 1
            if tp.topic in members[m]:
                out[m].append(tp)
                break
    return out


def assign_sticky(members: Mapping[str, list[str]], partitions: Mapping[str, int],
                  previous: Assignment) -> Assignment:
    """Balanced like round-robin, but moving as few partitions as possible: members keep
    what they had up to their fair share; only the rest is dealt out."""
    everything = _all_partitions(members, partitions)
    order = sorted(members)
    if not order:
        return {}
    per, extra = divmod(len(everything), len(order))
    # the members that keep most get the extra slots, so fewer partitions move
    by_kept = sorted(order, key=lambda m: (-len(previous.get(m, [])), m))
    quota = {m: per + (1 if i < extra else 0) for i, m in enumerate(by_kept)}
    valid = set(everything)
    taken: set[TopicPartition] = set()
    out: Assignment = {m: [] for m in order}
    for m in order:
        for tp in previous.get(m, []):
            if (len(out[m]) < quota[m] and tp in valid and tp not in taken
                    and tp.topic in members[m]):
                out[m].append(tp)
                taken.add(tp)
    for tp in everything:
        if tp in taken:
            continue
        candidates = [m for m in order if tp.topic in members[m]]
        if not candidates:
            continue
        under = [m for m in candidates if len(out[m]) < quota[m]]
        pool = under or candidates
        m = min(pool, key=lambda m: (len(out[m]), m))
        out[m].append(tp)
        taken.add(tp)
    for m in out:
        out[m].sort()
    return out


ASSIGNORS: dict[str, Callable[[Mapping[str, list[str]], Mapping[str, int], Assignment],
                              Assignment]] = {
    "range": assign_range, "roundrobin": assign_roundrobin, "sticky": assign_sticky,
}


# -- files -------------------------------------------------------------------------------

def flock_held(path: str) -> bool | None:
    """Whether any process holds an ``flock`` on ``path``, read from ``/proc/locks``
    without taking a lock; None where that file cannot be read. Cost: one read of
    ``/proc/locks`` (a line per lock on the machine)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as fh:
            # "1: FLOCK  ADVISORY  WRITE 4242 fe:00:9979873 0 EOF" (waiters: "1: -> ...")
            return any(len(f) > 5 and f[1] == "FLOCK" and f[5] == key
                       for f in map(str.split, fh))
    except OSError:
        return None


class GroupFiles:
    """Paths and file-level operations of one group."""

    def __init__(self, log_path: str, group_id: str, read_only: bool = False) -> None:
        self.group_id = validate_group_id(group_id)
        self.read_only = read_only  # judge liveness without taking any lock
        base = os.path.join(log_path, GROUPS_DIR)
        self.groups_dir = base
        self.dir = os.path.join(base, group_id)
        self.offsets_path = os.path.join(base, group_id + OFFSETS_SUFFIX)
        self.state_path = os.path.join(self.dir, "state.json")
        self.lock_path = os.path.join(self.dir, "lock")
        self.members_dir = os.path.join(self.dir, "members")
        self.owners_dir = os.path.join(self.dir, "owners")

    def ensure(self) -> None:
        for d in (self.groups_dir, self.dir, self.members_dir, self.owners_dir):
            _fileutil.makedirs(d)

    @contextmanager
    def locked(self) -> Iterator[None]:
        with _fileutil.os_errors(f"locking group {self.group_id!r}"):
            self.ensure()
            fd = _fileutil.open_fd(self.lock_path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def read_state(self) -> dict[str, Any]:
        try:
            data = _fileutil.read_file(self.state_path, _MAX_STATE_BYTES)
        except FileNotFoundError:
            return empty_state()
        try:
            state: dict[str, Any] = json.loads(data)
            if state.get("format") != _STATE_FORMAT:
                raise ValueError(f"unknown format {state.get('format')!r}")
            return state
        except ValueError:
            # Written atomically, so this is outside damage: start the group afresh.
            # Committed offsets live elsewhere and are unaffected.
            return empty_state()

    def write_state(self, state: dict[str, Any]) -> None:
        with _fileutil.os_errors(f"writing the state of group {self.group_id!r}"):
            _fileutil.atomic_write(self.state_path,
                                   json.dumps(state, sort_keys=True).encode() + b"\n")

    def state_stamp(self) -> tuple[int, int, int]:
        try:
            st = os.stat(self.state_path)
        except FileNotFoundError:
            return (0, 0, 0)
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def member_path(self, member_id: str) -> str:
        return os.path.join(self.members_dir, member_id)

    def member_alive(self, member_id: str) -> bool:
        """True while the member's process holds its member lock. Read-only, from
        ``/proc/locks`` (no lock taken) where the kernel shows it; otherwise by trying
        the lock for an instant."""
        if self.read_only:
            held = flock_held(self.member_path(member_id))
            if held is not None:
                return held
        try:
            fd = _fileutil.open_fd(self.member_path(member_id), os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # also drops the lock we may just have taken
        return False

    def member_last_poll(self, member_id: str) -> int | None:
        try:
            fd = _fileutil.open_fd(self.member_path(member_id), os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            raw = os.pread(fd, 8, 0)
        finally:
            os.close(fd)
        return int.from_bytes(raw, "little") if len(raw) == 8 else None

    def owner_path(self, tp: TopicPartition) -> str:
        return os.path.join(self.owners_dir, f"{tp.topic}.{tp.partition}")

    def live_members(self) -> list[str]:
        try:
            names = os.listdir(self.members_dir)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if ".tmp-" not in n and self.member_alive(n))


def empty_state() -> dict[str, Any]:
    return {"format": _STATE_FORMAT, "generation": 0, "strategy": None, "members": {},
            "assignment": {}, "partitions": {}}


def _client() -> str:
    import socket  # noqa: PLC0415 - when used: `import eventlog` stays lean

    return f"pid {os.getpid()} on {socket.gethostname()}"


class Change(NamedTuple):
    """What a member must adopt after a rebalance."""

    generation: int
    assignment: set[TopicPartition]
    lost: bool  # we were removed from the group: our partitions are lost, not revoked


class GroupMember:
    """One consumer's membership in a group. Used by one thread at a time (the consumer's
    polling thread), except ``commit_allowed`` which may run in a commit thread."""

    def __init__(self, log_path: str, group_id: str, *, strategy: str,
                 session_timeout_ms: int, max_poll_interval_ms: int,
                 heartbeat_interval_ms: int, instance_id: str | None,
                 partition_count: Callable[[str], int], clock: Callable[[], int],
                 client_id: str | None = None) -> None:
        if strategy not in ASSIGNORS:
            raise InvalidConfigError(f"partition_assignment_strategy must be one of "
                                     f"{', '.join(STRATEGIES)}, not {strategy!r}")
        self.files = GroupFiles(log_path, group_id)
        self.group_id = group_id
        self.client_id = client_id
        self.strategy = strategy
        self.session_timeout_ms = session_timeout_ms
        self.max_poll_interval_ms = max_poll_interval_ms
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.instance_id = (validate_group_id(instance_id, "group_instance_id")
                            if instance_id is not None else None)
        self.member_id = (f"static-{instance_id}" if instance_id is not None
                          else f"m-{os.urandom(8).hex()}")  # as uuid4().hex[:16]
        self._partition_count = partition_count
        self._clock = clock
        self.topics: list[str] = []
        self.generation = -1
        self._member_fd = -1
        self._owner_fds: dict[TopicPartition, int] = {}
        self._state_stamp: tuple[int, int, int] | None = None
        self._next_check = 0
        self._next_look = 0.0  # time.monotonic() of the next look at the group state
        self._look_s = min(_STATE_LOOK_S, heartbeat_interval_ms / 1000)
        self._next_heartbeat = 0

    # -- joining and leaving -------------------------------------------------------------

    def join(self, topics: list[str]) -> None:
        """Enter the group (or change subscription). Raises ``InvalidConfigError`` if a
        live process already uses this static ``group_instance_id``."""
        self.topics = sorted(set(topics))
        self.files.ensure()
        if self._member_fd < 0:
            path = self.files.member_path(self.member_id)
            with _fileutil.os_errors(f"joining group {self.group_id!r}"):
                fd = _fileutil.open_fd(path, os.O_RDWR | os.O_CREAT)
            # Other members probe a member's lock for a moment to see whether it is
            # alive, so a restarting static member retries briefly before giving up.
            for attempt in range(20):
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if attempt == 19:
                        os.close(fd)
                        raise InvalidConfigError(
                            f"group_instance_id {self.instance_id!r} is in use by another "
                            f"live member of {self.group_id!r}") from None
                    time.sleep(0.05)
            self._member_fd = fd
            self.heartbeat(force=True)
        with self.files.locked():
            state = self.files.read_state()
            members = state["members"]
            entry = members.get(self.member_id)
            rejoin_static = (entry is not None and self.instance_id is not None
                             and entry.get("topics") == self.topics)
            members[self.member_id] = {"instance": self.instance_id, "topics": self.topics,
                                       "client": _client(), "client_id": self.client_id,
                                       "joined_ms": self._clock(),
                                       "gone_ms": None,
                                       "session_timeout_ms": self.session_timeout_ms,
                                       "max_poll_interval_ms": self.max_poll_interval_ms}
            if rejoin_static and state["strategy"] is not None:
                # a static member back within its session timeout: nothing moves
                self.files.write_state(state)
            else:
                self._rebalance(state)
            self._state_stamp = None
            self._next_look = 0.0

    def leave(self) -> None:
        """Leave the group and release every lock (a clean, immediate rebalance for the
        others; a static member keeps its partitions reserved as if it had died)."""
        try:
            if self._member_fd >= 0:
                with self.files.locked():
                    state = self.files.read_state()
                    if self.member_id in state["members"]:
                        if self.instance_id is None:
                            del state["members"][self.member_id]
                            self._rebalance(state)
                        else:
                            state["members"][self.member_id]["gone_ms"] = self._clock()
                            self.files.write_state(state)
        finally:
            self.release_all()
            if self._member_fd >= 0:
                os.close(self._member_fd)
                self._member_fd = -1
                if self.instance_id is None:
                    try:
                        os.unlink(self.files.member_path(self.member_id))
                    except FileNotFoundError:
                        pass

    # -- rebalancing ---------------------------------------------------------------------

    def _rebalance(self, state: dict[str, Any]) -> None:
        """Recompute the assignment and bump the generation (group lock held)."""
        if state["strategy"] is None or len(self._live(state)) <= 1:
            state["strategy"] = self.strategy
        members = {m: e["topics"] for m, e in state["members"].items()}
        partitions = {t: self._partition_count(t) for t in {t for ts in members.values()
                                                             for t in ts}}
        previous = {m: [TopicPartition(*tp) for tp in tps]
                    for m, tps in state["assignment"].items()}
        assignment = ASSIGNORS[state["strategy"]](members, partitions, previous)
        state["assignment"] = {m: [list(tp) for tp in tps] for m, tps in assignment.items()}
        state["partitions"] = partitions
        state["generation"] += 1
        self.files.write_state(state)

    def _live(self, state: dict[str, Any]) -> list[str]:
        return [m for m, e in state["members"].items() if e.get("gone_ms") is None]

    def _check_members(self, state: dict[str, Any], now: int) -> bool:
        """Drop dead and stuck members; True if the membership changed (lock held)."""
        changed = False
        for m, entry in list(state["members"].items()):
            if m == self.member_id:
                continue
            alive = self.files.member_alive(m)
            last = self.files.member_last_poll(m) if alive else None
            # Each member's own timeouts apply to it (they are stored when it joins).
            max_poll = entry.get("max_poll_interval_ms", self.max_poll_interval_ms)
            session = entry.get("session_timeout_ms", self.session_timeout_ms)
            stuck = last is not None and now - last > max_poll
            if alive and not stuck:
                if entry.get("gone_ms") is not None:
                    entry["gone_ms"] = None
                continue
            if entry.get("instance") is not None and not stuck:
                # a static member: keep its partitions for session_timeout_ms
                if entry.get("gone_ms") is None:
                    entry["gone_ms"] = now
                    changed = True
                if now - entry["gone_ms"] < session:
                    continue
            del state["members"][m]
            if not alive and entry.get("instance") is None:
                try:
                    os.unlink(self.files.member_path(m))
                except FileNotFoundError:
                    pass
            changed = True
        for topic, count in state.get("partitions", {}).items():
            if self._partition_count(topic) != count:
                changed = True
        return changed

    def heartbeat(self, force: bool = False) -> None:
        """Record that this member polled (others evict members that stop polling)."""
        now = self._clock()
        if force or now >= self._next_heartbeat:
            self._beat(now)

    def _beat(self, now: int) -> None:
        if self._member_fd >= 0:
            os.pwrite(self._member_fd, now.to_bytes(8, "little"), 0)
        self._next_heartbeat = now + self.heartbeat_interval_ms

    @property
    def next_maintain(self) -> float:
        """The ``time.monotonic()`` before which a poll need not call ``maintain``: its
        next look at the group state, at most ``min(5 ms, heartbeat_interval_ms)``
        ahead. Heartbeats and checks fall due by the log's clock, which ``maintain``
        reads, so skipping it until then delays them by at most that much."""
        return self._next_look

    def maintain(self) -> Change | None:
        """Called from poll: heartbeat, look after the group, report a new generation.
        Cost: one read of the log's clock (and of ``time.monotonic``) when nothing is
        due; a stat of the group state at most every ``min(5 ms,
        heartbeat_interval_ms)``."""
        now = self._clock()
        if now >= self._next_heartbeat:
            self._beat(now)
        check = now >= self._next_check
        if not check:
            # A stat of the group state costs more than the rest of a one-record poll;
            # a rebalance noticed a few milliseconds later changes nothing (the new
            # owner waits for this member's ownership lock either way).
            look = time.monotonic()
            if look < self._next_look:
                return None
            self._next_look = look + self._look_s
        stamp = self.files.state_stamp()
        if stamp == self._state_stamp and not check:
            return None
        if check:
            self._next_check = now + self.heartbeat_interval_ms
            with self.files.locked():
                state = self.files.read_state()
                if self.member_id in state["members"] and self._check_members(state, now):
                    self._rebalance(state)
        state = self.files.read_state()
        self._state_stamp = self.files.state_stamp()
        if self.member_id not in state["members"]:
            self.generation = -1
            return Change(-1, set(), lost=True)
        if state["generation"] == self.generation:
            return None
        self.generation = state["generation"]
        mine = {TopicPartition(*tp) for tp in state["assignment"].get(self.member_id, [])}
        return Change(self.generation, mine, lost=False)

    # -- partition ownership -------------------------------------------------------------

    def try_own(self, tp: TopicPartition) -> bool:
        """Take the partition's ownership lock if its previous owner let go of it."""
        if tp in self._owner_fds:
            return True
        with _fileutil.os_errors("locking a partition for the group"):
            fd = _fileutil.open_fd(self.files.owner_path(tp), os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._owner_fds[tp] = fd
        return True

    def release(self, tp: TopicPartition) -> None:
        fd = self._owner_fds.pop(tp, None)
        if fd is not None:
            os.close(fd)

    def release_all(self) -> None:
        for tp in list(self._owner_fds):
            self.release(tp)

    def owns(self, tp: TopicPartition) -> bool:
        return tp in self._owner_fds

    def owned(self) -> set[TopicPartition]:
        """The partitions whose ownership lock this member holds."""
        return set(self._owner_fds)

    def commit(self, store: OffsetStore, offsets: Mapping[TopicPartition, int],
               ends: Mapping[TopicPartition, int] | None = None) -> None:
        """Commit ``offsets`` to ``store``, fenced: under the group lock, and only while
        this member is in the group and owns every partition (``commit_allowed``);
        ``ends`` (the partitions' end offsets) go into the same record as their history
        entries. Thread-safe against the member's polling thread. Cost: the group lock,
        a read of the state, one append to the offsets file."""
        with self.files.locked():
            generation = self.commit_allowed(sorted(offsets))
            store.commit(offsets, self._clock(), generation, self.member_id, ends)

    def commit_allowed(self, tps: list[TopicPartition]) -> int:
        """Fencing for a commit (group lock held by the caller): this member must still
        be in the group and hold the partitions' ownership locks. Returns the generation.

        The ownership locks decide, not the generation number: a member that has not yet
        seen a rebalance caused by others still owns (and may commit) what it holds,
        while a member removed from the group (a zombie) may not commit at all."""
        state = self.files.read_state()
        entry = state["members"].get(self.member_id)
        if entry is None or entry.get("gone_ms") is not None:
            raise CommitFailedError(f"member {self.member_id} is no longer in group "
                                    f"{self.group_id!r} (it was removed, for example for "
                                    "not polling within max_poll_interval_ms); its "
                                    "partitions may belong to another member now")
        missing = [tp for tp in tps if tp not in self._owner_fds]
        if missing:
            raise CommitFailedError(f"member {self.member_id} does not own "
                                    f"{', '.join(f'{t.topic}[{t.partition}]' for t in missing)}")
        return int(state["generation"])

    def _check(self) -> None:
        """Assert the invariants of this member's view (tests call it after changes):
        a sorted subscription; while joined, its member file exists and every
        ownership lock is an open descriptor. Cost: a stat per lock held."""
        assert self.topics == sorted(set(self.topics)), self.topics
        assert self._member_fd >= 0 or not self._owner_fds, "locks held outside the group"
        if self._member_fd >= 0:
            os.fstat(self._member_fd)
            assert os.path.exists(self.files.member_path(self.member_id)), self.member_id
        for tp, fd in self._owner_fds.items():
            assert type(tp) is TopicPartition and fd >= 0, (tp, fd)
            os.fstat(fd)


def group_names(log_path: str) -> list[str]:
    base = os.path.join(log_path, GROUPS_DIR)
    try:
        names = os.listdir(base)
    except FileNotFoundError:
        return []
    out = set()
    for name in names:
        if name.endswith(OFFSETS_SUFFIX):
            out.add(name[: -len(OFFSETS_SUFFIX)])
        elif os.path.isdir(os.path.join(base, name)):
            out.add(name)
    return sorted(n for n in out if _NAME.fullmatch(n))


def remove_group_files(files: GroupFiles) -> None:
    """Delete a group's files (caller checked that no member is live)."""
    for path in (files.offsets_path,):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    try:
        shutil.rmtree(files.dir)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise LogDirectoryError(exc.errno or errno.EIO, f"deleting group files: {exc}",
                                    files.dir) from exc
