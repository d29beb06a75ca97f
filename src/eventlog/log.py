"""Log: a log directory, its topics, open/close, recovery and administration.

Directory layout:

    <log>/
      eventlog.json            format marker (refuses to adopt a foreign directory)
      .lock                    flock: shared by every open Log, exclusive for recovery
      .meta.lock               flock: serializes topic create/delete/add_partitions
      .staging/                new topics are built here, then renamed into topics/
      topics/<name>/topic.json partition count and config (temp file + rename)
      topics/<name>/<p>/head   published state of partition p (see _head)
      topics/<name>/<p>/00000000000000000000.log, .index, .timeindex

Opening: every ``Log`` holds a shared ``flock`` on ``.lock`` while open. The first
opener gets it exclusively and recovers every partition before sharing it; a later
opener waits while recovery runs. Closing: a ``Log`` that can take the lock
exclusively is the last user; it fsyncs every partition and marks it clean, so the
next open trusts the stored state without validating anything.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from . import _compaction, _fileutil
from ._backend import LocalBackend
from ._group import GroupFiles, group_names, remove_group_files
from ._offsets import OffsetStore
from ._offsets import parse as parse_offsets
from ._partition import StorageContext, create_partition_files
from ._types import TopicPartition
from .config import LogOptions, TopicConfig, TopicMetadata, check_int
from .errors import (
    ClosedError,
    GroupNotEmptyError,
    InvalidConfigError,
    InvalidTopicError,
    LogDirectoryError,
    LogFailedError,
    TopicExistsError,
    UnknownGroupError,
    UnknownTopicError,
)
from .monitoring import (
    CheckReport,
    GroupMetrics,
    LogMetrics,
    PartitionDescription,
    PartitionMetrics,
    Problem,
    TopicDescription,
)
from .topic import TOPIC_FILE, Topic, validate_topic_name

__all__ = ["GroupDescription", "Log", "MemberDescription", "open"]

_logger = logging.getLogger("eventlog")
MARKER_FILE = "eventlog.json"
LOCK_FILE = ".lock"
META_LOCK_FILE = ".meta.lock"
STAGING_DIR = ".staging"
TOPICS_DIR = "topics"
_OWN_NAMES = {MARKER_FILE, LOCK_FILE, META_LOCK_FILE, STAGING_DIR, TOPICS_DIR, "groups"}
_FORMAT = 1

_live_logs: weakref.WeakSet[Log] = weakref.WeakSet()


@dataclass(frozen=True)
class MemberDescription:
    """One member of a consumer group, as ``Log.describe_group`` reports it."""

    member_id: str
    instance_id: str | None
    client: str
    topics: list[str]
    assignment: list[TopicPartition]
    alive: bool


@dataclass(frozen=True)
class GroupDescription:
    """A consumer group: members, assignment, committed offsets and lag.

    ``state`` is "Stable" (live members), "Empty" (committed offsets, no live member) or
    "Dead" (nothing but files)."""

    group_id: str
    state: str
    generation: int
    strategy: str | None
    members: list[MemberDescription]
    offsets: dict[TopicPartition, int]
    lag: dict[TopicPartition, int]


def _after_fork_in_child() -> None:
    # The child shares the parent's open file descriptions, and with them the parent's
    # flock locks: using an inherited Log would break mutual exclusion. Disable them.
    for log in list(_live_logs):
        log._forked = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def open(path: str | os.PathLike[str], **options: Any) -> Log:
    """Open (creating if needed) the log directory at ``path``.

    Options: ``fsync`` ("never" | "interval" | "always", default "interval"),
    ``fsync_interval_ms`` (1000), ``recovery`` ("strict" | "truncate"),
    ``auto_create_topics`` (False), ``clock`` (callable returning epoch ms), and
    defaults for new topics (``partitions``, ``segment_bytes``, ``retention_ms``, ...).
    """
    return Log(path, **options)


class Log:
    """An open log directory. A context manager; thread-safe.

    Several ``Log`` objects, in one process or many, may have the same directory open.
    A ``Log`` must not be used in a child process after ``fork``: open the directory
    again there.
    """

    def __init__(self, path: str | os.PathLike[str], **options: Any) -> None:
        maintenance_interval_ms = options.pop("maintenance_interval_ms", None)
        if maintenance_interval_ms is not None:
            check_int("maintenance_interval_ms", maintenance_interval_ms, 1)
        self.options = LogOptions.from_kwargs(options)
        self.path = os.path.abspath(os.fspath(path))
        self._ctx = StorageContext(self.options)
        self._closed = False
        self._forked = False
        self._recovering = False
        self._topics: dict[str, Topic] = {}
        self._topics_lock = threading.RLock()
        self._lock_fd = -1
        self._stop_flusher = threading.Event()
        self._flusher: threading.Thread | None = None
        with _fileutil.os_errors(f"opening log directory {self.path}"):
            self._open_directory()
        try:
            with _fileutil.os_errors(f"opening log directory {self.path}"):
                self._acquire_and_recover()
        except BaseException:
            for topic in list(self._topics.values()):
                topic._close(clean=False)
            self._topics.clear()
            self._release_lock()
            raise
        self._backend = LocalBackend(self.path, self._ctx, _TopicsShim(self),  # type: ignore[arg-type]
                                     self._check_open, lambda: self._closed)
        self._rate_samples: dict[tuple[str, int], tuple[float, int]] = {}
        self._stores: dict[str, OffsetStore] = {}
        self._maintenance: threading.Thread | None = None
        _live_logs.add(self)
        if maintenance_interval_ms is not None:
            self._maintenance = threading.Thread(
                target=self._maintenance_loop, args=(maintenance_interval_ms / 1000,),
                daemon=True, name=f"eventlog-maintenance:{self.path}")
            self._maintenance.start()
        if self.options.fsync == "interval":
            self._flusher = threading.Thread(target=self._flush_loop, daemon=True,
                                             name=f"eventlog-flusher:{self.path}")
            self._flusher.start()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<eventlog.Log {self.path!r} {state}>"

    def __enter__(self) -> Log:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- opening ------------------------------------------------------------------------

    def _open_directory(self) -> None:
        path = self.path
        if os.path.exists(path) and not os.path.isdir(path):
            raise LogDirectoryError(errno.ENOTDIR, f"{path} exists and is not a directory",
                                    path)
        _fileutil.makedirs(path)
        if not os.access(path, os.W_OK | os.X_OK):
            raise LogDirectoryError(errno.EACCES, f"log directory {path} is not writable "
                                    "by this user", path)
        marker = os.path.join(path, MARKER_FILE)
        if os.path.exists(marker):
            self._check_marker(marker)
        else:
            foreign = sorted(set(os.listdir(path)) - _OWN_NAMES)
            if foreign:
                raise LogDirectoryError(errno.EEXIST, f"{path} is not empty and holds no "
                                        f"{MARKER_FILE}, so it is not an eventlog directory "
                                        f"(found {', '.join(foreign[:3])})", path)
            doc = {"format": _FORMAT, "created_ms": self._ctx.clock()}
            _fileutil.atomic_write(marker, json.dumps(doc).encode() + b"\n")
        for sub in (TOPICS_DIR, STAGING_DIR):
            _fileutil.makedirs(os.path.join(path, sub))
        self._lock_fd = _fileutil.open_fd(os.path.join(path, LOCK_FILE),
                                          os.O_RDWR | os.O_CREAT)

    @staticmethod
    def _check_marker(marker: str) -> None:
        try:
            doc = json.loads(_fileutil.read_file(marker, 1 << 16))
            fmt = doc["format"]
        except (ValueError, KeyError, TypeError) as exc:
            raise LogDirectoryError(errno.EINVAL, f"{marker} is damaged: {exc}",
                                    marker) from exc
        if fmt != _FORMAT:
            raise LogDirectoryError(errno.EINVAL, f"{marker} has format {fmt!r}; this "
                                    f"version of eventlog reads format {_FORMAT}", marker)

    def _acquire_and_recover(self) -> None:
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # Others have it open (or are recovering it): share the lock with them.
            fcntl.flock(self._lock_fd, fcntl.LOCK_SH)
            return
        # First user: nobody else has the directory open, so recover every partition.
        self._recovering = True
        try:
            for name in self._topic_names_on_disk():
                self._load_topic(name)
        finally:
            self._recovering = False
        fcntl.flock(self._lock_fd, fcntl.LOCK_SH)

    def _release_lock(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    # -- state checks -------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._forked:
            raise ClosedError(f"this Log of {self.path} was opened in a parent process; "
                              "open the directory again in the child")
        if self._closed:
            raise ClosedError(f"the log {self.path} is closed")

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def backend(self) -> LocalBackend:
        """The seam ``Producer`` and ``Consumer`` use (see ``eventlog._backend``); not
        meant for applications."""
        return self._backend

    @property
    def failed(self) -> bool:
        """True after an fsync failed: the log then refuses writes until reopened."""
        return self._ctx.failure is not None

    # -- topics -------------------------------------------------------------------------

    def _topics_dir(self) -> str:
        return os.path.join(self.path, TOPICS_DIR)

    def _topic_names_on_disk(self) -> list[str]:
        base = self._topics_dir()
        with _fileutil.os_errors(f"listing {base}"):
            names = os.listdir(base)
        return sorted(n for n in names
                      if os.path.exists(os.path.join(base, n, TOPIC_FILE)))

    def _load_topic(self, name: str) -> Topic:
        with self._topics_lock:
            topic = self._topics.get(name)
            if topic is None:
                topic = Topic(self, name, os.path.join(self._topics_dir(), name), self._ctx,
                              recover=self._recovering)
                self._topics[name] = topic
            return topic

    @_fileutil.translate_errors("log directory")
    def topics(self) -> list[str]:
        """Names of all topics, sorted (including those other processes created)."""
        self._check_open()
        return self._topic_names_on_disk()

    def __contains__(self, name: object) -> bool:
        self._check_open()
        if not isinstance(name, str):
            return False
        try:
            validate_topic_name(name)
        except InvalidTopicError:
            return False
        return os.path.exists(os.path.join(self._topics_dir(), name, TOPIC_FILE))

    @_fileutil.translate_errors("log directory")
    def topic(self, name: str) -> Topic:
        """The topic ``name``; raises ``UnknownTopicError`` if it does not exist."""
        self._check_open()
        validate_topic_name(name)
        topic = self._topics.get(name)
        if topic is not None:
            try:
                topic._refresh()
                return topic
            except UnknownTopicError:
                with self._topics_lock:
                    if self._topics.get(name) is topic:
                        del self._topics[name]
                        topic._close(clean=False)
        if not os.path.exists(os.path.join(self._topics_dir(), name, TOPIC_FILE)):
            if self.options.auto_create_topics:
                try:
                    return self.create_topic(name)
                except TopicExistsError:
                    pass
            else:
                raise UnknownTopicError(f"topic {name!r} does not exist in {self.path}")
        return self._load_topic(name)

    @contextmanager
    def _meta_locked(self) -> Iterator[None]:
        fd = _fileutil.open_fd(os.path.join(self.path, META_LOCK_FILE), os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def create_topic(self, name: str, partitions: int | None = None, **config: Any) -> Topic:
        """Create a topic with ``partitions`` partitions and the given settings.

        The topic appears atomically (it is built in a staging directory and renamed
        into place). Raises ``TopicExistsError`` if the name is taken,
        ``InvalidTopicError`` for a bad name (before touching any file), and
        ``InvalidConfigError`` for bad settings.
        """
        self._check_open()
        validate_topic_name(name)
        if partitions is None:
            partitions = self.options.default_partitions
        check_int("partitions", partitions, 1, 100_000)
        topic_config = TopicConfig.from_mapping(
            {k: v for k, v in config.items()}, base=self.options.topic_defaults)
        now = self._ctx.clock()
        meta = TopicMetadata(name, partitions, topic_config, now)
        with _fileutil.os_errors(f"creating topic {name!r}"), self._meta_locked():
            existing = self._topic_names_on_disk()
            if name in existing:
                raise TopicExistsError(f"topic {name!r} already exists in {self.path}")
            for other in existing:
                if other.casefold() == name.casefold():
                    raise InvalidTopicError(f"topic name {name!r} collides with existing "
                                            f"topic {other!r} (names differ only in case)")
            target = os.path.join(self._topics_dir(), name)
            if os.path.exists(target):  # debris of a create or delete that died
                self._discard(target)
            stage = self._new_stage("create")
            for i in range(partitions):
                create_partition_files(os.path.join(stage, str(i)), now)
            _fileutil.atomic_write(os.path.join(stage, TOPIC_FILE), meta.to_json())
            os.rename(stage, target)
            _fileutil.sync_dir(self._topics_dir())
        return self._load_topic(name)

    def _new_stage(self, label: str) -> str:
        stage = os.path.join(self.path, STAGING_DIR,
                             f"{label}-{os.getpid()}-{threading.get_ident()}")
        if os.path.exists(stage):
            shutil.rmtree(stage)
        os.mkdir(stage, _fileutil.DIR_MODE)
        return stage

    def _discard(self, directory: str) -> None:
        """Move a directory into staging (atomic), then delete it."""
        trash = self._new_stage("trash")
        os.rmdir(trash)
        os.rename(directory, trash)
        _fileutil.sync_dir(os.path.dirname(directory))
        shutil.rmtree(trash, ignore_errors=True)

    def delete_topic(self, name: str) -> None:
        """Delete a topic and all its records.

        Safe against other processes using it: each partition is first marked deleted
        under its writer lock, so no write can land after this returns, and their next
        use raises ``UnknownTopicError``; the files are then removed (processes still
        reading a mapped segment keep their mapping until they drop it).
        """
        self._check_open()
        validate_topic_name(name)
        with _fileutil.os_errors(f"deleting topic {name!r}"), self._meta_locked():
            if name not in self._topic_names_on_disk():
                raise UnknownTopicError(f"topic {name!r} does not exist in {self.path}")
            topic = self._load_topic(name)
            for part in topic.partitions:
                part._log.mark_deleted()
            with self._topics_lock:
                self._topics.pop(name, None)
            topic._close(clean=False)
            self._discard(topic.directory)

    def _add_partitions(self, topic: Topic, count: int) -> None:
        self._check_open()
        with _fileutil.os_errors(f"adding partitions to {topic.name!r}"), self._meta_locked():
            meta = topic._refresh(force=True)
            now = self._ctx.clock()
            for i in range(meta.partitions, meta.partitions + count):
                target = os.path.join(topic.directory, str(i))
                if os.path.exists(target):  # left by an add_partitions that died
                    self._discard(target)
                stage = self._new_stage("partition")
                os.rmdir(stage)
                create_partition_files(stage, now)
                os.rename(stage, target)
            _fileutil.sync_dir(topic.directory)
            topic._write_meta(TopicMetadata(meta.name, meta.partitions + count, meta.config,
                                            meta.created_ms))
            topic._refresh(force=True)

    # -- topic administration -------------------------------------------------------------

    def alter_topic(self, name: str, **config: Any) -> Topic:
        """Change settings of an existing topic (stored atomically; other processes see
        them within half a second). The partition count changes only through
        ``Topic.add_partitions``."""
        self._check_open()
        validate_topic_name(name)
        if "partitions" in config:
            raise InvalidConfigError("use Topic.add_partitions to change the partition count")
        with _fileutil.os_errors(f"altering topic {name!r}"), self._meta_locked():
            topic = self.topic(name)
            meta = topic._refresh(force=True)
            new = TopicConfig.from_mapping(config, base=meta.config)
            topic._write_meta(TopicMetadata(meta.name, meta.partitions, new, meta.created_ms))
        return topic

    @_fileutil.translate_errors("log directory")
    def describe_topic(self, name: str) -> TopicDescription:
        """Partitions (offsets, sizes, segment counts) and settings of a topic."""
        topic = self.topic(name)
        parts = []
        for part in topic.partitions:
            plog = part._log
            st = plog.state()
            parts.append(PartitionDescription(part.id, st.start_offset, st.end_offset,
                                              plog.size_bytes(st), plog.segment_count(st)))
        return TopicDescription(name, topic.config, parts)

    @_fileutil.translate_errors("log directory")
    def delete_records(self, tp: TopicPartition | tuple[str, int], before_offset: int) -> int:
        """Delete the records of a partition below ``before_offset`` (Kafka's
        deleteRecords): the log start offset moves there and whole segments below it
        are removed. Returns the new start offset."""
        topic, partition = tp
        return self.topic(topic).partition(partition)._log.delete_records(before_offset)

    def _all_partitions(self, topics: Iterable[str] | None) -> Iterator[Any]:
        for name in (self.topics() if topics is None else list(topics)):
            try:
                topic = self.topic(name)
            except UnknownTopicError:
                continue
            for part in topic.partitions:
                yield topic, part

    @_fileutil.translate_errors("log directory")
    def enforce_retention(self, topics: Iterable[str] | None = None) -> int:
        """Apply ``retention_ms``/``retention_bytes`` now (it also runs whenever a segment
        rolls). Returns the number of segments deleted."""
        self._check_open()
        return sum(part._log.enforce_retention() for topic, part in
                   self._all_partitions(topics) if "delete" in topic.config.cleanup_policy)

    @_fileutil.translate_errors("log directory")
    def compact(self, topics: Iterable[str] | None = None) -> int:
        """Compact the sealed segments of compacted topics now (it also runs at a roll
        once ``min_cleanable_dirty_ratio`` of a partition is dirty). Returns the number of
        records removed."""
        self._check_open()
        removed = 0
        for topic, part in self._all_partitions(topics):
            if topic.config.compacted:
                removed += _compaction.compact(part._log, self._ctx.clock()).records_removed
        return removed

    @_fileutil.translate_errors("log directory")
    def check(self, fix: bool = False, progress: Callable[[int, int], None] | None = None
              ) -> CheckReport:
        """Verify every segment (checksums, structure, offsets, indexes) and every group's
        offsets file, and report the problems found without changing anything. With
        ``fix=True``, repair what is safe to repair: rebuild indexes, finish interrupted
        compactions, rewrite damaged offsets files from their last good commits.
        ``progress(done_bytes, total_bytes)`` is called as it goes. Cost: O(log size)."""
        self._check_open()
        parts = list(self._all_partitions(None))
        total = sum(part._log.size_bytes() for _, part in parts)
        done = [0]

        def step(nbytes: int) -> None:
            done[0] += nbytes
            if progress is not None:
                progress(done[0], total)

        problems: list[Problem] = []
        segments = batches = records = nbytes = 0
        for _, part in parts:
            found, stats = part._log.check(fix=fix, progress=step)
            problems += [Problem(p.path, p.kind, p.message, p.fixed) for p in found]
            segments += stats.segments
            batches += stats.batches
            records += stats.records
            nbytes += stats.bytes
        for group in group_names(self.path):
            files = GroupFiles(self.path, group)
            try:
                data = _fileutil.read_file(files.offsets_path, 1 << 30)
            except FileNotFoundError:
                continue
            _, valid_end, _ = parse_offsets(data)
            if valid_end < len(data):
                if fix:
                    store = self._offset_store(files)
                    store.replace(store.read(), self._ctx.clock())
                problems.append(Problem(files.offsets_path, "offsets",
                                        f"{len(data) - valid_end} damaged bytes among the "
                                        "commit records (reads use the last good commit)",
                                        fix))
        if progress is not None:
            progress(total, total)
        return CheckReport(problems, segments, batches, records, nbytes)

    @_fileutil.translate_errors("log directory")
    def metrics(self) -> LogMetrics:
        """A snapshot: per partition its offsets, size, segments and append rate (since
        the previous call on this Log); per group its committed offsets, lag, maximum lag
        and live members; and the disk space of the whole log."""
        self._check_open()
        now = time.monotonic()
        partitions = []
        for topic, part in self._all_partitions(None):
            plog = part._log
            st = plog.state()
            key = (topic.name, part.id)
            previous = self._rate_samples.get(key)
            rate = None
            if previous is not None and now > previous[0]:
                rate = (st.end_offset - previous[1]) / (now - previous[0])
            self._rate_samples[key] = (now, st.end_offset)
            partitions.append(PartitionMetrics(topic.name, part.id, st.start_offset,
                                               st.end_offset, plog.size_bytes(st),
                                               plog.segment_count(st), rate))
        groups = []
        for group in group_names(self.path):
            files = GroupFiles(self.path, group)
            lag = self.group_lag(group)
            groups.append(GroupMetrics(group, len(files.live_members()),
                                       self.group_offsets(group), lag,
                                       max(lag.values(), default=0)))
        return LogMetrics(self._ctx.clock(), partitions, groups, self._disk_bytes())

    def _disk_bytes(self) -> int:
        total = 0
        for root, _, files in os.walk(self.path):
            for name in files:
                try:
                    total += os.stat(os.path.join(root, name)).st_blocks * 512
                except FileNotFoundError:
                    continue
        return total

    def _maintenance_loop(self, interval_s: float) -> None:
        while not self._stop_flusher.wait(interval_s):
            try:
                self.enforce_retention()
                for topic, part in self._all_partitions(None):
                    config = topic.config
                    if config.compacted and \
                            part._log.dirty_ratio() >= config.min_cleanable_dirty_ratio:
                        _compaction.compact(part._log, self._ctx.clock())
            except ClosedError:
                return
            except Exception:  # keep the thread alive; the next round tries again
                _logger.exception("background maintenance failed")

    # -- consumer groups ----------------------------------------------------------------

    def _group(self, group_id: str, must_exist: bool = True) -> GroupFiles:
        self._check_open()
        files = GroupFiles(self.path, group_id)
        if must_exist and group_id not in group_names(self.path):
            raise UnknownGroupError(f"consumer group {group_id!r} does not exist in "
                                    f"{self.path}")
        return files

    def _offset_store(self, files: GroupFiles) -> OffsetStore:
        """One store per group per Log: its cache makes repeated reads incremental."""
        store = self._stores.get(files.offsets_path)
        if store is None:
            store = OffsetStore(files.offsets_path, fsync=self.options.fsync == "always")
            self._stores[files.offsets_path] = store
        return store

    @_fileutil.translate_errors("log directory")
    def groups(self) -> list[str]:
        """Names of the consumer groups that have members or committed offsets."""
        self._check_open()
        return group_names(self.path)

    @_fileutil.translate_errors("log directory")
    def group_offsets(self, group_id: str) -> dict[TopicPartition, int]:
        """The committed offsets of a group (the next offset each partition will read)."""
        return self._offset_store(self._group(group_id)).read()

    @_fileutil.translate_errors("log directory")
    def group_lag(self, group_id: str) -> dict[TopicPartition, int]:
        """End offset minus committed offset, for every partition the group committed."""
        out = {}
        for tp, committed in self.group_offsets(group_id).items():
            try:
                end = self.topic(tp.topic).partition(tp.partition).end_offset
            except (UnknownTopicError, IndexError):
                continue
            out[tp] = max(0, end - committed)
        return out

    @_fileutil.translate_errors("log directory")
    def describe_group(self, group_id: str) -> GroupDescription:
        """Members (with liveness and assignment), generation, offsets and lag."""
        files = self._group(group_id)
        state = files.read_state()
        members = []
        for member_id, entry in sorted(state["members"].items()):
            members.append(MemberDescription(
                member_id, entry.get("instance"), entry.get("client", ""),
                list(entry.get("topics", [])),
                [TopicPartition(*tp) for tp in state["assignment"].get(member_id, [])],
                files.member_alive(member_id)))
        offsets = self.group_offsets(group_id)
        alive = any(m.alive for m in members)
        return GroupDescription(group_id, "Stable" if alive else ("Empty" if offsets
                                                                   else "Dead"),
                                state["generation"], state["strategy"], members, offsets,
                                self.group_lag(group_id))

    @_fileutil.translate_errors("log directory")
    def reset_group_offsets(self, group_id: str, topics: Iterable[str] | None = None, *,
                            to_earliest: bool = False, to_latest: bool = False,
                            to_offset: int | None = None, to_timestamp_ms: int | None = None,
                            shift_by: int | None = None, dry_run: bool = False
                            ) -> dict[TopicPartition, int]:
        """Set a group's committed offsets, while none of its members is live.

        Exactly one target: ``to_earliest``, ``to_latest``, ``to_offset``,
        ``to_timestamp_ms`` (the first record at or after it; the end if none) or
        ``shift_by`` (from the committed offset, or the start if none). Applies to every
        partition of ``topics``, or to the partitions the group has committed. Offsets
        are clamped to the partitions' ranges. Returns the new offsets; with ``dry_run``
        nothing is changed. Raises ``GroupNotEmptyError`` while members are live.
        """
        targets = [to_earliest, to_latest, to_offset is not None,
                   to_timestamp_ms is not None, shift_by is not None]
        if sum(bool(t) for t in targets) != 1:
            raise InvalidConfigError("give exactly one of to_earliest, to_latest, to_offset, "
                                     "to_timestamp_ms, shift_by")
        for name, value in (("to_offset", to_offset), ("to_timestamp_ms", to_timestamp_ms),
                            ("shift_by", shift_by)):
            if value is not None and type(value) is not int:
                raise InvalidConfigError(f"{name} must be an int, not {value!r}")
        files = self._group(group_id, must_exist=topics is None)
        store = self._offset_store(files)
        with files.locked():
            live = files.live_members()
            if live:
                raise GroupNotEmptyError(f"group {group_id!r} has {len(live)} live member(s); "
                                         "stop them before resetting offsets")
            current = store.read()
            if topics is None:
                chosen = sorted(current)
            else:
                chosen = [TopicPartition(t, p) for t in topics
                          for p in range(self.topic(t).num_partitions)]
            new: dict[TopicPartition, int] = {}
            for tp in chosen:
                part = self.topic(tp.topic).partition(tp.partition)
                start, end = part.start_offset, part.end_offset
                if to_earliest:
                    offset = start
                elif to_latest:
                    offset = end
                elif to_offset is not None:
                    offset = to_offset
                elif to_timestamp_ms is not None:
                    found = part.offset_for_time(to_timestamp_ms)
                    offset = end if found is None else found
                else:
                    assert shift_by is not None
                    offset = current.get(tp, start) + shift_by
                new[tp] = min(max(offset, start), end)
            if not dry_run:
                merged = dict(current)
                merged.update(new)
                store.replace(merged, self._ctx.clock())
        return new

    @_fileutil.translate_errors("log directory")
    def delete_group(self, group_id: str) -> None:
        """Delete a group's committed offsets and state, while none of its members is
        live (``GroupNotEmptyError`` otherwise)."""
        files = self._group(group_id)
        with files.locked():
            live = files.live_members()
            if live:
                raise GroupNotEmptyError(f"group {group_id!r} has {len(live)} live member(s)")
            remove_group_files(files)

    # -- durability ---------------------------------------------------------------------

    @_fileutil.translate_errors("log directory")
    def flush(self) -> None:
        """fsync every partition this process opened and advance their durable points."""
        self._check_open()
        self._sync_opened()

    def _sync_opened(self) -> None:
        for topic in list(self._topics.values()):
            for part in topic._opened_partitions():
                try:
                    part._log.sync()
                except UnknownTopicError:
                    continue  # deleted by another process meanwhile

    def _flush_loop(self) -> None:
        interval = self.options.fsync_interval_ms / 1000
        ctx = self._ctx
        while not self._stop_flusher.wait(interval):
            with ctx.dirty_lock:
                dirty = list(ctx.dirty)
                ctx.dirty.clear()
            for part in dirty:
                try:
                    part.sync()
                except ClosedError:
                    continue
                except LogFailedError:
                    return  # the log is failed; writers already see it
                except Exception as exc:  # an fsync or I/O error: fail loudly, stop
                    ctx.fail(exc)
                    return

    # -- closing ------------------------------------------------------------------------

    @_fileutil.translate_errors("log directory")
    def close(self) -> None:
        """Close the log. If no other ``Log`` has the directory open, fsync every
        partition and mark it clean, so the next open skips validation."""
        if self._closed or self._forked:
            self._closed = True
            return
        self._closed = True
        _live_logs.discard(self)
        self._stop_flusher.set()
        if self._flusher is not None:
            self._flusher.join()
        if self._maintenance is not None:
            self._maintenance.join()
        try:
            last_user = False
            if self._ctx.failure is None:
                if self.options.fsync != "never":
                    self._sync_opened()
                try:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    last_user = True
                except BlockingIOError:
                    last_user = False
            if last_user:
                self._closed = False  # allow opening the remaining partitions
                try:
                    for name in self._topic_names_on_disk():
                        topic = self._load_topic(name)
                        for part in topic.partitions:
                            part._log.close(clean=True)
                finally:
                    self._closed = True
            with self._topics_lock:
                for topic in self._topics.values():
                    topic._close(clean=False)
                self._topics.clear()
        finally:
            self._release_lock()



class _TopicsShim:  # temporary, until _topics.TopicStore lands
    def __init__(self, log: Log) -> None:
        self.log = log

    def topic(self, name: str) -> _TopicShim:
        return _TopicShim(self.log.topic(name))


class _TopicShim:
    def __init__(self, topic: Topic) -> None:
        self.t = topic

    def metadata(self) -> TopicMetadata:
        return self.t._refresh()

    def partition_log(self, i: int) -> Any:
        return self.t.partition(i)._log
