"""The schema engine: Kafka message structures as data, read and written by version.

A message is a ``Struct`` of ``Field``s, each present from version ``since`` (up to
``until``, inclusive, when it was removed), the way Kafka's own JSON message
definitions describe them. The same schema reads a request and writes a response for
every version; in flexible versions strings, bytes and arrays are compact and every
structure ends with tagged fields (read and skipped; none are written). Decoded
messages are plain dicts; a field absent in a version reads as its default, and a
missing key is written as the default.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from ._codec import Reader, Writer

__all__ = ["ARRAY", "BOOL", "BYTES", "FLOAT64", "INT8", "INT16", "INT32", "INT64",
           "NBYTES", "NSTRING", "STRING", "UUID", "Array", "Field", "Struct", "Type"]


class Type(ABC):
    """One wire type: ``read(r, flexible)`` and ``write(w, value, flexible)``."""

    default: Any = None

    @abstractmethod
    def read(self, r: Reader, version: int, flexible: bool) -> Any:
        """The value at ``r``'s position, in this request or response ``version``."""

    @abstractmethod
    def write(self, w: Writer, value: Any, version: int, flexible: bool) -> None:
        """Append ``value`` to ``w``, in this ``version``."""


class _Int(Type):
    _NAMES = ("int8", "int16", "int32", "int64")

    def __init__(self, width: int) -> None:
        self.method = self._NAMES[width]
        self.default = 0

    def read(self, r: Reader, version: int, flexible: bool) -> Any:
        return getattr(r, self.method)()

    def write(self, w: Writer, value: Any, version: int, flexible: bool) -> None:
        getattr(w, self.method)(value)


class _Bool(Type):
    default = False

    def read(self, r: Reader, version: int, flexible: bool) -> Any:
        return r.boolean()

    def write(self, w: Writer, value: Any, version: int, flexible: bool) -> None:
        w.boolean(bool(value))


class _Float64(Type):
    default = 0.0

    def read(self, r: Reader, version: int, flexible: bool) -> Any:
        return r.float64()

    def write(self, w: Writer, value: Any, version: int, flexible: bool) -> None:
        w.float64(value)


class _Uuid(Type):
    def read(self, r: Reader, version: int, flexible: bool) -> Any:
        return r.uuid()

    def write(self, w: Writer, value: Any, version: int, flexible: bool) -> None:
        if value is None:
            w.raw(bytes(16))
        else:
            w.uuid(value)


class _String(Type):
    def __init__(self, nullable: bool) -> None:
        self.nullable = nullable
        self.default = None if nullable else ""

    def read(self, r: Reader, version: int, flexible: bool) -> Any:
        return r.string(flexible, self.nullable)

    def write(self, w: Writer, value: Any, version: int, flexible: bool) -> None:
        w.string(value, flexible)


class _Bytes(Type):
    def __init__(self, nullable: bool) -> None:
        self.nullable = nullable
        self.default = None if nullable else b""

    def read(self, r: Reader, version: int, flexible: bool) -> Any:
        return r.bytes_(flexible, self.nullable)

    def write(self, w: Writer, value: Any, version: int, flexible: bool) -> None:
        w.bytes_(value, flexible)


class Field:
    """A named field present in versions ``since..until``."""

    __slots__ = ("default", "name", "since", "type", "until")

    def __init__(self, name: str, type_: Type, since: int = 0, until: int | None = None,
                 default: Any = None) -> None:
        self.name = name
        self.type = type_
        self.since = since
        self.until = until
        self.default = type_.default if default is None else default

    def present(self, version: int) -> bool:
        return self.since <= version and (self.until is None or version <= self.until)


class Struct(Type):
    """A sequence of fields (a message, or the element type of an array)."""

    def __init__(self, *fields: Field) -> None:
        self.fields = fields

    def read(self, r: Reader, version: int, flexible: bool) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in self.fields:
            if f.present(version):
                out[f.name] = f.type.read(r, version, flexible)
            else:
                out[f.name] = f.default() if callable(f.default) else f.default
        if flexible:
            r.skip_tagged_fields()
        return out

    def write(self, w: Writer, value: Any, version: int, flexible: bool) -> None:
        get = value.get
        for f in self.fields:
            if f.present(version):
                v = get(f.name, f.default)
                f.type.write(w, v() if callable(v) else v, version, flexible)
        if flexible:
            w.empty_tagged_fields()


class Array(Type):
    """An array of ``element``; ``nullable`` arrays read ``None`` for length -1."""

    def __init__(self, element: Type, nullable: bool = False) -> None:
        self.element = element
        self.nullable = nullable
        self.default = None if nullable else list

    def read(self, r: Reader, version: int, flexible: bool) -> Any:
        n = r.array_length(flexible, self.nullable)
        if n < 0:
            return None
        read = self.element.read
        return [read(r, version, flexible) for _ in range(n)]

    def write(self, w: Writer, value: Sequence[Any] | None, version: int,
              flexible: bool) -> None:
        if value is None:
            w.length(-1, flexible)
            return
        w.length(len(value), flexible)
        write = self.element.write
        for item in value:
            write(w, item, version, flexible)


def ARRAY(*fields: Field, nullable: bool = False) -> Array:
    """An array of structs with ``fields``."""
    return Array(Struct(*fields), nullable)


INT8 = _Int(0)
INT16 = _Int(1)
INT32 = _Int(2)
INT64 = _Int(3)
BOOL = _Bool()
FLOAT64 = _Float64()
UUID = _Uuid()
STRING = _String(False)
NSTRING = _String(True)
BYTES = _Bytes(False)
NBYTES = _Bytes(True)
