"""The record-batch byte layout: header struct, checksum, encode and decode.

A segment file is a sequence of batches, each laid out as (little-endian)::

    0      4        8                16   17   18      20       24            32
    +------+--------+----------------+----+----+-------+--------+-------------+
    |magic |length  |checksum        |ver |attr|p_epoch|count   |base_offset  |
    |"EvLg"|u32     |u64 xxh3_64     |u8  |u8  |u16    |u32     |i64          |
    +------+--------+----------------+----+----+-------+--------+-------------+
    32             36             40                  48                  56
    +--------------+--------------+-------------------+-------------------+
    |last_off_delta|base_sequence |first_timestamp_ms |max_timestamp_ms   |
    |u32           |i32           |i64                |i64                |
    +--------------+--------------+-------------------+-------------------+
    56                  64
    +-------------------+------------------------------------------------+
    |producer_id i64    | payload: msgpack array of columns (length - 64) |
    +-------------------+------------------------------------------------+

``checksum`` is xxh3_64 over bytes ``[16, length)``: everything after it, header and
payload. ``magic`` and ``length`` are outside it but cannot change undetected: a wrong
magic fails the magic check and a wrong length hashes a different range.

The payload stores records column by column, so that a batch of N values is packed
and unpacked by a single msgpack call::

    [values, keys, timestamp_deltas, headers, offset_deltas]

- ``values``: list of N ``bytes`` or ``None``
- ``keys``: ``None`` when no record has a key, else a list of N ``bytes`` or ``None``
- ``timestamp_deltas``: ``None`` when every record has ``first_timestamp_ms``, else N
  ints added to it
- ``headers``: ``None`` when no record has headers, else N of (``None`` or a list of
  ``[str, bytes]`` pairs)
- ``offset_deltas``: ``None`` for a dense batch (record i has offset base+i); a list of
  N strictly increasing ints when attribute ``SPARSE`` is set (compaction removed
  records and left gaps; offsets are never reused).

A sparse batch keeps the offset span of what it replaced: ``last_offset_delta`` may be
larger than its last record's delta, and it may even hold no record at all (a
segment whose records were all compacted away). Batches therefore always chain:
each one starts at or after the ``next_offset`` of the one before, and the last batch of
a segment ends where the next segment begins.

docs/format.md shows the same layout with the directory structure around it.
"""

from __future__ import annotations

import bisect
import operator
import struct
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from itertools import repeat
from typing import Any, NamedTuple

import msgpack
import xxhash

from .errors import CorruptRecordError

MAGIC = b"EvLg"
VERSION = 1
HEADER = struct.Struct("<4sIQBBHIqIiqqq")
HEADER_BYTES = HEADER.size  # 64
CHECKSUM_START = 16
# write_batch hashes a batch up to this size from a copy of its bytes (0.1 us for a
# small one) rather than through a memoryview (0.35 us): the one-record append path.
_COPY_TO_HASH_BYTES = 2048
_CHECKSUM = struct.Struct("<Q")
_MAGIC_LENGTH = struct.Struct("<4sI")

# Attribute bits.
ATTR_LOG_APPEND_TIME = 0x01  # timestamps were assigned by the log, not the producer
ATTR_SPARSE = 0x02           # the batch has an offset_deltas column
ATTR_TRANSACTIONAL = 0x04    # written inside a transaction (see _control.py)
ATTR_CONTROL = 0x08          # a commit or abort marker (always also TRANSACTIONAL)
ATTR_COMMIT = 0x10           # a control batch that commits (without it: aborts)
ATTR_TXN_BITS = ATTR_TRANSACTIONAL | ATTR_CONTROL
KNOWN_ATTRS = ATTR_LOG_APPEND_TIME | ATTR_SPARSE | ATTR_TXN_BITS | ATTR_COMMIT

NO_PRODUCER_ID = -1
NO_SEQUENCE = -1

_packb = msgpack.Packer(use_bin_type=True, autoreset=True).pack
_unpackb = msgpack.unpackb
_xxh3 = xxhash.xxh3_64_intdigest
_NONE_TYPE = type(None)
_VALUE_TYPES = frozenset((bytes, _NONE_TYPE))

