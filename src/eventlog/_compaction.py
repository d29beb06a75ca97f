"""Key compaction of a partition (``cleanup_policy="compact"``).

Compaction keeps, in the sealed segments, the latest record of each key; the active
segment is never touched. A record is kept when any of these holds:

- it is the latest record of its key anywhere in the log (up to the published end);
- it has no key (keyless records are never compacted away);
- it is younger than ``min_compaction_lag_ms``.

A latest record that is a tombstone (its value is ``None``) is dropped once it is older
than ``delete_retention_ms`` (consumers have that long to see the deletion), but never
while an older record of its key is still kept (one younger than the compaction lag):
dropping it then would bring the old value back.

Offsets never change: cleaned batches are *sparse* (they carry each record's offset
delta), so a consumer reading from the start sees every key's latest value at the
offset it was written at, with gaps where older values were. A cleaned segment still
covers exactly the offsets it did: its last batch keeps the span up to the next
segment's base (possibly past its last record), and a segment whose records all went
keeps one empty batch covering its span. So segments still chain without gaps, which
is how recovery and reads notice a segment that is really missing.

The swap is crash-safe. A segment is rewritten into ``<base>.log.cleaned`` and
fsynced; then ``PartitionLog.swap_in`` (under the partition's writer lock) renames that
file to ``<base>.log.swap``, removes the old indexes, and renames the swap file over
``<base>.log`` (``_segment.replace_with_cleaned``). Recovery finishes a swap it finds (the
``.swap`` file is complete) and discards ``.cleaned`` files, so a crash at any step
leaves either the old segment or the new one, and no key loses its latest value.
Processes that have the old segment mapped keep reading it (it is a different inode)
until they notice the new layout.

Transactions (docs/transactions.md): only segments wholly below the partition's last
stable offset are cleaned, so no undecided record is ever rewritten. Records of aborted
transactions are dropped and never count as a key's latest value (a compacted topic
does not resurrect them, nor lose the committed value they would have superseded);
records of committed ones are kept as plain records, and markers, which decide nothing
in a segment without transactional batches, are dropped. What is decided how comes
from the partition alone (``_isolation.CommittedView``).

Compaction is scheduled from above and calls down only: the topic layer passes
``maybe_compact`` as the partition's ``on_roll`` hook, log maintenance calls it
periodically, and ``Log.compact`` calls ``compact``. It reads a partition through its
public surface (``state``, ``segments``, the cleaner lock) and changes it only through
``swap_in``. The compaction checkpoint (``cleaner-checkpoint``: where the last
compaction ended, for ``dirty_ratio``) is this module's own file.
"""

from __future__ import annotations

import json
import mmap
import os
from typing import TYPE_CHECKING, NamedTuple

from . import _fileutil, _format
from ._format import ATTR_CONTROL, ATTR_TXN_BITS, BatchHeader, EncodedBatch, encode_batch
from ._isolation import CommittedView
from ._segment import Segment, cleaned_path
from .config import TopicConfig

if TYPE_CHECKING:
    from ._partition import PartitionLog

_CHUNK_BYTES = 1 << 20
CHECKPOINT = "cleaner-checkpoint"  # {"offset": base of the first segment not cleaned}


class CompactionResult(NamedTuple):
    segments_cleaned: int
    records_removed: int
    bytes_before: int
    bytes_after: int


def _committed(view: CommittedView, header: BatchHeader) -> bool | None:
    """Whether the records of the batch ``header`` count: True for plain and committed
    batches, False for markers and aborted ones, None for undecided ones."""
    attributes = header.attributes
    if not attributes & ATTR_TXN_BITS:
        return True
    if attributes & ATTR_CONTROL:
        return False
    return view.fate(header)


