"""A faststream application tested against the ``eventlog_kafka`` fixture: the use case
``eventlog serve`` exists for (docs/kafka-protocol.md shows the same service)."""

from __future__ import annotations

import asyncio
import json

import pytest

import eventlog

faststream_kafka = pytest.importorskip("faststream.kafka")


def build_service(bootstrap: str):
    """The application under test: bills orders, publishing invoices."""
    broker = faststream_kafka.KafkaBroker(bootstrap, logger=None)

    @broker.subscriber("orders", group_id="billing", auto_offset_reset="earliest")
    @broker.publisher("invoices")
    async def bill(order: dict) -> dict:
        return {"order": order["id"], "amount": order["qty"] * order["price"]}

    return broker


def test_billing_service_against_the_fixture(eventlog_kafka, eventlog_log):
    eventlog_log.create_topic("orders", partitions=2)
    eventlog_log.create_topic("invoices")
    # input written the way another eventlog service would: JSON values, in-process
    with eventlog.Producer(eventlog_log, value_serializer="json") as p:
        for i in range(5):
            p.send("orders", {"id": i, "qty": i + 1, "price": 10}, key=f"c{i}")

    async def run() -> None:
        broker = build_service(eventlog_kafka)
        async with broker:
            await broker.start()
            for _ in range(400):
                if eventlog_log.topic("invoices").partition(0).end_offset >= 5:
                    break
                await asyncio.sleep(0.05)

    asyncio.run(run())
    invoices = [json.loads(r.value) for r in eventlog_log.topic("invoices").partition(0).read(0)]
    assert sorted(i["order"] for i in invoices) == list(range(5))
    assert {i["order"]: i["amount"] for i in invoices} == {i: (i + 1) * 10 for i in range(5)}
    ends = {eventlog.TopicPartition("orders", p.id): p.end_offset
            for p in eventlog_log.topic("orders").partitions}
    assert eventlog_log.group_offsets("billing") == {tp: e for tp, e in ends.items() if e}