assert HEADER_BYTES == 64


class BatchHeader(NamedTuple):
    magic: bytes
    length: int
    checksum: int
    version: int
    attributes: int
    producer_epoch: int
    record_count: int
    base_offset: int
    last_offset_delta: int
    base_sequence: int
    first_timestamp_ms: int
    max_timestamp_ms: int
    producer_id: int

    @property
    def next_offset(self) -> int:
        """The offset after the last offset this batch covers."""
        return self.base_offset + self.last_offset_delta + 1


# tuple.__new__ bound to BatchHeader builds a header without a Python-level frame
# (``BatchHeader._make`` is one): every batch a consumer reads has its header read.
_make_header: Callable[[Iterable[Any]], BatchHeader] = partial(tuple.__new__, BatchHeader)


class EncodedBatch:
    """A batch whose payload is packed but whose offsets are not yet assigned.

    Built outside the partition lock; ``write_batch`` places it under the lock.
    """

    __slots__ = ("attributes", "base_sequence", "columns", "first_timestamp_ms",
                 "last_offset_delta", "max_timestamp_ms", "payload", "producer_epoch",
                 "producer_id", "record_count")

    def __init__(self, payload: bytes, record_count: int, last_offset_delta: int,
                 first_timestamp_ms: int, max_timestamp_ms: int, attributes: int = 0,
                 producer_id: int = NO_PRODUCER_ID, producer_epoch: int = 0,
                 base_sequence: int = NO_SEQUENCE) -> None:
        self.payload = payload
        self.record_count = record_count
        self.last_offset_delta = last_offset_delta
        self.first_timestamp_ms = first_timestamp_ms
        self.max_timestamp_ms = max_timestamp_ms
        self.attributes = attributes
        self.producer_id = producer_id
        self.producer_epoch = producer_epoch
        self.base_sequence = base_sequence
        # The records as given to encode_batch, kept so that an idempotent batch whose
        # first records are stored already can be re-encoded without them.
        self.columns: tuple[Any, ...] | None = None

    @property
    def size(self) -> int:
        """Bytes the batch takes in a segment."""
        return HEADER_BYTES + len(self.payload)

    def without_first(self, skip: int, sequence_modulus: int) -> EncodedBatch:
        """This batch minus its first ``skip`` records (which are stored already)."""
        if self.columns is None or not 0 < skip < self.record_count:
            raise ValueError("this batch cannot be trimmed")
        values, keys, timestamps, headers = self.columns
        if not isinstance(timestamps, int):
            timestamps = timestamps[skip:]
        return encode_batch(values[skip:], keys[skip:] if keys is not None else None,
                            timestamps, headers[skip:] if headers is not None else None,
                            attributes=self.attributes & ~ATTR_SPARSE,
                            producer_id=self.producer_id, producer_epoch=self.producer_epoch,
                            base_sequence=(self.base_sequence + skip) % sequence_modulus)


