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

Read-only: ``open(path, read_only=True)`` creates, writes and locks nothing, so it
works on a read-only mount and beside running writers. It takes no part in the
protocol above: it recovers nothing and reads the state the writers published
(after a crash, damaged data it meets raises ``CorruptRecordError``); everything
that would write raises ``ReadOnlyError``. A normal open of a directory on a
read-only file system is refused with ``errno.EROFS`` and a message saying so.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, ClassVar

from . import _disk, _fileutil, _maintenance, _txn_admin
from ._backend import Backend, LocalBackend
from ._group_admin import GroupAdmin, GroupDescription, MemberDescription
from ._partition import PartitionLog, StorageContext
from ._topics import META_LOCK_FILE, STAGING_DIR, TOPICS_DIR, TopicFiles, TopicStore
from ._txn_admin import TransactionDescription
from ._types import TopicPartition
from .config import LogOptions, check_int
from .errors import ClosedError, CorruptRecordError, InvalidTopicError, LogDirectoryError
from .monitoring import (
    CheckReport,
    GroupMetrics,
    GroupStatus,
    LogMetrics,
    PartitionDescription,
    PartitionMetrics,
    Problem,
    TopicDescription,
)
from .topic import Topic, validate_topic_name

__all__ = ["GroupDescription", "Log", "MemberDescription", "open"]

_logger = logging.getLogger("eventlog")
MARKER_FILE = "eventlog.json"
LOCK_FILE = ".lock"
_OWN_NAMES = {MARKER_FILE, LOCK_FILE, META_LOCK_FILE, STAGING_DIR, TOPICS_DIR, "groups"}
_FORMAT = 1

# Bumped in a child after fork. The child shares the parent's open file descriptions,
# and with them the parent's flock locks: using an inherited Log would break mutual
# exclusion, so a Log opened in an earlier generation refuses to work.
_fork_generation = 0


def _after_fork_in_child() -> None:
    global _fork_generation
    _fork_generation += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _size_for_progress(plog: PartitionLog) -> int:
    """A partition's size, for the progress of ``check``: damage that keeps it from
    being known is what ``check`` is about to report, not a reason to fail."""
    try:
        return plog.size_bytes()
    except CorruptRecordError:
        return 0


def _on_read_only_file_system(path: str) -> bool:
    """True when ``path`` lies on a file system mounted read-only."""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def open(path: str | os.PathLike[str], **options: Any) -> Log:
    """Open (creating if needed) the log directory at ``path``.

    Options: ``fsync`` ("never" | "interval" | "always", default "interval"),
    ``fsync_interval_ms`` (1000), ``recovery`` ("strict" | "truncate"),
    ``auto_create_topics`` (False), ``read_only`` (False: with True, open an existing
    log without creating, writing or locking any file; producing, committing and
    changes raise ``ReadOnlyError``), ``clock`` (callable returning epoch ms), and
    defaults for new topics (``partitions``, ``segment_bytes``, ``retention_ms``, ...).

    ``path`` may also be a ``kafka://host:port[,host:port...]`` address: the same
    ``Log`` API over an Apache Kafka cluster (needs ``pip install 'eventlog[kafka]'``;
    options ``kafka_config`` and the topic defaults; see docs/kafka-backend.md).
    """
    if isinstance(path, str) and path.startswith("kafka://"):
        from ._kafka import open_kafka  # noqa: PLC0415 - confluent-kafka is optional

        return open_kafka(path, **options)
    return Log(path, **options)


