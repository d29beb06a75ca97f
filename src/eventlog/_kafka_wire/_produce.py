"""Handlers of the write side: Produce, InitProducerId, and ListOffsets.

Produce decodes each partition's record batch (CRC-32C checked, decompressed bounded),
re-encodes it as one eventlog batch with the same keys, values, headers, timestamps
and producer id/epoch/sequence, and appends it through the partition's
``PartitionBackend``: the path eventlog's own ``Producer`` takes. Idempotence is
eventlog's: a batch whose sequence the partition has stored already is not appended
again and is answered with the offsets it got the first time; a gap is
``OUT_OF_ORDER_SEQUENCE_NUMBER``. ``acks`` 1 and -1 (all) mean the same on one node:
the answer comes once the batch is appended (and, with ``fsync="always"``, on disk);
``acks=0`` gets no answer at all, as Kafka does.

A transactional batch (attribute bit 4) is appended as eventlog's transactional batch
(``ATTR_TRANSACTIONAL``, the producer id, epoch and sequence) once ``TxnHandlers``
says its producer is the transactional id's current one and the partition is in the
open transaction (``AddPartitionsToTxn``); else ``INVALID_PRODUCER_EPOCH`` or
``INVALID_TXN_STATE``. The partition itself refuses an epoch older than one it has seen.
"""

from __future__ import annotations

import os
from typing import Any

from .._format import ATTR_TRANSACTIONAL, encode_batch
from .._producer_state import SEQUENCE_MODULUS
from ..errors import EventLogError, OffsetOutOfRangeError
from . import _errors as E
from ._batch import BatchError, decode_produced
from ._broker import Broker
from ._server import RequestContext
from ._txn_apis import TxnHandlers
from ._txn_read import READ_COMMITTED, CommittedReads

__all__ = ["ProduceHandlers"]

_LATEST = -1
_EARLIEST = -2
_ACKS = (0, 1, -1)


