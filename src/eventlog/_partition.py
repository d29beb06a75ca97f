"""A partition: the writer lock, append, roll and publish, fetch, retention, sync, close.

Concurrency model
-----------------
- One writer at a time, across threads and processes: a ``threading.Lock`` for the
  threads of this process, then ``fcntl.flock`` on the partition's head file for the
  processes. ``flock`` locks belong to the open file description and the kernel drops
  them when their owner dies, so a writer killed with ``kill -9`` never leaves the
  partition locked. (A POSIX ``lockf`` lock would instead vanish when *any* descriptor
  of the file closed in the process, which a library cannot rule out.)
- A writer appends the batch bytes, then publishes the new end in the head
  (``_head``). Readers take no lock: they read the head and never look past the
  published end, so they see whole batches only, in any process, without reopening.
- Every writer starts by re-reading the head (``_sync``): another process may have
  appended, rolled, or died halfway through writing a batch. A dead writer's bytes
  after the published end are moved aside before anything new is written there.
- A log opened ``read_only`` is a reader only: it maps the head and segments
  read-only, takes no lock, recovers nothing, and every path that would write or
  lock raises ``ReadOnlyError`` before touching a file (``_write_lock``,
  ``cleaner_lock``, ``StorageContext.check_writable``).

The rooms around it
-------------------
``PartitionLog`` holds the writer lock and the head, decides (append, roll, retention,
layout changes) and publishes. It delegates: ``_segments.SegmentList`` knows which
segments exist and reads across them (lookups, read limits, fetch, time lookups, the
mapped cache, which segments retention deletes); ``_recovery.Recovery`` recovers on
open, cuts debris, keeps the durable point and runs ``check``;
``_producer_state.ProducerStateManager`` keeps the idempotence state. Compaction is
scheduled from above (the ``on_roll`` hook, log maintenance) and works through the
public surface (``segments``, ``cleaner_lock``, ``swap_in``): nothing here calls it.
"""

from __future__ import annotations

import fcntl
import functools
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Concatenate, NamedTuple, ParamSpec, TypeVar

from . import _fileutil, _head, _notify
from ._format import HEADER_BYTES, DecodedBatch, EncodedBatch
from ._head import Head, HeadState
from ._producer_state import ProducerStateManager
from ._recovery import Recovery
from ._repair import CheckStats
from ._retention import PartitionRetention
from ._segment import Segment, file_name
from ._segments import SegmentList
from .config import LogOptions, TopicConfig
from .errors import (
    ClosedError,
    CorruptRecordError,
    LogDirectoryError,
    LogFailedError,
    OffsetOutOfRangeError,
    ReadOnlyError,
    UnknownTopicError,
)
from .monitoring import Problem

