"""Where each record goes: key hashes, the sticky partition, and whole columns.

This room owns the partition choice of the producer and nothing else (no batches, no
I/O):

- ``murmur2`` (Kafka's hash, bit for bit) and the two built-in key partitioners,
  ``"xxhash"`` (the default) and ``"murmur2"`` (keys land where a Kafka producer would
  put them);
- ``StickyPartitioner``, the one rule for records without a key, used by ``send`` (one
  record at a time) and by ``send_batch`` (runs of records): fill a block of bytes on
  one partition, then move to the next. The sequence depends only on record sizes and
  order and on where it started (the producer id, for an idempotent producer), so a
  replay of the same records puts them where they went before;
- ``RecordPartitioner``, which combines both with a custom callable and places a whole
  ``send_batch`` column at once (``assign``).

Nothing here is thread-safe: the producer calls it under its lock (a custom
partitioner callable runs outside that lock, it is only called, never stored to).
"""

from __future__ import annotations

import operator
import struct
from collections.abc import Callable, Sequence
from itertools import repeat

import xxhash

from .errors import InvalidConfigError, InvalidRecordError

__all__ = ["BULK_BLOCK_BYTES", "PARTITIONERS", "Partitioner", "RecordPartitioner",
           "StickyCursor", "StickyPartitioner", "check_partition", "murmur2"]

Partitioner = Callable[[str, "bytes | None", int], int]
"""``(topic, key_bytes or None, partition_count) -> partition``."""

# Keyless runs of send_batch fill blocks of at least this size (larger than send()'s
# batch_bytes: fewer, larger appends).
BULK_BLOCK_BYTES = 1 << 20

_M32 = 0xFFFFFFFF
_WORDS = struct.Struct("<I")


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash of ``data`` (a signed 32-bit int, as Java returns it).

    Kafka's default partitioner puts a keyed record on partition
    ``(murmur2(key_bytes) & 0x7fffffff) % num_partitions``. Cost: O(len(data)), about
    a microsecond for a short key (pure Python).

    >>> murmur2(b"21"), murmur2(b"foobar")
    (-973932308, -790332482)
    """
    length = len(data)
    m = 0x5BD1E995
    h = (0x9747B28C ^ length) & _M32
    whole = length & ~3
    for (k,) in _WORDS.iter_unpack(data[:whole]):
        k = (k * m) & _M32
        k ^= k >> 24
        k = (k * m) & _M32
        h = ((h * m) & _M32) ^ k
    rest = length & 3
    if rest == 3:
        h ^= data[whole + 2] << 16
    if rest >= 2:
        h ^= data[whole + 1] << 8
    if rest >= 1:
        h ^= data[whole]
        h = (h * m) & _M32
    h ^= h >> 13
    h = (h * m) & _M32
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def murmur2_partition(topic: str, key: bytes | None, partitions: int) -> int:
    """Kafka's default placement of a keyed record."""
    assert key is not None
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def xxhash_partition(topic: str, key: bytes | None, partitions: int) -> int:
    """eventlog's default placement of a keyed record (xxh3-64 of the key bytes)."""
    assert key is not None
    return int(xxhash.xxh3_64_intdigest(key) % partitions)


PARTITIONERS: dict[str, Partitioner] = {"xxhash": xxhash_partition,
                                        "murmur2": murmur2_partition}


def check_partition(partition: object, partitions: int, topic: str) -> int:
    """``partition`` if it names one of the ``partitions`` of ``topic``, else raise
    ``InvalidRecordError``."""
    if type(partition) is not int or not 0 <= partition < partitions:
        raise InvalidRecordError(f"topic {topic!r} has partitions 0..{partitions - 1}, "
                                 f"not {partition!r}")
    return partition


# A cursor that has moved on is marked full forever, so that whoever still holds it
# (send()'s fast path in the accumulator) sees at once that it is no longer current.
_RETIRED = 1 << 62


class StickyCursor:
    """Where the keyless records of one topic go now.

    ``index`` counts the partitions visited (taken modulo the partition count, so a
    topic that grows is reached as it grows); ``filled`` is how many bytes of the
    current block are used, each record counting its size plus one (so that empty
    records move on too). ``send``'s fast path adds to ``filled`` itself while
    ``filled`` is below the block (the rule of ``StickyPartitioner.place``, inlined).
    """

    __slots__ = ("filled", "index")

    def __init__(self, index: int) -> None:
        self.index = index
        self.filled = 0

    def __repr__(self) -> str:
        state = "retired" if self.retired else f"{self.filled} bytes"
        return f"<StickyCursor {self.index} {state}>"

    @property
    def retired(self) -> bool:
        return self.filled >= _RETIRED

    def partition(self, partitions: int) -> int:
        return self.index % partitions


