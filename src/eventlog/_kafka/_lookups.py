"""Offset lookups of one confluent-kafka consumer: a partition's watermarks and the
offsets for timestamps (Kafka's ListOffsets), as the Kafka ``Consumer`` answers them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from confluent_kafka import TopicPartition as KafkaTP

from .._types import TopicPartition
from ._errors import kafka_errors

__all__ = ["OffsetLookups"]


class OffsetLookups:
    """Watermarks and offsets by time, read through ``consumer`` with ``timeout_s``.
    Stateless: each call asks the brokers (never librdkafka's cached watermarks)."""

    def __init__(self, consumer: Any, timeout_s: float) -> None:
        self._consumer = consumer
        self._timeout_s = timeout_s

    def bounds(self, tp: TopicPartition) -> tuple[int, int]:
        """``tp``'s start offset and end offset (the high watermark)."""
        with kafka_errors(f"reading the offsets of {tp.topic}[{tp.partition}]"):
            low, high = self._consumer.get_watermark_offsets(
                KafkaTP(tp.topic, tp.partition), timeout=self._timeout_s, cached=False)
        return int(low), int(high)

    def reset_position(self, tp: TopicPartition, committed: int | None, reset: str) -> int:
        """Where ``tp`` starts before its first fetch: the committed offset while it is
        in the stored range, else the start or (``reset == "latest"``) the end."""
        start, end = self.bounds(tp)
        if committed is not None and start <= committed <= end:
            return committed
        return start if reset != "latest" else end

    def starts(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return {TopicPartition(*tp): self.bounds(TopicPartition(*tp))[0] for tp in partitions}

    def ends(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return {TopicPartition(*tp): self.bounds(TopicPartition(*tp))[1] for tp in partitions}

    def for_times(self, timestamps: Mapping[TopicPartition, int]
                  ) -> dict[TopicPartition, int | None]:
        """The earliest offset whose timestamp is >= the given one, per partition (None
        if there is none)."""
        if not timestamps:
            return {}
        request = [KafkaTP(tp[0], tp[1], ts) for tp, ts in timestamps.items()]
        with kafka_errors("looking up offsets by time"):
            found = self._consumer.offsets_for_times(request, timeout=self._timeout_s)
        return {TopicPartition(k.topic, k.partition): (None if k.offset < 0 else int(k.offset))
                for k in found}
