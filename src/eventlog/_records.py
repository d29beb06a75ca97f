"""Validation of records before they are encoded: types, headers, sizes, serializers.

One place for the checks every write path makes (``Partition.encode``, ``Producer.send``
and ``send_batch``), so they raise the same typed errors with the same messages.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any, cast

from .errors import InvalidRecordError, RecordTooLargeError, SerializationError

__all__ = ["MAX_TIMESTAMP_MS", "batch_sizes", "byte_sizes", "check_bytes_column", "check_headers",
           "check_size", "check_sizes", "check_timestamps", "record_size",
           "serialization_error"]

# Timestamps are stored as signed 64-bit integers (the batch header's struct, Kafka's).
MAX_TIMESTAMP_MS = 2**63 - 1


def record_size(key: bytes | None, value: bytes | None,
                headers: Sequence[tuple[str, bytes]] | None) -> int:
    size = (len(key) if key is not None else 0) + (len(value) if value is not None else 0)
    if headers:
        for k, v in headers:
            size += len(k.encode("utf-8", "surrogatepass")) + len(v)
    return size


def check_headers(headers: Any, where: str) -> list[tuple[str, bytes]] | None:
    """Validate headers as a sequence of ``(str, bytes)`` pairs; None for no headers."""
    if headers is None:
        return None
    if isinstance(headers, (str, bytes, dict)) or not hasattr(headers, "__iter__"):
        raise InvalidRecordError(f"{where}: headers must be a list of (str, bytes) pairs, "
                        f"not {type(headers).__name__}")
    out = []
    for pair in headers:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise InvalidRecordError(f"{where}: each header must be a (str, bytes) pair, "
                                     f"not {pair!r}")
        k, v = pair
        if not isinstance(k, str) or not isinstance(v, (bytes, bytearray, memoryview)):
            raise InvalidRecordError(f"{where}: header {pair!r} is not a (str, bytes) pair")
        try:
            k.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidRecordError(f"{where}: header name {k!r} is not valid UTF-8") from exc
        out.append((k, bytes(v)))
    return out or None


_BYTES_OR_NONE = frozenset((bytes, type(None)))


def check_bytes_column(column: Sequence[Any], what: str, where: str) -> None:
    """Raise TypeError unless every item is bytes or None (one C-level pass)."""
    if not set(map(type, column)) <= _BYTES_OR_NONE:
        i, item = next((i, x) for i, x in enumerate(column)
                       if x is not None and type(x) is not bytes)
        raise InvalidRecordError(f"{where}: {what} {i} must be bytes or None, "
                                 f"not {type(item).__name__}")


def byte_sizes(column: Sequence[bytes | None]) -> list[int]:
    """``len`` of every item, 0 for None: one C-level pass (a second one only when a
    None is present). Passes over many objects are memory-bound, so each one counts."""
    try:
        return list(map(len, cast("Sequence[bytes]", column)))
    except TypeError:
        return list(map(len, [b"" if x is None else x for x in column]))


def batch_sizes(values: Sequence[bytes | None], keys: Sequence[bytes | None] | None,
                headers: Sequence[Sequence[tuple[str, bytes]] | None] | None,
                limit: int, where: str) -> list[int]:
    """The size of every record of a batch's columns (value, key and headers, as
    ``record_size`` counts them), after checking each against ``limit`` (the topic's
    ``max_message_bytes``: ``RecordTooLargeError`` naming the first record over it)."""
    sizes = byte_sizes(values)
    if keys is not None:
        sizes = list(map(operator.add, sizes, byte_sizes(keys)))
    if headers is not None:
        sizes = [s + record_size(None, None, h) for s, h in zip(sizes, headers, strict=True)]
    check_sizes(sizes, limit, where)
    return sizes


def check_size(size: int, limit: int, topic: str) -> None:
    """Raise ``RecordTooLargeError`` if one record of ``size`` bytes exceeds ``limit``
    (the topic's ``max_message_bytes``)."""
    if size > limit:
        raise RecordTooLargeError(f"topic {topic!r}: the record is {size} bytes, more than "
                                  f"max_message_bytes={limit}")


def check_sizes(sizes: Sequence[int], limit: int, where: str) -> None:
    """Raise ``RecordTooLargeError`` naming the first record of a column over ``limit``.
    Cost: one C-level ``max`` unless a record is too large."""
    if sizes and max(sizes) > limit:
        i = next(i for i, size in enumerate(sizes) if size > limit)
        raise RecordTooLargeError(f"{where}: record {i} is {sizes[i]} bytes, more than "
                                  f"max_message_bytes={limit}")


def serialization_error(topic: str, what: str, exc: BaseException, *,
                        index: int | None = None, verb: str = "serialize"
                        ) -> SerializationError:
    """The ``SerializationError`` for a serializer (or deserializer) that raised ``exc``
    on the ``what`` ("key" or "value") of a record of ``topic``; the caller raises it
    ``from exc``."""
    of = f" of record {index}" if index is not None else ""
    return SerializationError(f"topic {topic!r}: could not {verb} the {what}{of} "
                              f"({type(exc).__name__}: {exc})")


def check_timestamps(timestamps: Sequence[int] | int, count: int, where: str,
                     name: str = "timestamps_ms") -> list[int] | int:
    """``timestamps`` (one int for all ``count`` records, or one per record) if each is
    an int in ``[0, MAX_TIMESTAMP_MS]``, else ``InvalidRecordError`` naming the first bad
    one: checked at the call, so that nothing is queued and no batch fails later.
    Cost: two C-level passes (types, then min and max) over a column."""
    if isinstance(timestamps, int):
        if type(timestamps) is not int or not 0 <= timestamps <= MAX_TIMESTAMP_MS:
            raise InvalidRecordError(f"{where}: {name} must be an int from 0 to "
                                     f"{MAX_TIMESTAMP_MS}, not {timestamps!r}")
        return timestamps
    if isinstance(timestamps, (str, bytes)) or not hasattr(timestamps, "__len__"):
        raise InvalidRecordError(f"{where}: {name} must be one int, or one per record, "
                                 f"not {type(timestamps).__name__}")
    stamps = list(timestamps)
    if len(stamps) != count:
        raise InvalidRecordError(f"{where}: {len(stamps)} {name} for {count} records")
    if stamps and (not set(map(type, stamps)) <= {int} or min(stamps) < 0
                   or max(stamps) > MAX_TIMESTAMP_MS):
        i, bad = next((i, t) for i, t in enumerate(stamps)
                      if type(t) is not int or not 0 <= t <= MAX_TIMESTAMP_MS)
        raise InvalidRecordError(f"{where}: {name} of record {i} must be an int from 0 to "
                                 f"{MAX_TIMESTAMP_MS}, not {bad!r}")
    return stamps
