"""Kafka's primitive types: fixed-width integers, varints, strings, bytes, UUIDs.

Everything on Kafka's wire is big-endian. Flexible versions (KIP-482) use "compact"
strings, bytes and arrays, whose length is an unsigned varint holding ``length + 1``
(0 means null), and end each structure with tagged fields. ``Reader`` raises
``ProtocolError`` for every malformed input (truncation, negative or oversized lengths,
over-long varints, invalid UTF-8): no ``struct.error`` or ``IndexError`` escapes.
Lengths are bounded by the bytes that remain, so a hostile length allocates nothing.
"""

from __future__ import annotations

import struct
import uuid

from ..errors import ProtocolError

__all__ = ["Reader", "Writer", "encode_uvarint", "encode_varint", "read_uvarint",
           "read_varint"]

_I8 = struct.Struct(">b")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_U32 = struct.Struct(">I")
_I64 = struct.Struct(">q")
_F64 = struct.Struct(">d")


def read_uvarint(buf: bytes | bytearray | memoryview, pos: int, limit: int
                 ) -> tuple[int, int]:
    """An unsigned varint (at most 10 bytes) at ``pos``: ``(value, next position)``."""
    result = 0
    shift = 0
    while True:
        if pos >= limit:
            raise ProtocolError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ProtocolError("varint longer than 10 bytes")


def read_varint(buf: bytes | bytearray | memoryview, pos: int, limit: int
                ) -> tuple[int, int]:
    """A zigzag-encoded signed varint/varlong: ``(value, next position)``."""
    if pos < limit:  # the one-byte case, by far the most common in records
        b = buf[pos]
        if b < 0x80:
            return (b >> 1) ^ -(b & 1), pos + 1
    n, pos = read_uvarint(buf, pos, limit)
    return (n >> 1) ^ -(n & 1), pos


def encode_uvarint(n: int) -> bytes:
    """``n`` >= 0 as an unsigned varint."""
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def encode_varint(n: int) -> bytes:
    """``n`` as a zigzag signed varlong (64-bit)."""
    return encode_uvarint((n << 1) ^ (n >> 63))


class Reader:
    """A cursor over one request's bytes. Not thread-safe (one per request)."""

    __slots__ = ("buf", "limit", "pos")

    def __init__(self, buf: bytes | bytearray | memoryview, pos: int = 0,
                 limit: int | None = None) -> None:
        self.buf = buf
        self.pos = pos
        self.limit = len(buf) if limit is None else limit

    @property
    def remaining(self) -> int:
        """Bytes not read yet."""
        return self.limit - self.pos

    def _take(self, n: int) -> int:
        pos = self.pos
        if n < 0 or pos + n > self.limit:
            raise ProtocolError(f"truncated: {n} bytes needed at position {pos}, "
                                f"{self.limit - pos} left")
        self.pos = pos + n
        return pos

    def int8(self) -> int:
        return int(_I8.unpack_from(self.buf, self._take(1))[0])

    def int16(self) -> int:
        return int(_I16.unpack_from(self.buf, self._take(2))[0])

    def int32(self) -> int:
        return int(_I32.unpack_from(self.buf, self._take(4))[0])

    def uint32(self) -> int:
        return int(_U32.unpack_from(self.buf, self._take(4))[0])

    def int64(self) -> int:
        return int(_I64.unpack_from(self.buf, self._take(8))[0])

    def float64(self) -> float:
        return float(_F64.unpack_from(self.buf, self._take(8))[0])

    def boolean(self) -> bool:
        return self.int8() != 0

    def uvarint(self) -> int:
        value, self.pos = read_uvarint(self.buf, self.pos, self.limit)
        return value

    def varint(self) -> int:
        value, self.pos = read_varint(self.buf, self.pos, self.limit)
        return value

    def uuid(self) -> uuid.UUID:
        pos = self._take(16)
        return uuid.UUID(bytes=bytes(self.buf[pos:pos + 16]))

    def raw(self, n: int) -> bytes:
        pos = self._take(n)
        return bytes(self.buf[pos:pos + n])

    def length(self, compact: bool) -> int:
        """A string/bytes/array length; -1 for null."""
        if compact:
            return self.uvarint() - 1
        return self.int32()

    def string(self, compact: bool, nullable: bool) -> str | None:
        n = self.uvarint() - 1 if compact else self.int16()
        if n < 0:
            if n == -1 and nullable:
                return None
            raise ProtocolError("null or negative length for a non-nullable string")
        pos = self._take(n)
        try:
            return str(self.buf[pos:pos + n], "utf-8") if isinstance(self.buf, bytes) \
                else bytes(self.buf[pos:pos + n]).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError("a string is not valid UTF-8") from exc

    def bytes_(self, compact: bool, nullable: bool) -> bytes | None:
        n = self.length(compact)
        if n < 0:
            if n == -1 and nullable:
                return None
            raise ProtocolError("null or negative length for non-nullable bytes")
        return self.raw(n)

    def array_length(self, compact: bool, nullable: bool) -> int:
        n = self.length(compact)
        if n < -1 or (n == -1 and not nullable):
            raise ProtocolError(f"invalid array length {n}")
        # every element takes at least one byte: a hostile count allocates nothing
        if n > self.remaining:
            raise ProtocolError(f"array of {n} elements in {self.remaining} bytes")
        return n

    def skip_tagged_fields(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()  # the tag
            self._take(self.uvarint())


class Writer:
    """Builds a response as a list of chunks joined once. Not thread-safe."""

    __slots__ = ("chunks",)

    def __init__(self) -> None:
        self.chunks: list[bytes | memoryview] = []

    def getvalue(self) -> bytes:
        return b"".join(self.chunks)

    def int8(self, v: int) -> None:
        self.chunks.append(_I8.pack(v))

    def int16(self, v: int) -> None:
        self.chunks.append(_I16.pack(v))

    def int32(self, v: int) -> None:
        self.chunks.append(_I32.pack(v))

    def uint32(self, v: int) -> None:
        self.chunks.append(_U32.pack(v))

    def int64(self, v: int) -> None:
        self.chunks.append(_I64.pack(v))

    def float64(self, v: float) -> None:
        self.chunks.append(_F64.pack(v))

    def boolean(self, v: bool) -> None:
        self.chunks.append(b"\x01" if v else b"\x00")

    def uvarint(self, v: int) -> None:
        self.chunks.append(encode_uvarint(v))

    def uuid(self, v: uuid.UUID) -> None:
        self.chunks.append(v.bytes)

    def raw(self, data: bytes | memoryview) -> None:
        self.chunks.append(data)

    def length(self, n: int, compact: bool) -> None:
        if compact:
            self.uvarint(n + 1)
        else:
            self.int32(n)

    def string(self, v: str | None, compact: bool) -> None:
        if v is None:
            if compact:
                self.uvarint(0)
            else:
                self.int16(-1)
            return
        data = v.encode("utf-8")
        if compact:
            self.uvarint(len(data) + 1)
        else:
            self.int16(len(data))
        self.chunks.append(data)

    def bytes_(self, v: bytes | memoryview | None, compact: bool) -> None:
        if v is None:
            self.length(-1, compact)
            return
        self.length(len(v), compact)
        self.chunks.append(v)

    def empty_tagged_fields(self) -> None:
        self.chunks.append(b"\x00")
