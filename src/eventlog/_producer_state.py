"""Idempotent-producer state of one partition: the last sequence per producer id.

Every batch of an idempotent producer carries its ``producer_id`` and the sequence of
its first record; record i of the batch has sequence ``base_sequence + i`` (modulo
2**31, as in Kafka). The partition keeps, per producer id, the last sequence stored and
the most recent batches, so that:

- a batch that continues the sequence is appended;
- a batch whose records are all stored already is *not* appended again, and its
  records' original offsets are returned (for the recent batches; -1 beyond them);
- a batch that overlaps the end of the stored sequence has its stored records skipped
  and the rest appended;
- a batch that leaves a gap raises ``OutOfOrderSequenceError``.

Transactions add, per producer id, the newest epoch the partition has seen, the first
offset of its open transaction, and its last marker (``_Txn``): a transactional batch
or marker of an older epoch is refused (``ProducerFencedError``: its producer was
fenced, and the successor's abort marker may already be here), a batch of a newer
epoch starts its sequence afresh, and a marker that repeats the last word for the same
epoch, with no transaction open since, is not appended again (completing a
transaction is idempotent; see docs/transactions.md).

The state is derived data: it is rebuilt from batch headers, starting from the newest
snapshot written when a segment rolled (``<base>.producers``), so a rebuild reads at
most the segments written since the last roll. ``ProducerState`` is the state itself
(decisions, snapshots); ``ProducerStateManager`` keeps it in step with a partition's
log (build on first use, catch up with other writers, snapshot at a roll), as Kafka's
``ProducerStateManager``.
"""

from __future__ import annotations

import logging
import os
import struct
from collections import deque
from collections.abc import Iterator
from itertools import pairwise
from typing import TYPE_CHECKING, Any, NamedTuple

import msgpack
import xxhash

from . import _fileutil
from ._format import ATTR_COMMIT, ATTR_CONTROL, ATTR_TXN_BITS, BatchHeader, EncodedBatch
from ._segment import file_name, parse_file_name
from .errors import CorruptRecordError, OutOfOrderSequenceError, ProducerFencedError

if TYPE_CHECKING:
    from ._head import HeadState
    from ._segments import SegmentList

_logger = logging.getLogger("eventlog")

SEQUENCE_MODULUS = 2**31
_RECENT_BATCHES = 1024
_SNAPSHOT_MAGIC = b"EvLgPSN1"
_SNAPSHOT_HEADER = struct.Struct("<8sQ")
SNAPSHOT_SUFFIX = ".producers"
_MAX_SNAPSHOT_BYTES = 64 << 20


class Decision(NamedTuple):
    """What to do with an incoming idempotent batch."""

    skip: int                # records at its start that are stored already
    duplicate: bool          # every record is stored already: append nothing
    stored_offsets: list[int]  # offsets of the skipped records (-1 where unknown)


class _Producer:
    __slots__ = ("batches", "last_sequence")

    def __init__(self, last_sequence: int) -> None:
        self.last_sequence = last_sequence
        # (base_sequence, base_offset, count) of the most recent batches
        self.batches: deque[tuple[int, int, int]] = deque(maxlen=_RECENT_BATCHES)


class _Txn:
    __slots__ = ("epoch", "marker_commit", "marker_epoch", "open_first")

    def __init__(self, epoch: int, open_first: int = -1, marker_epoch: int = -1,
                 marker_commit: bool = False) -> None:
        self.epoch = epoch                # newest epoch seen for the producer id
        self.open_first = open_first      # first offset of its open transaction, or -1
        self.marker_epoch = marker_epoch  # its last marker (-1: none)
        self.marker_commit = marker_commit