def encode_batch(values: Sequence[bytes | None], keys: Sequence[bytes | None] | None = None,
                 timestamps_ms: Sequence[int] | int = 0,
                 headers: Sequence[Sequence[tuple[str, bytes]] | None] | None = None,
                 offset_deltas: Sequence[int] | None = None, attributes: int = 0,
                 producer_id: int = NO_PRODUCER_ID, producer_epoch: int = 0,
                 base_sequence: int = NO_SEQUENCE, span: int | None = None) -> EncodedBatch:
    """Pack records (already serialized to bytes) into an ``EncodedBatch``.

    ``timestamps_ms`` is one int for all records or one per record. Cost: one msgpack
    call for the columns, plus a pass over per-record timestamps when they differ.
    The caller validates element types; this only shapes the columns.

    ``span`` (sparse batches only) makes the batch cover offsets up to
    ``base + span`` even past its last record; with ``values == []`` it gives an empty
    batch that only covers a span (see the module docstring).
    """
    count = len(values)
    if count == 0:
        if span is None or offset_deltas is None or len(offset_deltas) != 0:
            raise ValueError("a batch holds at least one record (or is an empty span)")
        first = timestamps_ms if isinstance(timestamps_ms, int) else -1
        payload = _packb([[], None, None, None, []])
        return EncodedBatch(payload, 0, span, first, first, attributes | ATTR_SPARSE)
    if isinstance(timestamps_ms, int):
        first_ts = max_ts = timestamps_ms
        deltas: list[int] | None = None
    else:
        first_ts = timestamps_ms[0]
        max_ts = max(timestamps_ms)
        if timestamps_ms.count(first_ts) == count:
            deltas = None
        else:
            deltas = list(map(operator.sub, timestamps_ms, repeat(first_ts, count)))
    if keys is not None and keys.count(None) == count:
        keys = None
    packed_headers: list[list[list[Any]] | None] | None = None
    if headers is not None and any(headers):
        packed_headers = [[list(pair) for pair in h] if h else None for h in headers]
    if offset_deltas is None:
        last_delta = count - 1
        odeltas: Sequence[int] | None = None
    else:
        attributes |= ATTR_SPARSE
        last_delta = offset_deltas[-1] if span is None else max(span, offset_deltas[-1])
        odeltas = offset_deltas
    payload = _packb([values, keys, deltas, packed_headers, odeltas])
    batch = EncodedBatch(payload, count, last_delta, first_ts, max_ts, attributes,
                         producer_id, producer_epoch, base_sequence)
    if offset_deltas is None:
        batch.columns = (values, keys, timestamps_ms, headers)
    return batch


def write_batch(buf: Any, pos: int, batch: EncodedBatch, base_offset: int,
                first_timestamp_ms: int | None = None,
                max_timestamp_ms: int | None = None) -> int:
    """Write ``batch`` into the writable buffer ``buf`` at ``pos``; return its length.

    Passing ``first_timestamp_ms`` stamps the batch with log-append time: every
    record then has that timestamp. Cost: one memcpy of the
    payload and one xxh3 pass over the written bytes.
    """
    length = HEADER_BYTES + len(batch.payload)
    attributes = batch.attributes
    if first_timestamp_ms is not None:
        attributes |= ATTR_LOG_APPEND_TIME  # readers then ignore per-record deltas
    HEADER.pack_into(
        buf, pos, MAGIC, length, 0, VERSION, attributes, batch.producer_epoch,
        batch.record_count, base_offset, batch.last_offset_delta, batch.base_sequence,
        batch.first_timestamp_ms if first_timestamp_ms is None else first_timestamp_ms,
        batch.max_timestamp_ms if max_timestamp_ms is None else max_timestamp_ms,
        batch.producer_id)
    buf[pos + HEADER_BYTES:pos + length] = batch.payload
    if length <= _COPY_TO_HASH_BYTES:  # a copy costs less than a memoryview, up to here
        checksum = _xxh3(buf[pos + CHECKSUM_START:pos + length])
    else:
        with memoryview(buf) as view:
            checksum = _xxh3(view[pos + CHECKSUM_START:pos + length])
    _CHECKSUM.pack_into(buf, pos + 8, checksum)
    return length


def is_unwritten(buf: Any, pos: int, limit: int) -> bool:
    """True when the next header slot at ``pos`` is all zero bytes (preallocated space)."""
    end = min(pos + HEADER_BYTES, limit)
    return bool(buf[pos:end].count(0) == end - pos)


