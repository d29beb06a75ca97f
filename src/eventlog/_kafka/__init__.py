"""The Kafka backend: the same ``Log``, ``Producer`` and ``Consumer`` API on an Apache
Kafka cluster, built on confluent-kafka (librdkafka).

``eventlog.open("kafka://h1:9092,h2:9092", kafka_config={...})`` returns a
:class:`~eventlog._kafka._log.KafkaLog`; ``Producer(log)``, ``Consumer(log)`` and
``aio.AIOConsumer(log)`` then build the classes of this package (``Log.client_classes``).
One room per file::

    _log.py        KafkaLog, KafkaTopic, KafkaPartition: topics admin, offsets, groups admin
    _admin.py      the AdminClient calls behind them, with timeouts and error translation
    _producer.py   KafkaProducer: serializers, eventlog's partitioners, futures, flush
    _batch.py      send_batch's delivery reports: each record's offset, into arrays
    _delivery.py   who serves librdkafka's delivery reports, and the background thread
    _consumer.py   KafkaConsumer: poll, positions, seek, commits, rebalance listeners
    _decode.py     librdkafka's messages -> Records, with the deserializers
    _commits.py    its offset commits: synchronous, auto-commit, the commit_async thread
    _aio.py        KafkaAIOConsumer: the asyncio consumer over KafkaConsumer
    _clients.py    the client classes a KafkaLog brings (Log.client_classes)
    _config.py     topic settings <-> Kafka topic configs, client configuration
    _errors.py     Kafka's errors -> eventlog's error tree

What has no meaning on a cluster raises ``UnsupportedOperationError`` with the reason
(docs/kafka-backend.md lists every such call).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._log import KafkaLog

__all__ = ["open_kafka"]


def open_kafka(url: str, **options: Any) -> KafkaLog:
    """``eventlog.open`` for a ``kafka://`` address (see ``KafkaLog``)."""
    try:
        import confluent_kafka  # noqa: F401, PLC0415 - an optional dependency
    except ImportError:
        raise ImportError(f"opening {url!r} needs the Kafka client, confluent-kafka: "
                          "pip install 'eventlog[kafka]'") from None
    from . import _clients  # noqa: F401, PLC0415 - registers the client classes
    from ._log import KafkaLog  # noqa: PLC0415 - needs confluent_kafka

    return KafkaLog(url, **options)