def key_index(plog: PartitionLog, end_offset: int, lag_cutoff_ms: int,
              view: CommittedView | None = None) -> tuple[dict[bytes, int], set[bytes]]:
    """Key -> offset of its latest record over the whole published log, and the keys
    with an older record that compaction must keep (younger than the compaction lag).
    Records of aborted or undecided transactions do not count. Memory: one entry per
    distinct key. Cost: one pass over every batch."""
    st = plog.state()
    segments = plog.segments
    view = view or CommittedView(plog)
    latest: dict[bytes, int] = {}
    first_young: dict[bytes, int] = {}
    for segment in segments.published(st):
        for batch in segment.batches(0, segments.limit(segment, st)):
            if batch.keys is None or not _committed(view, batch.header):
                continue
            for offset, key, ts in zip(batch.offsets(), batch.keys, batch.timestamps(),
                                       strict=True):
                if key is not None and offset < end_offset:
                    latest[key] = offset
                    if ts > lag_cutoff_ms:
                        first_young.setdefault(key, offset)
    young_superseded = {k for k, offset in first_young.items() if offset < latest[k]}
    return latest, young_superseded


def clean_segment(segment: Segment, limit: int, latest: dict[bytes, int],
                  young_superseded: set[bytes], tombstone_cutoff_ms: int, lag_cutoff_ms: int,
                  view: CommittedView | None = None
                  ) -> tuple[list[tuple[EncodedBatch, int]], int, int]:
    """The batches of ``segment`` with superseded records removed (and, with ``view``,
    aborted records and markers), covering the same offsets as before. Returns
    (batches with their base offsets, removed, kept). The segment must lie below the
    last stable offset."""
    kept_offsets: list[int] = []
    kept_values: list[bytes | None] = []
    kept_keys: list[bytes | None] = []
    kept_ts: list[int] = []
    kept_headers: list[list[tuple[str, bytes]] | None] = []
    removed = 0
    batches = list(segment.batches(0, limit))
    if not batches:
        return [], 0, 0
    segment_end = batches[-1].header.next_offset
    newest_ts = max(b.header.max_timestamp_ms for b in batches)
    for batch in batches:
        if view is not None:
            counts = _committed(view, batch.header)
            if counts is None:
                raise ValueError("clean_segment: an undecided transaction in the segment")
            if not counts:
                removed += batch.header.record_count
                continue
        for offset, key, value, ts, hdrs in zip(batch.offsets(), batch.key_column(),
                                                batch.values, batch.timestamps(),
                                                batch.header_column(), strict=True):
            if key is None or ts > lag_cutoff_ms:
                keep = True
            elif latest.get(key) != offset:
                keep = False   # superseded
            else:
                keep = not (value is None and ts < tombstone_cutoff_ms
                            and key not in young_superseded)
            if keep:
                kept_offsets.append(offset)
                kept_values.append(value)
                kept_keys.append(key)
                kept_ts.append(ts)
                kept_headers.append(hdrs or None)
            else:
                removed += 1
    out: list[tuple[EncodedBatch, int]] = []
    start = 0
    size = 0
    for i, value in enumerate(kept_values):
        size += (len(value) if value else 0) + 32
        last = i == len(kept_values) - 1
        if size >= _CHUNK_BYTES or last:
            offsets = kept_offsets[start:i + 1]
            base = offsets[0]
            encoded = encode_batch(kept_values[start:i + 1], kept_keys[start:i + 1],
                                   kept_ts[start:i + 1], kept_headers[start:i + 1],
                                   offset_deltas=[o - base for o in offsets],
                                   span=segment_end - 1 - base if last else None)
            out.append((encoded, base))
            start = i + 1
            size = 0
    if not out:   # everything went: one empty batch keeps the segment's span
        base = segment.base_offset
        out.append((encode_batch([], offset_deltas=[], span=segment_end - 1 - base,
                                 timestamps_ms=newest_ts), base))
    return out, removed, len(kept_values)


def write_segment_file(path: str, batches: list[tuple[EncodedBatch, int]]) -> int:
    """Write ``batches`` into a new, fsynced file at ``path``; return its data size."""
    total = sum(b.size for b, _ in batches)
    fd = _fileutil.open_fd(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC)
    try:
        if total:
            _fileutil.preallocate(fd, 0, total)
            mm = mmap.mmap(fd, total)
            try:
                position = 0
                for encoded, base in batches:
                    position += _format.write_batch(mm, position, encoded, base)
                mm.flush()
            finally:
                mm.close()
        _fileutil.sync_fd(fd)
    finally:
        os.close(fd)
    return total


