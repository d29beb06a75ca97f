"""kill -9 loop: a child appends with fsync="never", the parent kills it at random
moments, reopens the log, and checks it is an exact prefix of what was appended and
holds every record the child reported as appended.

50 cycles by default; ``EVENTLOG_SOAK=N`` runs 50*N.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time

import eventlog
from tests.conftest import soak, spawn_python

CHILD = """
import sys, eventlog
log = eventlog.open(sys.argv[1], fsync="never")
p = log.topic("t").partition(0)
i = p.end_offset
while True:
    n = 1 + i % 4
    p.append([b"%d" % (i + k) for k in range(n)])
    i += n
    sys.stdout.write("%d\\n" % i)
    sys.stdout.flush()
"""


def _run_and_kill(log_dir, rng):
    child = spawn_python(CHILD, str(log_dir), stdout=-1, stderr=-1)
    reported = [0]

    def collect():
        for line in child.stdout:
            if line.endswith("\n"):
                reported[0] = int(line)

    reader = threading.Thread(target=collect)
    reader.start()
    time.sleep(rng.uniform(0.05, 0.45))
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    reader.join()
    child.stderr.close()
    return reported[0]


def test_kill_9_loop_leaves_an_exact_prefix(log_dir):
    rng = random.Random(int(os.environ.get("EVENTLOG_SEED", "0")) or None)
    with eventlog.open(log_dir) as log:
        log.create_topic("t", segment_bytes=4096, index_interval_bytes=256)
    verified = 0
    cycles = soak(50)
    segments = 0
    cycle = 0
    # The premise is constant rolling: a loaded machine appends less per cycle, so the
    # loop goes on (up to three times as long) until more than 100 segments exist.
    while cycle < cycles or (segments <= 100 and cycle < 3 * cycles):
        reported = _run_and_kill(log_dir, rng)
        with eventlog.open(log_dir) as log:
            p = log.topic("t").partition(0)
            end = p.end_offset
            assert end >= reported, f"cycle {cycle}: lost acknowledged records"
            assert end >= verified
            offset = verified
            while offset < end:
                batch = p.read(offset, max_records=5000, max_bytes=1 << 22)
                assert [r.value for r in batch] == [b"%d" % i for i in
                                                    range(offset, offset + len(batch))]
                offset += len(batch)
            verified = end
            if cycle % 10 == 9 or cycle == cycles - 1:
                p._log._check()
            segments = sum(n.endswith(".log") for n in os.listdir(p._log.directory))
        cycle += 1
    assert verified > 0
    assert segments > 100, "the loop should roll segments constantly"