class Log:
    """An open log directory. A context manager; thread-safe.

    Several ``Log`` objects, in one process or many, may have the same directory open.
    A ``Log`` must not be used in a child process after ``fork``: open the directory
    again there.

    ``Log`` is a façade: topics and partitions live in ``_topics.TopicStore``, groups in
    ``_group_admin.GroupAdmin``, background threads in ``_maintenance.Background``; the
    clients (``Producer``, ``Consumer``) use ``backend``.
    """

    #: Client classes a log of another backend brings (keys "producer", "consumer",
    #: "aio_consumer"): ``Producer(log)`` and the others build those instead of
    #: themselves. Empty for a log directory.
    client_classes: ClassVar[Mapping[str, type]] = {}

    def __init__(self, path: str | os.PathLike[str], **options: Any) -> None:
        maintenance_interval_ms = options.pop("maintenance_interval_ms", None)
        if maintenance_interval_ms is not None:
            check_int("maintenance_interval_ms", maintenance_interval_ms, 1)
        self.options = LogOptions.from_kwargs(options)
        self.path = os.path.abspath(os.fspath(path))
        self._ctx = StorageContext(self.options, self.path)
        self._closed = False
        self._generation = _fork_generation
        self._lock_fd = -1
        with _fileutil.os_errors(f"opening log directory {self.path}"):
            self._open_directory()
            self._store = TopicStore(self.path, self._ctx, self.options.auto_create_topics,
                                     self.options.topic_defaults,
                                     self.options.default_partitions)
        try:
            if not self.options.read_only:
                with _fileutil.os_errors(f"opening log directory {self.path}"):
                    self._acquire_and_recover()
        except BaseException:
            self._store.close(last_user=False)
            self._release_lock()
            raise
        self._topic_facades: dict[str, tuple[TopicFiles, Topic]] = {}
        self._groups = GroupAdmin(self.path, self._ctx, self._store)
        self._backend = LocalBackend(self.path, self._ctx, self._store, self._check_open,
                                     lambda: self._closed)
        self._rate_samples: dict[tuple[str, int], tuple[float, int]] = {}
        self._background = _maintenance.Background(self.path, self._ctx, self._store)
        if self.options.read_only:
            return  # nothing to flush, and maintenance would write
        if maintenance_interval_ms is not None:
            self._background.start_maintenance(maintenance_interval_ms)
        if self.options.fsync == "interval":
            self._background.start_flusher(self.options.fsync_interval_ms)

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
        if self.options.read_only:
            self._open_read_only()
            return
        try:
            _fileutil.makedirs(path)
        except OSError as exc:
            if exc.errno != errno.EROFS:
                raise
            raise self._read_only_fs_error() from exc
        if _on_read_only_file_system(path):
            raise self._read_only_fs_error()
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
        self._lock_fd = _fileutil.open_fd(os.path.join(path, LOCK_FILE),
                                          os.O_RDWR | os.O_CREAT)

    def _open_read_only(self) -> None:
        """A read-only open: the directory must be a log already (nothing is created,
        and ``.lock`` is neither created nor locked)."""
        path = self.path
        marker = os.path.join(path, MARKER_FILE)
        if not os.path.isdir(path):
            raise LogDirectoryError(errno.ENOENT, f"log directory {path} does not exist "
                                    "(a read-only open creates nothing)", path)
        if not os.path.exists(marker):
            raise LogDirectoryError(errno.ENOENT, f"{path} holds no {MARKER_FILE}, so it "
                                    "is not an eventlog directory", path)
        self._check_marker(marker)

    def _read_only_fs_error(self) -> LogDirectoryError:
        return LogDirectoryError(errno.EROFS, f"log directory {self.path} is on a read-only "
                                 "file system; open it with read_only=True to read it "
                                 "(the CLI's reading commands do)", self.path)

    def _check_marker(self, marker: str) -> None:
        try:
            doc = json.loads(_fileutil.read_file(marker, 1 << 16))
            fmt = doc["format"]
        except (ValueError, KeyError, TypeError) as exc:
            # A damaged marker beside our own layout: format 1 is the only one there has
            # been, so the directory is read as that (and the marker rewritten, unless
            # read-only) rather than the whole log refused.
            if not os.path.isdir(os.path.join(self.path, TOPICS_DIR)):
                raise LogDirectoryError(errno.EINVAL, f"{marker} is damaged: {exc}",
                                        marker) from exc
            _logger.warning("%s is damaged (%s); read as format %d", marker, exc, _FORMAT)
            if not self.options.read_only:
                doc = {"format": _FORMAT, "created_ms": self._ctx.clock(), "rewritten": True}
                _fileutil.atomic_write(marker, json.dumps(doc).encode() + b"\n")
            return
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
        self._store.recover_all()
        fcntl.flock(self._lock_fd, fcntl.LOCK_SH)

    def _release_lock(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    # -- state ----------------------------------------------------------------------------

    @property
    def _forked(self) -> bool:
        return self._generation != _fork_generation

    def _check_open(self) -> None:
        # (``_forked`` inline: every consumer poll and producer flush calls this)
        if self._generation != _fork_generation:
            raise ClosedError(f"this Log of {self.path} was opened in a parent process; "
                              "open the directory again in the child")
        if self._closed:
            raise ClosedError(f"the log {self.path} is closed")

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called (every later call raises ``ClosedError``)."""
        return self._closed

    @property
    def read_only(self) -> bool:
        """True when opened with ``read_only=True``: nothing is created, written or
        locked, and every write raises ``ReadOnlyError``."""
        return self.options.read_only

    @property
    def failed(self) -> bool:
        """True after an fsync failed: the log then refuses writes until reopened."""
        return self._ctx.failure is not None

    @property
    def backend(self) -> Backend:
        """The interface ``Producer`` and ``Consumer`` use to reach this log (see
        ``eventlog._backend``); not meant for applications."""
        return self._backend

    # -- topics ---------------------------------------------------------------------------

    @_fileutil.translate_errors("log directory")
    def topics(self) -> list[str]:
        """Names of all topics, sorted (including those other processes created)."""
        self._check_open()
        return self._store.names()

    def __contains__(self, name: object) -> bool:
        self._check_open()
        if not isinstance(name, str):
            return False
        try:
            validate_topic_name(name)
        except InvalidTopicError:
            return False
        return self._store.exists(name)

    def _facade(self, files: TopicFiles) -> Topic:
        cached = self._topic_facades.get(files.name)
        if cached is None or cached[0] is not files:
            cached = self._topic_facades[files.name] = (files, Topic(files))
        return cached[1]

    @_fileutil.translate_errors("log directory")
    def topic(self, name: str) -> Topic:
        """The topic ``name``; raises ``UnknownTopicError`` if it does not exist."""
        self._check_open()
        validate_topic_name(name)
        return self._facade(self._store.topic(name))

    def create_topic(self, name: str, partitions: int | None = None, **config: Any) -> Topic:
        """Create a topic with ``partitions`` partitions and the given settings.

        The topic appears atomically (it is built in a staging directory and renamed
        into place). Raises ``TopicExistsError`` if the name is taken,
        ``InvalidTopicError`` for a bad name (before touching any file), and
        ``InvalidConfigError`` for bad settings.
        """
        self._check_open()
        return self._facade(self._store.create(name, partitions, **config))

    def delete_topic(self, name: str) -> None:
        """Delete a topic and all its records.

        Safe against other processes using it: each partition is first marked deleted
        under its writer lock, so no write can land after this returns, and their next
        use raises ``UnknownTopicError``; the files are then removed (processes still
        reading a mapped segment keep their mapping until they drop it).
        """
        self._check_open()
        self._store.delete(name)

    def alter_topic(self, name: str, **config: Any) -> Topic:
        """Change settings of an existing topic (stored atomically; other processes see
        them within half a second). The partition count changes only through
        ``Topic.add_partitions``."""
        self._check_open()
        return self._facade(self._store.alter(name, **config))

    @_fileutil.translate_errors("log directory")
    def describe_topic(self, name: str) -> TopicDescription:
        """Partitions (offsets, sizes, segment counts) and settings of a topic."""
        self._check_open()
        validate_topic_name(name)
        files = self._store.topic(name)
        parts = []
        for i, plog in enumerate(files.partition_logs()):
            st = plog.state()
            parts.append(PartitionDescription(i, st.start_offset, st.end_offset,
                                              plog.size_bytes(st), plog.segment_count(st)))
        return TopicDescription(name, files.metadata().config, parts)

    @_fileutil.translate_errors("log directory")
    def delete_records(self, tp: TopicPartition | tuple[str, int], before_offset: int) -> int:
        """Delete the records of a partition below ``before_offset`` (Kafka's
        deleteRecords): the log start offset moves there and whole segments below it
        are removed. Returns the new start offset."""
        self._check_open()
        topic, partition = tp
        validate_topic_name(topic)
        return self._store.topic(topic).partition_log(partition).delete_records(before_offset)

    @_fileutil.translate_errors("log directory")
    def enforce_retention(self, topics: Iterable[str] | None = None) -> int:
        """Apply ``retention_ms``/``retention_bytes`` now (it also runs whenever a segment
        rolls). Returns the number of segments deleted."""
        self._check_open()
        return _maintenance.enforce_retention(self._store, topics)

    @_fileutil.translate_errors("log directory")
    def compact(self, topics: Iterable[str] | None = None) -> int:
        """Compact the sealed segments of compacted topics now (it also runs at a roll
        once ``min_cleanable_dirty_ratio`` of a partition is dirty). Returns the number of
        records removed."""
        self._check_open()
        return _maintenance.compact(self._store, topics, force=True)

    # -- health ---------------------------------------------------------------------------

    @_fileutil.translate_errors("log directory")
    def check(self, fix: bool = False, progress: Callable[[int, int], None] | None = None
              ) -> CheckReport:
        """Verify every segment (checksums, structure, offsets, indexes) and every group's
        offsets file, and report the problems found without changing anything. With
        ``fix=True``, repair: rebuild indexes, finish interrupted compactions, rewrite
        damaged offsets files from their last good commits, and cut each damaged
        partition before its first bad batch (the cut bytes kept in ``*.cut-*`` files;
        the problem names the offsets lost, which stay reserved: no offset is reused).
        ``progress(done_bytes, total_bytes)`` is called as it goes. Cost: O(log size)."""
        self._check_open()
        if fix:
            self._ctx.check_not_read_only("repairing the log")
        plogs = [plog for _, _, plog in _maintenance.partitions(self._store, None)]
        total = sum(map(_size_for_progress, plogs))
        done = [0]

        def step(nbytes: int) -> None:
            done[0] += nbytes
            if progress is not None:
                progress(done[0], total)

        problems: list[Problem] = []
        segments = batches = records = nbytes = 0
        for plog in plogs:
            found, stats = plog.check(fix=fix, progress=step)
            problems += found
            segments += stats.segments
            batches += stats.batches
            records += stats.records
            nbytes += stats.bytes
        problems += [Problem(path, "topic", f"{exc}; the topic's partitions cannot be "
                             "read until its topic.json is restored", False)
                     for path, exc in self._store.unreadable()]
        problems += self._groups.check(fix)
        if progress is not None:
            progress(total, total)
        return CheckReport(problems, segments, batches, records, nbytes)

    @_fileutil.translate_errors("log directory")
    def metrics(self) -> LogMetrics:
        """A snapshot: per partition its offsets, size, segments, append rate (since
        the previous call on this Log) and space on disk; per group its committed offsets,
        lag, maximum lag and live members; the disk space of the whole log, and the free
        and total bytes of its file system. Cost: a ``stat`` of every file of the log."""
        self._check_open()
        now = time.monotonic()
        partitions = []
        for files, i, plog in _maintenance.partitions(self._store, None):
            st = plog.state()
            key = (files.name, i)
            previous = self._rate_samples.get(key)
            rate = None
            if previous is not None and now > previous[0]:
                rate = (st.end_offset - previous[1]) / (now - previous[0])
            self._rate_samples[key] = (now, st.end_offset)
            partitions.append(PartitionMetrics(files.name, key[1], st.start_offset,
                                               st.end_offset, plog.size_bytes(st),
                                               plog.segment_count(st), rate,
                                               _disk.allocated_bytes(plog.directory)))
        groups = []
        for group in self._groups.names():
            lag = self._groups.lag(group)
            groups.append(GroupMetrics(group, self._groups.live_members(group),
                                       self._groups.offsets(group), lag,
                                       max(lag.values(), default=0),
                                       self._groups.status(group)))
        fs = _disk.file_system_usage(self.path)
        return LogMetrics(self._ctx.clock(), partitions, groups,
                          _disk.allocated_bytes(self.path), fs.free_bytes, fs.total_bytes,
                          fs.used_ratio)

    # -- consumer groups ------------------------------------------------------------------

    @_fileutil.translate_errors("log directory")
    def groups(self) -> list[str]:
        """Names of the consumer groups that have members or committed offsets."""
        self._check_open()
        return self._groups.names()

    @_fileutil.translate_errors("log directory")
    def group_offsets(self, group_id: str) -> dict[TopicPartition, int]:
        """The committed offsets of a group (the next offset each partition will read)."""
        self._check_open()
        return self._groups.offsets(group_id)

    @_fileutil.translate_errors("log directory")
    def group_lag(self, group_id: str) -> dict[TopicPartition, int]:
        """End offset minus committed offset, for every partition of the group's topics
        (those it committed offsets for or its members subscribe to); a partition never
        committed, or committed outside what it stores, counts from its start offset
        (docs/monitoring.md, "Which partitions count"). Raises ``UnknownGroupError``."""
        self._check_open()
        return self._groups.lag(group_id)

    @_fileutil.translate_errors("log directory")
    def group_status(self, group_id: str, *, window: int = 10) -> GroupStatus:
        """The group's status by LinkedIn Burrow's rules, on the log's clock: each
        partition of the topics it committed or subscribes to is judged over its last
        ``window`` commits (2..``eventlog.monitoring.HISTORY_MAX``) as OK, WARN, STALL or
        STOP, and the group as OK, WARN or ERR (docs/monitoring.md, "Consumer status").
        Raises ``UnknownGroupError``, and ``InvalidConfigError`` for a bad ``window``.
        Cost: reads the offsets file's new records, a head per partition, and one batch
        per partition with lag."""
        self._check_open()
        return self._groups.status(group_id, window)

    @_fileutil.translate_errors("log directory")
    def describe_group(self, group_id: str) -> GroupDescription:
        """Members (with liveness and assignment), generation, offsets, lag and status
        (``group_status`` with the default window)."""
        self._check_open()
        return self._groups.describe(group_id)

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
        self._check_open()
        self._ctx.check_not_read_only("resetting group offsets")  # a dry run locks too
        return self._groups.reset_offsets(
            group_id, topics, to_earliest=to_earliest, to_latest=to_latest,
            to_offset=to_offset, to_timestamp_ms=to_timestamp_ms, shift_by=shift_by,
            dry_run=dry_run)

    @_fileutil.translate_errors("log directory")
    def delete_group(self, group_id: str) -> None:
        """Delete a group's committed offsets and state, while none of its members is
        live (``GroupNotEmptyError`` otherwise)."""
        self._check_open()
        self._ctx.check_not_read_only("deleting a group")
        self._groups.delete(group_id)

    # -- durability and closing -----------------------------------------------------------

    @_fileutil.translate_errors("log directory")
    def transactions(self) -> list[TransactionDescription]:
        """The state of every transactional id of this log (``eventlog transactions
        list``). Cost: a read of each state file."""
        self._check_open()
        return _txn_admin.list_all(self.backend.transactions(), self._ctx.clock())

    def describe_transaction(self, transactional_id: str) -> TransactionDescription:
        """One transactional id's state: producer id, epoch, state, partitions, age."""
        self._check_open()
        return _txn_admin.describe(self.backend.transactions(), transactional_id,
                                   self._ctx.clock())

    def abort_transaction(self, transactional_id: str) -> TransactionDescription:
        """Abort a hung transaction of ``transactional_id`` now and fence its producer
        (like ``kafka-transactions.sh abort``); returns the state after."""
        self._check_open()
        self._ctx.check_not_read_only("aborting a transaction")
        return _txn_admin.abort(self.backend.transactions(), transactional_id,
                                self._ctx.clock())

    def flush(self) -> None:
        """fsync every partition this process opened and advance their durable points."""
        self._check_open()
        self._store.sync_opened()

    @_fileutil.translate_errors("log directory")
    def close(self) -> None:
        """Close the log. If no other ``Log`` has the directory open, fsync every
        partition and mark it clean, so the next open skips validation."""
        if self._closed or self._forked:
            self._closed = True
            return
        self._closed = True
        self._background.stop()
        try:
            last_user = False
            if self._ctx.failure is None and not self.options.read_only:
                if self.options.fsync != "never":
                    self._store.sync_opened()
                try:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    last_user = True
                except BlockingIOError:
                    last_user = False
            self._store.close(last_user)
        finally:
            self._release_lock()

    def _abandon(self) -> None:
        """Drop the log as a killed process would: no fsync, no clean mark (for the
        crash tests; a real program never needs it)."""
        self._background.signal_stop()
        self._closed = True
        self._store.close(last_user=False)
        self._release_lock()
