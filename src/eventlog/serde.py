"""Serializers and deserializers for keys and values.

Producers take ``key_serializer=`` / ``value_serializer=`` and consumers the matching
``key_deserializer=`` / ``value_deserializer=``: either the name of a built-in or a
callable.

=========  ===================================  ===========================================
name       serializer                           deserializer
=========  ===================================  ===========================================
msgpack    any msgpack-able value (default)     the value (maps with any key type allowed)
bytes      ``bytes``/``bytearray``/memoryview   ``bytes``
str        ``str`` -> UTF-8                     ``str``
json       JSON-able value -> compact UTF-8     the value
=========  ===================================  ===========================================

``None`` is never passed to a serializer: a ``None`` key or value is stored as "no key"
/ "no value" (a tombstone on compacted topics) and a consumer receives ``None``.
Deserializers receive a bytes-like object.

>>> from eventlog.serde import serializer, deserializer
>>> deserializer("msgpack")(serializer("msgpack")({"id": 1, "tags": ["a"]}))
{'id': 1, 'tags': ['a']}
>>> deserializer("json")(serializer("json")({"id": 1}))
{'id': 1}
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import msgpack

from .errors import InvalidConfigError

__all__ = ["BUILTINS", "column_packer", "column_unpacker", "deserializer", "is_builtin",
           "serializer"]

Serializer = Callable[[Any], bytes]
Deserializer = Callable[[bytes], Any]


def _bytes(value: Any) -> bytes:
    if type(value) is bytes:
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"expected bytes, bytearray or memoryview, not {type(value).__name__}")


def _str(value: Any) -> bytes:
    if not isinstance(value, str):
        raise TypeError(f"expected str, not {type(value).__name__}")
    return value.encode("utf-8")


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def _from_bytes(data: bytes) -> bytes:
    return bytes(data)


def _from_str(data: bytes) -> str:
    return bytes(data).decode("utf-8")


def _from_json(data: bytes) -> Any:
    return json.loads(bytes(data))


class _MsgpackPacker:
    """msgpack serialization through one reused ``Packer`` per thread.

    ``msgpack.packb`` builds a new Packer for every call; reusing one halves the cost of
    packing a small dict (measured: 1714 ns -> 611 ns). A Packer keeps an internal
    buffer, so each thread gets its own. ``use_bin_type`` keeps bytes and str apart.
    """

    __slots__ = ("_local",)

    def __init__(self) -> None:
        self._local = threading.local()

    def packer(self) -> Callable[[Any], bytes]:
        """This thread's bound ``Packer.pack`` (for C-level ``map`` over a column)."""
        try:
            pack: Callable[[Any], bytes] = self._local.pack
        except AttributeError:
            pack = self._local.pack = msgpack.Packer(use_bin_type=True, autoreset=True).pack
        return pack

    def __call__(self, obj: Any) -> bytes:
        try:
            return self._local.pack(obj)  # type: ignore[no-any-return]
        except AttributeError:
            return self.packer()(obj)


# Unpacking with raw=False gives str back, and strict_map_key=False lets maps with int
# keys round-trip.
_msgpack_pack = _MsgpackPacker()
_msgpack_unpack: Deserializer = partial(msgpack.unpackb, raw=False, strict_map_key=False)


def column_unpacker(fn: Deserializer) -> Callable[[Sequence[Any]], list[Any] | None] | None:
    """For the built-in msgpack deserializer, a function that decodes a whole column
    of values (none of them None) in one C-level ``map``, or returns None when it
    cannot (the caller then decodes value by value, which names a bad one). None for
    every other deserializer.

    Why: the built-in deserializer is ``unpackb`` with two keyword arguments, and
    ``unpackb`` parses its keywords at every call, which costs a fifth of decoding a
    small record. The column is first mapped through plain ``unpackb``, whose only
    default that differs is ``strict_map_key`` (map keys str or bytes only): what it
    decodes, it decodes alike. A column with other map keys (ints, say) fails that
    pass and is decoded with the keywords. Per ~90-byte dict, 500 in a column: 745 ns
    against 925 with the keywords (and 846 for the ``Unpacker`` pass this replaced)."""
    return _unpack_column if fn is _msgpack_unpack else None


def _unpack_column(column: Sequence[Any]) -> list[Any] | None:
    try:
        # (each value must be exactly one object: unpackb raises ExtraData otherwise)
        return list(map(msgpack.unpackb, column))
    except Exception:
        return None


def column_packer(fn: Serializer) -> Serializer:
    """A serializer equivalent to ``fn`` that is cheapest to ``map`` over a column in
    the current thread (the built-in msgpack serializer's bound ``Packer.pack``)."""
    if fn is _msgpack_pack:
        return _msgpack_pack.packer()
    return fn

_SERIALIZERS: dict[str, Serializer] = {
    "msgpack": _msgpack_pack, "bytes": _bytes, "str": _str, "json": _json,
}
_DESERIALIZERS: dict[str, Deserializer] = {
    "msgpack": _msgpack_unpack, "bytes": _from_bytes, "str": _from_str, "json": _from_json,
}
BUILTINS = tuple(_SERIALIZERS)


def serializer(spec: str | Serializer | None) -> Serializer:
    """The serializer named by ``spec`` (None means msgpack), or ``spec`` itself."""
    if spec is None:
        return _msgpack_pack
    if isinstance(spec, str):
        try:
            return _SERIALIZERS[spec]
        except KeyError:
            raise InvalidConfigError(f"unknown serializer {spec!r}; use one of "
                                     f"{', '.join(BUILTINS)} or a callable") from None
    if not callable(spec):
        raise InvalidConfigError(f"a serializer must be a name or a callable, not {spec!r}")
    return spec


def deserializer(spec: str | Deserializer | None) -> Deserializer:
    """The deserializer named by ``spec`` (None means msgpack), or ``spec`` itself."""
    if spec is None:
        return _msgpack_unpack
    if isinstance(spec, str):
        try:
            return _DESERIALIZERS[spec]
        except KeyError:
            raise InvalidConfigError(f"unknown deserializer {spec!r}; use one of "
                                     f"{', '.join(BUILTINS)} or a callable") from None
    if not callable(spec):
        raise InvalidConfigError(f"a deserializer must be a name or a callable, not {spec!r}")
    return spec


def is_builtin(function: object, name: str) -> bool:
    """True when ``function`` is the built-in (de)serializer called ``name``."""
    return function is _SERIALIZERS.get(name) or function is _DESERIALIZERS.get(name)
