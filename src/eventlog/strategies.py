"""Hypothesis strategies for eventlog records, for property tests of your own code.

Hypothesis is a test dependency of eventlog, not a runtime one: only this module
imports it (``eventlog`` and its pytest plugin do not).

By default every generated key and value round-trips through the default (msgpack)
serializers to an equal value, so a property such as "what I send is what I read"
holds for any example:

- ``values()``: None, bools, ints in msgpack's range, floats without NaN, str, bytes,
  and lists and dicts of them (dict keys str or int). No tuples: msgpack gives lists
  back.
- ``keys()``: None, str, bytes or ints (the usual key types; a key's serialized bytes
  choose its partition).
- ``headers()``: lists of ``(str, bytes)`` pairs, names possibly repeated, as
  producers accept and consumers return them.
- ``timestamps()``: epoch milliseconds from 1970 to the year 9999.
- ``topic_names()``: names that follow Kafka's rule (``[A-Za-z0-9._-]{1,249}``, not
  ``.`` or ``..``).
- ``records()``: ``eventlog.Record`` tuples, as a consumer returns them.
- ``record_streams()``: lists of records as one consumer could see them: offsets
  increasing from 0 in each partition, timestamps never going backwards.

>>> from hypothesis import given
>>> @given(values())
... def test_value_is_msgpackable(value):
...     import msgpack
...     assert msgpack.unpackb(msgpack.packb(value), strict_map_key=False) == value
>>> test_value_is_msgpackable()
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from ._types import Record
from .errors import InvalidConfigError

__all__ = [
    "headers",
    "keys",
    "record_streams",
    "records",
    "timestamps",
    "topic_names",
    "values",
]

_MSGPACK_INT_MIN = -(2**63)
_MSGPACK_INT_MAX = 2**64 - 1
_MAX_TIMESTAMP_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
_TOPIC_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-"


def _ints() -> st.SearchStrategy[int]:
    return st.integers(_MSGPACK_INT_MIN, _MSGPACK_INT_MAX)


def values(*, max_leaves: int = 10, max_size: int = 64) -> st.SearchStrategy[Any]:
    """Values that the default msgpack serializer stores and gives back equal.

    ``max_leaves`` bounds the scalars in one nested value; ``max_size`` bounds each
    str and bytes (in characters and bytes) and each list and dict."""
    scalars: st.SearchStrategy[Any] = st.one_of(
        st.none(), st.booleans(), _ints(), st.floats(allow_nan=False),
        st.text(max_size=max_size), st.binary(max_size=max_size))
    dict_keys = st.one_of(st.text(max_size=max_size), _ints())
    return st.recursive(
        scalars,
        lambda children: st.one_of(st.lists(children, max_size=max_size),
                                   st.dictionaries(dict_keys, children, max_size=max_size)),
        max_leaves=max_leaves)


def keys(*, allow_none: bool = True, max_size: int = 32) -> st.SearchStrategy[Any]:
    """Record keys: str, bytes or int (and None unless ``allow_none=False``)."""
    key: st.SearchStrategy[Any] = st.one_of(st.text(max_size=max_size),
                                            st.binary(max_size=max_size), _ints())
    return st.one_of(st.none(), key) if allow_none else key


def headers(*, max_headers: int = 4, max_size: int = 32
            ) -> st.SearchStrategy[list[tuple[str, bytes]]]:
    """Record headers: up to ``max_headers`` ``(str, bytes)`` pairs (``[]`` included).
    Names may repeat, as Kafka allows."""
    pair = st.tuples(st.text(max_size=max_size), st.binary(max_size=max_size))
    return st.lists(pair, max_size=max_headers)


def timestamps(*, min_ms: int = 0, max_ms: int = 253_402_300_799_999
               ) -> st.SearchStrategy[int]:
    """Timestamps in epoch milliseconds, ``min_ms <= t <= max_ms`` (by default up to
    9999-12-31T23:59:59.999Z)."""
    return st.integers(min_ms, max_ms)


def topic_names() -> st.SearchStrategy[str]:
    """Valid topic names (Kafka's rule)."""
    return st.text(_TOPIC_CHARS, min_size=1, max_size=249).filter(
        lambda name: name not in (".", ".."))


def records(*, topic: str | st.SearchStrategy[str] = "events", partitions: int = 1,
            key: st.SearchStrategy[Any] | None = None,
            value: st.SearchStrategy[Any] | None = None,
            header: st.SearchStrategy[list[tuple[str, bytes]]] | None = None
            ) -> st.SearchStrategy[Record]:
    """Single ``Record`` tuples: ``topic`` (a name or a strategy), a partition below
    ``partitions``, any offset, and keys, values and headers from ``key``, ``value`` and
    ``header`` (default: ``keys()``, ``values()``, ``headers()``)."""
    if partitions < 1:
        raise InvalidConfigError(f"partitions must be >= 1, not {partitions!r}")
    return st.builds(
        Record,
        topic=st.just(topic) if isinstance(topic, str) else topic,
        partition=st.integers(0, partitions - 1),
        offset=st.integers(0, 2**62),
        timestamp_ms=timestamps(),
        key=keys() if key is None else key,
        value=values() if value is None else value,
        headers=headers() if header is None else header)


@st.composite
def _streams(draw: st.DrawFn, topic: str, partitions: int, min_size: int, max_size: int,
             key: st.SearchStrategy[Any], value: st.SearchStrategy[Any],
             header: st.SearchStrategy[list[tuple[str, bytes]]]) -> list[Record]:
    # One list draw of plain tuples: several times faster to generate and to shrink
    # than drawing record by record.
    clock = draw(timestamps(max_ms=_MAX_TIMESTAMP_MS // 2))
    rows = draw(st.lists(st.tuples(st.integers(0, partitions - 1), st.integers(0, 60_000),
                                   key, value, header),
                         min_size=min_size, max_size=max_size))
    next_offset = [0] * partitions
    out = []
    for partition, step_ms, k, v, h in rows:
        clock += step_ms
        out.append(Record(topic, partition, next_offset[partition], clock, k, v, h))
        next_offset[partition] += 1
    return out


def record_streams(*, topic: str = "events", partitions: int = 1, min_size: int = 0,
                   max_size: int = 20, key: st.SearchStrategy[Any] | None = None,
                   value: st.SearchStrategy[Any] | None = None,
                   header: st.SearchStrategy[list[tuple[str, bytes]]] | None = None
                   ) -> st.SearchStrategy[list[Record]]:
    """Lists of ``min_size`` to ``max_size`` records of ``topic`` as one consumer could
    poll them: within each partition, offsets count up from 0 with no gap and timestamps
    never decrease; partitions interleave in any order."""
    if partitions < 1:
        raise InvalidConfigError(f"partitions must be >= 1, not {partitions!r}")
    if not 0 <= min_size <= max_size:
        raise InvalidConfigError(f"need 0 <= min_size <= max_size, not {min_size}, "
                                 f"{max_size}")
    return _streams(topic, partitions, min_size, max_size,
                    keys() if key is None else key, values() if value is None else value,
                    headers() if header is None else header)
