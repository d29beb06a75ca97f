"""Retention of one partition: deleting whole sealed segments by age or size,
``delete_records``, and swapping in a segment compaction cleaned.

``PartitionRetention`` is the part of ``PartitionLog`` (``_partition.py``) that removes
data. Every step runs under the cleaner lock (one cleaner per partition, across
processes) and then the writer lock; the start offset moves first, in the head, and
segment files go after, so a reader in any process sees either the old start or the
new one, never a gap. Which segments retention deletes is ``SegmentList``'s choice,
made from the batches' own timestamps (an index entry is only a hint).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from itertools import pairwise
from typing import TYPE_CHECKING

from . import _fileutil
from ._head import HeadState
from ._producer_state import ProducerStateManager
from ._segment import Segment, replace_with_cleaned
from ._segments import SegmentList
from .config import TopicConfig
from .errors import OffsetOutOfRangeError

if TYPE_CHECKING:
    from ._partition import StorageContext

__all__ = ["PartitionRetention"]


class PartitionRetention:
    """Retention, ``delete_records`` and the compaction swap (mixed into
    ``PartitionLog``, which holds what is declared here). Thread-safe."""

    directory: str
    _config: Callable[[], TopicConfig]
    _ctx: StorageContext
    _segments: SegmentList
    _producers: ProducerStateManager

    if TYPE_CHECKING:
        def _locked(self) -> AbstractContextManager[HeadState]: ...

        def _publish(self, st: HeadState) -> HeadState: ...

        def cleaner_lock(self, block: bool = True) -> AbstractContextManager[bool]: ...

    @_fileutil.translate_errors("partition")
    def enforce_retention(self) -> int:
        """Delete sealed segments beyond ``retention_ms`` / ``retention_bytes``; return how
        many. The start offset moves to the first record kept. Whole segments only; the
        active segment is never deleted. Cost: O(segments)."""
        config = self._config()
        if config.retention_ms is None and config.retention_bytes is None:
            return 0
        with self.cleaner_lock(), self._locked() as st:
            cutoff = None if config.retention_ms is None \
                else self._ctx.clock() - config.retention_ms
            doomed = self._segments.retention_doomed(st, cutoff, config.retention_bytes)
            if not doomed:
                return 0
            keep = [b for b in self._segments.bases if b > doomed[-1]]
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
            doomed = [base for base, following in pairwise(self._segments.bases)
                      if base < st.active_base and following <= start]
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
            self._producers.delete_snapshot(base)
        if doomed:
            _fileutil.sync_dir(self.directory)
        self._segments.reload(epoch)

    def swap_in(self, base: int, cleaned_path: str) -> None:
        """Replace sealed segment ``base`` with its cleaned copy (``replace_with_cleaned``)
        and publish the new layout. Cleaner lock held by the caller; takes the writer
        lock. Cost: four renames/unlinks, two directory fsyncs, an index rebuild."""
        with self._locked() as st, _fileutil.os_errors(f"swapping in {cleaned_path}"):
            replace_with_cleaned(Segment(self.directory, base), cleaned_path)
            epoch = st.layout_epoch + 1
            self._publish(st._replace(layout_epoch=epoch))
            self._segments.reload(epoch)
            # The old indexes are gone; build the new ones now (a crash before this
            # only leaves them missing, and they are rebuilt on first use).
            segment = self._segments[base]
            segment.rebuild_indexes(segment.file_bytes(), self._config().index_interval_bytes)
