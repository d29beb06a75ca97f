"""Power loss under transactions: with fsync="always", writes go through a layer that
records what was fsynced, then unsynced pages are dropped or torn at random and the log
is recovered as after a reboot. Every transaction whose commit returned is committed
everywhere with its offsets, every other one is aborted everywhere, and the
transaction state reads back (never damaged)."""

from __future__ import annotations

import random

import pytest

import eventlog
from eventlog import TopicPartition
from tests.conftest import soak
from tests.faults import SyncRecorder, crash, injected, power_loss, rebooted


class _PowerCut(Exception):
    """The simulated power failure in the middle of a commit."""


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
            undecided: list[list[int]] | None = None
            ending = rng.random()
            if ending < 0.6:   # one more, left open (its records appended) or cut off
                producer.begin_transaction()
                undecided = [[], []]
                for p in (0, 1):
                    counter += 1
                    producer.send("out", counter, partition=p)
                    undecided[p].append(counter)
                producer.flush()
                if ending < 0.3:
                    # the power fails between the markers of partition 0 and 1
                    coordinator = log.backend.transactions()
                    real = coordinator._marker
                    calls = []

                    def cut(*args, real=real, calls=calls):
                        if calls:
                            raise _PowerCut
                        calls.append(args)
                        return real(*args)

                    coordinator._marker = cut
                    with pytest.raises(_PowerCut):
                        producer.commit_transaction()
            crash(log)
        power_loss(str(path), recorder, rng)
        with rebooted(), eventlog.open(path) as log:
            states, damaged = log.backend.transactions().store.scan()
            assert not damaged and [s.transactional_id for s in states] == ["pl"]
            with eventlog.Producer(log, transactional_id="pl") as successor:
                successor.init_transactions()
            seen = []
            for p in (0, 1):
                with eventlog.Consumer(log, isolation_level="read_committed") as c:
                    c.assign([TopicPartition("out", p)])
                    got = []
                    while batch := c.poll(timeout=0):
                        got.extend(r.value for r in batch)
                if undecided is not None and got == committed[p] + undecided[p]:
                    seen.append(True)       # the cut-off one, committed here
                else:
                    assert got == committed[p], (cycle, p, got, committed[p])
                    seen.append(False)
                log.topic("out").partition(p)._log._check()
            assert seen in ([True, True], [False, False]), (cycle, seen)   # all or nothing
            found = log.group_offsets("g") if "g" in log.groups() else {}
            assert found == offsets or seen == [True, True], (cycle, found, offsets)
