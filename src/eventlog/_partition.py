"""A partition: its segments, the writer lock, roll, read, time lookup and recovery.

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

Recovery
--------
Runs when the first process opens a log (``Log`` holds an exclusive lock on the
directory while it does) and whenever a head turns out unreadable:

1. A head that is clean (closed by its last user) or written during the current
   kernel boot (so only a process, not the OS, can have crashed) is exact: only the
   bytes after its published end are checked and cut.
2. Otherwise every batch from the segment holding the durable point (the last
   fsynced position) onward is validated. A bad batch at or after the durable point is
   a torn tail: it and everything after it is moved aside (``*.cut-*`` files) and the
   log ends before it. A bad batch *before* the durable point is corruption of
   acknowledged data and raises ``CorruptRecordError``, unless the log was opened
   with ``recovery="truncate"``.
3. Indexes of the segments it validated are rebuilt from what it read.
"""

from __future__ import annotations

import bisect
import fcntl
import json
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

from . import _compaction, _fileutil, _format, _head, _notify
from ._format import BatchHeader, DecodedBatch, EncodedBatch
from ._head import Head, HeadState
from ._producer_state import (
    SEQUENCE_MODULUS,
    ProducerState,
    load_snapshots,
    snapshot_path,
    write_snapshot,
)
from ._segment import IndexPolicy as _SegmentPolicy
from ._segment import Segment, file_name, parse_file_name
from .config import LogOptions, TopicConfig
from .errors import (
    ClosedError,
    CorruptRecordError,
    LogDirectoryError,
    LogFailedError,
    OffsetOutOfRangeError,
    UnknownTopicError,
)

_logger = logging.getLogger("eventlog")
_MAX_HINTS = 64
CLEANER_LOCK = "cleaner.lock"
CLEANER_CHECKPOINT = "cleaner-checkpoint"
_MAX_MAPPED_SEALED = 4  # sealed segments a partition keeps mapped for readers...
_MAX_MAPPED_SEALED_BYTES = 256 << 20  # ...and their bytes (but always the one being read)
DEFAULT_FETCH_BYTES = 1 << 20


class StorageContext:
    """What all partitions of one open ``Log`` share: options, clock, the failed
    state, and the set of partitions with unsynced writes (for the interval flusher)."""

    def __init__(self, options: LogOptions) -> None:
        self.options = options
        self.clock: Callable[[], int] = options.clock
        self.boot_id = _head.current_boot_id()
        self.failure: BaseException | None = None
        self.dirty: set[PartitionLog] = set()
        self.dirty_lock = threading.Lock()

    def check_writable(self) -> None:
        if self.failure is not None:
            raise LogFailedError("an fsync failed earlier, so writes may not have reached "
                                 "the disk; the log is read-only until reopened") \
                from self.failure

    def fail(self, exc: BaseException) -> LogFailedError:
        self.failure = exc
        err = LogFailedError(f"fsync failed ({exc}); the log is now read-only until reopened")
        err.__cause__ = exc
        return err


class Problem(NamedTuple):
    """Something ``check`` found wrong."""

    path: str
    kind: str        # "corrupt", "gap", "index", "leftover", "head"
    message: str
    fixed: bool      # repaired by check(fix=True)


class CheckStats(NamedTuple):
    segments: int
    batches: int
    records: int
    bytes: int


class AppendResult(NamedTuple):
    base_offset: int         # offset of the first appended record (-1: none appended)
    next_offset: int
    log_append_time_ms: int  # -1 unless the topic uses log-append time
    # Idempotent batches: offsets of the leading records that were stored already
    # (-1 where no longer known); they were not appended again.
    stored_offsets: list[int] | None = None


