"""Deserializing the keys and values of fetched records, and what to do when one fails.

A consumer's fetch builds records from decoded batches with its deserializers
applied a column at a time (``column_function``: one call per column, and for the
built-in deserializer one C-level map of ``unpackb`` without keywords,
``serde.column_unpacker``). When any value of a
column fails, the column raises ``DeserializeError``; the fetch then deserializes
the same records one at a time (``salvage``), returns those before the bad one,
and raises a ``SerializationError`` naming its topic, partition and offset
(``serialization_error``) at the next fetch. Nothing here reads the log.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from ._types import Record
from .errors import SerializationError
from .serde import Deserializer, column_unpacker

__all__ = ["DeserializeError", "column_function", "salvage", "serialization_error"]


class DeserializeError(Exception):
    """A deserializer failed somewhere in a column (internal: ``salvage`` finds it)."""


def column_function(fn: Deserializer) -> Callable[[list[Any]], list[Any]]:
    """A function mapping a column (a list of bytes or None) through ``fn``, None
    staying None; it raises ``DeserializeError`` if any value fails. A partial, not a
    closure or method: a call less per column on a consumer's hot path."""
    return partial(_deserialize_column, fn, whole=column_unpacker(fn))


def _deserialize_column(fn: Deserializer, column: list[Any],
                        whole: Callable[[list[Any]], list[Any] | None] | None = None
                        ) -> list[Any]:
    try:
        if None in column:
            return [None if x is None else fn(x) for x in column]
        if whole is not None:
            out = whole(column)
            if out is not None:
                return out
        return list(map(fn, column))  # (and a value that failed the pass fails here)
    except Exception as exc:
        raise DeserializeError() from exc


def salvage(raw: list[Record], key_des: Deserializer, value_des: Deserializer
            ) -> tuple[list[Record], tuple[Record, str, Exception] | None]:
    """``raw`` records (keys and values as stored) deserialized one at a time: those
    before the first that fails, and that one with what failed ("key" or "value")
    and the exception (None if none did)."""
    out: list[Record] = []
    for record in raw:
        try:
            key = None if record.key is None else key_des(record.key)
        except Exception as exc:
            return out, (record, "key", exc)
        try:
            value = None if record.value is None else value_des(record.value)
        except Exception as exc:
            return out, (record, "value", exc)
        out.append(record._replace(key=key, value=value))
    return out, None


def serialization_error(record: Record, what: str, exc: Exception) -> SerializationError:
    """The error a fetch raises for ``record`` whose ``what`` failed with ``exc``."""
    error = SerializationError(
        f"topic {record.topic!r} partition {record.partition} offset {record.offset}: "
        f"could not deserialize the {what} ({type(exc).__name__}: {exc}); seek past "
        "it to skip it")
    error.topic, error.partition, error.offset = (record.topic, record.partition,
                                                  record.offset)
    error.__cause__ = exc
    return error
