"""Checking a partition against its data, and repairing it: what ``log.check`` does.

``RecoveryChecks`` is the part of ``Recovery`` (``_recovery.py``) that runs on a log
already open, where recovery on open trusted the head: it verifies every segment
(checksums, structure, offsets, the chain from segment to segment, indexes, the head's
slots) and reports what it finds; with ``fix`` it rebuilds indexes and cuts a
damaged partition before its first bad batch (the bytes kept in ``*.cut-*`` files,
the lost offsets reported, every record before the damage kept exactly). See the
"Repair" section of ``_recovery``'s docstring for the locking.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, NamedTuple

from . import _fileutil, _head
from ._format import encode_batch
from ._head import Head, HeadState
from ._segment import (
    IndexPolicy,
    Segment,
    finish_interrupted_swaps,
    is_leftover,
    list_bases,
    move_aside,
    rename_aside,
)
from ._segments import SegmentList
from .config import TopicConfig
from .errors import CorruptRecordError
from .monitoring import Problem

if TYPE_CHECKING:
    from ._partition import StorageContext

__all__ = ["CheckStats", "Damage", "RecoveryChecks"]

_MAX_SPAN = 1 << 32  # offsets one empty batch can span (its last offset delta is a u32)

_DAMAGE = ("corrupt", "gap", "head")  # the kinds of problem a repair cuts away

class CheckStats(NamedTuple):
    """What ``check`` read: segments, batches, records and bytes of batches."""

    segments: int
    batches: int
    records: int
    bytes: int

class _SegmentScan(NamedTuple):
    """One segment read by ``check``: where its good data ends and why it stopped."""

    end_position: int      # after the last good batch
    next_offset: int       # after the last good batch's offsets
    max_timestamp_ms: int  # of the good batches (-1: none)
    policy: IndexPolicy    # the index entries the good batches call for
    batches: int
    records: int
    bytes: int
    error: str | None      # None: the data is whole up to the limit

class Damage(NamedTuple):
    """The first damaged place of a partition, where a repair cuts it."""

    base: int              # the segment to cut
    position: int          # the first byte that is not a good batch
    next_offset: int       # the first offset lost
    max_timestamp_ms: int  # largest timestamp kept in that segment (-1: none)
    problem: str           # what is wrong there


class RecoveryChecks:
    """``check`` and ``repair`` of one partition (mixed into ``Recovery``, which holds
    the collaborators declared here)."""

    _segments: SegmentList
    _ctx: StorageContext
    _head: Head
    _publish: Callable[[HeadState], HeadState]
    _locked: Callable[[], AbstractContextManager[HeadState]]
    _exclusive: Callable[[], AbstractContextManager[None]]

    def check_leftovers(self, fix: bool) -> list[Problem]:
        """Files an interrupted compaction left; with ``fix``, finish or discard them
        (always safe: the swap protocol makes either outcome consistent)."""
        directory = self._segments.directory
        leftovers = [n for n in os.listdir(directory) if is_leftover(n)]
        if leftovers and fix:
            with self._locked():
                finish_interrupted_swaps(directory)
        return [Problem(os.path.join(directory, n), "leftover",
                        "an interrupted compaction left this file", fix) for n in leftovers]

    def check(self, st: HeadState, config: TopicConfig, fix: bool,
              progress: Callable[[int], None] | None) -> tuple[list[Problem], CheckStats]:
        """Verify every published batch (checksum and structure), the chaining of
        segments and offsets, and every index against one rebuilt from the data.

        Damage is a bad batch, a gap between segments, published bytes that hold no
        batch (zeros, a file cut short), or an end offset beyond the data. With
        ``fix``, rebuild indexes that do not match and ``repair`` the first damage
        (the problem then says which offsets were lost). ``progress(bytes)`` is called
        per batch. Cost: O(bytes stored)."""
        problems: list[Problem] = []
        damage, stats = self._verify(st, config, problems, progress, fix=fix,
                                     indexes=True)
        if damage is not None and fix:
            repaired = self.repair(config, damage, st.layout_epoch)
            if repaired is not None:  # it says what was found, and what was lost
                problems = [p for p in problems if p.kind not in _DAMAGE]
                problems.append(repaired)
            else:  # repaired by someone else meanwhile
                problems = [dataclasses.replace(p, fixed=True) if p.kind in _DAMAGE else p
                            for p in problems]
        self._check_head_slots(fix, problems)
        return problems, stats

    def _check_head_slots(self, fix: bool, problems: list[Problem]) -> None:
        """Report a damaged head slot (``Head.damaged_slot``). With ``fix`` the writer
        lock is taken, whose writer keeps what a lost newest state published
        (``cut_debris``), and the newest valid state is written over the slot."""
        slot = self._head.damaged_slot_settled()
        if slot is None:
            return
        if fix:
            with self._locked() as st:
                if self._head.damaged_slot() is not None:
                    self._publish(st)
        problems.append(Problem(self._head.path, "head",
                                f"slot {slot} of the head fails its checksum (torn or "
                                "garbled); the records after the older state's end are "
                                "kept when a writer next takes the partition", fix))

    def _verify(self, st: HeadState, config: TopicConfig, problems: list[Problem],
                progress: Callable[[int], None] | None, *, fix: bool, indexes: bool,
                from_base: int = -1) -> tuple[Damage | None, CheckStats]:
        """``check``'s scan of the segments from ``from_base`` on: problems are added to
        ``problems``, the first damage is returned. With ``fix`` the scan stops at the
        first damage (the rest is cut) and indexes found wrong are rebuilt; without
        ``indexes`` they are not looked at."""
        expected: int | None = None
        previous: tuple[Segment, _SegmentScan] | None = None  # the last whole segment
        # A segment's indexes are checked once its end is known to be good (the next
        # segment follows on, or the head agrees): at damage there, the cut rebuilds them.
        pending: tuple[Segment, _SegmentScan] | None = None
        damage: Damage | None = None
        segments = batches = records = nbytes = 0
        for segment in self._segments.published(st):
            base = segment.base_offset
            if base < from_base:
                continue
            limit = self._segments.limit(segment, st)
            segments += 1
            if expected is not None and base != expected:
                problem = (f"segment starts at offset {base} but the previous one ends at "
                           f"{expected}")
                problems.append(Problem(segment.path, "gap", problem, False))
                if damage is None and previous is not None:
                    damage = self._damage_after(previous, problem)
                pending = None
                if fix:
                    break
            if pending is not None and indexes:
                self._check_index(*pending, st, fix, problems)
            pending = None
            scan = self._scan(segment, limit, config, base == st.active_base, progress)
            batches += scan.batches
            records += scan.records
            nbytes += scan.bytes
            if scan.error is not None:
                problems.append(Problem(segment.path, "corrupt", scan.error, False))
                if damage is None:
                    damage = Damage(base, scan.end_position, scan.next_offset,
                                    scan.max_timestamp_ms, scan.error)
                if fix:
                    break
                expected = previous = None  # where it really ends is unknown: no gap check
                continue
            expected = scan.next_offset
            previous = pending = (segment, scan)
        if damage is None and expected is not None and expected != st.end_offset:
            problem = f"the data ends at offset {expected} but the head says {st.end_offset}"
            problems.append(Problem(self._head.path, "head", problem, False))
            if expected < st.end_offset and previous is not None:
                damage = self._damage_after(previous, problem)
                pending = None
        if pending is not None and indexes:
            self._check_index(*pending, st, fix, problems)
        return damage, CheckStats(segments, batches, records, nbytes)

    @staticmethod
    def _damage_after(previous: tuple[Segment, _SegmentScan], problem: str) -> Damage:
        """Damage that begins right after a segment's good data (a gap, a short end)."""
        segment, scan = previous
        return Damage(segment.base_offset, scan.end_position, scan.next_offset,
                      scan.max_timestamp_ms, problem)

    @staticmethod
    def _scan(segment: Segment, limit: int, config: TopicConfig, active: bool,
              progress: Callable[[int], None] | None) -> _SegmentScan:
        """Decode and verify the batches of ``segment`` up to ``limit``. The active
        segment must hold batches up to its published position; a sealed one ends at
        its first unwritten byte. Cost: O(bytes)."""
        available = min(limit, segment.file_bytes())  # a file cut short: read what is there
        policy = IndexPolicy(config.index_interval_bytes)
        next_offset, max_ts, end = segment.base_offset, -1, 0
        batches = records = nbytes = 0
        error: str | None = None
        try:
            for batch in segment.batches(0, available):
                header = batch.header
                if header.base_offset < next_offset:
                    error = f"batch at {batch.position} goes back to offset {header.base_offset}"
                    break
                max_ts = max(max_ts, header.max_timestamp_ms)
                policy.observe(batch.position, header.base_offset, max_ts)
                next_offset = header.next_offset
                end = batch.position + header.length
                batches += 1
                records += header.record_count
                nbytes += header.length
                if progress is not None:
                    progress(header.length)
        except CorruptRecordError as exc:
            error = str(exc)
        if error is None and available < limit:
            error = (f"{segment.path} is {available} bytes but {limit} bytes of it were "
                     "published: the file was truncated")
        elif error is None and active and end < limit:
            error = (f"no batch at position {end}, though the head publishes data up to "
                     f"position {limit} (the bytes there are zero)")
        return _SegmentScan(end, next_offset, max_ts, policy, batches, records, nbytes, error)

    def repair(self, config: TopicConfig, found: Damage, epoch: int) -> Problem | None:
        """Cut the partition at its first damage (``found`` by a scan of layout
        ``epoch`` without the locks; it is looked for again under them, from the same
        segment if the layout is unchanged). Returns the problem that says what was
        lost, or None when nothing is damaged any more (repaired meanwhile).

        Everything from the damage on is moved into ``*.cut-*`` files (later segments
        renamed whole), the lost offsets ``[damage, end offset)`` are covered by empty
        batches that only span them, the segment becomes the active one with rebuilt
        indexes, and the new state is published and made durable. Cost: a scan from
        the damaged segment, the bytes moved, three fsyncs."""
        with self._exclusive():
            st = self._head.read()
            if st is None or st.deleted:
                return None  # unreadable head: the next writer's recovery rescans anyway
            segments = self._segments
            if not segments.covers(st):
                segments.reload(st.layout_epoch)
            from_base = found.base if st.layout_epoch == epoch else -1
            damage, _ = self._verify(st, config, [], None, fix=True, indexes=False,
                                     from_base=from_base)
            if damage is None:
                return None
            return self._cut(st, damage, config)

    def _cut(self, st: HeadState, damage: Damage, config: TopicConfig) -> Problem:
        segments = self._segments
        directory = segments.directory
        stamp = self._ctx.clock()
        before = set(os.listdir(directory))
        for later in list_bases(directory):
            if later > damage.base:  # (own objects: readers keep the listing's mappings)
                rename_aside(Segment(directory, later), stamp)
        segment = segments[damage.base]
        move_aside(segment, damage.position, stamp)
        end = max(st.end_offset, damage.next_offset)
        position, offset = damage.position, damage.next_offset
        while offset < end:  # the lost offsets, as compaction leaves a removed range
            span = min(end - offset, _MAX_SPAN)
            filler = encode_batch([], offset_deltas=[], span=span - 1,
                                  timestamps_ms=damage.max_timestamp_ms)
            position += segment.append(filler, position, offset, config.segment_bytes)
            offset += span
        self._ctx.fsync(segment.sync)
        _fileutil.sync_dir(directory)
        epoch = st.layout_epoch + 1
        segments.reload(epoch)
        segments[damage.base].rebuild_indexes(position, config.index_interval_bytes,
                                              seal=False)
        same = damage.base == st.active_base
        new = st._replace(
            end_offset=end, start_offset=min(st.start_offset, end), active_base=damage.base,
            active_position=position,
            active_created_ms=st.active_created_ms if same else self._ctx.clock(),
            active_max_timestamp_ms=damage.max_timestamp_ms,
            flags=st.flags & ~_head.FLAG_CLEAN, layout_epoch=epoch)
        if (st.recovery_base, st.recovery_position) > (damage.base, damage.position):
            # Durable beyond the cut: so is everything before it, and the cut segment
            # was just fsynced. (Otherwise the durable point stays where it was: data
            # between it and the cut may not be on disk yet.)
            new = new._replace(recovery_base=damage.base, recovery_position=position,
                               recovery_offset=end)
        self._publish(new)
        self._ctx.fsync(self._head.sync)
        kept = sorted(n for n in set(os.listdir(directory)) - before if ".cut-" in n)
        lost = (f"offsets {damage.next_offset} to {st.end_offset - 1} "
                f"({st.end_offset - damage.next_offset}) were lost"
                if damage.next_offset < st.end_offset else "no offset was lost")
        return Problem(segment.path, "corrupt",
                       f"repaired: {damage.problem}; cut at position {damage.position} "
                       f"(offset {damage.next_offset}): {lost}, and the offsets stay "
                       f"reserved; the cut bytes are kept in "
                       f"{', '.join(kept) if kept else 'no file (they were zero)'}", True)

    def _check_index(self, segment: Segment, scan: _SegmentScan, st: HeadState, fix: bool,
                     problems: list[Problem]) -> None:
        policy, max_ts = scan.policy, scan.max_timestamp_ms
        sealed = segment.base_offset != st.active_base
        offset_index, time_index = segment.indexes.offset, segment.indexes.time
        offset_index.load()
        time_index.load()
        base = segment.base_offset
        found = ([(base + r, p) for r, p in offset_index.entries()],
                 [(t, base + r) for t, r in time_index.entries()])
        live = (list(policy.offset_entries), list(policy.time_entries))
        policy.finish(max_ts)
        final = (policy.offset_entries, policy.time_entries)
        # A missing index file is fine where there is nothing to index (a new segment).
        valid = (offset_index.valid or not final[0]) and (time_index.valid or not final[1])
        if valid and (found == final or (not sealed and _prefix(found, live))):
            return
        if fix and sealed:
            segment.indexes.write_all(*final)
        elif fix:
            with self._locked() as current:  # writers append entries to the active index
                segment.rebuild_indexes(current.active_position, policy.interval, seal=False)
        problems.append(Problem(offset_index.path, "index",
                                "the index does not match the data", fix))


def _prefix(found: tuple[list[Any], list[Any]], live: tuple[list[Any], list[Any]]) -> bool:
    """Whether the active segment's index entries ``found`` are the entries its data
    calls for (``live``) up to some batch. A writer indexes a batch after publishing
    it, so one killed in between leaves the last entries out; that index is sound
    (a lookup scans on from the entry before), and the next writer adds what is
    missing when it takes the partition (``prepare_writer_indexes``)."""
    return all(f == want[:len(f)] for f, want in zip(found, live, strict=True))
