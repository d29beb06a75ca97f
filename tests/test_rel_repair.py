"""Damage found after open, and recovery that needs no free space (issue 18, items 1
and 7).

Within one kernel boot recovery trusts the head, so damage to published data (a writer
killed, then the last third of its segment zeroed; a flipped bit in a sealed segment)
is met only by readers. Each scenario here kills a writer process with ``kill -9``,
damages the files, and then checks that:

- a consumer gets exactly the records before the damage, then ``CorruptRecordError``
  naming ``eventlog verify --repair`` (never ``[]`` forever with lag: a silent stall);
- ``eventlog verify`` exits 3, ``verify --repair`` (another process) or
  ``log.check(fix=True)`` cuts the partition before the first bad batch, keeps the cut
  bytes in ``*.cut-*`` files and names the offsets lost, and every record before the
  damage is kept exactly;
- the lost offsets stay reserved: the consumer (still running) moves past them, lag
  reaches 0, the next append gets the old end offset, and the log reopens clean.

And a writer killed with ``kill -9`` while the disk (a real, full tmpfs) is full leaves
a log that opens, normally and read-only, before any space is freed.

``EVENTLOG_SOAK=N`` runs N times as many random damage cycles.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import eventlog
from eventlog import CorruptRecordError, TopicPartition
from eventlog._format import is_unwritten, read_header
from eventlog._head import Head
from eventlog._segment import file_name, list_bases
from tests.conftest import ROOT, small_filesystem, soak, spawn_python
from tests.faults import rebooted

STATS = {"kills": 0, "damages": 0, "repairs": 0, "records_checked": 0}
TP = TopicPartition("t", 0)

WRITER = """
import sys, eventlog
path, batches = sys.argv[1], int(sys.argv[2])
log = eventlog.open(path, fsync="never")
p = log.topic("t").partition(0)
print("ready", flush=True)
for i in range(batches):
    p.append([b"r%d.%d" % (i, j) for j in range(10)])
