"""Offset commits of a ``KafkaConsumer`` to its Kafka group: the synchronous commit
(with Kafka's errors translated), the fire-and-forget auto-commit, the one
background thread that runs ``commit_async`` calls in call order, and the lookup of
what is committed.

A commit during a cooperative rebalance: the broker refuses a commit of the member's
old generation (``ILLEGAL_GENERATION``, ``REBALANCE_IN_PROGRESS``) while the group
moves to the next, though a cooperative rebalance moves only some partitions, and
none before this member revoked them (in its next ``poll``, which cannot run during
this call). Until then they are its own, as on a log directory, where such a commit
succeeds; so the synchronous commit tries again, every 50 ms, until librdkafka's
background thread has joined the new generation, for as long as the member stays the
same (its member id) and at most ``patience_s``. An eager member owns nothing during
a rebalance (it revoked everything first), and is not retried.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError
from confluent_kafka import TopicPartition as KafkaTP

from .._coordinator import CommitCallback
from .._types import TopicPartition
from ._errors import kafka_errors, translate

__all__ = ["Committer"]

_REBALANCING = frozenset({KafkaError.ILLEGAL_GENERATION, KafkaError.REBALANCE_IN_PROGRESS})
_RETRY_S = 0.05


def _request(offsets: Mapping[TopicPartition, int]) -> list[Any]:
    return [KafkaTP(tp[0], tp[1], off) for tp, off in offsets.items()]


class Committer:
    """Commits offsets (the next offsets to read) through one librdkafka consumer."""

    def __init__(self, consumer: Any, cooperative: bool = False,
                 patience_s: float = 10.0) -> None:
        self._consumer = consumer
        self._cooperative = cooperative
        self._patience_s = patience_s
        self._thread: concurrent.futures.ThreadPoolExecutor | None = None

    def committed(self, tp: TopicPartition, timeout_s: float) -> int | None:
        """The group's committed offset of ``tp`` (None if none): an OffsetFetch."""
        with kafka_errors("reading committed offsets"):
            found = self._consumer.committed([KafkaTP(tp[0], tp[1])], timeout=timeout_s)
        return int(found[0].offset) if found and found[0].offset >= 0 else None

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit and wait for the group's answer (nothing to do for no offsets)."""
        if not offsets:
            return
        deadline, member = time.monotonic() + self._patience_s, self._consumer.memberid()
        while True:
            try:
                result = self._consumer.commit(offsets=_request(offsets), asynchronous=False)
                break
            except Exception as exc:
                code = exc.args and getattr(exc.args[0], "code", lambda: 0)()
                if code == KafkaError._NO_OFFSET:
                    return
                if not (self._cooperative and code in _REBALANCING
                        and time.monotonic() < deadline
                        and self._consumer.memberid() == member):
                    raise translate(exc, "committing offsets") from exc
            time.sleep(_RETRY_S)   # (the module docstring says why)
        for ktp in result or ():
            if ktp.error is not None:
                raise translate(ktp.error, f"committing {ktp.topic}[{ktp.partition}]")

    def commit_quietly(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Send a commit without waiting (auto-commit: one that fails is retried at the
        next interval)."""
        try:
            self._consumer.commit(offsets=_request(offsets), asynchronous=True)
        except Exception:  # noqa: S110 - an auto-commit that fails is retried next interval
            pass

    def submit(self, offsets: dict[TopicPartition, int], callback: CommitCallback | None
               ) -> concurrent.futures.Future[dict[TopicPartition, int]]:
        """``commit`` in the background thread, after the ones submitted before;
        ``callback(offsets, error)`` runs when done and the future resolves alike."""
        if self._thread is None:
            self._thread = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix="eventlog-kafka-commit")

        def run() -> dict[TopicPartition, int]:
            error: BaseException | None = None
            try:
                self.commit(offsets)
            except BaseException as exc:
                error = exc
            if callback is not None:
                callback(offsets, error)
            if error is not None:
                raise error
            return offsets

        return self._thread.submit(run)

    def shutdown(self) -> None:
        """Wait for the submitted commits to finish."""
        if self._thread is not None:
            self._thread.shutdown(wait=True)