def read_header(buf: Any, pos: int, limit: int) -> BatchHeader:
    """Unpack and sanity-check the header at ``pos``; the batch must end by ``limit``.

    Raises ``CorruptRecordError`` for a bad magic, version, length or count. Does not
    verify the checksum (``verify_checksum`` does). Cost: O(1).
    """
    if pos + HEADER_BYTES > limit:
        raise CorruptRecordError(f"truncated batch header at position {pos}")
    header = _make_header(HEADER.unpack_from(buf, pos))
    if header.magic != MAGIC:
        raise CorruptRecordError(f"bad batch magic {header.magic!r} at position {pos}")
    if header.version != VERSION:
        raise CorruptRecordError(f"unknown batch version {header.version} at position {pos}")
    if header.length < HEADER_BYTES or pos + header.length > limit:
        raise CorruptRecordError(f"batch at position {pos} has impossible length "
                                 f"{header.length} (limit {limit - pos})")
    if header.attributes & ~KNOWN_ATTRS:
        raise CorruptRecordError(f"unknown batch attributes {header.attributes:#x} at "
                                 f"position {pos}")
    count = header.record_count
    if (count == 0 and not header.attributes & ATTR_SPARSE) or count > header.length \
            or header.last_offset_delta < count - 1:
        raise CorruptRecordError(f"batch at position {pos} has inconsistent record count "
                                 f"{count} (last offset delta {header.last_offset_delta})")
    if not header.attributes & ATTR_SPARSE and header.last_offset_delta != count - 1:
        raise CorruptRecordError(f"dense batch at position {pos} has last offset delta "
                                 f"{header.last_offset_delta} for {count} records")
    return header


def verify_checksum(buf: Any, pos: int, header: BatchHeader) -> None:
    """Raise ``CorruptRecordError`` unless the batch's checksum matches. Cost: O(length)."""
    with memoryview(buf) as view:
        actual = _xxh3(view[pos + CHECKSUM_START:pos + header.length])
    if actual != header.checksum:
        raise _mismatch(header, pos, actual)


def _mismatch(header: BatchHeader, pos: int, actual: int) -> CorruptRecordError:
    return CorruptRecordError(f"checksum mismatch in batch at position {pos} "
                              f"(offset {header.base_offset}): stored "
                              f"{header.checksum:#018x}, computed {actual:#018x}")


def read_batch_header(buf: Any, pos: int, limit: int) -> BatchHeader:
    """``read_header`` followed by ``verify_checksum``."""
    header = read_header(buf, pos, limit)
    verify_checksum(buf, pos, header)
    return header


class DecodedBatch(NamedTuple):
    """A verified batch with its columns unpacked (never changed once built).

    Offsets and timestamps are materialized lazily: most readers need only values.
    A named tuple, built by ``tuple.__new__`` without a Python-level ``__init__``: one
    is built for every batch a consumer reads.
    """

    header: BatchHeader
    position: int
    values: list[bytes | None]
    keys: list[bytes | None] | None
    timestamp_deltas: list[int] | None
    headers: list[list[list[Any]] | None] | None
    offset_deltas: list[int] | None

    def offsets(self) -> Sequence[int]:
        base = self.header.base_offset
        if self.offset_deltas is None:
            return range(base, base + self.header.record_count)
        return [base + d for d in self.offset_deltas]

    def timestamps(self) -> Sequence[int]:
        first = self.header.first_timestamp_ms
        if self.timestamp_deltas is None:
            return [first] * self.header.record_count
        return [first + d for d in self.timestamp_deltas]

    def key_column(self) -> Sequence[bytes | None]:
        if self.keys is None:
            return [None] * self.header.record_count
        return self.keys

    def header_column(self) -> list[list[tuple[str, bytes]]]:
        if self.headers is None:
            return [[] for _ in repeat(None, self.header.record_count)]
        return [[(k, v) for k, v in h] if h else [] for h in self.headers]

    def fields(self, i: int) -> tuple[int, int, bytes | None, bytes | None,
                                      list[tuple[str, bytes]]]:
        """The offset, timestamp, key, value and headers of record ``i``: what
        ``offsets()``, ``timestamps()``, ``key_column()``, ``values`` and
        ``header_column()`` hold at ``i``, without building those columns. O(1)."""
        header = self.header
        offset = header.base_offset + (i if self.offset_deltas is None
                                       else self.offset_deltas[i])
        timestamp = header.first_timestamp_ms
        if self.timestamp_deltas is not None:
            timestamp += self.timestamp_deltas[i]
        h = None if self.headers is None else self.headers[i]
        return (offset, timestamp, None if self.keys is None else self.keys[i],
                self.values[i], [(k, v) for k, v in h] if h else [])

    def index_of(self, offset: int) -> int:
        """Position within the batch of the first record with offset >= ``offset``."""
        base = self.header.base_offset
        if offset <= base:
            return 0
        if self.offset_deltas is None:
            return min(offset - base, self.header.record_count)
        return bisect.bisect_left(self.offset_deltas, offset - base)