class StickyPartitioner:
    """The sticky partition of keyless records, one cursor per topic.

    The rule: a record goes to the cursor's partition; once a block of ``block`` bytes
    is full, the next record moves the cursor to the next partition (a new cursor; the
    old one is retired). Cost: O(1) per record, O(1) per run of ``runs``. Not
    thread-safe (the producer holds its lock).

    >>> sticky = StickyPartitioner(lambda partitions: 0)
    >>> [sticky.place("t", 3, 9, 30)[0] for _ in range(7)]   # 10 bytes a record
    [0, 0, 0, 1, 1, 1, 2]
    >>> sticky.runs("t", 3, [9] * 4, 30)                     # the same rule, in runs
    [(2, range(0, 2)), (0, range(2, 4))]
    """

    def __init__(self, start: Callable[[int], int]) -> None:
        self._start = start                        # partition count -> first index
        self._cursors: dict[str, StickyCursor] = {}

    def cursor(self, topic: str, partitions: int, block: int) -> StickyCursor:
        """The current cursor of ``topic``, moved on first if its block is full."""
        cursor = self._cursors.get(topic)
        if cursor is None:
            cursor = self._cursors[topic] = StickyCursor(self._start(partitions))
        elif cursor.filled >= block:
            cursor.filled = _RETIRED
            cursor = self._cursors[topic] = StickyCursor(cursor.index + 1)
        return cursor

    def place(self, topic: str, partitions: int, size: int, block: int
              ) -> tuple[int, StickyCursor]:
        """The partition of one keyless record of ``size`` bytes, and the cursor that
        placed it."""
        cursor = self.cursor(topic, partitions, block)
        cursor.filled += size + 1
        return cursor.index % partitions, cursor

    def runs(self, topic: str, partitions: int, sizes: Sequence[int], block: int
             ) -> list[tuple[int, Sequence[int]]]:
        """Place a column of keyless records: contiguous runs ``(partition, indexes)``,
        each about what is left of a block (estimated from its first record's size)."""
        out: list[tuple[int, Sequence[int]]] = []
        count = len(sizes)
        start = 0
        while start < count:
            cursor = self.cursor(topic, partitions, block)
            room = max(1, (block - cursor.filled) // max(1, sizes[start] + 1))
            stop = min(count, start + room)
            cursor.filled += sum(sizes[start:stop]) + (stop - start)
            out.append((cursor.index % partitions, range(start, stop)))
            start = stop
        return out

    def _check(self) -> None:
        for topic, cursor in self._cursors.items():
            assert not cursor.retired, (topic, cursor)
            assert cursor.index >= 0 and cursor.filled >= 0, (topic, cursor)


class RecordPartitioner:
    """The partition of every record a producer sends.

    An explicit partition wins; otherwise a keyed record goes where its key hashes
    (``partitioner``), a keyless one to the sticky partition, and with a custom
    callable every record goes where the callable says. Not thread-safe (see the
    module docstring).
    """

    def __init__(self, partitioner: str | Partitioner, batch_bytes: int,
                 producer_id: int | None) -> None:
        if isinstance(partitioner, str):
            if partitioner not in PARTITIONERS:
                raise InvalidConfigError(f"unknown partitioner {partitioner!r}; use "
                                         f"'xxhash', 'murmur2' or a callable")
            self.function = PARTITIONERS[partitioner]
            self.custom = False
        elif callable(partitioner):
            self.function = partitioner
            self.custom = True
        else:
            raise InvalidConfigError(f"partitioner must be a name or a callable, "
                                     f"not {partitioner!r}")
        self.batch_bytes = batch_bytes
        # Chooses where keyless records start; not security relevant.
        import random  # noqa: PLC0415 - only here: it costs `import eventlog` 1 ms

        rng = random.Random(producer_id)  # noqa: S311
        self.sticky = StickyPartitioner(
            rng.randrange if producer_id is None else producer_id.__mod__)

    def uses_sticky(self, key: bytes | None) -> bool:
        """True when a record with ``key`` (and no explicit partition) goes to the
        sticky partition."""
        return key is None and not self.custom

    def choose(self, topic: str, key: bytes | None, partitions: int) -> int:
        """The partition of a record that does not use the sticky partition: the key's
        hash, or the custom callable's answer (checked)."""
        p = self.function(topic, key, partitions)
        if type(p) is not int or not 0 <= p < partitions:
            raise InvalidConfigError(f"partitioner returned {p!r} for topic {topic!r} "
                                     f"with {partitions} partitions")
        return p

    def place_keyless(self, topic: str, partitions: int, size: int
                      ) -> tuple[int, StickyCursor]:
        """``send``'s sticky placement: blocks of ``batch_bytes``."""
        return self.sticky.place(topic, partitions, size, self.batch_bytes)

    def assign(self, topic: str, partitions: int, keys: list[bytes | None] | None,
               sizes: list[int], partition: int | None
               ) -> list[tuple[int, Sequence[int]]]:
        """Place a ``send_batch`` column: ``(partition, indexes)`` groups, in the order
        they should be appended; the same placement ``send`` would give each record,
        except that keyless runs fill blocks of ``BULK_BLOCK_BYTES``.

        Cost: O(1) per run of keyless records; for keys, one C-level hash pass with the
        default partitioner, one Python call per record otherwise.
        """
        count = len(sizes)
        if partition is not None:
            return [(check_partition(partition, partitions, topic), range(count))]
        if keys is None and not self.custom:
            block = max(self.batch_bytes, BULK_BLOCK_BYTES)
            return self.sticky.runs(topic, partitions, sizes, block)
        groups: dict[int, list[int]] = {}
        if keys is not None and not self.custom and None not in keys \
                and self.function is xxhash_partition:
            # The default partitioner over a whole column: one C call per key, no
            # per-record checks (the same placement as choose).
            hashes = map(xxhash.xxh3_64_intdigest, keys)  # type: ignore[arg-type]
            parts = list(map(operator.mod, hashes, repeat(partitions, count)))
            for p in set(parts):
                groups[p] = []
            for i, p in enumerate(parts):
                groups[p].append(i)
            return list(groups.items())
        for i in range(count):
            k = keys[i] if keys is not None else None
            if self.uses_sticky(k):
                p = self.place_keyless(topic, partitions, sizes[i])[0]
            else:
                p = self.choose(topic, k, partitions)
            groups.setdefault(p, []).append(i)
        return list(groups.items())
