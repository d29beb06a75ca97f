"""Which client classes a ``KafkaLog`` brings (``Log.client_classes``): ``Producer(log)``,
``Consumer(log)`` and ``aio.AIOConsumer(log)`` build these on a Kafka log."""

from __future__ import annotations

from ._aio import KafkaAIOConsumer
from ._consumer import KafkaConsumer
from ._log import KafkaLog
from ._producer import KafkaProducer

KafkaLog.client_classes = {"producer": KafkaProducer, "consumer": KafkaConsumer,
                           "aio_consumer": KafkaAIOConsumer}
