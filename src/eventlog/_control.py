"""Control batches: the commit and abort markers a transaction leaves in a partition.

A batch written inside a transaction carries ``ATTR_TRANSACTIONAL``, its producer id
and epoch. Ending the transaction appends to every partition it touched one control
batch (``ATTR_CONTROL | ATTR_TRANSACTIONAL``) of the same producer id: one record whose
key is ``b"\\x01"`` (commit) or ``b"\\x00"`` (abort) and whose value is msgpack
``{"v": 1, "commit": bool}``; the header says the same with ``ATTR_COMMIT``, so that
the producer state and the readers decide from batch headers alone. The rule every
reader applies, from the partition alone: the fate of a transactional batch of
producer id P is the first control batch of P after it. See docs/transactions.md and docs/format.md.

This module owns only the marker's bytes; who writes markers is ``_txn_coordinator``,
who reads them ``_isolation``.
"""

from __future__ import annotations

import msgpack

from ._format import (
    ATTR_COMMIT,
    ATTR_CONTROL,
    ATTR_TRANSACTIONAL,
    NO_SEQUENCE,
    BatchHeader,
    EncodedBatch,
    encode_batch,
)

__all__ = ["ABORT_KEY", "COMMIT_KEY", "encode_marker", "is_control", "is_transactional",
           "marker_commits"]

COMMIT_KEY = b"\x01"
ABORT_KEY = b"\x00"
_CONTROL_BITS = ATTR_CONTROL | ATTR_TRANSACTIONAL


def encode_marker(producer_id: int, producer_epoch: int, commit: bool,
                  timestamp_ms: int) -> EncodedBatch:
    """The control batch that ends a transaction of ``producer_id`` in one partition."""
    value: bytes = msgpack.packb({"v": 1, "commit": commit})
    return encode_batch([value], [COMMIT_KEY if commit else ABORT_KEY], timestamp_ms,
                        attributes=_CONTROL_BITS | (ATTR_COMMIT if commit else 0),
                        producer_id=producer_id,
                        producer_epoch=producer_epoch, base_sequence=NO_SEQUENCE)


def is_control(header: BatchHeader) -> bool:
    return bool(header.attributes & ATTR_CONTROL)


def is_transactional(header: BatchHeader) -> bool:
    return bool(header.attributes & ATTR_TRANSACTIONAL)


def marker_commits(header: BatchHeader) -> bool:
    """True for a commit marker, False for an abort marker."""
    return bool(header.attributes & ATTR_COMMIT)
