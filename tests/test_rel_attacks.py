"""Faults a red-team pass found (issue 18, items 4, 5, 8 and 9), each with real
processes and real files: retention in one process while another reads, records
deleted under a consumer, a garbled head slot after ``kill -9``, and one flipped bit
in a time index.

The kill and damage tests are scaled by ``EVENTLOG_SOAK``; every loop counts work done
(rounds read, records acknowledged), never time spent, so a slow machine runs longer
instead of failing.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time

import pytest

import eventlog
from eventlog import TopicPartition
from tests.conftest import soak, spawn_python

STATS = {"rounds": 0, "kills": 0, "bits_flipped": 0, "records_checked": 0}
TP = TopicPartition("t", 0)

# A consumer in its own process: prints the last offset of every poll that returned
# records, and every error poll() raised (and goes on polling).
CONSUMER = """
import sys, time, eventlog
log = eventlog.open(sys.argv[1])
pause_s = float(sys.argv[3])  # between polls: a slow consumer falls behind
consumer = eventlog.Consumer(log, "t", group_id="g", auto_offset_reset="earliest",
                             value_deserializer="bytes", max_poll_records=int(sys.argv[2]),
                             heartbeat_interval_ms=50)
print("ready", flush=True)
while True:
    try:
        records = consumer.poll(timeout=0.5)
    except Exception as exc:
        print("error", type(exc).__name__, str(exc).replace("\\n", " "), flush=True)
        continue
    for r in records:
        if r.value.rstrip() != b"%d" % r.offset:
            print("error wrong record", r.offset, r.value, flush=True)
    if records:
        print("at", records[-1].offset, flush=True)
    time.sleep(pause_s)
"""


class Reader:
    """A ``CONSUMER`` process and what it printed."""

    def __init__(self, path, max_poll_records, pause_s=0.0):
        self.proc = spawn_python(CONSUMER, str(path), str(max_poll_records), str(pause_s),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.errors: list[str] = []
        self.offset = -1
        assert self._line() == "ready"

    def _line(self):
        line = self.proc.stdout.readline()
        assert line.endswith("\n"), f"the consumer died: {self.proc.stderr.read()}"
        return line.strip()

    def wait_for(self, offset):
        """Read the consumer's output until it returned ``offset``."""
        while self.offset < offset:
            line = self._line()
            if line.startswith("error"):
                self.errors.append(line)
            elif line.startswith("at "):
                self.offset = int(line.split()[1])

    def deleted_files(self, directory):
        """Files under ``directory`` that were deleted but are still held open or
        mapped by the consumer (their space is not freed while it holds them)."""
        pid = self.proc.pid
        held = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        with open(f"/proc/{pid}/maps") as fh:
            held += [line.split(None, 5)[-1].strip() for line in fh if "/" in line]
        return sorted({f for f in held if f.startswith(directory) and f.endswith("(deleted)")})

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()


def append_numbered(partition, n, size=0):
    """Append ``n`` one-record batches whose values are their offsets (padded)."""
    for _ in range(n):
        offset = partition.end_offset
        partition.append([b"%d" % offset + b" " * size if size else b"%d" % offset])


def test_retention_frees_the_space_of_segments_another_process_was_reading(log_dir):
    """Item 4: the reader dropped nothing it had mapped, so deleted segments kept their
    space (a 24 MiB disk filled up under a 256 KiB retention)."""
    with eventlog.open(log_dir) as log:
        log.create_topic("t", segment_bytes=4096, retention_bytes=16384)
    reader = Reader(log_dir, 500)
    try:
        with eventlog.open(log_dir) as log:
            partition = log.topic("t").partition(0)
            directory = partition._log.directory
            deleted = 0
            for _ in range(soak(30)):   # in lockstep: the reader maps every segment
                before = set(os.listdir(directory))
                append_numbered(partition, 20, size=150)  # a segment: retention deletes one
                deleted += len({n for n in before if n.endswith(".log")}
                               - set(os.listdir(directory)))
                reader.wait_for(partition.end_offset - 1)
                STATS["rounds"] += 1
            assert deleted >= soak(20), "retention should have deleted segments constantly"
            # One more record, no roll: the poll that returns it comes after the last
            # deletion, and after it nothing deleted may still be held.
            partition.append([b"%d" % partition.end_offset])
            reader.wait_for(partition.end_offset - 1)
            assert reader.deleted_files(directory) == []
            assert reader.errors == []
    finally:
        reader.stop()