class PartitionLog:
    """One partition of one topic, in one process. Thread-safe.

    Cost notes: ``append`` takes two ``flock`` calls and one head read besides the
    memcpy and checksum of the batch; ``fetch`` takes no lock and, when it continues
    where a previous fetch ended, no index search.
    """

    def __init__(self, directory: str, config: Callable[[], TopicConfig],
                 context: StorageContext, *, recover: bool = False) -> None:
        self.directory = directory
        self._config = config
        self._ctx = context
        self._lock = threading.Lock()
        self._head = Head(os.path.join(directory, _head.FILE_NAME))
        self._segments: dict[int, Segment] = {}
        self._bases: list[int] = []
        self._layout_epoch = -1
        self._hints: OrderedDict[int, tuple[Segment, int]] = OrderedDict()
        # The last batch a fetch returned only in part, with its segment (see _fetch).
        self._partial: tuple[Segment, DecodedBatch] | None = None
        self._mapped_sealed: OrderedDict[int, Segment] = OrderedDict()
        self._own_seq = -1          # seq of the last state this process published
        self._closed = False
        self._prefix_max: list[int] = []
        self._prefix_epoch = -1
        # Idempotence state, built on first use; valid up to (segment base, position).
        self._producers: ProducerState | None = None
        self._producers_end = (-1, -1)
        self._producers_stale = False
        self._reload_lock = threading.Lock()
        self._retired: list[Segment] = []  # replaced segments whose fds the writer closes
        try:
            if recover:
                with self._write_lock():  # judge the head as found, before any repair
                    self._recover(self._head.read())
            else:
                with self._locked():
                    pass
        except BaseException:
            self._head.close()
            raise

    def __repr__(self) -> str:
        return f"<PartitionLog {self.directory}>"

    # -- state ----------------------------------------------------------------------

    @_fileutil.translate_errors("partition")
    def state(self) -> HeadState:
        """The published state (lock-free). Cost: one head read."""
        self._check_open()
        st = self._head.read()
        if st is None:
            with self._locked() as st:
                return st
        if st.deleted:
            self._raise_deleted()
        if st.layout_epoch != self._layout_epoch or st.active_base not in self._segments:
            self._reload_segments(st.layout_epoch)
        return st

    def _raise_deleted(self) -> None:
        raise UnknownTopicError(f"the topic of partition {self.directory} was deleted")

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

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"partition {self.directory} is closed")

    @contextmanager
    def _write_lock(self) -> Iterator[None]:
        """Hold the writer lock: the thread lock, then ``flock`` for the processes."""
        with self._lock:
            self._check_open()
            fcntl.flock(self._head.fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._head.fd, fcntl.LOCK_UN)

    @contextmanager
    def _locked(self) -> Iterator[HeadState]:
        """Hold the writer lock and yield the current state, repaired if a writer died
        or the head is unreadable."""
        with self._write_lock():
            yield self._sync()

    def _sync(self) -> HeadState:
        st = self._head.read()
        if st is None:
            return self._recover(None)
        if st.deleted:
            self._raise_deleted()
        if st.layout_epoch != self._layout_epoch or st.active_base not in self._segments:
            self._reload_segments(st.layout_epoch)
            if st.active_base not in self._segments:
                return self._recover(st)
        while self._retired:
            self._retired.pop().release_writer()
        if self._producers_stale:
            self._producers, self._producers_stale = None, False
        active = self._segments[st.active_base]
        if st.seq != self._own_seq or not active._indexes_loaded:
            # Someone else wrote since our last publish (or we just arrived): pick up
            # their index entries, and look for a batch that a writer began at the
            # published end and never published because it died.
            st = self._cut_debris(st, active)
            active.prepare_writer_indexes(st.active_position,
                                          self._config().index_interval_bytes)
            if self._producers is not None:
                self._catch_up_producers(st)
        return st

    def _cut_debris(self, st: HeadState, active: Segment) -> HeadState:
        """Writers write only at the published end, header first, so a dead writer's
        bytes (if any) begin exactly there: one 64-byte check finds them."""
        size = active.file_bytes()
        if size <= st.active_position:
            return st
        mm = active.mapping(size)
        assert mm is not None
        if _format.is_unwritten(mm, st.active_position, size):
            return st
        self._move_aside(active, st.active_position)
        return self._publish(st)

    def _move_aside(self, segment: Segment, position: int) -> int:
        stem = os.path.join(self.directory, f"{segment.base_offset:020d}.cut-{position}-"
                            f"{self._ctx.clock()}")
        aside, n = stem, 0
        while os.path.exists(aside):  # a recovery that died after writing it, re-run
            n += 1
            aside = f"{stem}-{n}"
        with _fileutil.os_errors(f"moving damaged bytes of {segment.path} aside"):
            return segment.cut(position, aside)

    def _publish(self, st: HeadState) -> HeadState:
        if st.boot_id != self._ctx.boot_id:
            st = st._replace(boot_id=self._ctx.boot_id)
        st = self._head.publish(st)
        self._own_seq = st.seq
        return st

    # -- segments -----------------------------------------------------------------

    def _list_bases(self) -> list[int]:
        with _fileutil.os_errors(f"listing {self.directory}"):
            names = os.listdir(self.directory)
        return sorted(b for b in map(parse_file_name, names) if b is not None)

    def _reload_segments(self, layout_epoch: int) -> None:
        """List the segment files again. May run in any thread (readers call it), so it
        only swaps in new objects: writer resources of retired segments are released,
        and producer state rebuilt, by the writer under its lock (``_sync``)."""
        with self._reload_lock:
            bases = self._list_bases()
            old = self._segments
            fresh: dict[int, Segment] = {}
            for base in bases:
                seg = old.get(base)
                if seg is None or self._layout_epoch != layout_epoch:
                    # A replaced file (compaction) keeps its name: after a layout change
                    # map every segment again. Old mappings stay valid until dropped.
                    seg = Segment(self.directory, base)
                fresh[base] = seg
            self._retired.extend(seg for base, seg in old.items() if fresh.get(base) is not seg)
            if self._layout_epoch != layout_epoch:
                self._producers_stale = True
            self._segments = fresh
            self._bases = bases
            self._layout_epoch = layout_epoch
            self._hints.clear()
            self._partial = None
            self._mapped_sealed.clear()

    def _segment_for(self, offset: int) -> Segment | None:
        bases = self._bases
        i = bisect.bisect_right(bases, offset) - 1
        if i < 0:
            return None
        return self._segments.get(bases[i])

    def _next_segment(self, base: int) -> Segment | None:
        bases = self._bases
        i = bisect.bisect_right(bases, base)
        return self._segments.get(bases[i]) if i < len(bases) else None

    def _limit(self, segment: Segment, st: HeadState) -> int:
        """How far a reader may look into ``segment`` under state ``st``."""
        if segment.base_offset == st.active_base:
            return st.active_position
        if segment.base_offset > st.active_base:
            return 0  # created by a roll that is not published yet
        size = segment.file_bytes() if segment._mm is None else segment._mapped_bytes
        if segment._mm is None or segment._mapped_bytes < size:
            segment.mapping(size)
        self._note_sealed_mapping(segment)
        return size

    def _note_sealed_mapping(self, segment: Segment) -> None:
        """Keep at most a few sealed segments, and a bounded number of their bytes,
        mapped, so that reading a log much larger than memory leaves resident memory
        flat: pages of a mapped file that a reader touched count in its RSS."""
        cache = self._mapped_sealed
        cache[segment.base_offset] = segment
        cache.move_to_end(segment.base_offset)
        while len(cache) > 1 and (
                len(cache) > _MAX_MAPPED_SEALED
                or sum(s._mapped_bytes for s in cache.values()) > _MAX_MAPPED_SEALED_BYTES):
            _, old = cache.popitem(last=False)
            old._mm = None  # unmapped when the last reader lets go of it
            old._mapped_bytes = 0
            old.drop_indexes()

    # -- writing --------------------------------------------------------------------

    def append(self, batch: EncodedBatch) -> AppendResult:
        """Append one encoded batch; return its base offset. Visible to readers in every
        process when this returns (and on disk, with ``fsync="always"``).

        Cost: two ``flock`` calls, one head read and one head publish, the memcpy and
        checksum of the batch; an index entry every ``index_interval_bytes``.
        """
        config = self._config()
        ctx = self._ctx
        ctx.check_writable()
        with self._lock:  # the context managers of _locked, inlined: this is the hot path
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
        if ctx.options.fsync == "interval" and result.base_offset >= 0:
            with ctx.dirty_lock:
                ctx.dirty.add(self)
        if rolled:
            # A segment was sealed: retention may delete old ones, and a compacted topic
            # is cleaned once enough of it is dirty (amortized over the bytes written).
            self.maintain(config)
        return result

    def _append_locked(self, batch: EncodedBatch, config: TopicConfig, ctx: StorageContext
                       ) -> tuple[AppendResult, bool]:
        """The body of ``append``, writer lock held. Returns (result, rolled)."""
        always = ctx.options.fsync == "always"
        st = self._sync()
        if batch.producer_id >= 0 and batch.base_sequence >= 0:
            decision = self._producer_state(st).check(
                batch.producer_id, batch.base_sequence, batch.record_count)
            if decision.duplicate:
                return AppendResult(-1, st.end_offset, -1, decision.stored_offsets), False
            stored = decision.stored_offsets if decision.skip else None
            if decision.skip:
                batch = batch.without_first(decision.skip, SEQUENCE_MODULUS)
        else:
            stored = None
        if st.clean:
            st = self._make_dirty(st)
        active = self._segments[st.active_base]
        now = -1
        if config.segment_ms is not None or config.timestamp_type == "log_append_time":
            now = ctx.clock()
        if st.active_position > 0 and (
                st.active_position + batch.size > config.segment_bytes
                or (config.segment_ms is not None
                    and now - st.active_created_ms >= config.segment_ms)):
            st, active = self._roll(st, active, config, now)
            rolled = True
        else:
            rolled = False
        position = st.active_position
        base_offset = st.end_offset
        log_time = now if config.timestamp_type == "log_append_time" else -1
        if log_time >= 0:
            length = active.append(batch, position, base_offset, config.segment_bytes,
                                   log_time, log_time)
            max_ts = max(st.active_max_timestamp_ms, log_time)
        else:
            length = active.append(batch, position, base_offset, config.segment_bytes)
            max_ts = max(st.active_max_timestamp_ms, batch.max_timestamp_ms)
        end = base_offset + batch.last_offset_delta + 1
        if always:
            self._fsync(active)
            new = st._replace(end_offset=end, active_position=position + length,
                              active_max_timestamp_ms=max_ts,
                              recovery_base=active.base_offset,
                              recovery_position=position + length,
                              recovery_offset=end)
        else:
            new = st._replace(end_offset=end, active_position=position + length,
                              active_max_timestamp_ms=max_ts)
        self._publish(new)
        producers = self._producers
        if producers is not None:
            if batch.producer_id >= 0 and batch.base_sequence >= 0:
                producers.record(batch.producer_id, batch.base_sequence,
                                 base_offset, batch.last_offset_delta + 1)
            self._producers_end = (active.base_offset, position + length)
        # Index entries go after the publish: an entry never names unpublished
        # bytes. The batch is stored now; an index that cannot be written is
        # derived data and is rebuilt later, so it does not fail the append.
        if active.index_due(position, config.index_interval_bytes):
            policy = active.index_policy(config.index_interval_bytes)
            policy.observe(position, base_offset, max_ts)
            try:
                active.write_entries(policy)
            except OSError as exc:
                active.offset_index.valid = active.time_index.valid = False
                _logger.warning("index of %s not updated (%s); it will be rebuilt",
                                active.path, exc)
        return AppendResult(base_offset, end, log_time, stored), rolled

    def _make_dirty(self, st: HeadState) -> HeadState:
        """Durably clear the clean-shutdown flag before the first write after it, so a
        later power loss cannot make recovery trust an out-of-date clean state."""
        st = self._publish(st._replace(flags=st.flags & ~_head.FLAG_CLEAN))
        self._sync_head()
        return st

    def _sync_head(self) -> None:
        try:
            self._head.sync()
        except OSError as exc:
            raise self._ctx.fail(exc) from exc

    def mark_deleted(self) -> None:
        """Refuse every later read and write of this partition, in every process.
        Taken under the writer lock, so no append is half done when it lands."""
        with self._locked() as st:
            self._publish(st._replace(flags=st.flags | _head.FLAG_DELETED))

    def _fsync(self, segment: Segment, own_fd: bool = False) -> None:
        try:
            segment.sync(own_fd)
        except OSError as exc:
            raise self._ctx.fail(exc) from exc

    def _roll(self, st: HeadState, active: Segment, config: TopicConfig, now: int
              ) -> tuple[HeadState, Segment]:
        """Seal the active segment and start a new one at the end offset."""
        if now < 0:
            now = self._ctx.clock()
        self._seal(active, st, config)
        if self._ctx.options.fsync != "never":
            self._fsync(active)
        new_base = st.end_offset
        seg = self._segments.get(new_base) or Segment(self.directory, new_base)
        with _fileutil.os_errors(f"creating segment {seg.path}"):
            seg.open_for_write()  # a file left by a roll that died is reused
            if seg.file_bytes() > 0 and seg.data_end() > 0:
                self._move_aside(seg, 0)
            if self._ctx.options.fsync != "never":
                _fileutil.sync_dir(self.directory)
        if self._producers is not None and self._producers_end == (st.active_base,
                                                                   st.active_position):
            try:  # derived data: without it, a rebuild reads further back
                write_snapshot(self.directory, new_base, self._producers)
            except OSError as exc:
                _logger.warning("producer-state snapshot not written (%s)", exc)
        new = self._publish(st._replace(active_base=new_base, active_position=0,
                                        active_created_ms=now, active_max_timestamp_ms=-1))
        active.release_writer()
        self._segments = {**self._segments, new_base: seg}
        if new_base not in self._bases:
            self._bases = [*self._bases, new_base]
        return new, seg

    def _seal(self, segment: Segment, st: HeadState, config: TopicConfig) -> None:
        """Add the final index entries that mark ``segment``'s indexes complete."""
        segment.refresh_indexes()
        if not (segment.offset_index.valid and segment.time_index.valid):
            segment.rebuild_indexes(st.active_position, config.index_interval_bytes)
            return
        policy = segment.index_policy(config.index_interval_bytes)
        last = segment.offset_index.last()
        start = last[1] if last else 0
        for position, header in segment.headers(start, st.active_position, verify=False):
            policy.last_batch = (position, header.base_offset)
        policy.finish(st.active_max_timestamp_ms)
        segment.write_entries(policy)

    # -- retention and compaction -------------------------------------------------------

    @contextmanager
    def cleaner_lock(self, block: bool = True) -> Iterator[bool]:
        """Serialize retention and compaction of this partition across processes.
        Always taken before the writer lock, never while holding it."""
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
        st = st or self.state()
        total = 0
        for base in self._bases:
            if base > st.active_base:
                break
            segment = self._segments[base]
            total += (st.active_position if base == st.active_base
                      else segment.sealed_size(self._limit(segment, st)))
        return total

    @_fileutil.translate_errors("partition")
    def segment_count(self, st: HeadState | None = None) -> int:
        st = st or self.state()
        return sum(1 for b in self._bases if b <= st.active_base)

    def _sealed_sizes(self, st: HeadState) -> list[tuple[int, int]]:
        out = []
        for base in self._bases:
            if base >= st.active_base:
                break
            segment = self._segments[base]
            out.append((base, segment.sealed_size(self._limit(segment, st))))
        return out

    @_fileutil.translate_errors("partition")
    def maintain(self, config: TopicConfig | None = None) -> None:
        """Retention, then compaction if the topic is compacted and dirty enough.
        Skipped if another process is cleaning this partition right now."""
        config = config or self._config()
        with self.cleaner_lock(block=False) as locked:
            if not locked:
                return
        if "delete" in config.cleanup_policy:
            self.enforce_retention()
        if config.compacted and self.dirty_ratio() >= config.min_cleanable_dirty_ratio:
            _compaction.compact(self, self._ctx.clock())

    @_fileutil.translate_errors("partition")
    def enforce_retention(self) -> int:
        """Delete sealed segments beyond ``retention_ms`` / ``retention_bytes``; return how
        many. The start offset moves to the first record kept. Whole segments only; the
        active segment is never deleted. Cost: O(segments)."""
        config = self._config()
        if config.retention_ms is None and config.retention_bytes is None:
            return 0
        interval = config.index_interval_bytes
        with self.cleaner_lock(), self._locked() as st:
            sealed = self._sealed_sizes(st)
            doomed: list[int] = []
            if config.retention_ms is not None:
                cutoff = self._ctx.clock() - config.retention_ms
                for base, _ in sealed:
                    segment = self._segments[base]
                    newest = segment.sealed_max_timestamp(self._limit(segment, st), interval)
                    if newest >= cutoff:
                        break
                    doomed.append(base)
            if config.retention_bytes is not None:
                excess = sum(size for _, size in sealed) + st.active_position \
                    - config.retention_bytes
                for base, size in sealed:
                    if excess - size < 0:
                        break
                    excess -= size
                    if base not in doomed:
                        doomed.append(base)
            if not doomed:
                return 0
            doomed.sort()
            keep = [b for b in self._bases if b > doomed[-1]]
            self._delete_segments(st, doomed, max(st.start_offset, keep[0]))
            return len(doomed)

    @_fileutil.translate_errors("partition")
    def delete_records(self, before_offset: int) -> int:
        """Make records below ``before_offset`` unreadable (the log start offset moves
        there) and delete the segments wholly below it, as Kafka's deleteRecords.
        Returns the new start offset."""
        if type(before_offset) is not int:
            raise TypeError("before_offset must be an int")
        with self.cleaner_lock(), self._locked() as st:
            if not 0 <= before_offset <= st.end_offset:
                raise OffsetOutOfRangeError(
                    f"delete_records: offset {before_offset} is beyond the end "
                    f"{st.end_offset} of {self.directory}", offset=before_offset,
                    start_offset=st.start_offset, end_offset=st.end_offset)
            start = max(st.start_offset, before_offset)
            doomed = []
            for base in self._bases:
                if base >= st.active_base:
                    break
                following = self._bases[self._bases.index(base) + 1]
                if following <= start:
                    doomed.append(base)
            self._delete_segments(st, doomed, start)
            return start

    def _delete_segments(self, st: HeadState, doomed: list[int], start: int) -> None:
        """Publish the new start offset and layout, then unlink the files (writer and
        cleaner locks held). Readers in other processes may still have the segments
        mapped: unlinking keeps those mappings valid."""
        epoch = st.layout_epoch + (1 if doomed else 0)
        self._publish(st._replace(start_offset=start, layout_epoch=epoch))
        for base in doomed:
            self._segments[base].delete()
            try:
                os.unlink(snapshot_path(self.directory, base))
            except FileNotFoundError:
                pass
        if doomed:
            _fileutil.sync_dir(self.directory)
        self._reload_segments(epoch)

    def swap_in(self, base: int, cleaned_path: str) -> None:
        """Replace sealed segment ``base`` with its cleaned copy (see ``_compaction``).
        Cleaner lock held by the caller; takes the writer lock."""
        segment_path = os.path.join(self.directory, file_name(base))
        swap_path = segment_path + _compaction.SWAP_SUFFIX
        with self._locked() as st, _fileutil.os_errors(f"swapping in {cleaned_path}"):
            os.replace(cleaned_path, swap_path)
            _fileutil.sync_dir(self.directory)
            stem = segment_path[: -len(".log")]
            for index in (stem + ".index", stem + ".timeindex"):
                try:
                    os.unlink(index)
                except FileNotFoundError:
                    pass
            os.replace(swap_path, segment_path)
            _fileutil.sync_dir(self.directory)
            epoch = st.layout_epoch + 1
            self._publish(st._replace(layout_epoch=epoch))
            self._reload_segments(epoch)
            # The old indexes are gone; build the new ones now (a crash before this
            # only leaves them missing, and they are rebuilt on first use).
            segment = self._segments[base]
            segment.rebuild_indexes(segment.file_bytes(), self._config().index_interval_bytes)

    def cleaned_up_to(self) -> int:
        try:
            data = _fileutil.read_file(os.path.join(self.directory, CLEANER_CHECKPOINT), 4096)
            return int(json.loads(data)["offset"])
        except (OSError, ValueError, KeyError, TypeError):
            return -1

    def set_cleaned_up_to(self, offset: int) -> None:
        _fileutil.atomic_write(os.path.join(self.directory, CLEANER_CHECKPOINT),
                               json.dumps({"offset": offset}).encode())

    @_fileutil.translate_errors("partition")
    def dirty_ratio(self) -> float:
        """Share of the sealed bytes written since the last compaction."""
        st = self.state()
        sealed = self._sealed_sizes(st)
        total = sum(size for _, size in sealed)
        if total == 0:
            return 0.0
        cleaned = self.cleaned_up_to()
        dirty = sum(size for base, size in sealed if base >= cleaned)
        return dirty / total

    # -- idempotence ------------------------------------------------------------------

    def _producer_state(self, st: HeadState) -> ProducerState:
        """The producer-id state, built on first use: from the newest snapshot whose
        segment still exists, then the batch headers after it. Writer lock held."""
        if self._producers is None:
            state, start = ProducerState(), (self._bases[0], 0) if self._bases else (0, 0)
            for base, snapshot in load_snapshots(self.directory, st.active_base):
                if base in self._segments:
                    state, start = snapshot, (base, 0)
                    break
            self._producers, self._producers_end = state, start
            self._catch_up_producers(st)
        return self._producers

    def _catch_up_producers(self, st: HeadState) -> None:
        state = self._producers
        assert state is not None
        for header in self._headers_between(self._producers_end, st):
            state.observe(header)
        self._producers_end = (st.active_base, st.active_position)

    def _headers_between(self, start: tuple[int, int], st: HeadState
                         ) -> Iterator[BatchHeader]:
        """Headers of the published batches from ``start`` (segment base, position)."""
        base, position = start
        for b in self._bases:
            if b < base:
                continue
            if b > st.active_base:
                break
            segment = self._segments[b]
            limit = self._limit(segment, st)
            for _, header in segment.headers(position if b == base else 0, limit,
                                             verify=False):
                yield header

    @_fileutil.translate_errors("partition")
    def last_sequence(self, producer_id: int) -> int | None:
        """The last sequence stored for ``producer_id`` (None if it has none here)."""
        with self._locked() as st:
            return self._producer_state(st).last_sequence(producer_id)

    @_fileutil.translate_errors("partition")
    def roll(self) -> None:
        """Start a new segment now (if the active one holds anything)."""
        config = self._config()
        self._ctx.check_writable()
        with self._locked() as st:
            if st.active_position > 0:
                if st.clean:
                    st = self._make_dirty(st)
                self._roll(st, self._segments[st.active_base], config, -1)

    @_fileutil.translate_errors("partition")
    def sync(self) -> None:
        """fsync everything published so far and advance the durable point.

        Used by the interval flusher, ``Log.flush`` and clean shutdown.
        """
        st = self.state()
        if (st.recovery_base, st.recovery_position) >= (st.active_base, st.active_position):
            return
        for base in self._bases:
            if st.recovery_base <= base <= st.active_base:
                self._fsync(self._segments[base], own_fd=True)  # no writer lock held here
        with self._locked() as cur:
            if (cur.recovery_base, cur.recovery_position) < (st.active_base,
                                                              st.active_position):
                self._publish(cur._replace(recovery_base=st.active_base,
                                           recovery_position=st.active_position,
                                           recovery_offset=st.end_offset))

    # -- reading --------------------------------------------------------------------

    @_fileutil.translate_errors("partition")
    def fetch(self, offset: int, max_bytes: int = DEFAULT_FETCH_BYTES,
              max_records: int | None = None, state: HeadState | None = None
              ) -> list[DecodedBatch]:
        """See ``_fetch``. A segment deleted meanwhile (retention, in any process) makes
        it look again: the state then says where the log starts now."""
        for _ in range(3):
            try:
                return self._fetch(offset, max_bytes, max_records, state)
            except FileNotFoundError:
                state = None
                st = self._head.read()
                if st is not None:
                    self._reload_segments(st.layout_epoch)
        return self._fetch(offset, max_bytes, max_records, None)

    def _fetch(self, offset: int, max_bytes: int, max_records: int | None,
               state: HeadState | None) -> list[DecodedBatch]:
        """Verified batches holding the records from ``offset`` on, bounded by the
        published end, ``max_bytes`` and ``max_records`` (at least one batch is
        returned when any record is available, even if it is larger).

        The first batch may start before ``offset``; callers skip those records.
        Raises ``OffsetOutOfRangeError`` below ``start_offset`` or above ``end_offset``;
        returns ``[]`` at ``end_offset``. Lock-free.
        """
        st = state if state is not None else self.state()
        if offset < st.start_offset or offset > st.end_offset:
            raise OffsetOutOfRangeError(
                f"offset {offset} is out of range [{st.start_offset}, {st.end_offset}] of "
                f"{self.directory}", offset=offset, start_offset=st.start_offset,
                end_offset=st.end_offset)
        out: list[DecodedBatch] = []
        if offset == st.end_offset:
            return out
        nbytes = 0
        nrecords = 0
        partial = self._partial
        hint = self._hints.pop(offset, None)
        if (partial is not None
                and partial[1].header.base_offset <= offset < partial[1].header.next_offset
                and self._segments.get(partial[0].base_offset) is partial[0]):
            segment: Segment | None = partial[0]
            position = partial[1].position
        elif hint is not None and self._segments.get(hint[0].base_offset) is hint[0]:
            segment = hint[0]
            position = hint[1]
        else:
            segment = self._segment_for(offset)
            if segment is None:
                self._reload_segments(st.layout_epoch)
                segment = self._segment_for(offset)
                if segment is None:
                    raise CorruptRecordError(f"no segment holds offset {offset} in "
                                             f"{self.directory}")
            position = self._position_of(segment, offset, st)
        while segment is not None and offset < st.end_offset:
            limit = self._limit(segment, st)
            while position < limit:
                try:
                    if partial is not None and partial[0] is segment and \
                            partial[1].position == position:
                        batch = segment.reread_batch(partial[1], limit)
                    else:
                        batch = segment.read_batch(position, limit)
                except CorruptRecordError:
                    if out:  # return the good records first; the next fetch raises
                        self._remember(offset, segment, position)
                        return out
                    raise
                if batch is None:
                    break
                header = batch.header
                position += header.length
                if header.next_offset <= offset:
                    continue
                out.append(batch)
                nbytes += header.length
                nrecords += header.record_count - batch.index_of(offset)
                offset = header.next_offset
                if nbytes >= max_bytes or (max_records is not None and
                                           nrecords >= max_records):
                    self._remember(offset, segment, position)
                    # A batch cut short by max_records is where the next fetch resumes:
                    # keep it decoded (one per partition) so that it is only verified.
                    self._partial = ((segment, batch) if max_records is not None
                                     and nrecords > max_records else None)
                    return out
            if segment.base_offset >= st.active_base:
                break
            nxt = self._next_segment(segment.base_offset)
            if nxt is None:
                self._reload_segments(st.layout_epoch)
                nxt = self._next_segment(segment.base_offset)
            if nxt is not None and nxt.base_offset != offset:
                # Segments chain without gaps (compaction keeps each segment's last
                # record), so a jump means a segment file is missing or damaged.
                raise CorruptRecordError(
                    f"{self.directory}: segment {file_name(nxt.base_offset)} follows a "
                    f"segment that ends at offset {offset}; records in between are missing")
            segment, position = nxt, 0
        if segment is not None:
            self._remember(offset, segment, position)
        self._partial = None
        return out

    def _position_of(self, segment: Segment, offset: int, st: HeadState) -> int:
        limit = self._limit(segment, st)
        if segment.base_offset < st.active_base:
            self._check_sealed_indexes(segment, limit)
        return segment.find_position(offset, limit)

    def _check_sealed_indexes(self, segment: Segment, limit: int) -> None:
        """Verify a sealed segment's indexes once per mapping; rebuild them if damaged.
        Any process may do this: sealed segments never change."""
        if not segment.index_checked:
            if not segment.sealed_indexes_ok(limit):
                segment.rebuild_indexes(limit, self._config().index_interval_bytes)
            segment.index_checked = True

    def _remember(self, next_offset: int, segment: Segment, position: int) -> None:
        hints = self._hints
        hints[next_offset] = (segment, position)
        if len(hints) > _MAX_HINTS:
            hints.popitem(last=False)

    @_fileutil.translate_errors("partition")
    def offset_for_time(self, timestamp_ms: int) -> int | None:
        """The earliest offset whose record has a timestamp >= ``timestamp_ms``, or None.

        Cost: O(log n). Timestamps need not increase, so the first segment that can
        hold the answer is found by bisecting the running maximum of the sealed
        segments' largest timestamps (read once from their time indexes and cached);
        within it, the time index gives a starting batch.
        """
        st = self.state()
        sealed = [b for b in self._bases if b < st.active_base]
        prefix = self._prefix_max_timestamps(sealed, st)
        first = bisect.bisect_left(prefix, timestamp_ms)
        for base in [*sealed[first:], st.active_base]:
            segment = self._segments.get(base)
            if segment is None:
                continue
            limit = self._limit(segment, st)
            if base != st.active_base:
                self._check_sealed_indexes(segment, limit)
            position = segment.find_time(timestamp_ms, limit)
            while position < limit:
                batch = segment.read_batch(position, limit)
                if batch is None:
                    break
                position += batch.header.length
                if batch.header.max_timestamp_ms < timestamp_ms:
                    continue
                for off, ts in zip(batch.offsets(), batch.timestamps(), strict=True):
                    if ts >= timestamp_ms and off >= st.start_offset:
                        return off
        return None

    def _prefix_max_timestamps(self, sealed: list[int], st: HeadState) -> list[int]:
        """Running maximum of the sealed segments' largest timestamps (non-decreasing,
        so it can be bisected). Extended as segments are sealed; reset when the
        segment layout changes."""
        prefix = self._prefix_max
        if len(prefix) > len(sealed) or self._prefix_epoch != self._layout_epoch:
            prefix = self._prefix_max = []
            self._prefix_epoch = self._layout_epoch
        interval = self._config().index_interval_bytes
        running = prefix[-1] if prefix else -1
        for base in sealed[len(prefix):]:
            segment = self._segments[base]
            running = max(running, segment.sealed_max_timestamp(self._limit(segment, st),
                                                                interval))
            prefix.append(running)
        return prefix

    # -- recovery --------------------------------------------------------------------

    def _recover(self, st: HeadState | None) -> HeadState:
        """Bring segments and head into agreement (see the module docstring).
        Caller holds the writer lock."""
        config = self._config()
        strict = self._ctx.options.recovery == "strict"
        with _fileutil.os_errors(f"finishing an interrupted compaction in {self.directory}"):
            _compaction.finish_interrupted(self.directory)
        bases = self._list_bases()
        seq = st.seq if st is not None else 0
        epoch = (st.layout_epoch if st is not None else 0) + 1
        now = self._ctx.clock()
        if not bases:
            if st is not None and st.end_offset > st.start_offset and strict:
                raise CorruptRecordError(f"{self.directory} has no segment files, but its "
                                         f"head says offsets up to {st.end_offset} exist")
            base = st.end_offset if st is not None else 0
            Segment(self.directory, base).open_for_write()
            self._reload_segments(epoch)
            return self._publish(_head.initial_state(now, base)._replace(
                seq=seq, flags=0, layout_epoch=epoch))
        self._reload_segments(epoch)
        trusted = st is not None and (st.clean or st.boot_id == self._ctx.boot_id != 0) \
            and st.active_base == bases[-1] and \
            self._segments[st.active_base].file_bytes() >= st.active_position
        if trusted:
            assert st is not None
            recovered = self._recover_trusted(st, config, epoch)
        else:
            recovered = self._recover_by_scan(st, bases, config, strict, epoch, now)
        self._rebuild_missing_indexes(recovered, config)
        return recovered

    def _rebuild_missing_indexes(self, st: HeadState, config: TopicConfig) -> None:
        """Sealed segments whose index files are missing (deleted, or a compaction
        that died between removing the old ones and writing the new) get them rebuilt.
        Cost: one directory listing, plus a scan of each segment missing an index."""
        names = set(os.listdir(self.directory))
        for base in self._bases:
            if base >= st.active_base:
                break
            stem = f"{base:020d}"
            if stem + ".index" not in names or stem + ".timeindex" not in names:
                segment = self._segments[base]
                segment.rebuild_indexes(segment.file_bytes(), config.index_interval_bytes)

    def _recover_trusted(self, st: HeadState, config: TopicConfig, epoch: int) -> HeadState:
        """The head is exact: cut a dead writer's bytes past the end, check indexes."""
        active = self._segments[st.active_base]
        active.open_for_write()
        st = self._cut_debris(st, active)
        active.prepare_writer_indexes(st.active_position, config.index_interval_bytes)
        last = active.offset_index.last()
        if last is not None and not active.entry_matches(last[0], last[1],
                                                         st.active_position):
            active.rebuild_indexes(st.active_position, config.index_interval_bytes,
                                   seal=False)
        return self._publish(st._replace(layout_epoch=epoch))

    def _recover_by_scan(self, st: HeadState | None, bases: list[int], config: TopicConfig,
                         strict: bool, epoch: int, now: int) -> HeadState:
        if st is not None and st.recovery_base in self._segments:
            durable: tuple[int, int] | None = (st.recovery_base, st.recovery_position)
            first = bases.index(st.recovery_base)
        else:
            durable = None  # the head is lost: only the last segment may have a torn tail
            first = 0
        expected = bases[first]
        cut_at: tuple[int, int] | None = None
        last_good = (bases[first], 0)
        end_offset = bases[first]
        max_ts = -1
        problem = ""
        for base in bases[first:]:
            segment = self._segments[base]
            if base != expected and base != bases[first]:
                cut_at = (base, 0)
                problem = (f"segment {file_name(base)} starts at offset {base}, but the "
                           f"segment before it ends at {expected}")
                break
            result = segment.validate(0, base, segment.file_bytes(),
                                      config.index_interval_bytes, rebuild_indexes=True,
                                      seal=base != bases[-1])
            last_good = (base, result.end_position)
            end_offset = result.next_offset
            max_ts = result.max_timestamp_ms
            expected = result.next_offset
            if result.error is not None:
                cut_at = (base, result.end_position)
                problem = result.error
                break
            if segment.data_end() > result.end_position:
                cut_at = (base, result.end_position)
                problem = f"stray bytes after the last batch of {file_name(base)}"
                break
        if cut_at is not None:
            before_durable = (cut_at < durable) if durable is not None \
                else cut_at[0] != bases[-1]
            if before_durable and strict:
                raise CorruptRecordError(
                    f"{self.directory}: {problem}. This is before the durable point "
                    f"{durable}, so acknowledged records would be lost; open the log with "
                    f"recovery='truncate' to cut the log there (the cut bytes are kept "
                    f"in *.cut-* files)")
            self._cut_after(cut_at, bases)
            bases = [b for b in bases if b <= cut_at[0]]
        active_base, active_position = last_good
        start = max(st.start_offset if st is not None else bases[0], bases[0])
        start = min(start, end_offset)
        active = self._segments[active_base]
        active.open_for_write()
        if cut_at is not None and active_base != bases[-1]:
            # the log now ends in a segment that was sealed: unseal its indexes
            active.rebuild_indexes(active_position, config.index_interval_bytes, seal=False)
        self._fsync(active)
        self._reload_segments(epoch)
        new = HeadState(seq=st.seq if st is not None else 0, end_offset=end_offset,
                        start_offset=start, active_base=active_base,
                        active_position=active_position,
                        active_created_ms=st.active_created_ms if st is not None else now,
                        active_max_timestamp_ms=max_ts, recovery_base=active_base,
                        recovery_position=active_position, recovery_offset=end_offset,
                        boot_id=self._ctx.boot_id, flags=0, layout_epoch=epoch)
        return self._publish(new)

    def _cut_after(self, cut_at: tuple[int, int], bases: list[int]) -> None:
        base, position = cut_at
        stamp = self._ctx.clock()
        for later in bases:
            if later > base:
                self._segments[later].rename_aside(f".cut-{stamp}")
        if position == 0 and base != bases[0]:
            self._segments[base].rename_aside(f".cut-{stamp}")
            return
        self._move_aside(self._segments[base], position)

    # -- shutdown ---------------------------------------------------------------------

    @_fileutil.translate_errors("partition")
    def close(self, clean: bool = False) -> None:
        """Release this process's resources. With ``clean`` (the caller is the last
        user of the log), fsync everything and mark the head clean."""
        if self._closed:
            return
        try:
            if clean and self._ctx.failure is None:
                self._close_clean()
        finally:
            self._closed = True
            with self._ctx.dirty_lock:
                self._ctx.dirty.discard(self)
            for seg in [*self._segments.values(), *self._retired]:
                seg.close()
            self._head.close()

    def _close_clean(self) -> None:
        with self._locked() as st:
            if st.clean:
                return  # nobody wrote since the last clean close
            for base in self._bases:
                if st.recovery_base <= base <= st.active_base:
                    self._fsync(self._segments[base])
            self._publish(st._replace(recovery_base=st.active_base,
                                      recovery_position=st.active_position,
                                      recovery_offset=st.end_offset,
                                      flags=st.flags | _head.FLAG_CLEAN))
            self._sync_head()

    # -- verification ---------------------------------------------------------------------

    @_fileutil.translate_errors("partition")
    def check(self, fix: bool = False, progress: Callable[[int], None] | None = None
              ) -> tuple[list[Problem], CheckStats]:
        """Verify every batch (checksum and structure), the chaining of segments and
        offsets, and every index against one rebuilt from the data. Changes nothing
        unless ``fix``: then indexes are rebuilt and interrupted compactions finished,
        which is always safe; damaged batches are only reported. ``progress(bytes)`` is
        called as data is checked. Cost: O(bytes stored)."""
        problems: list[Problem] = []
        config = self._config()
        leftovers = [n for n in os.listdir(self.directory)
                     if n.endswith((_compaction.SWAP_SUFFIX, _compaction.CLEANED_SUFFIX))]
        if leftovers:
            if fix:
                with self._locked():
                    _compaction.finish_interrupted(self.directory)
            problems += [Problem(os.path.join(self.directory, n), "leftover",
                                 "an interrupted compaction left this file", fix)
                         for n in leftovers]
        st = self.state()
        expected: int | None = None
        segments = batches = records = nbytes = 0
        for base in list(self._bases):
            if base > st.active_base:
                break
            segment = self._segments[base]
            limit = self._limit(segment, st)
            sealed = base != st.active_base
            segments += 1
            if expected is not None and base != expected:
                problems.append(Problem(segment.path, "gap", f"segment starts at offset "
                                        f"{base} but the previous one ends at {expected}",
                                        False))
            mm = segment.mapping(limit)
            policy = _SegmentPolicy(config.index_interval_bytes)
            position, next_offset, max_ts = 0, base, -1
            damaged = False
            while mm is not None and position < limit:
                if _format.is_unwritten(mm, position, limit):
                    break
                try:
                    batch = _format.decode_batch(mm, position, limit)
                except CorruptRecordError as exc:
                    problems.append(Problem(segment.path, "corrupt", str(exc), False))
                    damaged = True
                    break
                header = batch.header
                if header.base_offset < next_offset:
                    problems.append(Problem(segment.path, "corrupt",
                                            f"batch at {position} goes back to offset "
                                            f"{header.base_offset}", False))
                    damaged = True
                    break
                max_ts = max(max_ts, header.max_timestamp_ms)
                policy.observe(position, header.base_offset, max_ts)
                next_offset = header.next_offset
                position += header.length
                batches += 1
                records += header.record_count
                nbytes += header.length
                if progress is not None:
                    progress(header.length)
            if damaged:
                expected = None  # where the damaged segment ends is unknown: no gap check
                continue
            expected = next_offset
            self._check_index(segment, policy, max_ts, sealed, fix, problems)
        if expected is not None and expected != st.end_offset:
            problems.append(Problem(self._head.path, "head", f"the data ends at offset "
                                    f"{expected} but the head says {st.end_offset}", False))
        return problems, CheckStats(segments, batches, records, nbytes)

    def _check_index(self, segment: Segment, policy: _SegmentPolicy, max_ts: int,
                     sealed: bool, fix: bool, problems: list[Problem]) -> None:
        segment.offset_index.load()
        segment.time_index.load()
        base = segment.base_offset
        found = ([(base + r, p) for r, p in segment.offset_index.entries()],
                 [(t, base + r) for t, r in segment.time_index.entries()])
        live = (list(policy.offset_entries), list(policy.time_entries))
        policy.finish(max_ts)
        final = (policy.offset_entries, policy.time_entries)
        # A missing index file is fine where there is nothing to index (a new segment).
        valid = (segment.offset_index.valid or not final[0]) and \
            (segment.time_index.valid or not final[1])
        if valid and (found == final or (not sealed and found == live)):
            return
        if fix and sealed:
            segment.write_indexes(*final)
        elif fix:
            with self._locked() as st:  # writers append entries to the active index
                segment.rebuild_indexes(st.active_position, policy.interval, seal=False)
        problems.append(Problem(segment.offset_index.path, "index",
                                "the index does not match the data", fix))

    # -- invariants ---------------------------------------------------------------------

    def _check(self) -> None:
        """Assert the partition's invariants (used by tests after every step)."""
        st = self.state()
        assert st.start_offset <= st.end_offset, st
        assert self._bases == sorted(self._segments), (self._bases, self._segments)
        assert st.active_base in self._segments, (st, self._bases)
        assert self._bases[0] <= st.start_offset, (self._bases, st)
        expected = self._bases[0]
        for base in self._bases:
            if base > st.active_base:
                break
            assert base == expected, f"segment {base} does not follow offset {expected}"
            segment = self._segments[base]
            limit = self._limit(segment, st)
            position = 0
            for position, header in segment.headers(0, limit):
                assert header.base_offset >= expected, (base, position, header)
                expected = header.next_offset
            if base == st.active_base:
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


__all__ = ["AppendResult", "LogDirectoryError", "PartitionLog", "StorageContext",
           "create_partition_files"]
