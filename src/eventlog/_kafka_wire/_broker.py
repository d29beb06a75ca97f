"""What every handler shares: the log, this node's identity and the server's settings."""

from __future__ import annotations

import base64
import hashlib
import os
import threading
from dataclasses import dataclass, field

from ..log import Log

__all__ = ["NODE_ID", "Broker"]

NODE_ID = 1  # the one node of this "cluster" (the id a single-node Kafka usually has)


@dataclass
class Broker:
    """The state handlers share. Thread-safe (immutable but for ``stopping``)."""

    log: Log
    auto_create_topics: bool = True     # Kafka's auto.create.topics.enable
    num_partitions: int = 1             # Kafka's num.partitions, for auto-created topics
    max_inflated_bytes: int = 100 * 2**20  # what one compressed batch may inflate to
    stopping: threading.Event = field(default_factory=threading.Event)

    @property
    def cluster_id(self) -> str:
        """A stable 22-character id (Kafka's shape), derived from the log's path."""
        digest = hashlib.sha256(os.path.realpath(self.log.backend.path).encode()).digest()
        return base64.urlsafe_b64encode(digest[:16]).decode().rstrip("=")