def cleaned_up_to(plog: PartitionLog) -> int:
    """The checkpoint of ``plog``'s last compaction: segments from this base on were
    written since (-1: never compacted). Cost: one small file read."""
    try:
        data = _fileutil.read_file(os.path.join(plog.directory, CHECKPOINT), 4096)
        return int(json.loads(data)["offset"])
    except (OSError, ValueError, KeyError, TypeError):
        return -1


def set_cleaned_up_to(plog: PartitionLog, offset: int) -> None:
    """Store the checkpoint (temp file, fsync, rename)."""
    _fileutil.atomic_write(os.path.join(plog.directory, CHECKPOINT),
                           json.dumps({"offset": offset}).encode())


def dirty_ratio(plog: PartitionLog) -> float:
    """Share of ``plog``'s sealed bytes written since its last compaction."""
    sealed = plog.segments.sealed_sizes(plog.state())
    total = sum(size for _, size in sealed)
    if total == 0:
        return 0.0
    cleaned = cleaned_up_to(plog)
    return sum(size for s, size in sealed if s.base_offset >= cleaned) / total


def maybe_compact(plog: PartitionLog, config: TopicConfig, now_ms: int
                  ) -> CompactionResult | None:
    """Compact ``plog`` if its topic is compacted and at least
    ``min_cleanable_dirty_ratio`` of its sealed bytes were written since the last
    compaction; None when it is not due, or when another process is cleaning the
    partition right now (it is not waited for: the next roll or maintenance round
    tries again). The one trigger of on-roll and background compaction. Cost: O(sealed
    segments) to decide; a compaction is O(bytes stored)."""
    if not config.compacted or dirty_ratio(plog) < config.min_cleanable_dirty_ratio:
        return None
    with plog.cleaner_lock(block=False) as locked:
        if not locked:
            return None
        return _compact_locked(plog, config, now_ms)


def compact(plog: PartitionLog, now_ms: int, config: TopicConfig | None = None
            ) -> CompactionResult:
    """Compact the sealed segments of one partition now (``config``: the topic's
    current settings by default). Holds the partition's cleaner lock throughout
    (waiting for it) and its writer lock only to swap each cleaned segment in."""
    with plog.cleaner_lock():
        return _compact_locked(plog, config or plog.config(), now_ms)


def _compact_locked(plog: PartitionLog, config: TopicConfig, now_ms: int
                    ) -> CompactionResult:
    segments_cleaned = removed_total = before = after = 0
    st = plog.state()
    segments = plog.segments
    sealed = [segment.base_offset for segment in segments.sealed(st)]
    if not sealed:
        return CompactionResult(0, 0, 0, 0)
    # Only what lies wholly below the last stable offset: nothing undecided is rewritten.
    view = CommittedView(plog)
    stable = view.last_stable_offset(st.start_offset)
    ends = [*sealed[1:], st.active_base]
    sealed = [base for base, end in zip(sealed, ends, strict=True) if end <= stable]
    lag_cutoff = now_ms - config.min_compaction_lag_ms
    latest, young_superseded = key_index(plog, st.end_offset, lag_cutoff, view)
    for base in sealed:
        segment = segments.get(base)  # each swap_in lists the segments anew
        if segment is None:
            continue
        limit = segments.limit(segment, st)
        batches, removed, _ = clean_segment(
            segment, limit, latest, young_superseded,
            now_ms - config.delete_retention_ms, lag_cutoff, view)
        if removed == 0:
            continue
        old_size = segment.sealed_size(limit)
        cleaned = cleaned_path(segment)
        with _fileutil.os_errors(f"writing cleaned segment {cleaned}"):
            new_size = write_segment_file(cleaned, batches)
        plog.swap_in(base, cleaned)
        segments_cleaned += 1
        removed_total += removed
        before += old_size
        after += new_size
    set_cleaned_up_to(plog, ends[len(sealed) - 1] if sealed else cleaned_up_to(plog))
    return CompactionResult(segments_cleaned, removed_total, before, after)


__all__ = ["CompactionResult", "cleaned_up_to", "compact", "dirty_ratio", "maybe_compact"]