class ProducerState:
    """Producer id -> sequence state of one partition. Not thread-safe: used under the
    partition's writer lock."""

    def __init__(self) -> None:
        self._producers: dict[int, _Producer] = {}
        self._txns: dict[int, _Txn] = {}

    def __len__(self) -> int:
        return len(self._producers)

    def last_sequence(self, producer_id: int) -> int | None:
        entry = self._producers.get(producer_id)
        return None if entry is None else entry.last_sequence

    def observe(self, header: BatchHeader) -> None:
        """Account for a stored batch (ignores batches of non-idempotent producers)."""
        if header.producer_id < 0:
            return
        if header.attributes & ATTR_TXN_BITS:
            self.record_txn(header.producer_id, header.producer_epoch, header.attributes,
                            header.base_offset)
        if header.base_sequence < 0:
            return
        self.record(header.producer_id, header.base_sequence, header.base_offset,
                    header.last_offset_delta + 1)

    def record(self, producer_id: int, base_sequence: int, base_offset: int,
               count: int) -> None:
        last = (base_sequence + count - 1) % SEQUENCE_MODULUS
        entry = self._producers.get(producer_id)
        if entry is None:
            entry = self._producers[producer_id] = _Producer(last)
        entry.last_sequence = last
        entry.batches.append((base_sequence, base_offset, count))

    # -- transactions ------------------------------------------------------------------

    def check_txn(self, producer_id: int, epoch: int, attributes: int) -> bool:
        """Decide about a transactional batch or marker before it is appended: False
        when it is a marker already stored (append nothing). Raises
        ``ProducerFencedError`` for an epoch older than the partition has seen. A data
        batch of a newer epoch restarts the producer id's sequence. O(1)."""
        entry = self._txns.get(producer_id)
        if entry is None:
            return True
        if epoch < entry.epoch:
            raise ProducerFencedError(
                f"producer id {producer_id} epoch {epoch} was fenced: this partition has "
                f"seen epoch {entry.epoch} (a newer producer with the same "
                "transactional_id, or a timeout, ended its transaction)")
        if attributes & ATTR_CONTROL:
            return not (entry.open_first < 0 and entry.marker_epoch == epoch
                        and entry.marker_commit == bool(attributes & ATTR_COMMIT))
        if epoch > entry.epoch:
            self._producers.pop(producer_id, None)
        return True

    def record_txn(self, producer_id: int, epoch: int, attributes: int,
                   base_offset: int) -> None:
        """Account for a stored transactional batch or marker. O(1)."""
        entry = self._txns.get(producer_id)
        if entry is None:
            entry = self._txns[producer_id] = _Txn(epoch)
        elif epoch > entry.epoch:
            if not attributes & ATTR_CONTROL:
                self._producers.pop(producer_id, None)  # a new epoch restarts sequences
            entry.epoch = epoch
        if attributes & ATTR_CONTROL:
            entry.open_first = -1
            entry.marker_epoch = epoch
            entry.marker_commit = bool(attributes & ATTR_COMMIT)
        elif entry.open_first < 0:
            entry.open_first = base_offset

    def restore_txn(self, producer_id: int, entry: _Txn) -> None:
        """Set the transaction entry of ``producer_id`` (from a snapshot)."""
        self._txns[producer_id] = entry

    def open_transactions(self) -> dict[int, int]:
        """Producer id -> first offset of its open transaction here. O(producer ids)."""
        return {pid: e.open_first for pid, e in self._txns.items() if e.open_first >= 0}

    def epoch(self, producer_id: int) -> int | None:
        """The newest transactional epoch stored for ``producer_id`` (None: none)."""
        entry = self._txns.get(producer_id)
        return None if entry is None else entry.epoch

    def check(self, producer_id: int, base_sequence: int, count: int) -> Decision:
        """Decide about a batch of ``count`` records starting at ``base_sequence``.

        A producer id never seen here may start at any sequence (its earlier records,
        if any, were deleted by retention). Raises ``OutOfOrderSequenceError`` on a gap.
        """
        entry = self._producers.get(producer_id)
        if entry is None:
            return Decision(0, False, [])
        expected = (entry.last_sequence + 1) % SEQUENCE_MODULUS
        if base_sequence == expected:
            return Decision(0, False, [])
        behind = (entry.last_sequence - base_sequence) % SEQUENCE_MODULUS
        if behind < SEQUENCE_MODULUS // 2:
            stored = min(behind + 1, count)
            offsets = [self._offset_of(entry, (base_sequence + i) % SEQUENCE_MODULUS)
                       for i in range(stored)]
            return Decision(stored, stored == count, offsets)
        gap = (base_sequence - expected) % SEQUENCE_MODULUS
        raise OutOfOrderSequenceError(
            f"producer {producer_id} sent sequence {base_sequence}, but the partition "
            f"holds its records up to sequence {entry.last_sequence}: {gap} record(s) "
            "would be missing")

    def _check(self) -> None:
        """Assert the invariants: per producer, its recent batches are non-empty, lie in
        offset order without overlapping, continue each other's sequences, and the
        newest ends at its last sequence. Cost: O(batches kept)."""
        for pid, entry in self._producers.items():
            assert pid >= 0 and 0 <= entry.last_sequence < SEQUENCE_MODULUS, pid
            assert entry.batches, pid
            for (seq, offset, count), (next_seq, next_offset, _) in pairwise(entry.batches):
                assert count >= 1 and offset + count <= next_offset, (pid, entry.batches)
                assert (seq + count) % SEQUENCE_MODULUS == next_seq, (pid, entry.batches)
            seq, _, count = entry.batches[-1]
            assert count >= 1 and (seq + count - 1) % SEQUENCE_MODULUS == entry.last_sequence
        for pid, txn in self._txns.items():
            assert pid >= 0 and 0 <= txn.epoch < 2**16, (pid, txn.epoch)
            assert txn.open_first >= -1 and txn.marker_epoch <= txn.epoch, pid

    @staticmethod
    def _offset_of(entry: _Producer, sequence: int) -> int:
        for base_seq, base_offset, count in reversed(entry.batches):
            delta = (sequence - base_seq) % SEQUENCE_MODULUS
            if delta < count:
                return base_offset + delta
        return -1

    # -- snapshots ---------------------------------------------------------------------

    def to_bytes(self, offset: int) -> bytes:
        body: bytes = msgpack.packb({
            "offset": offset,
            "producers": [[pid, e.last_sequence, [list(b) for b in e.batches]]
                          for pid, e in self._producers.items()],
            "txn": [[pid, t.epoch, t.open_first, t.marker_epoch, t.marker_commit]
                    for pid, t in self._txns.items()],
        })
        return _SNAPSHOT_HEADER.pack(_SNAPSHOT_MAGIC, xxhash.xxh3_64_intdigest(body)) + body

    @classmethod
    def from_bytes(cls, data: bytes, offset: int) -> ProducerState:
        """Parse a snapshot; raises ``CorruptRecordError`` unless it checks out."""
        if len(data) < _SNAPSHOT_HEADER.size:
            raise CorruptRecordError("producer snapshot is truncated")
        magic, checksum = _SNAPSHOT_HEADER.unpack_from(data)
        body = data[_SNAPSHOT_HEADER.size:]
        if magic != _SNAPSHOT_MAGIC or checksum != xxhash.xxh3_64_intdigest(body):
            raise CorruptRecordError("producer snapshot fails its checksum")
        try:
            doc: Any = msgpack.unpackb(body, raw=False, strict_map_key=False)
            if doc["offset"] != offset:
                raise CorruptRecordError("producer snapshot is for another offset")
            state = cls()
            for pid, last, batches in doc["producers"]:
                for base_sequence, base_offset, count in batches:
                    state.record(int(pid), int(base_sequence), int(base_offset), int(count))
                if state.last_sequence(int(pid)) != int(last):
                    raise CorruptRecordError("producer snapshot is inconsistent")
            for pid, epoch, open_first, marker_epoch, marker_commit in doc.get("txn", ()):
                state.restore_txn(int(pid), _Txn(int(epoch), int(open_first),
                                                 int(marker_epoch), bool(marker_commit)))
            return state
        except CorruptRecordError:
            raise
        except Exception as exc:
            raise CorruptRecordError(f"producer snapshot is malformed: {exc}") from exc


