"""The segment list of one partition: its segments in offset order, and reads across
them, as Kafka's ``LogSegments`` with the read of ``LocalLog``.

A ``SegmentList`` is this process's view of which segment files exist. It owns the
lookups (the segment holding an offset, the segment after another, where a fetch
resumes), the read limit of a segment under a published ``HeadState``, ``read`` (the
batch loop of every fetch), time lookups (the running maximum of the sealed segments'
timestamps), sizes and the choice of segments retention deletes, and a small cache of
mapped sealed segments that keeps resident memory flat while a reader streams
through a log much larger than memory.

It never decides anything about the log: the partition (``_partition``) appends,
rolls and deletes, recovery (``_recovery``) repairs, and both tell the list about it
(``create`` and ``add`` at a roll, ``reload`` after other changes). The head's
``layout_epoch`` says when the files changed in a way only a new listing shows
(deletion, compaction, recovery): ``covers`` is false then, and the partition calls
``reload``.

Deleted files and the disk: a process that has a segment mapped (or its indexes open)
keeps the file's space allocated after another process deletes it. So ``reload`` lets
go of every segment it replaces at once, and a reader reloads at its next use of the
partition after the layout changed (any fetch, poll or bounds read looks at the head
first). Until then it holds at most what it holds while reading: the active segment
and the cache of mapped sealed segments (``_MAX_MAPPED_SEALED``, at most
``_MAX_MAPPED_SEALED_BYTES``), per partition.

Thread-safety: readers use the list without a lock. The listing (bases and segment
map, one tuple) is replaced, never changed in place, so a reader always sees one whole
listing; ``reload`` serializes concurrent reloads. ``create``, ``add``,
``writer_active`` and ``release_retired`` need the partition's writer lock. The
read caches (where recent reads ended, the partly returned batch) are shared by the
reader threads, as the partition's were.
"""

from __future__ import annotations

import bisect
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator

from . import _fileutil
from ._format import DecodedBatch
from ._head import HeadState
from ._segment import Segment, file_name, list_bases, move_aside
from .errors import CorruptRecordError

_MAX_HINTS = 64  # where recent fetches ended (offset -> segment, position)
_MAX_MAPPED_SEALED = 4  # sealed segments a partition keeps mapped for readers...
_MAX_MAPPED_SEALED_BYTES = 256 << 20  # ...and their bytes (but always the one being read)