def test_records_deleted_under_a_consumer_in_another_process_reset_it(log_dir):
    """Item 5: ``delete_records`` racing a reader made poll() raise
    ``OffsetOutOfRangeError`` (or a spurious ``CorruptRecordError``) instead of applying
    ``auto_offset_reset``."""
    with eventlog.open(log_dir) as log:
        log.create_topic("t", segment_bytes=512)
    reader = Reader(log_dir, 3, pause_s=0.001)
    try:
        with eventlog.open(log_dir) as log:
            partition = log.topic("t").partition(0)
            for _ in range(soak(3000)):
                append_numbered(partition, 2, size=40)
                log.delete_records(TP, max(0, partition.end_offset - 3))
                STATS["rounds"] += 1
            partition.append([b"%d" % partition.end_offset])
            reader.wait_for(partition.end_offset - 1)   # it reset and caught up
            assert reader.errors == []
            assert log.check().ok
    finally:
        reader.stop()


# A writer in its own process: one-record batches whose values are their offsets;
# prints each offset once its append returned (acknowledged).
WRITER = """
import sys, eventlog
log = eventlog.open(sys.argv[1], fsync=sys.argv[2])
partition = log.topic("t").partition(0)
while True:
    offset = partition.append([b"%d" % partition.end_offset])
    print(offset, flush=True)
"""


def kill_writer_after(path, fsync, acks):
    """Run ``WRITER`` until it acknowledged ``acks`` more records, then ``kill -9`` it.
    Returns the last offset it acknowledged."""
    writer = spawn_python(WRITER, str(path), fsync, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)
    last = -1
    for _ in range(acks):
        line = writer.stdout.readline()
        assert line.endswith("\n"), writer.stderr.read()
        last = int(line)
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    writer.stdout.close()
    writer.stderr.close()
    STATS["kills"] += 1
    return last


def garble_newest_head_slot(directory, rng):
    """Flip a few random bits of the head slot holding the newest state."""
    from eventlog._head import _SLOT_BYTES, _SLOT_OFFSETS

    path = os.path.join(directory, "head")
    with open(path, "r+b") as fh:
        data = bytearray(fh.read())
        seqs = [int.from_bytes(data[off:off + 8], "little") for off in _SLOT_OFFSETS]
        newest = _SLOT_OFFSETS[seqs.index(max(seqs))]
        for _ in range(rng.randint(1, 8)):
            data[newest + rng.randrange(_SLOT_BYTES)] ^= 1 << rng.randrange(8)
        fh.seek(0)
        fh.write(data)
        STATS["bits_flipped"] += 1


def assert_exact(partition, acked):
    """Every acknowledged record is there, each offset once, each value its offset
    (the writer's) or ``b"x"`` (this test's)."""
    end = partition.end_offset
    assert end > acked, f"acknowledged offset {acked} lost (end {end})"
    records = partition.read(0, max_records=end)
    assert [r.offset for r in records] == list(range(end))
    assert all(r.value in (b"%d" % r.offset, b"x") for r in records)
    STATS["records_checked"] += len(records)


def append_after(partition, acked):
    """Append ``b"x"``: it must get a new offset, after every acknowledged one."""
    offset = partition.append([b"x"])
    assert offset > acked, f"offset {offset} handed out twice"
    assert partition.read(offset, max_records=1)[0].value == b"x"


def test_a_garbled_newest_head_slot_after_kill_9_loses_no_acknowledged_record(log_dir):
    """Item 8: reopening fell back to the older slot and moved the last acknowledged
    record into a .cut-* file; the next append reused its offset."""
    rng = random.Random(int(os.environ.get("EVENTLOG_SEED", "8")))
    with eventlog.open(log_dir) as log:
        log.create_topic("t", segment_bytes=2048)
    for cycle in range(soak(12)):
        fsync = ("never", "interval", "always")[cycle % 3]
        acked = kill_writer_after(log_dir, fsync, rng.randint(1, 40))
        garble_newest_head_slot(os.path.join(log_dir, "topics", "t", "0"), rng)
        with eventlog.open(log_dir) as log:       # recovery runs here
            partition = log.topic("t").partition(0)
            assert_exact(partition, acked)
            assert log.check().ok
            append_after(partition, acked)
        STATS["rounds"] += 1


