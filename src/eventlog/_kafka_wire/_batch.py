"""Kafka's RecordBatch v2 (magic 2): decoding what clients produce, encoding what they fetch.

The layout (big-endian), as in Kafka's ``DefaultRecordBatch``::

    base_offset i64 | batch_length i32 | partition_leader_epoch i32 | magic i8 (= 2)
    crc u32 (CRC-32C of everything after it) | attributes i16 | last_offset_delta i32
    base_timestamp i64 | max_timestamp i64 | producer_id i64 | producer_epoch i16
    base_sequence i32 | record_count i32 | records (compressed as a whole, per attributes)

    record: length varint | attributes i8 | timestamp_delta varlong | offset_delta varint
            key (varint length, -1 = null) | value (same) | header count varint
            headers: key (varint length, UTF-8) | value (varint length, -1 = null)

Attributes: bits 0-2 the codec, bit 3 the timestamp type (1 = log-append time), bit 4
transactional, bit 5 control. A produced batch becomes one eventlog batch
(``_format.encode_batch``) with the same keys, values, headers, timestamps, producer id,
epoch and base sequence; a fetched eventlog batch becomes one uncompressed Kafka batch
with the same base offset and offset span (compacted gaps included). Header values are
bytes in eventlog: a null header value is stored as ``b""``.

Errors: ``BatchError`` carries the Kafka error code to answer with (``CORRUPT_MESSAGE``
for a bad CRC or structure, ``INVALID_RECORD`` for records Kafka refuses,
``UNSUPPORTED_FOR_MESSAGE_FORMAT`` for old magic bytes or control batches).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import NamedTuple

from .._format import ATTR_LOG_APPEND_TIME, DecodedBatch
from ..errors import ProtocolError
from . import _errors
from ._codec import encode_varint, read_varint
from ._compression import CompressionError, decompress

__all__ = ["BatchError", "ProducedBatch", "decode_produced", "encode_fetched",
           "encode_records"]

_HEAD = struct.Struct(">qiibIhiqqqhii")  # base_offset .. record_count: 61 bytes
HEAD_BYTES = _HEAD.size
_CRC_START = 21                          # the CRC covers attributes .. the end
_LENGTH_END = 12                         # base_offset + batch_length
_CRC = struct.Struct(">I")

ATTR_CODEC = 0x07
ATTR_TIMESTAMP_TYPE = 0x08
ATTR_TRANSACTIONAL = 0x10
ATTR_CONTROL = 0x20

_crc32c: list[Callable[[bytes | memoryview], int]] = []  # loaded at first use


def crc32c(data: bytes | memoryview) -> int:
    """CRC-32C (Castagnoli) of ``data``; needs the ``crc32c`` package (loaded at the
    first call: importing it costs more than the rest of eventlog's start-up)."""
    if not _crc32c:
        try:
            from crc32c import crc32c as fn  # noqa: PLC0415
        except ImportError as exc:
            raise ImportError("eventlog serve needs the crc32c package: pip install "
                              "'eventlog[serve]'") from exc
        _crc32c.append(fn)
    return int(_crc32c[0](data))


class BatchError(ProtocolError):
    """A produced batch Kafka would refuse, with the error code to answer."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class ProducedBatch(NamedTuple):
    """One batch from a Produce request, its records decoded."""

    codec: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    base_timestamp: int
    max_timestamp: int
    values: list[bytes | None]
    keys: list[bytes | None]
    timestamps: list[int]
    headers: list[list[tuple[str, bytes]] | None]


def _corrupt(message: str) -> BatchError:
    return BatchError(_errors.CORRUPT_MESSAGE, message)


def decode_produced(data: bytes, max_bytes: int) -> list[ProducedBatch]:
    """Every batch in a Produce request's ``records`` field.

    ``max_bytes`` bounds what a compressed batch may inflate to. Raises ``BatchError``.
    Cost: O(records); the CRC is checked before anything is decompressed.
    """
    out: list[ProducedBatch] = []
    pos = 0
    end = len(data)
    view = memoryview(data)
    while pos < end:
        if end - pos < HEAD_BYTES:
            raise _corrupt("truncated record batch header")
        (base_offset, length, _epoch, magic, crc, attributes, last_delta, base_ts,
         max_ts, producer_id, producer_epoch, base_sequence, count) = _HEAD.unpack_from(data, pos)
        if magic != 2:
            raise BatchError(_errors.UNSUPPORTED_FOR_MESSAGE_FORMAT,
                             f"message format v{magic} is not supported (only v2)")
        batch_end = pos + _LENGTH_END + length
        if length < HEAD_BYTES - _LENGTH_END or batch_end > end:
            raise _corrupt(f"record batch length {length} overruns the request")
        if crc32c(view[pos + _CRC_START:batch_end]) != crc:
            raise _corrupt("record batch CRC mismatch")
        if attributes & (ATTR_TRANSACTIONAL | ATTR_CONTROL):
            raise BatchError(_errors.UNSUPPORTED_FOR_MESSAGE_FORMAT,
                             "transactional and control batches are not supported")
        if count <= 0 or last_delta != count - 1:
            raise BatchError(_errors.INVALID_RECORD,
                             f"batch of {count} records with last offset delta {last_delta}")
        codec = attributes & ATTR_CODEC
        body: bytes | memoryview = view[pos + HEAD_BYTES:batch_end]
        if codec:
            try:
                body = decompress(codec, bytes(body), max_bytes)
            except CompressionError as exc:
                raise _corrupt(str(exc)) from exc
        out.append(_records(codec, producer_id, producer_epoch, base_sequence, base_ts,
                            max_ts, count, body))
        pos = batch_end
        del base_offset
    return out


def _records(codec: int, producer_id: int, producer_epoch: int, base_sequence: int,
             base_ts: int, max_ts: int, count: int, data: bytes | memoryview
             ) -> ProducedBatch:
    # The hot loop of Produce: the varints of a record are nearly always one or two
    # bytes, so those cases are decoded inline (read_varint takes the rest); a read past
    # the end raises IndexError, turned into CORRUPT_MESSAGE below.
    body = bytes(data)
    values: list[bytes | None] = []
    keys: list[bytes | None] = []
    timestamps: list[int] = []
    headers: list[list[tuple[str, bytes]] | None] = []
    pos = 0
    limit = len(body)
    if count > limit:  # each record takes at least 7 bytes: a hostile count stops here
        raise _corrupt(f"{count} records cannot fit in {limit} bytes")
    rv = read_varint
    try:
        for i in range(count):
            b = body[pos]
            if b < 0x80:
                length = (b >> 1) ^ -(b & 1)
                pos += 1
            elif body[pos + 1] < 0x80:
                b = (b & 0x7F) | (body[pos + 1] << 7)
                length = (b >> 1) ^ -(b & 1)
                pos += 2
            else:
                length, pos = rv(body, pos, limit)
            rec_end = pos + length
            if length < 6 or rec_end > limit:
                raise _corrupt("record length overruns the batch")
            pos += 1  # record attributes: unused in v2
            b = body[pos]
            if b < 0x80:
                ts_delta = (b >> 1) ^ -(b & 1)
                pos += 1
            elif body[pos + 1] < 0x80:
                b = (b & 0x7F) | (body[pos + 1] << 7)
                ts_delta = (b >> 1) ^ -(b & 1)
                pos += 2
            else:
                ts_delta, pos = rv(body, pos, rec_end)
            b = body[pos]
            if b < 0x80:
                offset_delta = (b >> 1) ^ -(b & 1)
                pos += 1
            elif body[pos + 1] < 0x80:
                b = (b & 0x7F) | (body[pos + 1] << 7)
                offset_delta = (b >> 1) ^ -(b & 1)
                pos += 2
            else:
                offset_delta, pos = rv(body, pos, rec_end)
            if offset_delta != i:
                raise BatchError(_errors.INVALID_RECORD,
                                 "record offsets within a batch must be consecutive")
            b = body[pos]
            if b < 0x80:
                n = (b >> 1) ^ -(b & 1)
                pos += 1
            elif body[pos + 1] < 0x80:
                b = (b & 0x7F) | (body[pos + 1] << 7)
                n = (b >> 1) ^ -(b & 1)
                pos += 2
            else:
                n, pos = rv(body, pos, rec_end)
            if n < 0:
                key = None
            else:
                if n > rec_end - pos:
                    raise _corrupt("record key overruns the record")
                key = body[pos:pos + n]
                pos += n
            b = body[pos]
            if b < 0x80:
                n = (b >> 1) ^ -(b & 1)
                pos += 1
            elif body[pos + 1] < 0x80:
                b = (b & 0x7F) | (body[pos + 1] << 7)
                n = (b >> 1) ^ -(b & 1)
                pos += 2
            else:
                n, pos = rv(body, pos, rec_end)
            if n < 0:
                value = None
            else:
                if n > rec_end - pos:
                    raise _corrupt("record value overruns the record")
                value = body[pos:pos + n]
                pos += n
            b = body[pos]
            if b == 0:
                pos += 1
                hs = None
            else:
                hs, pos = _headers(body, pos, rec_end)
            if pos != rec_end:
                raise _corrupt("record length does not match its fields")
            values.append(value)
            keys.append(key)
            timestamps.append(base_ts + ts_delta)
            headers.append(hs)
    except IndexError as exc:
        raise _corrupt("a record overruns the batch") from exc
    except UnicodeDecodeError as exc:
        raise BatchError(_errors.INVALID_RECORD, "a header key is not UTF-8") from exc
    except ProtocolError as exc:
        if isinstance(exc, BatchError):
            raise
        raise _corrupt(f"malformed record: {exc}") from exc
    if pos != limit:
        raise _corrupt("bytes left over after the last record")
    return ProducedBatch(codec, producer_id, producer_epoch, base_sequence, base_ts, max_ts,
                         values, keys, timestamps, headers)


def _headers(body: bytes, pos: int, rec_end: int) -> tuple[list[tuple[str, bytes]], int]:
    nh, pos = read_varint(body, pos, rec_end)
    if nh < 0 or nh > rec_end - pos:
        raise _corrupt("impossible header count")
    hs = []
    for _ in range(nh):
        n, pos = read_varint(body, pos, rec_end)
        if n < 0 or n > rec_end - pos:
            raise _corrupt("header key overruns the record")
        hkey = body[pos:pos + n].decode("utf-8")
        pos += n
        n, pos = read_varint(body, pos, rec_end)
        if n > rec_end - pos:
            raise _corrupt("header value overruns the record")
        hval = b"" if n < 0 else body[pos:pos + n]
        pos += max(n, 0)
        hs.append((hkey, hval))
    return hs, pos


# The varints of small non-negative ints, precomputed: lengths and deltas in a fetched
# batch are nearly all below this, and a table lookup beats encoding each one.
_SMALL = 1 << 14
_VARINT = [encode_varint(n) for n in range(_SMALL)]


def _varint(n: int) -> bytes:
    return _VARINT[n] if 0 <= n < _SMALL else encode_varint(n)


def _header_bytes(hs: Sequence[Sequence[object]]) -> bytes:
    parts = [_varint(len(hs))]
    for hk, hv in hs:
        kb = str(hk).encode("utf-8")
        vb = bytes(hv)  # type: ignore[call-overload]
        parts += (_varint(len(kb)), kb, _varint(len(vb)), vb)
    return b"".join(parts)


def encode_records(offset_deltas: Sequence[int], timestamp_deltas: Sequence[int],
                   keys: Sequence[bytes | None], values: Sequence[bytes | None],
                   headers: Sequence[Sequence[Sequence[object]] | None] | None) -> bytes:
    """The records section of a batch (uncompressed). Cost: O(records), one join."""
    parts: list[bytes] = []
    extend = parts.extend
    table = _VARINT
    small = _SMALL
    null = b"\x01"  # varint -1
    for i, value in enumerate(values):
        od = offset_deltas[i]
        td = timestamp_deltas[i]
        odb = table[od] if 0 <= od < small else encode_varint(od)
        tdb = table[td] if 0 <= td < small else encode_varint(td)
        key = keys[i]
        if key is None:
            kl, key = null, b""
        else:
            n = len(key)
            kl = table[n] if n < small else encode_varint(n)
        if value is None:
            vl, value = null, b""
        else:
            n = len(value)
            vl = table[n] if n < small else encode_varint(n)
        hs = headers[i] if headers is not None else None
        hb = _header_bytes(hs) if hs else b"\x00"
        length = 1 + len(tdb) + len(odb) + len(kl) + len(key) + len(vl) + len(value) + len(hb)
        extend((table[length] if length < small else encode_varint(length), b"\x00", tdb,
                odb, kl, key, vl, value, hb))
    return b"".join(parts)


def build_batch(base_offset: int, last_offset_delta: int, base_timestamp: int,
                max_timestamp: int, count: int, records: bytes, *, attributes: int = 0,
                producer_id: int = -1, producer_epoch: int = -1, base_sequence: int = -1
                ) -> bytes:
    """A whole batch around an (already compressed, per ``attributes``) records section."""
    head = bytearray(_HEAD.pack(base_offset, HEAD_BYTES - _LENGTH_END + len(records), 0, 2,
                                0, attributes, last_offset_delta, base_timestamp,
                                max_timestamp, producer_id, producer_epoch, base_sequence,
                                count))
    crc = crc32c(bytes(head[_CRC_START:]) + records)
    _CRC.pack_into(head, 17, crc)
    return bytes(head) + records


def encode_fetched(batch: DecodedBatch) -> bytes:
    """One stored eventlog batch as an uncompressed Kafka batch at the same offsets."""
    h = batch.header
    count = h.record_count
    if batch.offset_deltas is None:
        offset_deltas: Sequence[int] = range(count)
    else:
        offset_deltas = batch.offset_deltas
    ts_deltas: Sequence[int] = batch.timestamp_deltas or [0] * count
    keys = batch.keys if batch.keys is not None else [None] * count
    records = encode_records(offset_deltas, ts_deltas, keys, batch.values, batch.headers)
    attributes = ATTR_TIMESTAMP_TYPE if h.attributes & ATTR_LOG_APPEND_TIME else 0
    epoch = h.producer_epoch if h.producer_id >= 0 else -1
    return build_batch(h.base_offset, h.last_offset_delta, h.first_timestamp_ms,
                       h.max_timestamp_ms, count, records, attributes=attributes,
                       producer_id=h.producer_id, producer_epoch=epoch,
                       base_sequence=h.base_sequence)