class SegmentList:
    """The segments of one partition in this process. See the module docstring."""

    def __init__(self, directory: str, index_interval_bytes: Callable[[], int],
                 on_layout_change: Callable[[], None], read_only: bool = False) -> None:
        """``index_interval_bytes()`` gives the topic's setting (for index rebuilds);
        ``on_layout_change()`` runs (in the reloading thread) when a ``reload`` finds a
        new layout epoch, for state derived from the old segments. ``read_only``: the
        segments are mapped read-only and write nothing (a log opened read_only)."""
        self.directory = directory
        self.read_only = read_only
        self.layout_epoch = -1   # of the head state this listing was made for
        self._interval = index_interval_bytes
        self._on_layout_change = on_layout_change
        self._hints: OrderedDict[int, tuple[Segment, int]] = OrderedDict()
        # The last batch a read returned only in part, with its segment (see read).
        self._partial: tuple[Segment, DecodedBatch] | None = None
        # (bases in order, base -> segment): one tuple, replaced whole, so that a reader
        # never pairs the bases of one listing with the segments of another.
        self._layout: tuple[list[int], dict[int, Segment]] = ([], {})
        self._reload_lock = threading.Lock()
        self._retired: list[Segment] = []  # replaced segments whose fds the writer closes
        self._mapped_sealed: OrderedDict[int, Segment] = OrderedDict()
        self._prefix_max: list[int] = []   # see offset_for_time
        self._prefix_epoch = -1

    def __repr__(self) -> str:
        return f"<SegmentList {self.directory} {self._layout[0]}>"

    # -- lookups (lock-free) --------------------------------------------------------

    @property
    def bases(self) -> list[int]:
        """Base offsets in order, including a segment a roll created but has not
        published yet. A snapshot: never changed in place, do not change it."""
        return self._layout[0]

    def __len__(self) -> int:
        return len(self._layout[0])

    def __contains__(self, base_offset: int) -> bool:
        return base_offset in self._layout[1]

    def __getitem__(self, base_offset: int) -> Segment:
        return self._layout[1][base_offset]

    def __iter__(self) -> Iterator[Segment]:
        bases, segments = self._layout
        return (segments[b] for b in bases)

    def get(self, base_offset: int) -> Segment | None:
        return self._layout[1].get(base_offset)

    def writer_active(self, st: HeadState) -> Segment | None:
        """For the writer (writer lock held): the active segment of ``st`` when this
        listing is current for it (else None: ``reload``), after closing the writer
        descriptors of segments a reload replaced. O(1): called on every append."""
        if self._retired:
            self.release_retired()
        if st.layout_epoch != self.layout_epoch:
            return None
        return self._layout[1].get(st.active_base)

    def covers(self, st: HeadState) -> bool:
        """True when this listing is current for ``st`` (no ``reload`` needed). O(1)."""
        return st.layout_epoch == self.layout_epoch and st.active_base in self._layout[1]

    def segment_for(self, offset: int) -> Segment | None:
        """The segment whose range holds ``offset`` (the last base <= it). O(log n)."""
        bases, segments = self._layout
        i = bisect.bisect_right(bases, offset) - 1
        if i < 0:
            return None
        return segments.get(bases[i])

    def next_segment(self, base_offset: int) -> Segment | None:
        """The segment after the one at ``base_offset``. O(log n)."""
        bases, segments = self._layout
        i = bisect.bisect_right(bases, base_offset)
        return segments.get(bases[i]) if i < len(bases) else None

    def published(self, st: HeadState) -> list[Segment]:
        """The segments up to and including the active one of ``st``. O(n)."""
        bases, segments = self._layout
        return [segments[b] for b in bases if b <= st.active_base]

    def sealed(self, st: HeadState) -> list[Segment]:
        """The segments before the active one of ``st``. O(n)."""
        bases, segments = self._layout
        return [segments[b] for b in bases if b < st.active_base]

    def limit(self, segment: Segment, st: HeadState) -> int:
        """How far a reader may look into ``segment`` under state ``st``: the published
        position of the active segment, the whole file of a sealed one (which it maps,
        counting it in the cache of mapped sealed segments). Cost: O(1), or one
        ``stat`` and ``mmap`` when the segment is not mapped."""
        if segment.base_offset == st.active_base:
            return st.active_position
        if segment.base_offset > st.active_base:
            return 0  # created by a roll that is not published yet
        size = segment.mapped_bytes
        if size == 0:  # not mapped (or empty)
            size = segment.file_bytes()
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
                or sum(s.mapped_bytes for s in cache.values()) > _MAX_MAPPED_SEALED_BYTES):
            _, old = cache.popitem(last=False)
            old.unmap()

    # -- sizes and time ---------------------------------------------------------------

    def sealed_sizes(self, st: HeadState) -> list[tuple[Segment, int]]:
        """(segment, bytes of batches) of each sealed segment. Cost: O(n) after each
        segment's size was read once (``Segment.sealed_size``)."""
        return [(s, s.sealed_size(self.limit(s, st))) for s in self.sealed(st)]

    def size_bytes(self, st: HeadState) -> int:
        """Bytes of batches stored under ``st`` (not the allocated file sizes)."""
        return sum(size for _, size in self.sealed_sizes(st)) + st.active_position

    def retention_doomed(self, st: HeadState, cutoff_ms: int | None,
                         retention_bytes: int | None) -> list[int]:
        """Bases, in order, of the sealed segments retention deletes under ``st``: the
        oldest ones whose newest record is older than ``cutoff_ms``, and the oldest
        ones without which at least ``retention_bytes`` stay stored. Sizes and largest
        timestamps come from index entries checked against the batches they name
        (``Segment.sealed_size``, ``Segment.sealed_max_timestamp``), never from an
        index alone. Cost: O(n) once each segment's size and largest timestamp were
        read."""
        sealed = self.sealed_sizes(st)
        doomed: set[int] = set()
        if cutoff_ms is not None:
            interval = self._interval()
            for segment, _ in sealed:
                if segment.sealed_max_timestamp(self.limit(segment, st), interval) \
                        >= cutoff_ms:
                    break
                doomed.add(segment.base_offset)
        if retention_bytes is not None:
            excess = sum(size for _, size in sealed) + st.active_position - retention_bytes
            for segment, size in sealed:
                if excess - size < 0:
                    break
                excess -= size
                doomed.add(segment.base_offset)
        return sorted(doomed)

    def offset_for_time(self, timestamp_ms: int, st: HeadState) -> int | None:
        """The earliest offset >= ``st.start_offset`` whose record has a timestamp >=
        ``timestamp_ms``, or None. Lock-free.

        Cost: O(log n). Timestamps need not increase, so the first segment that can
        hold the answer is found by bisecting the running maximum of the sealed
        segments' largest timestamps (read once from their time indexes, extended as
        segments are sealed, reset when the layout changes); within it, the time index
        gives a starting batch. Both come from index entries checked against the
        batches first (``Segment.sealed_max_timestamp``, ``Segment.find_time``): a
        damaged entry would skip the answer.
        """
        interval = self._interval()
        sealed = self.sealed(st)
        prefix = self._prefix_max
        if len(prefix) > len(sealed) or self._prefix_epoch != self.layout_epoch:
            prefix = self._prefix_max = []
            self._prefix_epoch = self.layout_epoch
        running = prefix[-1] if prefix else -1
        for segment in sealed[len(prefix):]:
            running = max(running, segment.sealed_max_timestamp(self.limit(segment, st),
                                                                interval))
            prefix.append(running)
        active = self.get(st.active_base)
        candidates = sealed[bisect.bisect_left(prefix, timestamp_ms):]
        for segment in [*candidates, active] if active is not None else candidates:
            limit = self.limit(segment, st)
            is_sealed = segment.base_offset != st.active_base
            if is_sealed:
                segment.check_sealed_indexes(limit, interval)
            position = segment.find_time(timestamp_ms, limit)
            if is_sealed and not segment.indexes.valid:  # an entry did not hold
                segment.rebuild_indexes(limit, interval)
            for batch in segment.batches(position, limit):
                if batch.header.max_timestamp_ms < timestamp_ms:
                    continue
                for offset, ts in zip(batch.offsets(), batch.timestamps(), strict=True):
                    if ts >= timestamp_ms and offset >= st.start_offset:
                        return offset
        return None

    # -- reading -----------------------------------------------------------------------

    def read(self, offset: int, st: HeadState, max_bytes: int, max_records: int | None
             ) -> list[DecodedBatch]:
        """Verified batches holding the records from ``offset`` (within
        ``[st.start_offset, st.end_offset)``) on, bounded by the end of ``st``,
        ``max_bytes`` and ``max_records``: at least one batch, even if it is larger.
        The first batch may start before ``offset``. Lock-free.

        Cost: the bytes returned (checksums, unpacking), plus an index search unless
        the read continues where an earlier one ended. The batch loop is inlined here
        rather than built on ``Segment.batches``: this is the consumers' hot path.
        """
        out: list[DecodedBatch] = []
        nbytes = 0
        nrecords = 0
        partial = self._partial
        hint = self._hints.pop(offset, None)
        segments = self._layout[1]
        if (partial is not None
                and partial[1].header.base_offset <= offset < partial[1].header.next_offset
                and segments.get(partial[0].base_offset) is partial[0]):
            segment: Segment | None = partial[0]
            position = partial[1].position
        elif hint is not None and segments.get(hint[0].base_offset) is hint[0]:
            segment = hint[0]
            position = hint[1]
        else:
            segment = self.segment_for(offset)
            if segment is None:
                self.reload(st.layout_epoch)
                segment = self.segment_for(offset)
                if segment is None:
                    raise CorruptRecordError(f"no segment holds offset {offset} in "
                                             f"{self.directory}")
            position = self._position_of(segment, offset, st)
        while segment is not None and offset < st.end_offset:
            # (the active segment's limit inline: where every tailing read is)
            limit = (st.active_position if segment.base_offset == st.active_base
                     else self.limit(segment, st))
            while position < limit:
                try:
                    if partial is not None and partial[0] is segment and \
                            partial[1].position == position:
                        batch = segment.reread_batch(partial[1], limit)
                    else:
                        batch = segment.read_batch(position, limit)
                except CorruptRecordError:
                    if out:  # return the good records first; the next read raises
                        self._remember(offset, segment, position)
                        return out
                    raise
                if batch is None:
                    break
                header = batch.header
                position += header.length
                # (BatchHeader.next_offset, inline: a property is a call per batch)
                next_offset = header.base_offset + header.last_offset_delta + 1
                if next_offset <= offset:
                    continue
                out.append(batch)
                nbytes += header.length
                nrecords += header.record_count - (0 if offset <= header.base_offset
                                                   else batch.index_of(offset))
                offset = next_offset
                if nbytes >= max_bytes or (max_records is not None and
                                           nrecords >= max_records):
                    self._remember(offset, segment, position)
                    # A batch cut short by max_records is where the next read resumes:
                    # keep it decoded (one per partition) so that it is only verified.
                    self._partial = ((segment, batch) if max_records is not None
                                     and nrecords > max_records else None)
                    return out
            if segment.base_offset >= st.active_base:
                break
            nxt = self.next_segment(segment.base_offset)
            if nxt is None:
                self.reload(st.layout_epoch)
                nxt = self.next_segment(segment.base_offset)
            if nxt is not None and nxt.base_offset != offset:
                # Segments chain without gaps (compaction keeps each segment's last
                # record), so a jump means a segment file is missing or damaged.
                if out:  # the good records first, as for a bad batch; the next read raises
                    self._remember(offset, segment, position)
                    self._partial = None
                    return out
                raise CorruptRecordError(
                    f"{self.directory}: segment {file_name(nxt.base_offset)} follows a "
                    f"segment that ends at offset {offset}; records in between are missing")
            segment, position = nxt, 0
        if segment is not None:
            self._remember(offset, segment, position)
        self._partial = None
        return out

    def _position_of(self, segment: Segment, offset: int, st: HeadState) -> int:
        limit = self.limit(segment, st)
        if segment.base_offset < st.active_base and not segment.indexes.checked:
            segment.check_sealed_indexes(limit, self._interval())
        return segment.find_position(offset, limit)

    def _remember(self, next_offset: int, segment: Segment, position: int) -> None:
        hints = self._hints
        hints[next_offset] = (segment, position)
        if len(hints) > _MAX_HINTS:
            hints.popitem(last=False)

    def forget_positions(self) -> None:
        """Forget where recent reads ended (they then search the index). O(1)."""
        self._hints.clear()
        self._partial = None

    # -- changes ------------------------------------------------------------------

    def reload(self, layout_epoch: int) -> None:
        """List the segment files again, for a head state of ``layout_epoch``. May run
        in any thread (readers call it), so it swaps in new objects and drops the
        mappings and index descriptors of the replaced ones at once, but a replaced
        segment's writer descriptor stays open until the writer calls
        ``release_retired``. Cost: one listdir, O(n)."""
        with self._reload_lock:
            bases = list_bases(self.directory)
            old = self._layout[1]
            changed = self.layout_epoch != layout_epoch
            fresh: dict[int, Segment] = {}
            for base in bases:
                seg = old.get(base)
                if seg is None or changed:
                    # A replaced file (compaction) keeps its name: after a layout change
                    # map every segment again. Old mappings stay valid until dropped.
                    seg = Segment(self.directory, base, self.read_only)
                fresh[base] = seg
            for seg in old.values():
                if seg is not fresh.get(seg.base_offset):
                    # Let go of a replaced segment now, not when it is collected: its
                    # mapping (a descriptor too, before Python 3.13) and index
                    # descriptors would keep a deleted file's space allocated (issue
                    # 18). A reader thread still holding the mapping keeps it until it
                    # returns; the writer descriptor is the writer's to close.
                    seg.unmap()
                    if seg.writer_open:
                        self._retired.append(seg)
            self._layout = (bases, fresh)
            self.layout_epoch = layout_epoch
            # Drop what holds segment objects of the old listing; segments kept keep
            # their place in the cache, which bounds what stays mapped.
            self.forget_positions()
            cache = self._mapped_sealed
            for base, seg in list(cache.items()):
                if fresh.get(base) is not seg:
                    cache.pop(base, None)
            if changed:
                self._on_layout_change()

    def create(self, base_offset: int, clock: Callable[[], int], sync_dir: bool) -> Segment:
        """Open the file of a new segment at ``base_offset`` for writing, creating it
        (and fsyncing the directory if ``sync_dir``). A file a roll that died left is
        reused, its bytes moved aside first. Writer lock held; ``add`` it once the
        roll is published. Cost: an open, a stat, a directory fsync."""
        segment = self.get(base_offset) or Segment(self.directory, base_offset)
        with _fileutil.os_errors(f"creating segment {segment.path}"):
            segment.open_for_write()
            if segment.file_bytes() > 0 and segment.data_end() > 0:
                move_aside(segment, 0, clock())
            # A new segment starts with no index. Index files of an earlier segment at
            # this base would otherwise be adopted, stale entries and all: a power loss
            # can keep an index whose .log vanished (tests/test_recovery.py).
            segment.indexes.unlink()
            segment.indexes.drop()
            if sync_dir:
                _fileutil.sync_dir(self.directory)
        return segment

    def add(self, segment: Segment) -> None:
        """Make a segment a roll created known (writer lock held). O(n)."""
        bases, segments = self._layout
        if segment.base_offset not in segments:
            bases = [*bases, segment.base_offset]
        self._layout = (bases, {**segments, segment.base_offset: segment})

    @property
    def retired(self) -> bool:
        """True while replaced segments wait for ``release_retired``. O(1)."""
        return bool(self._retired)

    def release_retired(self) -> None:
        """Close the writer descriptors of segments a reload replaced (writer lock
        held: only the writer uses them)."""
        while self._retired:
            self._retired.pop().release_writer()

    def close(self) -> None:
        """Close every segment, retired ones included."""
        for segment in [*self._layout[1].values(), *self._retired]:
            segment.close()

    # -- invariants -----------------------------------------------------------------

    def _check(self, st: HeadState | None = None) -> None:
        """Assert the list's invariants (and, with ``st``, its agreement with that
        published state): bases sorted and unique, one segment object per base, named
        by it; the caches within their bounds and naming listed segments; resume
        points within the published data. (That the data chains from segment to
        segment is ``PartitionLog._check``'s.) Cost: O(n)."""
        bases, segments = self._layout
        assert bases == sorted(set(bases)) == sorted(segments), (bases, segments)
        assert all(segments[b].base_offset == b for b in bases), segments
        assert len(self._mapped_sealed) <= _MAX_MAPPED_SEALED, self._mapped_sealed
        assert all(segments.get(b) is s for b, s in self._mapped_sealed.items())
        assert len(self._hints) <= _MAX_HINTS
        if st is not None:
            assert self.covers(st), (st, bases)
            assert bases[0] <= st.start_offset, (bases, st)
            for offset, (segment, position) in self._hints.items():
                if segments.get(segment.base_offset) is segment:
                    assert offset <= st.end_offset and position <= self.limit(segment, st)