print("acked", flush=True)        # every batch above was acknowledged
sys.stdin.read()                  # keep the log open until killed
"""


def partition_dir(path: Path) -> Path:
    return path / "topics" / "t" / "0"


def write_and_kill(path: Path, batches: int, **topic: int) -> list[bytes]:
    """Create topic t, let a writer process append ``batches`` batches of 10 records,
    kill it with kill -9; return the acknowledged values in offset order."""
    with eventlog.open(path) as log:
        log.create_topic("t", **topic)
    proc = spawn_python(WRITER, str(path), str(batches), stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    assert proc.stdout.readline().strip() == "acked"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    STATS["kills"] += 1
    return [b"r%d.%d" % (i, j) for i in range(batches) for j in range(10)]


def published_batches(path: Path) -> list[tuple[Path, int, int, int]]:
    """(segment file, position, length, base offset) of every published batch, read
    from the files as they are (the head bounds the active segment)."""
    directory = partition_dir(path)
    head = Head(str(directory / "head"))
    try:
        st = head.read()
    finally:
        head.close()
    assert st is not None
    out = []
    for base in list_bases(str(directory)):
        seg = directory / file_name(base)
        data = seg.read_bytes()
        limit = st.active_position if base == st.active_base else len(data)
        pos = 0
        while pos < limit and not is_unwritten(data, pos, limit):
            h = read_header(data, pos, limit)
            out.append((seg, pos, h.length, h.base_offset))
            pos += h.length
    return out


def zero(seg: Path, start: int, end: int) -> None:
    with open(seg, "r+b") as fh:
        fh.seek(start)
        fh.write(bytes(end - start))


def poll_until_error(consumer: eventlog.Consumer, limit_s: float = 10.0
                     ) -> tuple[list[eventlog.Record], CorruptRecordError]:
    got: list[eventlog.Record] = []
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            got += consumer.poll(timeout=0.05)
        except CorruptRecordError as exc:
            return got, exc
    raise AssertionError(f"poll stalled: {len(got)} records, then [] with lag and no error")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    return subprocess.run([sys.executable, "-m", "eventlog", *args], capture_output=True,
                          text=True, timeout=120, env=env, check=False)


def cut_bytes(directory: Path) -> bytes:
    return b"".join((directory / n).read_bytes() for n in sorted(os.listdir(directory))
                    if ".cut-" in n)


def assert_repaired_and_usable(path: Path, log: eventlog.Log, consumer: eventlog.Consumer,
                               acked: list[bytes], lost_from: int) -> None:
    """After the repair: the good prefix exactly, the lost offsets reserved (the running
    consumer moves past them, the next append gets the old end), reopen clean."""
    end = len(acked)
    p = log.topic("t").partition(0)
    assert p.end_offset == end
    assert [r.value for r in p.read(0, max_records=10**6)] == acked[:lost_from]
    deadline = time.monotonic() + 10
    while log.group_lag("g").get(TP, end) and time.monotonic() < deadline:
        assert consumer.poll(timeout=0.05) == []     # nothing from the lost range
        consumer.commit({TP: consumer.position(TP)})
    assert log.group_lag("g") == {TP: 0}
    assert p.append([b"after"]) == end               # no offset handed out twice
    got = consumer.poll(timeout=5)
    assert [(r.offset, r.value) for r in got] == [(end, b"after")]
    consumer.close()
    p._log._check()
    STATS["records_checked"] += lost_from + 1
    log.close()
    with eventlog.open(path) as again:
        assert again.check().ok
        values = [r.value for r in again.topic("t").partition(0).read(0, max_records=10**6)]
        assert values == [*acked[:lost_from], b"after"]
        again.topic("t").partition(0)._log._check()


@pytest.mark.parametrize("where", ["mid-batch", "batch-boundary"])
@pytest.mark.parametrize("repair", ["cli", "api"])
def test_a_torn_tail_inside_one_boot_is_an_error_naming_the_repair_and_is_repaired(
        tmp_path, where, repair):
    path = tmp_path / "log"
    acked = write_and_kill(path, 100)
    batches = published_batches(path)
    seg = batches[-1][0]
    end = batches[-1][1] + batches[-1][2]
    start = end * 2 // 3                     # the last third of the active segment
    first_bad = next(b for b in batches if b[1] + b[2] > start)
    if where == "batch-boundary":
        first_bad = next(b for b in batches if b[1] >= start)
        start = first_bad[1]
    zero(seg, start, end)
    STATS["damages"] += 1
    damaged = seg.read_bytes()
    lost_from = first_bad[3]

    log = eventlog.open(path)                       # same boot: the head is trusted
    consumer = eventlog.Consumer(log, group_id="g", enable_auto_commit=False,
                                 value_deserializer="bytes")
    consumer.assign([TP])
    got, error = poll_until_error(consumer)
    assert [r.value for r in got] == acked[:lost_from]        # the good records, exactly
    assert "verify --repair" in str(error) and str(path) in str(error)
    with pytest.raises(CorruptRecordError, match="verify --repair"):
        consumer.poll(timeout=0.1)                  # again: never a silent []
    consumer.commit({TP: lost_from})

    assert run_cli("--log", str(path), "verify").returncode == 3
    if repair == "cli":                             # another process repairs
        result = run_cli("--log", str(path), "verify", "--repair")
        assert result.returncode == 0, result.stdout + result.stderr
        report = result.stdout
    else:
        checked = log.check(fix=True)
        assert checked.ok
        (problem,) = checked.problems
        assert problem.fixed and problem.kind == "corrupt"
        report = problem.message
    STATS["repairs"] += 1
    assert f"offsets {lost_from} to {len(acked) - 1} ({len(acked) - lost_from}) were lost" \
        in " ".join(report.split())
    # The cut bytes are kept (zeros need no keeping): whatever was not zero from the
    # first bad batch on.
    assert cut_bytes(partition_dir(path)).rstrip(b"\0") == \
        damaged[first_bad[1]:end].rstrip(b"\0")
    assert run_cli("--log", str(path), "verify").returncode == 0
    assert_repaired_and_usable(path, log, consumer, acked, lost_from)


def test_random_damage_after_kill_9_is_found_by_readers_and_repaired(tmp_path):
    """Zeroed tails, zeroed whole batches and single flipped bytes, in sealed and active
    segments: readers stop at the first bad batch with the repair named, the repair
    keeps exactly the records before it."""
    rng = random.Random(int(os.environ.get("EVENTLOG_SEED", "18")))
    for cycle in range(soak(6)):
        path = tmp_path / f"log{cycle}"
        acked = write_and_kill(path, rng.randint(20, 60), segment_bytes=2048,
                               index_interval_bytes=200)
        batches = published_batches(path)
        seg, pos, length, base = batches[rng.randrange(len(batches))]
        kind = rng.choice(["zero-from-batch", "zero-from-inside", "flip"])
        data_end = max(b[1] + b[2] for b in batches if b[0] == seg)
        if kind == "zero-from-batch":
            zero(seg, pos, data_end)
        elif kind == "zero-from-inside":
            zero(seg, pos + rng.randrange(1, length), data_end)
        else:
            at = pos + rng.randrange(length)
            with open(seg, "r+b") as fh:
                fh.seek(at)
                byte = fh.read(1)[0]
                fh.seek(at)
                fh.write(bytes([byte ^ (1 << rng.randrange(8))]))
        STATS["damages"] += 1

        log = eventlog.open(path)
        consumer = eventlog.Consumer(log, group_id="g", enable_auto_commit=False,
                                     value_deserializer="bytes")
        consumer.assign([TP])
        got, error = poll_until_error(consumer)
        assert [r.value for r in got] == acked[:base], (cycle, kind)
        assert "verify --repair" in str(error)
        consumer.commit({TP: base})
        report = log.check(fix=True)
        assert report.ok, report.problems
        assert [p.kind for p in report.problems] == ["corrupt"], report.problems
        assert f"offsets {base} to {len(acked) - 1}" in report.problems[0].message
        STATS["repairs"] += 1
        assert_repaired_and_usable(path, log, consumer, acked, base)


def test_a_repair_in_another_process_beside_a_running_writer(tmp_path):
    """The repair takes the writer lock and publishes a new layout: a writer process
    that has the log open throughout appends after it at offsets past the reserved
    ones; what it appended behind the damage before the repair was cut with it."""
    path = tmp_path / "log"
    acked = write_and_kill(path, 40)
    batches = published_batches(path)
    seg, pos, _, base = batches[len(batches) // 2]
    zero(seg, pos, batches[-1][1] + batches[-1][2])
    STATS["damages"] += 1
    appender = spawn_python("""
