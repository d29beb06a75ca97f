"""Transactions through asyncio: AIOProducer's transactional calls and a
read_committed AIOConsumer."""

from __future__ import annotations

import asyncio

import pytest

import eventlog
from eventlog import TopicPartition
from eventlog.aio import AIOConsumer, AIOProducer


def test_aio_transactions_commit_abort_and_read_committed(log):
    log.create_topic("in")
    log.create_topic("out")

    async def main() -> tuple[list[object], list[object]]:
        async with AIOProducer(log, transactional_id="aio-app") as producer:
            await producer.init_transactions()
            async with producer.transaction():
                await producer.send("out", "committed")
                await producer.send_offsets_to_transaction({TopicPartition("in", 0): 3},
                                                           "aio-group")
            with pytest.raises(RuntimeError):
                async with producer.transaction():
                    await producer.send("out", "aborted")
                    raise RuntimeError("boom")
            await producer.begin_transaction()
            await producer.send("out", "open")
            with pytest.raises(eventlog.TransactionError):
                await producer.begin_transaction()
            async with AIOConsumer(log, "out", isolation_level="read_committed") as c:
                before = [r.value for r in await c.poll(timeout=0.3)]
                task = asyncio.ensure_future(c.poll(timeout=30))
                await asyncio.sleep(0.1)
                await producer.commit_transaction()
                after = [r.value for r in await task]
        return before, after

    before, after = asyncio.run(main())
    assert before == ["committed"]
    assert after == ["open"]
    assert log.group_offsets("aio-group") == {TopicPartition("in", 0): 3}
    with eventlog.Consumer(log, "out") as raw:
        assert [r.value for r in raw.poll(timeout=0.5)] == ["committed", "aborted", "open"]
