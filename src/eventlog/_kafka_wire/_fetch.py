"""The Fetch handler: whole batches from each partition, with a long poll.

For each requested partition the handler reads whole eventlog batches from the one
holding ``fetch_offset`` (``PartitionBackend.fetch``) and re-encodes each as an
uncompressed Kafka batch at the same offsets. Limits follow KIP-74: each partition
gets at most ``partition_max_bytes`` and the response at most ``max_bytes``, except
that the first batch of the first partition with data is always returned whole, so a
batch larger than the limits never stalls a consumer. Re-encoded batches are kept in
a small cache (keyed by the batch's checksum, so a compacted batch never matches an
old entry): several consumers reading the same tail cost one encoding.

With fewer than ``min_bytes`` ready the request waits up to ``max_wait_ms`` on the
partitions' notify words (``_notify.wait``), which an append in any process bumps, so
the answer leaves within microseconds of the append. A fetch outside
``[log_start_offset, high_watermark]`` is ``OFFSET_OUT_OF_RANGE`` for that partition.
With ``isolation_level=1`` a partition is read only up to its last stable offset, and
the answer lists the aborted transactions in it (``_txn_read``). Fetch sessions
(KIP-227) are not kept: every answer has session id 0, which tells the
client to send full fetches.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any

from .. import _notify
from .._format import DecodedBatch
from ..errors import EventLogError
from . import _errors as E
from ._batch import encode_fetched
from ._broker import Broker
from ._server import RequestContext
from ._txn_read import READ_COMMITTED, CommittedReads, aborted_transactions

__all__ = ["FetchHandler"]

_CACHE_BYTES = 32 * 2**20


class _BatchCache:
    """Kafka encodings of recently fetched batches, bounded in bytes. Thread-safe."""

    def __init__(self, max_bytes: int) -> None:
        self._max = max_bytes
        self._bytes = 0
        self._entries: OrderedDict[tuple[str, int, int, int], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def encoded(self, topic: str, partition: int, batch: DecodedBatch) -> bytes:
        key = (topic, partition, batch.header.base_offset, batch.header.checksum)
        with self._lock:
            data = self._entries.get(key)
            if data is not None:
                self._entries.move_to_end(key)
                return data
        data = encode_fetched(batch)
        with self._lock:
            if key not in self._entries:
                self._entries[key] = data
                self._bytes += len(data)
                while self._bytes > self._max and self._entries:
                    _, old = self._entries.popitem(last=False)
                    self._bytes -= len(old)
        return data


class FetchHandler:
    """Fetch. Thread-safe."""

    def __init__(self, broker: Broker, committed: CommittedReads) -> None:
        self._broker = broker
        self._backend = broker.log.backend
        self._cache = _BatchCache(_CACHE_BYTES)
        self._committed = committed

    def fetch(self, ctx: RequestContext, req: dict[str, Any]) -> dict[str, Any]:
        """Fetch: read, and if less than ``min_bytes`` is ready, wait for appends."""
        deadline = time.monotonic() + max(req["max_wait_ms"], 0) / 1000
        while True:
            words = self._words(req)
            expected = [w[0].load() for w in words]
            responses, ready, failed = self._read(req)
            remaining = deadline - time.monotonic()
            if (ready >= max(req["min_bytes"], 1) or failed or remaining <= 0
                    or self._broker.stopping.is_set() or not words):
                return {"error_code": 0, "session_id": 0, "responses": responses}
            _notify.wait([w[0] for w in words], [w[1] for w in words], expected,
                         min(remaining, 0.5))

    def _words(self, req: dict[str, Any]) -> list[tuple[_notify.Word, _notify.Word]]:
        words = []
        for t in req["topics"]:
            for p in t["partitions"]:
                try:
                    words.append(self._backend.partition(t["topic"], p["partition"])
                                 .wake_words())
                except EventLogError:
                    pass
        return words

    def _read(self, req: dict[str, Any]) -> tuple[list[dict[str, Any]], int, bool]:
        budget = req["max_bytes"]
        total = 0
        failed = False
        committed = req["isolation_level"] == READ_COMMITTED
        responses = []
        for t in req["topics"]:
            name = t["topic"]
            parts = []
            for p in t["partitions"]:
                entry, size = self._read_partition(name, p, min(budget - total,
                                                                p["partition_max_bytes"]),
                                                   first=total == 0, committed=committed)
                total += size
                failed = failed or entry["error_code"] != 0
                parts.append(entry)
            responses.append({"topic": name, "partitions": parts})
        return responses, total, failed

    def _read_partition(self, topic: str, p: dict[str, Any], limit: int, first: bool,
                        committed: bool = False) -> tuple[dict[str, Any], int]:
        index = p["partition"]
        entry: dict[str, Any] = {"partition_index": index, "error_code": 0,
                                 "high_watermark": -1, "last_stable_offset": -1,
                                 "log_start_offset": -1, "aborted_transactions": None,
                                 "records": b""}
        offset = p["fetch_offset"]
        try:
            plog = self._backend.partition(topic, index)
            start, end = plog.bounds()
            entry.update(high_watermark=end, last_stable_offset=end, log_start_offset=start)
            if not start <= offset <= end:
                entry["error_code"] = E.OFFSET_OUT_OF_RANGE
                return entry, 0
            if committed:
                end = self._committed.stable_offset(topic, index, plog)
                entry.update(last_stable_offset=end, aborted_transactions=[])
            if offset >= end or (limit <= 0 and not first):
                return entry, 0
            batches = plog.fetch(offset, max_bytes=max(limit, 1))
        except EventLogError as exc:
            entry["error_code"] = E.code_for(exc)
            return entry, 0
        chunks: list[bytes] = []
        sent: list[DecodedBatch] = []
        size = 0
        for batch in batches:
            if batch.header.base_offset >= end:   # read_committed: at the LSO
                break
            data = self._cache.encoded(topic, index, batch)
            if size + len(data) > limit and (chunks or not first):
                break
            chunks.append(data)
            sent.append(batch)
            size += len(data)
        if committed:
            try:
                entry["aborted_transactions"] = aborted_transactions(plog, sent)
            except EventLogError as exc:
                entry["error_code"] = E.code_for(exc)
                return entry, 0
        entry["records"] = b"".join(chunks)
        return entry, size
