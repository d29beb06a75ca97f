"""The ``topics/`` directory of an open log: which topics exist, their metadata, the
``PartitionLog`` of each partition, and the operations that change them.

``TopicStore`` is the registry (one per ``Log``): it loads a topic on first use, notices
topics other processes created or deleted, and runs the admin operations (create,
delete, add partitions, alter), serialized across processes by ``.meta.lock`` and made
atomic by building in ``.staging/`` and renaming into place. ``TopicFiles`` is one
topic directory: its ``topic.json`` (re-read within ``REFRESH_S`` of a change by
another process) and the partitions opened so far.

The public ``Topic`` and ``Partition`` classes (``topic.py``) are façades over a
``TopicFiles``; ``LocalBackend`` (``_backend.py``) hands its partitions to the clients.
Compaction is scheduled from here, above the partitions: each ``PartitionLog`` gets an
``on_roll`` hook that runs ``_compaction.maybe_compact``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from . import _compaction, _fileutil
from ._partition import PartitionLog, StorageContext, create_partition_files
from .config import TopicConfig, TopicMetadata, check_int
from .errors import (
    ClosedError,
    InvalidConfigError,
    InvalidTopicError,
    TopicExistsError,
    UnknownPartitionError,
    UnknownTopicError,
)

__all__ = ["TOPIC_FILE", "TopicFiles", "TopicStore", "validate_topic_name"]

_logger = logging.getLogger("eventlog")
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
TOPIC_FILE = "topic.json"
TOPICS_DIR = "topics"
STAGING_DIR = ".staging"
META_LOCK_FILE = ".meta.lock"
REFRESH_S = 0.5
MAX_PARTITIONS = 100_000
_MAX_TOPIC_FILE_BYTES = 1 << 20


def validate_topic_name(name: object) -> str:
    """Return ``name`` if it follows Kafka's rule, else raise ``InvalidTopicError``.

    Checked before any file is touched: the allowed characters contain no path
    separator, and ``.``/``..`` are refused, so a name never leaves the log directory.
    """
    if not isinstance(name, str):
        raise InvalidTopicError(f"a topic name must be a str, not {type(name).__name__}")
    if name in (".", "..") or not _TOPIC_NAME.fullmatch(name):
        shown = name if len(name) <= 60 else name[:57] + "..."
        raise InvalidTopicError(f"invalid topic name {shown!r}: use 1 to 249 of the "
                                "characters A-Z a-z 0-9 . _ -, and not '.' or '..'")
    return name


class TopicFiles:
    """One topic directory of an open log. Thread-safe.

    ``metadata()`` costs a monotonic clock read, and two ``stat`` calls at most every
    ``REFRESH_S``; ``partition_log`` is a list lookup once the partition is open.
    """

    def __init__(self, store: TopicStore, name: str, directory: str) -> None:
        self.store = store
        self.name = name
        self.directory = directory
        self._lock = threading.Lock()
        self._dir_ino = self._dir_inode()
        self._deleted = False
        self._logs: list[PartitionLog | None] = []
        self._set_meta(self._read_meta())
        self._checked_at = time.monotonic()

    def __repr__(self) -> str:
        return f"<TopicFiles {self.name!r}>"

    # -- metadata ------------------------------------------------------------------------

    def _meta_path(self) -> str:
        return os.path.join(self.directory, TOPIC_FILE)

    def _stat(self) -> tuple[int, int]:
        try:
            st = os.stat(self._meta_path())
        except FileNotFoundError:
            return (0, 0)
        return (st.st_ino, st.st_mtime_ns)

    def _dir_inode(self) -> int:
        try:
            return os.stat(self.directory).st_ino
        except FileNotFoundError:
            return 0

    def _read_meta(self) -> TopicMetadata:
        path = self._meta_path()
        try:
            data = _fileutil.read_file(path, _MAX_TOPIC_FILE_BYTES)
        except FileNotFoundError as exc:
            raise UnknownTopicError(f"topic {self.name!r} does not exist") from exc
        return TopicMetadata.from_json(data, path)

    def _set_meta(self, meta: TopicMetadata) -> None:
        with self._lock:
            self._meta = meta
            self._meta_stat = self._stat()
            grow = meta.partitions - len(self._logs)
            if grow > 0:
                self._logs.extend([None] * grow)

    @_fileutil.translate_errors("topic")
    def metadata(self, force: bool = False) -> TopicMetadata:
        """The metadata, re-read if another process changed it. A topic that was
        deleted (and perhaps created again under the same name, in a new directory)
        raises ``UnknownTopicError``; ``TopicStore.topic`` then loads the new one."""
        now = time.monotonic()
        if force or now - self._checked_at >= REFRESH_S or self._deleted:
            self._checked_at = now
            stat = self._stat()
            if self._deleted or stat == (0, 0) or self._dir_inode() != self._dir_ino:
                self._deleted = True  # for good: a topic created again is a new one
                raise UnknownTopicError(f"topic {self.name!r} was deleted")
            if stat != self._meta_stat:
                self._set_meta(self._read_meta())
        return self._meta

    def write_metadata(self, meta: TopicMetadata) -> None:
        """Store ``meta`` atomically (temp file, fsync, rename, fsync of the directory)."""
        _fileutil.atomic_write(self._meta_path(), meta.to_json())
        self._set_meta(meta)

    # -- partitions ----------------------------------------------------------------------

    @_fileutil.translate_errors("topic")
    def partition_log(self, partition_id: int) -> PartitionLog:
        """The ``PartitionLog`` of ``partition_id``, opened on first use. Raises
        ``UnknownPartitionError`` (an ``IndexError``) if out of range."""
        if type(partition_id) is not int:
            raise UnknownPartitionError(f"partition id must be an int, not "
                                        f"{type(partition_id).__name__}")
        count = self.metadata().partitions
        if not 0 <= partition_id < count:
            raise UnknownPartitionError(f"topic {self.name!r} has partitions "
                                        f"0..{count - 1}, not {partition_id}")
        plog = self._logs[partition_id]
        if plog is None:
            with self._lock:
                plog = self._logs[partition_id]
                if plog is None:
                    plog = self._open_partition(partition_id)
                    self._logs[partition_id] = plog
        return plog

    def _open_partition(self, partition_id: int) -> PartitionLog:
        store = self.store
        if store.closed:
            raise ClosedError("the log is closed")
        try:
            return PartitionLog(os.path.join(self.directory, str(partition_id)),
                                lambda: self.metadata().config, store.context,
                                recover=store.recovering, on_roll=self._on_roll)
        except FileNotFoundError:
            self.metadata(force=True)  # deleted by another process: UnknownTopicError
            raise

    def _on_roll(self, plog: PartitionLog) -> None:
        _compaction.maybe_compact(plog, self.metadata().config, self.store.context.clock())

    def partition_logs(self) -> list[PartitionLog]:
        """Every partition's log, in id order (opening those not open yet)."""
        return [self.partition_log(i) for i in range(self.metadata().partitions)]

    def opened(self) -> list[PartitionLog]:
        return [p for p in self._logs if p is not None]

    def _check(self) -> None:
        """Assert the invariants (for tests): one slot per partition, each open log in
        its own directory, the cached metadata what the file holds while it is unchanged."""
        meta = self._meta
        assert meta.name == self.name, (meta.name, self.name)
        assert len(self._logs) == meta.partitions, (len(self._logs), meta.partitions)
        for i, plog in enumerate(self._logs):
            if plog is not None:
                assert plog.directory == os.path.join(self.directory, str(i)), plog
        if self._stat() == self._meta_stat != (0, 0):
            assert self._read_meta() == meta

    def forget(self) -> None:
        """The topic was deleted (by this process or another): close its partitions,
        and make every later use of this object raise ``UnknownTopicError``, not reopen
        files that are gone (a ``Topic`` façade may still hold it)."""
        self._deleted = True
        self.close(clean=False)

    def close(self, clean: bool) -> None:
        """Close the partitions opened so far (``clean``: fsync and mark them clean)."""
        with self._lock:
            logs, self._logs = self._logs, [None] * len(self._logs)
        for plog in logs:
            if plog is not None:
                plog.close(clean=clean)