CLEANER_LOCK = "cleaner.lock"
DEFAULT_FETCH_BYTES = 1 << 20

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _unknown_if_deleted(fn: Callable[Concatenate[PartitionLog, _P], _R]
                        ) -> Callable[Concatenate[PartitionLog, _P], _R]:
    """A call that raced the deletion of its topic (in another thread, which closes
    the mappings, or in another process, which removes the directory) meets closed or
    missing files: a ``ValueError`` of a closed mapping, ``FileNotFoundError`` (as a
    ``LogDirectoryError``), a batch gone from under it. Report it as the deletion it
    is, ``UnknownTopicError``; any other failure passes unchanged."""
    @functools.wraps(fn)
    def wrapper(plog: PartitionLog, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return fn(plog, *args, **kwargs)
        except (ValueError, OSError, CorruptRecordError) as exc:
            if plog.deleted():
                raise UnknownTopicError(f"the topic of partition {plog.directory} was "
                                        "deleted") from exc
            raise
    return wrapper


def _read_call(fn: Callable[Concatenate[PartitionLog, _P], _R]
               ) -> Callable[Concatenate[PartitionLog, _P], _R]:
    """``_unknown_if_deleted`` over ``_fileutil.translate_errors("partition")``, in one
    wrapper: the same errors, one Python call instead of two on the reads every
    consumer poll makes (``state``, ``fetch``)."""
    @functools.wraps(fn)
    def wrapper(plog: PartitionLog, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return fn(plog, *args, **kwargs)
        except (ValueError, OSError, CorruptRecordError) as exc:
            error: Exception = exc
            if isinstance(exc, OSError) and not isinstance(exc, LogDirectoryError):
                error = _fileutil.translate_os_error(exc, f"partition ({fn.__name__})")
            if plog.deleted():
                raise UnknownTopicError(f"the topic of partition {plog.directory} was "
                                        "deleted") from error
            if error is exc:
                raise
            raise error from exc
    return wrapper


class StorageContext:
    """What all partitions of one open ``Log`` share: options, clock, the failed
    state, and the set of partitions with unsynced writes (for the interval flusher)."""

    def __init__(self, options: LogOptions, path: str = "") -> None:
        self.options = options
        self.path = path  # of the log directory (for messages)
        self.clock: Callable[[], int] = options.clock
        self.boot_id = _head.current_boot_id()
        self.failure: BaseException | None = None
        self._failure_text = ""
        self.dirty: set[PartitionLog] = set()
        self.dirty_lock = threading.Lock()

    def check_not_read_only(self, action: str) -> None:
        """Raise ``ReadOnlyError`` if the log was opened ``read_only`` (``action``, a
        gerund, says what was refused)."""
        if self.options.read_only:
            where = f"the log {self.path}" if self.path else "the log"
            raise ReadOnlyError(f"{where} was opened with read_only=True: {action} is "
                                "refused (open it without read_only for that)")

    def repair_hint(self) -> str:
        """How a user repairs damaged data of this log (for error messages)."""
        return (f"repair it with `eventlog --log {self.path or 'LOG_DIR'} verify --repair` "
                "(or log.check(fix=True)), which cuts the partition before the damage, "
                "keeps the cut bytes in *.cut-* files and reports the offsets lost")

    def check_writable(self) -> None:
        self.check_not_read_only("appending records")
        if self.failure is not None:
            raise LogFailedError(self._failure_text) from self.failure

    def fail(self, exc: BaseException, what: str = "an fsync") -> LogFailedError:
        """Mark the log failed by ``exc`` (the first failure is the one reported, with
        what failed and when, by every later write and by ``close``)."""
        if self.failure is None:
            import datetime  # noqa: PLC0415 - only on failure

            when = datetime.datetime.fromtimestamp(self.clock() / 1000, datetime.timezone.utc)
            self._failure_text = (
                f"{what} failed at {when.isoformat(timespec='milliseconds')} "
                f"({type(exc).__name__}: {exc}), so writes since may not have reached the "
                f"disk; the log refuses writes until it is reopened")
            self.failure = exc
        err = LogFailedError(self._failure_text)
        err.__cause__ = self.failure
        return err

    def fsync(self, sync: Callable[[], object]) -> None:
        """Run ``sync`` (an fsync); when it fails, fail the log (``fail``): after a
        failed fsync the kernel may have dropped the dirty pages, so nothing written
        can be trusted to be on disk."""
        try:
            sync()
        except OSError as exc:
            raise self.fail(exc) from exc


class AppendResult(NamedTuple):
    base_offset: int         # offset of the first appended record (-1: none appended)
    next_offset: int
    log_append_time_ms: int  # -1 unless the topic uses log-append time
    # Idempotent batches: offsets of the leading records that were stored already
    # (-1 where no longer known); they were not appended again.
    stored_offsets: list[int] | None = None


# AppendResult(...) without its Python-level __new__ (the append path's result).
_new_result = tuple.__new__


class PartitionLog(PartitionRetention):
    """One partition of one topic, in one process. Thread-safe.

    Cost notes: ``append`` takes two ``flock`` calls and one head read besides the
    memcpy and checksum of the batch; ``fetch`` takes no lock and, when it continues
    where a previous fetch ended, no index search.

    ``on_roll(plog)`` runs after an append rolled the active segment (and after
    retention ran for it), outside the writer lock, in the appending thread: where
    the layer above schedules compaction. An explicit ``roll()`` does not run it.
    """

    def __init__(self, directory: str, config: Callable[[], TopicConfig],
                 context: StorageContext, *, recover: bool = False,
                 on_roll: Callable[[PartitionLog], None] | None = None) -> None:
        self.directory = directory
        self._config = config
        self._ctx = context
        self._on_roll = on_roll
        self._lock = threading.Lock()
        self._read_only = read_only = context.options.read_only
        self._fsync_always = context.options.fsync == "always"  # (options are frozen)
        self._fsync_interval = context.options.fsync == "interval"
        self._head = Head(os.path.join(directory, _head.FILE_NAME), read_only)
        # A layout change (compaction, retention) may remove batches producer state
        # counts: it is rebuilt on next use.
        self._segments = SegmentList(directory, lambda: config().index_interval_bytes,
                                     lambda: self._producers.invalidate(),  # noqa: PLW0108
                                     read_only)
        self._producers = ProducerStateManager(self._segments)
        self._recovery = Recovery(self._segments, context, self._head, self._publish,
                                  self._locked, self._exclusive)
        self._own_seq = -1          # seq of the last state this process published
        self._closed = False
        self._deleted = False       # closed because this process deleted the topic
        try:
            if read_only:
                pass  # a reader: it trusts the published state and repairs nothing
            elif recover:
                with self._write_lock():  # judge the head as found, before any repair
                    self._recovery.recover(self._head.read(), config())
            else:
                with self._locked():
                    pass
        except BaseException:
            self._head.close()
            raise

    def __repr__(self) -> str:
        return f"<PartitionLog {self.directory}>"

    # -- state ----------------------------------------------------------------------

    @_read_call
    def state(self) -> HeadState:
        """The published state (lock-free). Cost: one head read."""
        return self._state()

    def _state(self) -> HeadState:
        """``state`` for the calls that translate its errors themselves (``fetch``)."""
        if self._closed:
            self._check_open()
        st = self._head.read()
        if st is None:
            if self._read_only:
                raise CorruptRecordError(f"neither slot of {self._head.path} checks out; "
                                         "open the log without read_only to recover it")
            with self._locked() as st:
                return st
        if st.flags & _head.FLAG_DELETED:
            self._raise_deleted()
        if not self._segments.covers(st):
            self._segments.reload(st.layout_epoch)
        return st

    def _raise_deleted(self) -> None:
        raise UnknownTopicError(f"the topic of partition {self.directory} was deleted")

    def deleted(self) -> bool:
        """True once the topic was deleted, by this process or another (one head
        read). Never raises."""
        if self._deleted:
            return True
        try:
            st = self._head.read()
        except ValueError:  # the head was closed meanwhile (by ``close``)
            return self._deleted
        return st is not None and st.deleted

    @property
    def start_offset(self) -> int:
        return self.state().start_offset

    @property
    def end_offset(self) -> int:
        return self.state().end_offset

    def bounds(self) -> tuple[int, int]:
        """``(start_offset, end_offset)`` from one head read."""
        st = self.state()
        return st.start_offset, st.end_offset

    def wake_words(self) -> tuple[_notify.Word, _notify.Word]:
        """The head's (notify counter, waiters) words, for ``_notify.wait``."""
        return self._head.counter, self._head.waiters

    def notify_count(self) -> int:
        return self._head.notify_count()

    @property
    def segments(self) -> SegmentList:
        """The segment list, for readers of whole segments (compaction, tools). Bound
        every read by ``segments.limit(segment, state())``; change nothing."""
        return self._segments

    def config(self) -> TopicConfig:
        """The topic's current settings."""
        return self._config()

    def _check_open(self) -> None:
        if self._closed:
            if self._deleted:  # as other processes see it (FLAG_DELETED), not ClosedError
                self._raise_deleted()
            raise ClosedError(f"partition {self.directory} is closed")

    @contextmanager
    def _write_lock(self) -> Iterator[None]:
        """Hold the writer lock: the thread lock, then ``flock`` for the processes.
        Every change takes it, so a read-only log refuses them all here."""
        self._ctx.check_not_read_only(f"changing partition {self.directory}")
        with self._lock:
            self._check_open()
            fcntl.flock(self._head.fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._head.fd, fcntl.LOCK_UN)

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """The cleaner lock, then the writer lock, with no repair on the way in (for
        ``Recovery.repair``, which must see the data as it is)."""
        with self.cleaner_lock(), self._write_lock():
            yield

    @contextmanager
    def _locked(self) -> Iterator[HeadState]:
        """Hold the writer lock and yield the current state, repaired if a writer died
        or the head is unreadable."""
        with self._write_lock():
            yield self._sync()

    def _sync(self) -> HeadState:
        return self._sync_active()[0]

    def _sync_active(self) -> tuple[HeadState, Segment]:
        """The current state and its active segment, writer lock held (``_locked``)."""
        st = self._head.read_for_writer()
        if st is None:
            st = self._recovery.recover(None, self._config())
            return st, self._segments[st.active_base]
        if st.flags & _head.FLAG_DELETED:
            self._raise_deleted()
        segments = self._segments
        active = segments.writer_active(st)
        if active is None:
            segments.reload(st.layout_epoch)
            active = segments.writer_active(st)
            if active is None:
                st = self._recovery.recover(st, self._config())
                return st, self._segments[st.active_base]
        if st.seq != self._own_seq or not active.indexes.loaded:
            # Someone else wrote since our last publish (or we just arrived): pick up
            # their index entries, and look for a batch that a writer began at the
            # published end and never published because it died.
            st = self._recovery.cut_debris(st, active)
            active.prepare_writer_indexes(st.active_position,
                                          self._config().index_interval_bytes)
            self._producers.catch_up(st)
        return st, active

    def _publish(self, st: HeadState) -> HeadState:
        if st.boot_id != self._ctx.boot_id:
            st = st._replace(boot_id=self._ctx.boot_id)
        st = self._head.publish(st)
        self._own_seq = st.seq
        return st

    # -- writing --------------------------------------------------------------------

    @_unknown_if_deleted
    def append(self, batch: EncodedBatch) -> AppendResult:
        """Append one encoded batch; return its base offset. Visible to readers in every
        process when this returns (and on disk, with ``fsync="always"``).

        Cost: two ``flock`` calls, one head read and one head publish, the memcpy and
        checksum of the batch; an index entry every ``index_interval_bytes``.
        """
        config = self._config()
        ctx = self._ctx
        if ctx.failure is not None or self._read_only:
            ctx.check_writable()
        with self._lock:  # the context managers of _locked, inlined: this is the hot path
            if self._closed:
                self._check_open()
            fd = self._head.fd
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                result, rolled = self._append_locked(batch, config, ctx)
            except OSError as exc:
                raise _fileutil.translate_os_error(exc, f"appending to {self.directory}") \
                    from exc
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        if self._fsync_interval and result.base_offset >= 0:
            with ctx.dirty_lock:
                ctx.dirty.add(self)
        if rolled:
            self._after_roll(config)
        return result

    def _append_locked(self, batch: EncodedBatch, config: TopicConfig, ctx: StorageContext
                       ) -> tuple[AppendResult, bool]:
        """The body of ``append``, writer lock held. Returns (result, rolled)."""
        always = self._fsync_always
        st, active = self._sync_active()
        stored = None
        if batch.producer_id >= 0 and (batch.base_sequence >= 0 or batch.attributes):
            admitted, stored = self._producers.admit(st, batch)
            if admitted is None:
                return AppendResult(-1, st.end_offset, -1, stored), False
            batch = admitted
        if st.flags & _head.FLAG_CLEAN:
            st = self._recovery.make_dirty(st)
        now = -1
        segment_ms, log_time_type = config.segment_ms, config.timestamp_type == "log_append_time"
        if segment_ms is not None or log_time_type:
            now = ctx.clock()
        position = st.active_position
        rolled = position > 0 and (
            position + HEADER_BYTES + len(batch.payload) > config.segment_bytes
            or (segment_ms is not None and now - st.active_created_ms >= segment_ms))
        if rolled:
            st, active = self._roll(st, active, config, now)
            position = st.active_position
        base_offset = st.end_offset
        log_time = now if log_time_type else -1
        if log_time >= 0:
            length = active.append(batch, position, base_offset, config.segment_bytes,
                                   log_time, log_time)
            max_ts = max(st.active_max_timestamp_ms, log_time)
        else:
            length = active.append(batch, position, base_offset, config.segment_bytes)
            max_ts = max(st.active_max_timestamp_ms, batch.max_timestamp_ms)
        end = base_offset + batch.last_offset_delta + 1
        if always:
            ctx.fsync(active.sync)
            self._publish(_head.appended(st, end, position + length, max_ts)._replace(
                recovery_base=active.base_offset, recovery_position=position + length,
                recovery_offset=end))
        else:  # _publish(_head.appended(st, ...)), one state built instead of two
            if st.boot_id != ctx.boot_id:
                st = st._replace(boot_id=ctx.boot_id)
            self._own_seq = self._head.publish_appended(st, end, position + length, max_ts).seq
        producers = self._producers
        if producers.built:  # else nothing to keep in step (checked here: hot path)
            producers.appended(batch, base_offset, active.base_offset, position + length)
        # after the publish: an index entry never names unpublished bytes
        active.index_batch(position, base_offset, max_ts, config.index_interval_bytes)
        return _new_result(AppendResult, (base_offset, end, log_time, stored)), rolled

    def mark_deleted(self) -> None:
        """Refuse every later read and write of this partition, in every process.
        Taken under the writer lock, so no append is half done when it lands."""
        with self._locked() as st:
            self._publish(st._replace(flags=st.flags | _head.FLAG_DELETED))
            self._deleted = True

    def _roll(self, st: HeadState, active: Segment, config: TopicConfig, now: int
              ) -> tuple[HeadState, Segment]:
        """Seal the active segment and start a new one at the end offset."""
        if now < 0:
            now = self._ctx.clock()
        active.seal(st.active_position, st.active_max_timestamp_ms,
                    config.index_interval_bytes)
        if self._ctx.options.fsync != "never":
            self._ctx.fsync(active.sync)
        new_base = st.end_offset
        seg = self._segments.create(new_base, self._ctx.clock,
                                    sync_dir=self._ctx.options.fsync != "never")
        self._producers.rolled(st, new_base)
        new = self._publish(st._replace(active_base=new_base, active_position=0,
                                        active_created_ms=now, active_max_timestamp_ms=-1))
        active.release_writer()
        self._segments.add(seg)
        return new, seg

    @_fileutil.translate_errors("partition")
    def _after_roll(self, config: TopicConfig) -> None:
        """An append sealed a segment: retention may delete old ones (unless another
        process is cleaning this partition right now), then ``on_roll`` runs."""
        if "delete" in config.cleanup_policy:
            with self.cleaner_lock(block=False) as free:
                pass
            if free:
                self.enforce_retention()
        if self._on_roll is not None:
            self._on_roll(self)

    @_fileutil.translate_errors("partition")
    def roll(self) -> None:
        """Start a new segment now (if the active one holds anything)."""
        config = self._config()
        self._ctx.check_writable()
        with self._locked() as st:
            if st.active_position > 0:
                if st.clean:
                    st = self._recovery.make_dirty(st)
                self._roll(st, self._segments[st.active_base], config, -1)

    @_fileutil.translate_errors("partition")
    def last_sequence(self, producer_id: int) -> int | None:
        """The last sequence stored for ``producer_id`` (None if it has none here)."""
        with self._locked() as st:
            return self._producers.state(st).last_sequence(producer_id)

    # -- retention and compaction -------------------------------------------------------

    @contextmanager
    def cleaner_lock(self, block: bool = True) -> Iterator[bool]:
        """Serialize retention and compaction of this partition across processes.
        Always taken before the writer lock, never while holding it. Yields False
        (without waiting) when ``block`` is false and another holder has it."""
        self._ctx.check_not_read_only(f"cleaning partition {self.directory}")
        fd = _fileutil.open_fd(os.path.join(self.directory, CLEANER_LOCK),
                               os.O_RDWR | os.O_CREAT)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    @_fileutil.translate_errors("partition")
    def size_bytes(self, st: HeadState | None = None) -> int:
        """Bytes of batches stored (not the allocated file sizes)."""
        return self._segments.size_bytes(st or self.state())

    @_fileutil.translate_errors("partition")
    def segment_count(self, st: HeadState | None = None) -> int:
        return len(self._segments.published(st or self.state()))

    # -- durability and shutdown ----------------------------------------------------------

    @_fileutil.translate_errors("partition")
    def sync(self) -> None:
        """fsync everything published so far and advance the durable point (the
        interval flusher, ``Log.flush``, clean shutdown; ``Recovery.sync``)."""
        self._recovery.sync(self.state())

    @_fileutil.translate_errors("partition")
    def close(self, clean: bool = False) -> None:
        """Release this process's resources. With ``clean`` (the caller is the last
        user of the log), fsync everything and mark the head clean."""
        if self._closed:
            return
        try:
            if clean and self._ctx.failure is None:
                self._recovery.close_clean()
        finally:
            # Closed for a topic another process deleted (``TopicStore`` forgets it):
            # later calls through handles still held raise UnknownTopicError too.
            self._deleted = self.deleted()
            self._closed = True
            with self._ctx.dirty_lock:
                self._ctx.dirty.discard(self)
            self._segments.close()
            self._head.close()

    # -- reading --------------------------------------------------------------------

    @_read_call
    def fetch(self, offset: int, max_bytes: int = DEFAULT_FETCH_BYTES,
              max_records: int | None = None, state: HeadState | None = None
              ) -> list[DecodedBatch]:
        """Verified batches holding the records from ``offset`` on, bounded by the
        published end (of ``state``, by default the current one), ``max_bytes`` and
        ``max_records`` (at least one batch is returned when any record is available,
        even if it is larger).

        The first batch may start before ``offset``; callers skip those records.
        Raises ``OffsetOutOfRangeError`` below ``start_offset`` or above ``end_offset``;
        returns ``[]`` at ``end_offset``. A segment deleted meanwhile (retention, in
        any process) makes it look again: the state then says where the log starts
        now. Damaged data below the end (a bad batch, or no batch where the head says
        there is one) raises ``CorruptRecordError`` naming the repair, never ``[]``:
        a reader must not wait silently for data that is not there. Lock-free.
        Cost: ``SegmentList.read``.
        """
        segments = self._segments
        if segments.retired and self._lock.acquire(blocking=False):
            # Close the writer descriptors of segments a reload replaced (a deleted
            # file keeps its space while one is open). The thread lock is enough: only
            # this process's writer threads use them, and always under it.
            try:
                segments.release_retired()
            finally:
                self._lock.release()
        retries = 3       # a file missing while the layout stayed the same
        changes = 100     # layout changes under the read (another process's work)
        while True:
            st = state if state is not None else self._state()
            if not st.start_offset <= offset < st.end_offset:
                if offset == st.end_offset:
                    return []
                raise OffsetOutOfRangeError(
                    f"offset {offset} is out of range [{st.start_offset}, {st.end_offset}] "
                    f"of {self.directory}", offset=offset, start_offset=st.start_offset,
                    end_offset=st.end_offset)
            damage: CorruptRecordError | None = None
            missing: FileNotFoundError | None = None
            try:
                batches = segments.read(offset, st, max_bytes, max_records)
                if batches:
                    return batches
                damage = CorruptRecordError(f"no batch holds offset {offset} of "
                                            f"{self.directory}, below its published end "
                                            f"offset {st.end_offset}")
            except FileNotFoundError as exc:
                missing = exc
            except CorruptRecordError as exc:
                damage = exc
            fresh = self._head.read()
            if fresh is not None and fresh.layout_epoch != st.layout_epoch and changes:
                # Segments were deleted or replaced under the read (retention,
                # delete_records, compaction, a repair, in any process): a missing
                # segment or a gap in this listing says nothing about the data. Read
                # again under the new state, which also says where the log starts now.
                changes -= 1
            elif damage is not None:
                raise CorruptRecordError(f"{damage}; {self._ctx.repair_hint()}") from damage
            elif retries:
                retries -= 1
            else:
                assert missing is not None
                raise missing
            state = None
            if fresh is not None:
                segments.reload(fresh.layout_epoch)

    @_unknown_if_deleted
    @_fileutil.translate_errors("partition")
    def offset_for_time(self, timestamp_ms: int) -> int | None:
        """The earliest offset whose record has a timestamp >= ``timestamp_ms``, or None.
        Cost: O(log n) (``SegmentList.offset_for_time``)."""
        return self._segments.offset_for_time(timestamp_ms, self.state())

    # -- verification -------------------------------------------------------------------

    @_fileutil.translate_errors("partition")
    def check(self, fix: bool = False, progress: Callable[[int], None] | None = None
              ) -> tuple[list[Problem], CheckStats]:
        """Verify every batch, the chaining of segments and offsets, and every index;
        with ``fix``, repair what is always safe and cut the partition before damaged
        data (``Recovery.check``, ``Recovery.repair``). O(bytes)."""
        if fix:
            self._ctx.check_not_read_only(f"repairing partition {self.directory}")
        problems = self._recovery.check_leftovers(fix)
        found, stats = self._recovery.check(self.state(), self._config(), fix, progress)
        return problems + found, stats

    def _check(self) -> None:
        """Assert the partition's invariants (used by tests after every step): the head,
        the segment list and every published segment hold theirs (a container checks
        what it holds: the deliberate reaches into their ``_check``), the list agrees
        with the head, and the published data chains from the first segment's base to
        the end offset. Cost: a header scan of the published data."""
        st = self.state()
        segments = self._segments
        self._head._check()
        segments._check(st)
        expected = segments.bases[0]
        for segment in segments.published(st):
            segment._check(segments.limit(segment, st))
            assert segment.base_offset == expected, \
                f"segment {segment.base_offset} does not follow offset {expected}"
            position = 0
            for position, header in segment.headers(0, segments.limit(segment, st)):
                assert header.base_offset >= expected, (segment, position, header)
                expected = header.next_offset
            if segment.base_offset == st.active_base:
                assert position <= st.active_position
        assert expected == st.end_offset, (expected, st)


def create_partition_files(directory: str, now_ms: int, base_offset: int = 0) -> None:
    """Lay out a new, empty partition in ``directory`` (which must not exist yet)."""
    _fileutil.makedirs(directory)
    _head.create(os.path.join(directory, _head.FILE_NAME), _head.initial_state(now_ms,
                                                                                 base_offset))
    fd = _fileutil.open_fd(os.path.join(directory, file_name(base_offset)),
                           os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    os.close(fd)
    _fileutil.sync_dir(directory)


__all__ = ["AppendResult", "CheckStats", "LogDirectoryError", "PartitionLog",
           "StorageContext", "create_partition_files"]
