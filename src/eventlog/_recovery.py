"""Recovery of a partition, the durable point it starts from, and verification, as
Kafka's ``LogLoader``.

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
3. Indexes of the segments it validated are rebuilt from what it read, and sealed
   segments whose index files are missing get them rebuilt.

Recovery needs no free space: index files that cannot be rewritten are left invalid
(``Segment`` scans instead), and a dead writer's bytes past the published end that
cannot be copied aside stay where they are (readers never look past the end; the next
writer moves them aside before it appends). So a log whose writer died on a full disk
opens, and is readable, before any space is freed.

Besides, every writer that finds that another process wrote since its own last
publish looks for a dead writer's debris at the published end (``cut_debris``), and
``check`` verifies a whole partition against its data (and repairs what is always
safe to repair).

Repair
------
Within one kernel boot recovery trusts the head, so damage to *published* data (bits
flipped, pages zeroed behind the end) is found only by reading it: a read raises
``CorruptRecordError`` naming the repair, and ``check(fix=True)`` (``eventlog verify
--repair``) performs it: the partition is cut before its first bad batch (the bytes
from there on, and every later segment, are kept in ``*.cut-*`` files), the lost
offsets are covered by an empty batch that only spans them (as compaction leaves when
it removes every record of a range), so the end offset stays where it was and no
offset is ever handed out twice, the indexes of the cut segment are rebuilt, and the
report names the offsets lost. Every record before the damage is kept exactly.

What recovery may trust is kept here too: ``sync`` advances the durable point (the
head's ``recovery_*`` fields: everything before it was fsynced), ``close_clean`` marks
the head exact (``FLAG_CLEAN``), and ``make_dirty`` durably clears that mark before the
first write after it.

``Recovery`` works on the partition's ``SegmentList`` and ``Head``, and publishes
through the function the partition hands it; it never sees the ``PartitionLog``.
``recover``, ``cut_debris`` and ``make_dirty`` run under the partition's writer lock;
the other methods take it through ``locked`` where they change something, and a
repair takes the cleaner and writer locks through ``exclusive``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from functools import partial
from typing import TYPE_CHECKING

from . import _fileutil, _head
from ._format import is_unwritten
from ._head import Head, HeadState
from ._repair import RecoveryChecks
from ._segment import (
    Segment,
    file_name,
    finish_interrupted_swaps,
    list_bases,
    move_aside,
    rename_aside,
)
from ._segments import SegmentList
from .config import TopicConfig
from .errors import CorruptRecordError

if TYPE_CHECKING:
    from ._partition import StorageContext

_logger = logging.getLogger("eventlog")
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})
class Recovery(RecoveryChecks):
    """Recovery on open, debris cutting, the durable point and ``check`` of one
    partition (locking: see the module docstring)."""

    def __init__(self, segments: SegmentList, context: StorageContext, head: Head,
                 publish: Callable[[HeadState], HeadState],
                 locked: Callable[[], AbstractContextManager[HeadState]],
                 exclusive: Callable[[], AbstractContextManager[None]]) -> None:
        """``publish(st)`` publishes a state (writer lock held); ``locked()`` takes the
        writer lock and yields the current state; ``exclusive()`` takes the cleaner
        and writer locks and repairs nothing (what ``repair`` needs: it judges the
        data as it finds it)."""
        self._segments = segments
        self._ctx = context
        self._head = head
        self._publish = publish
        self._locked = locked
        self._exclusive = exclusive

    # -- recovery on open ---------------------------------------------------------

    def recover(self, st: HeadState | None, config: TopicConfig) -> HeadState:
        """Bring segments and head into agreement (see the module docstring); ``st`` is
        the head as found (None: unreadable). Returns the state published. Cost: the
        debris check when the head is exact, else O(bytes after the durable point)."""
        directory = self._segments.directory
        strict = self._ctx.options.recovery == "strict"
        with _fileutil.os_errors(f"finishing an interrupted compaction in {directory}"):
            finish_interrupted_swaps(directory)
        bases = list_bases(directory)
        seq = st.seq if st is not None else 0
        epoch = (st.layout_epoch if st is not None else 0) + 1
        now = self._ctx.clock()
        if not bases:
            if st is not None and st.end_offset > st.start_offset and strict:
                raise CorruptRecordError(f"{directory} has no segment files, but its "
                                         f"head says offsets up to {st.end_offset} exist")
            base = st.end_offset if st is not None else 0
            segment = Segment(directory, base)
            segment.open_for_write()
            segment.release_writer()
            self._segments.reload(epoch)
            return self._publish(_head.initial_state(now, base)._replace(
                seq=seq, flags=0, layout_epoch=epoch))
        self._segments.reload(epoch)
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

    def cut_debris(self, st: HeadState, active: Segment) -> HeadState:
        """Move a dead writer's bytes after the published end aside; return the state
        (republished if anything was cut). Writers write only at the published end,
        header first, so a dead writer's bytes (if any) begin exactly there: one
        64-byte check finds them. Whole batches there are kept, not cut, when a head
        slot is damaged (``_keep_appended``). Cost: one ``stat``, usually."""
        size = active.file_bytes()
        if size <= st.active_position:
            return st
        mm = active.mapping(size)
        assert mm is not None
        if is_unwritten(mm, st.active_position, size):
            return st
        if self._head.damaged_slot() is not None:
            st = self._keep_appended(st, active, size)
            if st.active_position >= size or is_unwritten(mm, st.active_position, size):
                return self._publish(st)
        move_aside(active, st.active_position, self._ctx.clock())
        return self._publish(st)

    def _keep_appended(self, st: HeadState, active: Segment, size: int) -> HeadState:
        """A head slot is damaged, so ``st`` may be the state before a newest one that
        was lost, whose records (acknowledged) lie after ``st``'s end: keep the whole,
        checksummed batches there instead of cutting them as debris (issue 18). The
        active indexes are rebuilt to cover them (``prepare_writer_indexes``)."""
        found = active.appended_after(st.active_position, st.end_offset, size)
        if not found.batches:
            return st
        _logger.warning("%s: a slot of the head is damaged; kept offsets %d to %d "
                        "after its older state", self._head.path, st.end_offset,
                        found.next_offset - 1)
        active.indexes.ensure().invalidate()
        return st._replace(end_offset=found.next_offset, active_position=found.end_position,
                           active_max_timestamp_ms=max(st.active_max_timestamp_ms,
                                                       found.max_timestamp_ms))

    def _rebuild_missing_indexes(self, st: HeadState, config: TopicConfig) -> None:
        """Sealed segments whose index files are missing (deleted, or a compaction
        that died between removing the old ones and writing the new) get them rebuilt.
        Cost: one directory listing, plus a scan of each segment missing an index."""
        names = set(os.listdir(self._segments.directory))
        for segment in self._segments.sealed(st):
            if not segment.indexes.present(names):
                segment.rebuild_indexes(segment.file_bytes(), config.index_interval_bytes)

    def _recover_trusted(self, st: HeadState, config: TopicConfig, epoch: int) -> HeadState:
        """The head is exact: cut a dead writer's bytes past the end, check indexes."""
        first = self._segments.bases[0]
        if st.start_offset < first:  # a newer state (that deleted segments) was lost
            st = st._replace(start_offset=min(first, st.end_offset))
        active = self._segments[st.active_base]
        active.open_for_write()
        with self._unless_full(active, "moving a dead writer's bytes aside"):
            st = self.cut_debris(st, active)
        active.prepare_writer_indexes(st.active_position, config.index_interval_bytes)
        last = active.indexes.offset.last()
        if last is not None and not active.entry_matches(last[0], last[1],
                                                         st.active_position):
            active.rebuild_indexes(st.active_position, config.index_interval_bytes,
                                   seal=False)
        return self._publish(st._replace(layout_epoch=epoch))

    def _recover_by_scan(self, st: HeadState | None, bases: list[int], config: TopicConfig,
                         strict: bool, epoch: int, now: int) -> HeadState:
        segments = self._segments
        if st is not None and st.recovery_base in segments:
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
            segment = segments[base]
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
                    f"{segments.directory}: {problem}. This is before the durable point "
                    f"{durable}, so acknowledged records would be lost; open the log with "
                    f"recovery='truncate' to cut the log there (the cut bytes are kept "
                    f"in *.cut-* files)")
            self._cut_after(cut_at, bases)
            bases = [b for b in bases if b <= cut_at[0]]
        active_base, active_position = last_good
        start = max(st.start_offset if st is not None else bases[0], bases[0])
        start = min(start, end_offset)
        active = segments[active_base]
        active.open_for_write()
        if cut_at is not None and active_base != bases[-1]:
            # the log now ends in a segment that was sealed: unseal its indexes
            active.rebuild_indexes(active_position, config.index_interval_bytes, seal=False)
        self._ctx.fsync(active.sync)
        segments.reload(epoch)
        new = HeadState(seq=st.seq if st is not None else 0, end_offset=end_offset,
                        start_offset=start, active_base=active_base,
                        active_position=active_position,
                        active_created_ms=st.active_created_ms if st is not None else now,
                        active_max_timestamp_ms=max_ts, recovery_base=active_base,
                        recovery_position=active_position, recovery_offset=end_offset,
                        boot_id=self._ctx.boot_id, flags=0, layout_epoch=epoch)
        return self._publish(new)

    def _cut_after(self, cut_at: tuple[int, int], bases: list[int]) -> None:
        """Move everything from ``cut_at`` (segment base, position) on aside."""
        base, position = cut_at
        stamp = self._ctx.clock()
        for later in bases:
            if later > base:
                rename_aside(self._segments[later], stamp)
        if position == 0 and base != bases[0]:
            rename_aside(self._segments[base], stamp)
            return
        segment = self._segments[base]
        with self._unless_full(segment, "moving a torn tail aside"):
            move_aside(segment, position, self._ctx.clock())

    @contextmanager
    def _unless_full(self, segment: Segment, what: str) -> Iterator[None]:
        """Run a ``move_aside`` of recovery; when the disk has no room for the
        ``*.cut-*`` copy, drop the partial copy and leave the bytes where they are.
        That is safe because they lie past the published end, where no reader looks,
        and the next writer moves them aside before it appends (``cut_debris``)."""
        directory = self._segments.directory
        before = set(os.listdir(directory))
        try:
            yield
        except OSError as exc:
            if exc.errno not in _NO_SPACE:
                raise
            for name in set(os.listdir(directory)) - before:
                if ".cut-" in name:
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(directory, name))
            _logger.warning("%s of %s left for later: %s", what, segment.path, exc)

    # -- the durable point --------------------------------------------------------

    def sync(self, st: HeadState) -> None:
        """fsync what ``st`` published, then advance the durable point to its end.
        The fsyncs run without the writer lock (own descriptors: a roll in another
        thread may close the writer's); only the publish takes it."""
        if (st.recovery_base, st.recovery_position) >= (st.active_base, st.active_position):
            return
        self._fsync_published(st, own_fd=True)
        with self._locked() as cur:
            if (cur.recovery_base, cur.recovery_position) < (st.active_base,
                                                              st.active_position):
                self._publish(cur._replace(recovery_base=st.active_base,
                                           recovery_position=st.active_position,
                                           recovery_offset=st.end_offset))

    def close_clean(self) -> None:
        """fsync everything and mark the head exact (``FLAG_CLEAN``): the next open
        trusts it and skips validation."""
        with self._locked() as st:
            if st.clean:
                return  # nobody wrote since the last clean close
            self._fsync_published(st)
            self._publish(st._replace(recovery_base=st.active_base,
                                      recovery_position=st.active_position,
                                      recovery_offset=st.end_offset,
                                      flags=st.flags | _head.FLAG_CLEAN))
            self._ctx.fsync(self._head.sync)

    def make_dirty(self, st: HeadState) -> HeadState:
        """Durably clear the clean-shutdown flag before the first write after it, so a
        later power loss cannot make recovery trust an out-of-date clean state.
        Writer lock held."""
        st = self._publish(st._replace(flags=st.flags & ~_head.FLAG_CLEAN))
        self._ctx.fsync(self._head.sync)
        return st

    def _fsync_published(self, st: HeadState, own_fd: bool = False) -> None:
        for segment in self._segments.published(st):
            if segment.base_offset >= st.recovery_base:
                self._ctx.fsync(partial(segment.sync, own_fd))

    # -- verification -------------------------------------------------------------

    # -- repair -------------------------------------------------------------------
