"""Power loss: writes go through a layer that records what was fsynced; then unsynced
pages are dropped at random (some kept, some lost, some torn at a sector boundary),
files whose directory entry was never synced may vanish, and the log is recovered as
after a reboot. With fsync="always" no acknowledged record is lost; in every mode the
log comes back as an exact prefix of what was appended, never with garbage."""

from __future__ import annotations

import random

import pytest

import eventlog
from tests.conftest import soak
from tests.faults import SyncRecorder, crash, injected, power_loss, rebooted

STATS = {"cycles": 0, "pages_lost": 0, "pages_torn": 0, "files_lost": 0}


@pytest.mark.parametrize("fsync", ["always", "interval", "never"])
def test_power_loss_keeps_a_prefix_and_every_fsynced_record(tmp_path, fsync):
    rng = random.Random(hash(fsync) & 0xFFFF)
    lost_something = 0
    for cycle in range(soak(25)):
        path = tmp_path / f"{fsync}-{cycle}"
        recorder = SyncRecorder()
        acked: list[bytes] = []
        with injected(recorder):
            log = eventlog.open(path, fsync=fsync, fsync_interval_ms=2, segment_bytes=700,
                                index_interval_bytes=128)
            p = log.create_topic("t").partition(0)
            for i in range(rng.randint(1, 80)):
                batch = [b"c%d-r%d-%s" % (cycle, i, b"x" * rng.randint(0, 60))
                         for _ in range(rng.randint(1, 4))]
                p.append(batch)
                acked.extend(batch)
                if rng.random() < 0.05:
                    log.flush()
            if rng.random() < 0.5:
                log.flush()
            durable = p._log.state().recovery_offset
            crash(log)
        stats = power_loss(str(path), recorder, rng)
        for key in ("pages_lost", "pages_torn", "files_lost"):
            STATS[key] += stats[key]
        with rebooted(), eventlog.open(path) as log:
            p = log.topic("t").partition(0)
            values = [r.value for r in p.read(0, max_records=10**6, max_bytes=1 << 30)]
            assert values == acked[:len(values)], "recovered something that was not written"
            assert len(values) >= durable, "lost records that were fsynced"
            if fsync == "always":
                assert values == acked, "lost an acknowledged record"
            lost_something += len(values) < len(acked)
            p.append([b"after"])
            p._log._check()
        STATS["cycles"] += 1
    if fsync == "never":
        assert lost_something > 0   # the simulation did drop unsynced data