class TopicStore:
    """The topics of one open log directory. Thread-safe.

    ``recovering`` is set by ``Log`` while it holds the directory exclusively and
    opens every partition with recovery; ``closed`` once the log is closed. A store
    of a log opened ``read_only`` creates nothing (not even ``topics/``), never
    auto-creates a topic, and refuses every administration with ``ReadOnlyError``.
    """

    def __init__(self, path: str, context: StorageContext, auto_create: bool,
                 topic_defaults: TopicConfig, default_partitions: int) -> None:
        self.path = path
        self.context = context
        self.closed = False
        self.recovering = False
        self._auto_create = auto_create
        self._defaults = topic_defaults
        self._default_partitions = default_partitions
        self._topics: dict[str, TopicFiles] = {}
        self._lock = threading.RLock()
        self.read_only = context.options.read_only
        if not self.read_only:
            for sub in (TOPICS_DIR, STAGING_DIR):
                _fileutil.makedirs(os.path.join(path, sub))

    @property
    def topics_dir(self) -> str:
        return os.path.join(self.path, TOPICS_DIR)

    # -- lookup --------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Names of the topics on disk, sorted. Cost: one ``listdir`` and a ``stat`` each."""
        base = self.topics_dir
        with _fileutil.os_errors(f"listing {base}"):
            try:
                names = os.listdir(base)
            except FileNotFoundError:  # a log that never got topics/ (read_only opens)
                return []
        return sorted(n for n in names if os.path.exists(os.path.join(base, n, TOPIC_FILE)))

    def exists(self, name: str) -> bool:
        return os.path.exists(os.path.join(self.topics_dir, name, TOPIC_FILE))

    def _load(self, name: str) -> TopicFiles:
        with self._lock:
            files = self._topics.get(name)
            if files is None:
                files = TopicFiles(self, name, os.path.join(self.topics_dir, name))
                self._topics[name] = files
                if self.recovering:
                    files.partition_logs()
            return files

    def _forget(self, files: TopicFiles) -> None:
        with self._lock:
            if self._topics.get(files.name) is files:
                del self._topics[files.name]
        files.forget()

    @_fileutil.translate_errors("log directory")
    def topic(self, name: str, refresh: bool = False) -> TopicFiles:
        """The topic ``name``; ``UnknownTopicError`` if it does not exist (or it is
        created, with ``auto_create_topics``). Cost: a dict lookup while its metadata
        is fresh; ``refresh`` re-reads it now (two ``stat`` calls)."""
        files = self._topics.get(name)
        if files is not None:
            try:
                files.metadata(force=refresh)
                return files
            except UnknownTopicError:
                self._forget(files)
        validate_topic_name(name)
        if not self.exists(name):
            if not self._auto_create or self.read_only:
                raise UnknownTopicError(f"topic {name!r} does not exist in {self.path}")
            try:
                return self.create(name)
            except TopicExistsError:
                pass
        return self._load(name)

    def loaded(self) -> list[TopicFiles]:
        with self._lock:
            return list(self._topics.values())

    def _check(self) -> None:
        """Assert the invariants (for tests): every loaded topic is a valid name with its
        directory under ``topics/``, and is itself consistent."""
        for name, files in self._topics.items():
            assert validate_topic_name(name) == files.name == name
            assert os.path.dirname(files.directory) == self.topics_dir, files.directory
            files._check()  # a container checks what it holds (the one deliberate reach)

    def recover_all(self) -> None:
        """Open (and so recover) every partition of every topic on disk. A topic whose
        ``topic.json`` cannot be read is left out, so that the rest of the log opens:
        using it raises the ``InvalidConfigError`` that names the file, and
        ``Log.check`` reports it."""
        self.recovering = True
        try:
            for name in self.names():
                try:
                    self._load(name)
                except InvalidConfigError as exc:
                    _logger.warning("topic %r left out of recovery: %s", name, exc)
        finally:
            self.recovering = False

    def unreadable(self) -> list[tuple[str, InvalidConfigError]]:
        """The topics on disk whose metadata cannot be read, with the error each gives."""
        out = []
        for name in self.names():
            try:
                self.topic(name)
            except InvalidConfigError as exc:
                out.append((os.path.join(self.topics_dir, name, TOPIC_FILE), exc))
            except UnknownTopicError:
                continue
        return out

    # -- administration ------------------------------------------------------------------

    @contextmanager
    def _meta_locked(self, action: str) -> Iterator[None]:
        """Serialize an administration across processes (every one takes this)."""
        self.context.check_not_read_only(action)
        with _fileutil.os_errors(action):
            fd = _fileutil.open_fd(os.path.join(self.path, META_LOCK_FILE),
                                   os.O_RDWR | os.O_CREAT)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    def create(self, name: str, partitions: int | None = None, **config: Any) -> TopicFiles:
        """Create a topic atomically (built in staging, renamed into place)."""
        validate_topic_name(name)
        if partitions is None:
            partitions = self._default_partitions
        check_int("partitions", partitions, 1, MAX_PARTITIONS)
        topic_config = TopicConfig.from_mapping(dict(config), base=self._defaults)
        now = self.context.clock()
        meta = TopicMetadata(name, partitions, topic_config, now)
        with self._meta_locked(f"creating topic {name!r}"):
            existing = self.names()
            if name in existing:
                raise TopicExistsError(f"topic {name!r} already exists in {self.path}")
            for other in existing:
                if other.casefold() == name.casefold():
                    raise InvalidTopicError(f"topic name {name!r} collides with existing "
                                            f"topic {other!r} (names differ only in case)")
            target = os.path.join(self.topics_dir, name)
            if os.path.exists(target):  # debris of a create or delete that died
                self._discard(target)
            stage = self._new_stage("create")
            for i in range(partitions):
                create_partition_files(os.path.join(stage, str(i)), now)
            _fileutil.atomic_write(os.path.join(stage, TOPIC_FILE), meta.to_json())
            os.rename(stage, target)
            _fileutil.sync_dir(self.topics_dir)
        return self._load(name)

    def delete(self, name: str) -> None:
        """Delete a topic: every partition is first marked deleted under its writer
        lock (so no write lands after this returns, and other processes' next use
        raises ``UnknownTopicError``), then the directory is discarded."""
        validate_topic_name(name)
        with self._meta_locked(f"deleting topic {name!r}"):
            if name not in self.names():
                raise UnknownTopicError(f"topic {name!r} does not exist in {self.path}")
            files = self._load(name)
            for plog in files.partition_logs():
                plog.mark_deleted()
            self._forget(files)
            self._discard(files.directory)

    def add_partitions(self, files: TopicFiles, count: int) -> None:
        """Add ``count`` empty partitions (the count never shrinks, as in Kafka)."""
        check_int("add_partitions count", count, 1)
        with self._meta_locked(f"adding partitions to {files.name!r}"):
            meta = files.metadata(force=True)
            check_int("partitions", meta.partitions + count, 1, MAX_PARTITIONS)
            now = self.context.clock()
            for i in range(meta.partitions, meta.partitions + count):
                target = os.path.join(files.directory, str(i))
                if os.path.exists(target):  # left by an add_partitions that died
                    self._discard(target)
                stage = self._new_stage("partition")
                os.rmdir(stage)
                create_partition_files(stage, now)
                os.rename(stage, target)
            _fileutil.sync_dir(files.directory)
            files.write_metadata(TopicMetadata(meta.name, meta.partitions + count,
                                               meta.config, meta.created_ms))

    def alter(self, name: str, **config: Any) -> TopicFiles:
        """Change settings of a topic (stored atomically; other processes see them
        within ``REFRESH_S``)."""
        validate_topic_name(name)
        if "partitions" in config:
            raise InvalidConfigError("use Topic.add_partitions to change the partition count")
        with self._meta_locked(f"altering topic {name!r}"):
            files = self.topic(name)
            meta = files.metadata(force=True)
            new = TopicConfig.from_mapping(config, base=meta.config)
            files.write_metadata(TopicMetadata(meta.name, meta.partitions, new,
                                               meta.created_ms))
        return files

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

    # -- durability and closing ----------------------------------------------------------

    def opened(self) -> Iterator[PartitionLog]:
        for files in self.loaded():
            yield from files.opened()

    def sync_opened(self) -> None:
        """fsync every partition opened in this process (none written: read_only)."""
        if self.read_only:
            return
        for plog in list(self.opened()):
            try:
                plog.sync()
            except UnknownTopicError:
                continue  # deleted by another process meanwhile

    def close(self, last_user: bool) -> None:
        """Close every partition; the last user of the directory fsyncs and marks every
        partition on disk clean, so the next open trusts the stored state."""
        try:
            if last_user:
                for name in self.names():
                    try:
                        logs = self._load(name).partition_logs()
                    except InvalidConfigError:
                        continue  # its topic.json is damaged: left as it is (check says)
                    for plog in logs:
                        plog.close(clean=True)
        finally:
            self.closed = True
            with self._lock:
                for files in self._topics.values():
                    files.close(clean=False)
                self._topics.clear()
