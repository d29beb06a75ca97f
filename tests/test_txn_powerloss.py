"""Power loss under transactions: with fsync="always", writes go through a layer that
records what was fsynced, then unsynced pages are dropped or torn at random and the log
is recovered as after a reboot. Every transaction whose commit returned is committed
everywhere with its offsets, every other one is aborted everywhere, and the
transaction state reads back (never damaged)."""

from __future__ import annotations

import random

import eventlog
from eventlog import TopicPartition
from tests.conftest import soak
from tests.faults import SyncRecorder, crash, injected, power_loss, rebooted


def test_power_loss_keeps_every_committed_transaction_and_no_other(tmp_path):
    rng = random.Random(13)
    for cycle in range(soak(8)):
        path = tmp_path / f"c{cycle}"
        recorder = SyncRecorder()
        committed: list[list[int]] = [[], []]
        offsets: dict[TopicPartition, int] = {}
        counter = 0
        with injected(recorder):
            log = eventlog.open(path, fsync="always", segment_bytes=600)
            log.create_topic("out", partitions=2)
            producer = eventlog.Producer(log, transactional_id="pl", linger_ms=0)
            producer.init_transactions()
            for txn in range(rng.randint(1, 8)):
                producer.begin_transaction()
                sent: list[list[int]] = [[], []]
                for _ in range(rng.randint(1, 5)):
                    counter += 1
                    p = rng.randrange(2)
                    producer.send("out", counter, partition=p)
                    sent[p].append(counter)
                producer.send_offsets_to_transaction({TopicPartition("in", 0): txn + 1}, "g")
                if rng.random() < 0.7:
                    producer.commit_transaction()
                    committed[0] += sent[0]
                    committed[1] += sent[1]
                    offsets = {TopicPartition("in", 0): txn + 1}
                else:
                    producer.abort_transaction()
            if rng.random() < 0.6:   # and one left open, its records appended
                producer.begin_transaction()
                for _ in range(rng.randint(1, 4)):
                    counter += 1
                    producer.send("out", counter, partition=rng.randrange(2))
                producer.flush()
            crash(log)
        power_loss(str(path), recorder, rng)
        with rebooted(), eventlog.open(path) as log:
            states, damaged = log.backend.transactions().store.scan()
            assert not damaged and [s.transactional_id for s in states] == ["pl"]
            with eventlog.Producer(log, transactional_id="pl") as successor:
                successor.init_transactions()
            for p in (0, 1):
                with eventlog.Consumer(log, isolation_level="read_committed") as c:
                    c.assign([TopicPartition("out", p)])
                    got = []
                    while batch := c.poll(timeout=0):
                        got.extend(r.value for r in batch)
                assert got == committed[p], (cycle, p, got, committed[p])
                log.topic("out").partition(p)._log._check()
            found = log.group_offsets("g") if "g" in log.groups() else {}
            assert found == offsets, (cycle, found, offsets)
