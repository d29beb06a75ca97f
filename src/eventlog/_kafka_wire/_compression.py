"""The codecs of Kafka record batches: gzip, snappy, lz4 and zstd, decompressed bounded.

Attribute bits 0-2 of a batch name its codec (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
Snappy comes in two framings: raw blocks (librdkafka) and the xerial framing of the
Java and kafka-python clients (``"\\x82SNAPPY\\x00"``, two version ints, then
length-prefixed raw blocks). LZ4 is the LZ4 frame format. The codecs come from
``cramjam`` (one wheel for snappy, lz4 and zstd); gzip uses ``zlib``, which can stop
at a size limit. Every decompression is bounded by ``limit`` bytes: a batch that
inflates past it is refused (``CompressionError``), so a small hostile batch cannot
claim a large amount of memory for long.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

from ..errors import ProtocolError

__all__ = ["CODECS", "CompressionError", "compress", "decompress", "require_codecs"]

CODECS = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}
_XERIAL_MAGIC = b"\x82SNAPPY\x00"
_I32 = struct.Struct(">i")
_EXTRA = "eventlog[serve]"


class CompressionError(ProtocolError):
    """A compressed batch does not decompress (or inflates past the limit)."""


def _cramjam() -> Any:
    try:
        import cramjam  # noqa: PLC0415 (an optional dependency, loaded when used)
    except ImportError as exc:
        raise ImportError(f"snappy, lz4 and zstd batches need the cramjam package: "
                          f"pip install '{_EXTRA}'") from exc
    return cramjam


def require_codecs() -> None:
    """Raise ``ImportError`` naming the extra unless the codec libraries are installed."""
    _cramjam()


def _gunzip(data: bytes, limit: int) -> bytes:
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = d.decompress(data, limit + 1)
    if len(out) > limit or d.unconsumed_tail:
        raise CompressionError(f"gzip batch inflates past {limit} bytes")
    return out


def _snappy_raw(data: bytes | memoryview, limit: int) -> bytes:
    cj = _cramjam()
    # The preamble is the uncompressed length as a varint: check it before inflating.
    n = shift = 0
    for i in range(min(len(data), 5)):
        b = data[i]
        n |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            break
    if n > limit:
        raise CompressionError(f"snappy block inflates past {limit} bytes")
    return bytes(cj.snappy.decompress_raw(bytes(data)))


def _snappy(data: bytes, limit: int) -> bytes:
    if not data.startswith(_XERIAL_MAGIC):
        return _snappy_raw(data, limit)
    pos = 16
    parts: list[bytes] = []
    total = 0
    while pos < len(data):
        if pos + 4 > len(data):
            raise CompressionError("truncated xerial snappy block")
        (size,) = _I32.unpack_from(data, pos)
        pos += 4
        if size < 0 or pos + size > len(data):
            raise CompressionError("xerial snappy block overruns the batch")
        block = _snappy_raw(memoryview(data)[pos:pos + size], limit - total)
        total += len(block)
        parts.append(block)
        pos += size
    return b"".join(parts)


def _lz4(data: bytes, limit: int) -> bytes:
    out = bytes(_cramjam().lz4.decompress(data))
    if len(out) > limit:
        raise CompressionError(f"lz4 batch inflates past {limit} bytes")
    return out


def _zstd(data: bytes, limit: int) -> bytes:
    out = bytes(_cramjam().zstd.decompress(data))
    if len(out) > limit:
        raise CompressionError(f"zstd batch inflates past {limit} bytes")
    return out


_DECOMPRESS = {1: _gunzip, 2: _snappy, 3: _lz4, 4: _zstd}


def decompress(codec: int, data: bytes, limit: int) -> bytes:
    """The records section of a batch compressed with ``codec``, at most ``limit`` bytes.

    Raises ``CompressionError`` for an unknown codec or bytes that do not decompress.
    Cost: O(output); the output is bounded by ``limit`` (lz4 and zstd check it after
    inflating, their frames being bounded by the request size).
    """
    fn = _DECOMPRESS.get(codec)
    if fn is None:
        raise CompressionError(f"unknown compression codec {codec}")
    try:
        return fn(data, limit)
    except (CompressionError, ImportError):
        raise
    except Exception as exc:  # the codec libraries raise their own error types
        raise CompressionError(f"{CODECS[codec]} batch does not decompress: {exc}") from exc


def compress(codec: int, data: bytes) -> bytes:
    """``data`` compressed with ``codec`` as Kafka clients expect it (raw snappy, lz4
    frames); used by tests and benchmarks to build batches."""
    if codec == 0:
        return data
    if codec == 1:
        c = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        return c.compress(data) + c.flush()
    cj = _cramjam()
    if codec == 2:
        return bytes(cj.snappy.compress_raw(data))
    if codec == 3:
        return bytes(cj.lz4.compress(data))
    if codec == 4:
        return bytes(cj.zstd.compress(data))
    raise CompressionError(f"unknown compression codec {codec}")