import sys, eventlog
with eventlog.open(sys.argv[1]) as log:
    p = log.topic("t").partition(0)
    for part in range(2):
        sys.stdin.readline()
        for i in range(20):
            print(p.append([b"w%d.%d" % (part, i)]), flush=True)
        print("done", flush=True)
""", str(path), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert appender.stdin is not None and appender.stdout is not None

    def appended() -> list[int]:
        appender.stdin.write("go\n")
        appender.stdin.flush()
        lines = [appender.stdout.readline().strip() for _ in range(21)]
        assert lines[-1] == "done", lines
        return [int(line) for line in lines[:-1]]

    before = appended()                             # behind the damage
    result = run_cli("--log", str(path), "verify", "--repair")
    assert result.returncode == 0, result.stdout + result.stderr
    lost = re.search(r"offsets (\d+) to (\d+)", " ".join(result.stdout.split()))
    assert lost is not None and int(lost.group(1)) == base
    end = int(lost.group(2)) + 1
    assert end == len(acked) + len(before)
    after = appended()                              # the same process, after the repair
    assert appender.wait(timeout=60) == 0
    assert before == list(range(len(acked), end)) and after == list(range(end, end + 20))
    with eventlog.open(path) as log:
        assert log.check().ok
        records = log.topic("t").partition(0).read(0, max_records=10**6)
        assert [r.value for r in records if r.offset < base] == acked[:base]
        assert [(r.offset, r.value) for r in records if r.offset >= base] == \
            [(o, b"w1.%d" % i) for i, o in enumerate(after)]
        log.topic("t").partition(0)._log._check()
    STATS["repairs"] += 1
    STATS["records_checked"] += len(records)


# -- a full disk ------------------------------------------------------------------------

FULL_DISK_WRITER = """
import sys, eventlog
log = eventlog.open(sys.argv[1], fsync="never")
p = log.topic("t").partition(0)
print("ready", flush=True)
sys.stdin.readline()              # the disk is full now, but for one segment's space
for i in range(3):
    p.append([b"x%d" % i])        # the segment's space fits; its index entries do not
