"""The delivery reports of one ``send_batch`` on Kafka, gathered into arrays.

librdkafka calls a delivery callback once per message. ``send_batch`` gives every
record ``partial(batch.report, i)``: the batch's one callback, bound to the record's
index. That costs one C-level allocation per record, where a future per record costs
a Python object, its callbacks table and, later, a pass over all of them
(benchmarks/bench_kafka.py). The callback stores only what the batch does not know
already: the record's offset; its partition when librdkafka placed it; its timestamp
when the broker set it (``LogAppendTime``). No ``Message`` outlives its callback.

Why an index, and not the order of the reports: without idempotence a retried
request can be acknowledged after a later one, so reports do not always come in the
order the records were sent, even within a partition.

Thread-safety: the callbacks run in whichever thread serves librdkafka's reports
(the sender's ``flush()`` or the producer's background poller); each writes its own
slots of the arrays, under the GIL.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Sequence
from typing import Any

from .._accumulator import BatchMetadata, Chunk
from ._errors import translate

__all__ = ["DeliveredBatch"]

_UNSET = -1  # an offset, partition or timestamp not reported (yet)


class DeliveredBatch:
    """Where the ``count`` records of one ``send_batch`` went, filled in by
    ``report(i, err, msg)`` as librdkafka reports record ``i``.

    ``partitions`` is the records' partition (one for all, or one each), or -1 for
    records librdkafka places; ``timestamps`` their timestamp (one for all, or one
    each), read back from the reports when the topic uses ``LogAppendTime``."""

    __slots__ = ("count", "errors", "offsets", "partitions", "report", "timestamps")

    def __init__(self, count: int, partitions: Sequence[int] | int,
                 timestamps: Sequence[int] | int, log_append_time: bool) -> None:
        self.count = count
        self.offsets = array("q", [_UNSET]) * count
        self.errors: dict[int, Any] = {}   # record index -> librdkafka's KafkaError
        placed = partitions == -1 if isinstance(partitions, int) else -1 in partitions
        self.partitions: Sequence[int] | int = \
            array("i", [_UNSET]) * count if placed else partitions
        self.timestamps: Sequence[int] | int = \
            array("q", [_UNSET]) * count if log_append_time else timestamps
        self.report = self._reporter(placed or log_append_time)

    def _reporter(self, everything: bool) -> Callable[[int, Any, Any], None]:
        # Two closures rather than one with branches: the common one is a single
        # accessor call and a store.
        offsets, errors = self.offsets, self.errors
        if not everything:
            def report_offset(i: int, err: Any, msg: Any) -> None:
                if err is None:
                    offsets[i] = msg.offset()
                else:
                    errors[i] = err
            return report_offset
        partitions = self.partitions if isinstance(self.partitions, array) else None
        timestamps = self.timestamps if isinstance(self.timestamps, array) else None

        def report_all(i: int, err: Any, msg: Any) -> None:
            if err is None:
                offsets[i] = msg.offset()
                if partitions is not None:
                    partitions[i] = msg.partition()
                if timestamps is not None:
                    timestamps[i] = msg.timestamp()[1]
            else:
                errors[i] = err
        return report_all

    def _check(self) -> None:
        """Every record is reported: stored (offset, partition, timestamp set) or
        failed."""
        for i in range(self.count):
            if i in self.errors:
                continue
            assert self.offsets[i] >= 0, f"record {i} has no offset"
            if not isinstance(self.partitions, int):
                assert self.partitions[i] >= 0, f"record {i} has no partition"
            if not isinstance(self.timestamps, int):
                assert self.timestamps[i] >= 0, f"record {i} has no timestamp"

    def metadata(self, topic: str) -> BatchMetadata:
        """Once every record is reported: where each went; or the error of the first
        record (in input order) that failed. O(count), a C-level pass when the
        records share one partition."""
        if self.errors:
            first = min(self.errors)
            raise translate(self.errors[first], f"sending record {first} to topic {topic!r}")
        offsets, stamps = self.offsets, self.timestamps
        if isinstance(stamps, array):
            stamps = stamps.tolist()
        parts = self.partitions
        if isinstance(parts, int) or len(set(parts)) == 1:
            p = parts if isinstance(parts, int) else parts[0]
            return BatchMetadata(topic, self.count,
                                 [(p, range(self.count), 0, offsets.tolist(), stamps, -1)])
        groups: dict[int, list[int]] = {}
        for i, p in enumerate(parts):
            indexes = groups.get(p)
            if indexes is None:
                indexes = groups[p] = []
            indexes.append(i)
        chunks: list[Chunk] = []
        for p, indexes in groups.items():
            times = stamps if isinstance(stamps, int) else [stamps[i] for i in indexes]
            chunks.append((p, indexes, 0, [offsets[i] for i in indexes], times, -1))
        return BatchMetadata(topic, self.count, chunks)