_make_batch: Callable[[Iterable[Any]], DecodedBatch] = partial(tuple.__new__, DecodedBatch)


def _fail(header: BatchHeader, pos: int, what: str) -> CorruptRecordError:
    return CorruptRecordError(f"batch at position {pos} (offset {header.base_offset}) "
                              f"is malformed: {what}")


def decode_batch(buf: Any, pos: int, limit: int, *, verify: bool = True) -> DecodedBatch:
    """Read, verify and unpack the batch at ``pos``.

    Only ``CorruptRecordError`` escapes, whatever the bytes. Memory is bounded by the
    batch length (msgpack limits every container to the input size).
    Cost: O(batch length).
    """
    header = read_header(buf, pos, limit)
    with memoryview(buf) as view:
        # (verify_checksum inline: decoding is every consumer's hot path)
        if verify and (actual := _xxh3(view[pos + CHECKSUM_START:pos + header.length])
                       ) != header.checksum:
            raise _mismatch(header, pos, actual)
        try:
            columns = _unpackb(view[pos + HEADER_BYTES:pos + header.length],
                               raw=False, use_list=True, strict_map_key=True)
        except Exception as exc:  # msgpack raises many types on malformed input
            raise _fail(header, pos, f"payload does not unpack "
                        f"({type(exc).__name__})") from exc
    # The columns' shapes, checked here rather than in a function of their own: a call
    # less for every batch read.
    count = header.record_count
    if type(columns) is not list or len(columns) != 5:
        raise _fail(header, pos, "payload is not a 5-column array")
    values, keys, deltas, headers, odeltas = columns
    if type(values) is not list or len(values) != count:
        raise _fail(header, pos, "values column has the wrong shape")
    if not set(map(type, values)) <= _VALUE_TYPES:
        raise _fail(header, pos, "values column holds something other than bytes")
    if keys is not None:
        if type(keys) is not list or len(keys) != count:
            raise _fail(header, pos, "keys column has the wrong shape")
        if not set(map(type, keys)) <= _VALUE_TYPES:
            raise _fail(header, pos, "keys column holds something other than bytes")
    if deltas is not None and (type(deltas) is not list or len(deltas) != count
                               or not set(map(type, deltas)) <= {int}):
        raise _fail(header, pos, "timestamp column has the wrong shape")
    if headers is not None:
        if type(headers) is not list or len(headers) != count:
            raise _fail(header, pos, "headers column has the wrong shape")
        for h in headers:
            if h is None:
                continue
            if type(h) is not list:
                raise _fail(header, pos, "a record's headers are not a list")
            for pair in h:
                if (type(pair) is not list or len(pair) != 2 or type(pair[0]) is not str
                        or type(pair[1]) is not bytes):
                    raise _fail(header, pos, "a header is not a (str, bytes) pair")
    if header.attributes & ATTR_SPARSE:
        if type(odeltas) is not list or len(odeltas) != count or \
                not set(map(type, odeltas)) <= {int}:
            raise _fail(header, pos, "offset column has the wrong shape")
        prev = -1
        for d in odeltas:
            if d <= prev:
                raise _fail(header, pos, "offsets do not increase")
            prev = d
        if odeltas and odeltas[-1] > header.last_offset_delta:
            raise _fail(header, pos, "offset column goes past the header's span")
    elif odeltas is not None:
        raise _fail(header, pos, "dense batch has an offset column")
    if header.attributes & ATTR_LOG_APPEND_TIME:
        deltas = None
    return _make_batch((header, pos, values, keys, deltas, headers, odeltas))
