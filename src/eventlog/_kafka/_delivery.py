"""DeliveryReports: who serves librdkafka's delivery reports of one producer, and when.

librdkafka tells a record's fate only when the application serves its queue
(``poll()`` or ``flush()``); each report runs the record's future. Three kinds of
thread serve it: a sender (every ``_CHECK_EVERY`` records of a topic, as librdkafka's
own examples poll), a thread in ``flush()`` or a future's ``result()``, and this
room's background thread, for records no one waits for.

The background thread stays out of the way of the others: while anyone served the
queue in the last ``POLL_S`` it sleeps, and it blocks in librdkafka's ``poll()``
only while records are in flight (so that their futures' callbacks run as soon as
they are delivered); otherwise it looks at the queue (log lines, errors) every
``POLL_S`` without blocking. A thread blocked in ``poll()`` beside a ``flush()``
takes reports from it and contends for the GIL: measured, that added 0.4 ms to each
record sent alone and flushed (docs/kafka-backend.md).
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

from confluent_kafka import KafkaException

__all__ = ["POLL_S", "DeliveryReports"]

POLL_S = 0.1


class DeliveryReports:
    """The delivery reports of one librdkafka producer ``client``: served by whoever
    waits, and by a background thread (``start``/``stop``) for records no one waits
    for."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._served = 0.0  # when a sender, flush or result() last served the queue
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve_forever, daemon=True,
                                        name="eventlog-kafka-producer")

    def start(self) -> None:
        """Start the background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the background thread and wait for it."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def poll_now(self) -> None:
        """A sender serves what is due, without waiting (every ``_CHECK_EVERY`` sends)."""
        self._served = time.monotonic()
        self._client.poll(0)

    def flush(self, timeout: float) -> int:
        """librdkafka's ``flush(timeout)`` (-1: forever): send what ``linger.ms`` holds
        back at once and serve reports until none is pending; the records left."""
        self._served = time.monotonic()
        try:
            return int(self._client.flush(timeout))
        finally:
            self._served = time.monotonic()

    def serve(self, timeout: float) -> None:
        """Someone waits on a future: flush for up to ``timeout`` seconds; a fatal
        error (fenced, ...) is left to the futures, which carry it."""
        try:
            self.flush(timeout)
        except KafkaException:
            with contextlib.suppress(KafkaException):
                self._client.poll(timeout)

    def _serve_forever(self) -> None:
        stop, poll, client = self._stop, self._client.poll, self._client
        while not stop.is_set():
            idle = time.monotonic() - self._served
            if idle < POLL_S:
                stop.wait(POLL_S - idle)
                continue
            # a fatal error (fenced, ...) is raised once, here: the futures and the
            # next transactional call carry it, and this thread goes on serving
            with contextlib.suppress(KafkaException):
                if len(client):
                    poll(POLL_S)
                else:
                    poll(0)
                    stop.wait(POLL_S)