print("acked", flush=True)
sys.stdin.read()
"""


def fill(mountpoint: Path, leave_bytes: int) -> None:
    """Fill the file system, then free ``leave_bytes`` (whole pages) again."""
    filler = mountpoint / "filler"
    try:
        with open(filler, "wb") as fh:
            while True:
                fh.write(b"\xff" * 4096)
                fh.flush()
    except OSError:
        pass
    os.truncate(filler, max(0, filler.stat().st_size - leave_bytes))


def test_a_writer_killed_on_a_full_disk_leaves_a_log_that_opens_without_space(tmp_path):
    with small_filesystem(1 << 20) as mountpoint:
        if mountpoint is None:
            pytest.fail("this test needs to mount a tmpfs (run as root, as CI does)")
        path = mountpoint / "log"
        with eventlog.open(path) as log:
            log.create_topic("t", segment_bytes=64 * 1024, index_interval_bytes=1)
        proc = spawn_python(FULL_DISK_WRITER, str(path), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert proc.stdin is not None and proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        fill(mountpoint, 64 * 1024)          # exactly the first reservation of the segment
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "acked"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        STATS["kills"] += 1
        assert os.statvfs(mountpoint).f_bfree == 0           # still full
        expected = [b"x0", b"x1", b"x2"]

        with eventlog.open(path, read_only=True) as log:
            assert [r.value for r in log.topic("t").partition(0).read(0)] == expected
        for reboot in (False, True):         # trusted recovery, and the scan after a reboot
            if reboot:
                with rebooted(), eventlog.open(path) as log:
                    values = [r.value for r in log.topic("t").partition(0).read(0)]
            else:
                with eventlog.open(path) as log:
                    values = [r.value for r in log.topic("t").partition(0).read(0)]
                    consumer = eventlog.Consumer(log, "t", value_deserializer="bytes")
                    got = consumer.poll(timeout=5)
                    consumer.close()
                    assert [r.value for r in got] == expected
            assert values == expected
        assert os.statvfs(mountpoint).f_bfree == 0
        assert not [n for n in os.listdir(partition_dir(path)) if ".tmp-" in n]

        os.unlink(mountpoint / "filler")     # space again: indexes get rebuilt
        with eventlog.open(path) as log:
            p = log.topic("t").partition(0)
            p.append([b"x3"])
            log.check(fix=True)
            assert log.check().ok
            assert [r.value for r in p.read(0)] == [*expected, b"x3"]
            p._log._check()
        STATS["records_checked"] += 4


def test_reading_needs_no_space_either(tmp_path):
    """Sealed segments whose indexes were lost: lookups on a full disk scan instead of
    failing on the rebuild they would like to write."""
    with small_filesystem(1 << 20) as mountpoint:
        if mountpoint is None:
            pytest.fail("this test needs to mount a tmpfs (run as root, as CI does)")
        path = mountpoint / "log"
        with eventlog.open(path) as log:
            p = log.create_topic("t", segment_bytes=1024, index_interval_bytes=64) \
                .partition(0)
            for i in range(40):
                p.append([b"v%03d" % i])
        directory = partition_dir(path)
        for name in os.listdir(directory):
            if name.endswith((".index", ".timeindex")):
                os.unlink(directory / name)
        fill(mountpoint, 0)
        with eventlog.open(path) as log:
            p = log.topic("t").partition(0)
            assert [r.value for r in p.read(25, max_records=3)] == [b"v025", b"v026", b"v027"]
            assert p._log.offset_for_time(0) == 0
            assert len(p.read(0, max_records=100)) == 40
        STATS["records_checked"] += 43