def snapshot_path(directory: str, base_offset: int) -> str:
    return os.path.join(directory, file_name(base_offset, SNAPSHOT_SUFFIX))


def snapshot_bases(directory: str) -> list[int]:
    names = os.listdir(directory)
    return sorted(b for b in (parse_file_name(n, SNAPSHOT_SUFFIX) for n in names)
                  if b is not None)


def write_snapshot(directory: str, base_offset: int, state: ProducerState) -> None:
    """Write the state as of ``base_offset`` (temp file + rename; derived data, so no
    fsync: a lost or damaged snapshot only makes a rebuild read further back)."""
    path = snapshot_path(directory, base_offset)
    tmp = _fileutil.temp_name(path)
    fd = _fileutil.open_fd(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        _fileutil.write_all(fd, state.to_bytes(base_offset))
    finally:
        os.close(fd)
    os.replace(tmp, path)


def load_snapshots(directory: str, below_or_at: int) -> Iterator[tuple[int, ProducerState]]:
    """Valid snapshots with a base offset <= ``below_or_at``, newest first."""
    for base in reversed(snapshot_bases(directory)):
        if base > below_or_at:
            continue
        try:
            data = _fileutil.read_file(snapshot_path(directory, base), _MAX_SNAPSHOT_BYTES)
            yield base, ProducerState.from_bytes(data, base)
        except (OSError, CorruptRecordError):
            continue


class ProducerStateManager:
    """The producer state of one partition, kept in step with its log.

    Built on first use (``state``): from the newest snapshot whose segment still
    exists, then the batch headers after it. Then every append updates it
    (``appended``), a writer that finds other processes wrote catches up from the
    headers they published (``catch_up``), and a roll snapshots it (``rolled``).
    A change of the segment layout (``invalidate``) makes the next use rebuild it.

    Not thread-safe: every method but ``invalidate`` needs the partition's writer lock.
    """

    def __init__(self, segments: SegmentList) -> None:
        self._segments = segments
        self._directory = segments.directory
        self._state: ProducerState | None = None
        self._end = (-1, -1)    # (segment base, position) the state is valid up to
        self._stale = False
        # Built since the last drop? Writers test it before each ``appended`` call (a
        # plain attribute: the append path is hot). Only this class sets it.
        self.built = False

    def invalidate(self) -> None:
        """Forget the state before its next use (any thread; after a reload of a
        changed layout: compaction or retention may have removed batches). O(1)."""
        self._stale = True

    def _current(self) -> ProducerState | None:
        if self._stale:
            self._state, self._stale, self.built = None, False, False
        return self._state

    def state(self, st: HeadState) -> ProducerState:
        """The state as of the published ``st``. Cost: O(1), or on first use one
        snapshot read and the headers after it."""
        state = self._current()
        if state is None:
            bases = self._segments.bases
            state, start = ProducerState(), ((bases[0], 0) if bases else (0, 0))
            for base, snapshot in load_snapshots(self._directory, st.active_base):
                if base in self._segments:
                    state, start = snapshot, (base, 0)
                    break
            self._state, self._end, self.built = state, start, True
            self.catch_up(st)
        return state

    def catch_up(self, st: HeadState) -> None:
        """Account for the batches published up to ``st`` since the state was last
        updated (nothing to do before first use). Cost: O(batches read)."""
        state = self._current()
        if state is None:
            return
        segments = self._segments
        base, position = self._end
        for segment in segments.published(st):
            if segment.base_offset < base:
                continue
            start = position if segment.base_offset == base else 0
            for _, header in segment.headers(start, segments.limit(segment, st),
                                             verify=False):
                state.observe(header)
        self._end = (st.active_base, st.active_position)

    def admit(self, st: HeadState, batch: EncodedBatch
              ) -> tuple[EncodedBatch | None, list[int] | None]:
        """Decide about an idempotent ``batch`` (``ProducerState.check``): returns the
        batch to append (None: all of it is stored already; it may lose leading
        records that are) and the offsets of the records stored already (None when
        there are none). Raises ``OutOfOrderSequenceError`` on a gap. O(1) once built."""
        state = self.state(st)
        if batch.attributes & ATTR_TXN_BITS and not state.check_txn(
                batch.producer_id, batch.producer_epoch, batch.attributes):
            return None, None
        if batch.base_sequence < 0:
            return batch, None
        decision = state.check(batch.producer_id, batch.base_sequence, batch.record_count)
        if decision.duplicate:
            return None, decision.stored_offsets
        if decision.skip:
            return batch.without_first(decision.skip, SEQUENCE_MODULUS), \
                decision.stored_offsets
        return batch, None

    def appended(self, batch: EncodedBatch, base_offset: int, segment_base: int,
                 end_position: int) -> None:
        """After ``batch`` was stored at ``base_offset``, ending at ``end_position`` of
        segment ``segment_base``. O(1)."""
        state = self._current()
        if state is not None:
            if batch.producer_id >= 0 and batch.attributes & ATTR_TXN_BITS:
                state.record_txn(batch.producer_id, batch.producer_epoch, batch.attributes,
                                 base_offset)
            if batch.producer_id >= 0 and batch.base_sequence >= 0:
                state.record(batch.producer_id, batch.base_sequence, base_offset,
                             batch.last_offset_delta + 1)
            self._end = (segment_base, end_position)

    def rolled(self, st: HeadState, new_base: int) -> None:
        """At a roll from ``st`` to a segment at ``new_base``: snapshot the state, if it
        is up to date (derived data: without it, a rebuild reads further back)."""
        state = self._current()
        if state is not None and self._end == (st.active_base, st.active_position):
            try:
                write_snapshot(self._directory, new_base, state)
            except OSError as exc:
                _logger.warning("producer-state snapshot not written (%s)", exc)

    def delete_snapshot(self, base_offset: int) -> None:
        """Remove the snapshot of a segment being deleted (if any)."""
        try:
            os.unlink(snapshot_path(self._directory, base_offset))
        except FileNotFoundError:
            pass

    def _check(self, st: HeadState) -> None:
        """Assert that a built state is valid up to no further than ``st``."""
        if self._state is not None and not self._stale:
            assert self._end <= (st.active_base, st.active_position), (self._end, st)
