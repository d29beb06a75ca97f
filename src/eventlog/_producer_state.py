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

The state is derived data: it is rebuilt from batch headers, starting from the newest
snapshot written when a segment rolled (``<base>.producers``), so a rebuild reads at
most the segments written since the last roll.
"""

from __future__ import annotations

import os
import struct
from collections import deque
from collections.abc import Iterator
from typing import Any, NamedTuple

import msgpack
import xxhash

from . import _fileutil
from ._format import BatchHeader
from .errors import CorruptRecordError, OutOfOrderSequenceError

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


class ProducerState:
    """Producer id -> sequence state of one partition. Not thread-safe: used under the
    partition's writer lock."""

    def __init__(self) -> None:
        self._producers: dict[int, _Producer] = {}

    def __len__(self) -> int:
        return len(self._producers)

    def last_sequence(self, producer_id: int) -> int | None:
        entry = self._producers.get(producer_id)
        return None if entry is None else entry.last_sequence

    def observe(self, header: BatchHeader) -> None:
        """Account for a stored batch (ignores batches of non-idempotent producers)."""
        if header.producer_id < 0 or header.base_sequence < 0:
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
                entry = state._producers[int(pid)] = _Producer(int(last))
                entry.batches.extend((int(a), int(b), int(c)) for a, b, c in batches)
            return state
        except CorruptRecordError:
            raise
        except Exception as exc:
            raise CorruptRecordError(f"producer snapshot is malformed: {exc}") from exc


def snapshot_path(directory: str, base_offset: int) -> str:
    return os.path.join(directory, f"{base_offset:020d}{SNAPSHOT_SUFFIX}")


def snapshot_bases(directory: str) -> list[int]:
    out = []
    for name in os.listdir(directory):
        if name.endswith(SNAPSHOT_SUFFIX) and len(name) == 20 + len(SNAPSHOT_SUFFIX) \
                and name[:20].isdigit():
            out.append(int(name[:20]))
    return sorted(out)


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