def test_a_garbled_head_slot_is_reported_and_kept_while_the_log_stays_open(log_dir):
    """Item 8, without a reopen: the next writer keeps the records the lost state
    published, and check() reports the damaged slot."""
    rng = random.Random(int(os.environ.get("EVENTLOG_SEED", "9")))
    # fsync="never": no flusher thread. With "interval", the flusher of this log syncs
    # the partition append_after dirtied; its sync takes the writer lock, and a writer
    # taking the lock repairs a damaged slot (cut_debris keeps the lost state's records
    # and publishes over the slot), so whenever its round fell between the garbling
    # and check(), there was no damage left to report (about one run in four).
    with eventlog.open(log_dir, fsync="never") as log:
        log.create_topic("t", segment_bytes=2048)
        partition = log.topic("t").partition(0)   # open all along: no recovery runs
        for _ in range(soak(6)):
            acked = kill_writer_after(log_dir, "never", rng.randint(1, 40))
            garble_newest_head_slot(partition._log.directory, rng)
            report = log.check()
            kinds = {p.kind for p in report.problems}
            assert "head" in kinds, report.problems
            assert kinds <= {"head", "index"}, report.problems  # (an entry written after)
            append_after(partition, acked)
            assert_exact(partition, acked)
            assert log.check().ok
            STATS["rounds"] += 1



def test_a_flush_between_the_garbling_and_check_repairs_the_slot_and_keeps_records(log_dir):
    """What the flusher of an ``fsync="interval"`` log did to the test above, on
    purpose: a sync takes the writer lock, so it is the next writer; it keeps what the
    lost state published and writes over the damaged slot, and check() then finds
    nothing left to report."""
    rng = random.Random(int(os.environ.get("EVENTLOG_SEED", "10")))
    with eventlog.open(log_dir, fsync="never") as log:
        log.create_topic("t", segment_bytes=2048)
        partition = log.topic("t").partition(0)
        for _ in range(soak(3)):
            # At least two acks: the older slot then holds one of the writer's states,
            # past the durable point, so the flush has something to sync and locks.
            acked = kill_writer_after(log_dir, "never", rng.randint(2, 40))
            garble_newest_head_slot(partition._log.directory, rng)
            log.flush()
            assert_exact(partition, acked)
            assert "head" not in {p.kind for p in log.check().problems}
            append_after(partition, acked)
            assert_exact(partition, acked)
            assert log.check().ok
            STATS["rounds"] += 1

def _snapshot(root):
    files = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            with open(os.path.join(dirpath, name), "rb") as fh:
                files[os.path.join(dirpath, name)] = fh.read()
    return files


def _restore(root, files):
    for dirpath, _, names in os.walk(root):
        for name in names:
            if os.path.join(dirpath, name) not in files:
                os.unlink(os.path.join(dirpath, name))
    for path, data in files.items():
        if not os.path.exists(path) or open(path, "rb").read() != data:
            with open(path, "wb") as fh:
                fh.write(data)


@pytest.mark.parametrize("order", ["increasing", "shuffled"])
def test_no_bit_flip_in_a_time_index_makes_retention_or_a_time_lookup_wrong(tmp_path,
                                                                             order):
    """Item 9: one flipped bit in a sealed segment's .timeindex made retention (one day)
    delete fresh records and offset_for_time skip records. Every bit of every sealed
    time index is flipped in turn (exhaustive, like test_rel_corruption.py)."""
    root = tmp_path / "log"
    rng = random.Random(order)
    now = int(time.time() * 1000)
    stamps = [now - 3_600_000 + 1000 * i for i in range(40)]   # all within the day
    if order == "shuffled":
        rng.shuffle(stamps)
    with eventlog.open(root) as log:
        partition = log.create_topic("t", segment_bytes=1024, index_interval_bytes=128,
                                     retention_ms=86_400_000).partition(0)
        for offset, ts in enumerate(stamps):
            partition.append([b"%d" % offset], timestamps_ms=[ts])
        directory = partition._log.directory
        active = partition._log.state().active_base
    targets = [*sorted(set(stamps)), max(stamps) + 1]
    truth = {t: next((o for o, ts in enumerate(stamps) if ts >= t), None) for t in targets}
    pristine = _snapshot(root)
    names = sorted(n for n in os.listdir(directory) if n.endswith(".timeindex")
                   and int(n[:20]) != active)
    assert len(names) >= 3
    for name in names:
        path = os.path.join(directory, name)
        for byte in range(len(pristine[path])):
            for bit in range(8):
                damaged = bytearray(pristine[path])
                damaged[byte] ^= 1 << bit
                with open(path, "wb") as fh:
                    fh.write(damaged)
                with eventlog.open(root) as log:
                    where = (name, byte, bit)
                    assert not log.check().ok, where   # the index disagrees with the data
                    assert log.enforce_retention() == 0, where   # nothing is a day old
                    partition = log.topic("t").partition(0)
                    assert partition.start_offset == 0, where
                    assert {t: partition.offset_for_time(t) for t in targets} == truth, where
                _restore(root, pristine)
                STATS["bits_flipped"] += 1