class ProduceHandlers:
    """Produce, InitProducerId, ListOffsets. Thread-safe."""

    def __init__(self, broker: Broker, txn: TxnHandlers, committed: CommittedReads) -> None:
        self._broker = broker
        self._backend = broker.log.backend
        self._txn = txn
        self._committed = committed

    def produce(self, ctx: RequestContext, req: dict[str, Any]) -> dict[str, Any] | None:
        """Produce: one record batch per partition."""
        acks = req["acks"]
        refuse = 0
        if acks not in _ACKS:
            refuse = E.INVALID_REQUIRED_ACKS
        responses = []
        for t in req["topic_data"]:
            parts = []
            for p in t["partition_data"]:
                if refuse:
                    parts.append({"index": p["index"], "error_code": refuse, "base_offset": -1})
                else:
                    parts.append(self._produce_partition(t["name"], p["index"], p["records"],
                                                         req["transactional_id"]))
            responses.append({"name": t["name"], "partition_responses": parts})
        if acks == 0:
            return None
        return {"responses": responses}

    def _produce_partition(self, topic: str, index: int, records: bytes | None,
                           transactional_id: str | None) -> dict[str, Any]:
        out: dict[str, Any] = {"index": index, "error_code": 0, "base_offset": -1,
                               "log_append_time_ms": -1, "log_start_offset": -1}
        try:
            config = self._backend.metadata(topic).config
            plog = self._backend.partition(topic, index)
            if not records:
                raise BatchError(E.INVALID_RECORD, "no record batch")
            if len(records) > config.max_message_bytes:
                raise BatchError(E.MESSAGE_TOO_LARGE,
                                 f"batch of {len(records)} bytes exceeds max.message.bytes "
                                 f"{config.max_message_bytes}")
            batches = decode_produced(records, self._broker.max_inflated_bytes)
            if len(batches) != 1:
                raise BatchError(E.INVALID_RECORD, "a produce request carries exactly one "
                                                   "record batch per partition")
            b = batches[0]
            if min(b.timestamps) < 0:
                raise BatchError(E.INVALID_TIMESTAMP, "negative record timestamp")
            if config.compacted and None in b.keys:
                raise BatchError(E.INVALID_RECORD, "a compacted topic cannot accept a record "
                                                   "without a key")
            idempotent = b.producer_id >= 0 and b.base_sequence >= 0
            if b.transactional:
                if not idempotent:
                    raise BatchError(E.INVALID_RECORD, "a transactional batch needs a "
                                                       "producer id and a sequence")
                code = self._txn.check_produce(transactional_id, b.producer_id,
                                               b.producer_epoch, topic, index)
                if code:
                    raise BatchError(code, "the batch's producer is not in a transaction "
                                           "that added this partition"
                                     if code == E.INVALID_TXN_STATE else
                                     "the batch's producer epoch was fenced")
            encoded = encode_batch(
                b.values, b.keys, b.timestamps, b.headers,
                producer_id=b.producer_id if idempotent else -1,
                producer_epoch=b.producer_epoch if idempotent else 0,
                base_sequence=b.base_sequence % SEQUENCE_MODULUS if idempotent else -1,
                attributes=ATTR_TRANSACTIONAL if b.transactional else 0)
            result = plog.append(encoded)
        except BatchError as exc:
            out.update(error_code=exc.code, error_message=str(exc))
            return out
        except EventLogError as exc:
            out.update(error_code=E.code_for(exc), error_message=str(exc))
            return out
        stored = result.stored_offsets
        out["base_offset"] = (stored[0] if stored and stored[0] >= 0 else result.base_offset)
        out["log_append_time_ms"] = result.log_append_time_ms
        out["log_start_offset"] = plog.start_offset
        return out

    def init_producer_id(self, ctx: RequestContext, req: dict[str, Any]) -> dict[str, Any]:
        """InitProducerId: for idempotent producers a fresh random 62-bit id, epoch 0
        (eventlog's own idempotent producers draw their ids the same way); with a
        transactional id, the transaction coordinator's (``TxnHandlers``)."""
        if req["transactional_id"] is not None:
            return self._txn.init_producer_id(ctx, req)
        pid = int.from_bytes(os.urandom(8), "big") >> 2
        return {"error_code": 0, "producer_id": pid, "producer_epoch": 0}

    def list_offsets(self, ctx: RequestContext, req: dict[str, Any]) -> dict[str, Any]:
        """ListOffsets: latest (-1; with ``isolation_level=1``, the last stable
        offset), earliest (-2), or the first offset at or after a timestamp (with that
        record's timestamp)."""
        committed = req["isolation_level"] == READ_COMMITTED
        topics = []
        for t in req["topics"]:
            parts = []
            for p in t["partitions"]:
                entry = {"partition_index": p["partition_index"], "error_code": 0,
                         "timestamp": -1, "offset": -1, "leader_epoch": 0}
                try:
                    entry.update(self._lookup(t["name"], p["partition_index"],
                                              p["timestamp"], committed))
                except EventLogError as exc:
                    entry["error_code"] = E.code_for(exc)
                parts.append(entry)
            topics.append({"name": t["name"], "partitions": parts})
        return {"topics": topics}

    def _lookup(self, topic: str, index: int, timestamp: int, committed: bool
                ) -> dict[str, int]:
        plog = self._backend.partition(topic, index)
        start, end = plog.bounds()
        if timestamp == _LATEST:
            return {"offset": self._committed.stable_offset(topic, index, plog)
                    if committed else end}
        if timestamp == _EARLIEST:
            return {"offset": start}
        if timestamp < 0:
            return {"error_code": E.INVALID_REQUEST}
        offset = plog.offset_for_time(timestamp)
        if offset is None:
            return {"offset": -1, "timestamp": -1}
        try:
            for batch in plog.fetch(offset, max_bytes=1):
                i = batch.index_of(offset)
                if i < batch.header.record_count:
                    return {"offset": batch.offsets()[i], "timestamp": batch.timestamps()[i]}
        except OffsetOutOfRangeError:
            pass  # deleted meanwhile: report the offset alone
        return {"offset": offset, "timestamp": timestamp}
