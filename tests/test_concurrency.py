"""Several threads and processes on one log directory, with real processes."""

from __future__ import annotations

import errno
import json
import os
import signal
import threading
import time

import pytest

import eventlog
from eventlog import ClosedError, LogDirectoryError
from tests.conftest import run_python, small_filesystem, spawn_python


def test_threads_appending_to_one_partition_lose_nothing(log):
    p = log.create_topic("t").partition(0)
    per_thread = 200

    def work(tag):
        for i in range(per_thread):
            p.append([b"%d:%d" % (tag, i)])

    threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    records = p.read(0, max_records=10_000)
    assert [r.offset for r in records] == list(range(6 * per_thread))
    seen: dict[int, list[int]] = {}
    for r in records:
        tag, i = map(int, r.value.split(b":"))
        seen.setdefault(tag, []).append(i)
    assert seen == {t: list(range(per_thread)) for t in range(6)}
    p._log._check()


WRITER = """
import sys, eventlog
path, tag, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with eventlog.open(path, segment_bytes=2048) as log:
    p = log.topic("t").partition(0)
    for i in range(count):
        p.append([b"%d:%d" % (tag, i)] * (1 + i % 3))
"""


def test_processes_appending_to_one_partition_lose_nothing(log_dir):
    with eventlog.open(log_dir, segment_bytes=2048) as log:
        log.create_topic("t")
    count = 150
    procs = [spawn_python(WRITER, str(log_dir), str(tag), str(count)) for tag in range(4)]
    for proc in procs:
        assert proc.wait(timeout=120) == 0
    with eventlog.open(log_dir) as log:
        p = log.topic("t").partition(0)
        records = p.read(0, max_records=100_000, max_bytes=1 << 30)
        assert [r.offset for r in records] == list(range(p.end_offset))
        batches: dict[int, list[int]] = {}
        for r in records:
            tag, i = map(int, r.value.split(b":"))
            batches.setdefault(tag, []).append(i)
        for tag in range(4):
            expected = [i for i in range(count) for _ in range(1 + i % 3)]
            assert batches[tag] == expected  # every record, in each writer's order
        p._log._check()


READER = """
import sys, time, eventlog
path, want = sys.argv[1], int(sys.argv[2])
with eventlog.open(path) as log:
    p = log.topic("t").partition(0)
    print("ready", flush=True)
    got, offset, deadline = [], 0, time.monotonic() + 60
    while len(got) < want and time.monotonic() < deadline:
        batch = p.read(offset)
        got += [r.value.decode() for r in batch]
        offset += len(batch)
        time.sleep(0.001)
    print(",".join(got), flush=True)
"""


def test_reader_in_another_process_sees_new_records_without_reopening(log_dir):
    with eventlog.open(log_dir, segment_bytes=300) as log:
        p = log.create_topic("t").partition(0)
        reader = spawn_python(READER, str(log_dir), "40", stdout=-1)
        assert reader.stdout.readline().strip() == "ready"
        for i in range(40):
            p.append([b"r%d" % i])
            time.sleep(0.002)
        out, _ = reader.communicate(timeout=60)
        assert out.strip().split(",") == ["r%d" % i for i in range(40)]


HOLDER = """
import sys, time, eventlog
with eventlog.open(sys.argv[1]) as log:
    plog = log.topic("t").partition(0)._log
    with plog._locked():
        print("locked", flush=True)
        time.sleep(600)
"""


def test_writer_lock_is_released_when_its_owner_is_killed(log_dir):
    with eventlog.open(log_dir) as log:
        p = log.create_topic("t").partition(0)
        holder = spawn_python(HOLDER, str(log_dir), stdout=-1)
        try:
            assert holder.stdout.readline().strip() == "locked"
            done = threading.Event()
            thread = threading.Thread(target=lambda: (p.append([b"x"]), done.set()))
            thread.start()
            assert not done.wait(0.3), "append went through while another process held the lock"
            os.kill(holder.pid, signal.SIGKILL)
            assert done.wait(10), "the lock of a killed process was not released"
            thread.join()
        finally:
            holder.kill()
            holder.wait()
        assert [r.value for r in p.read(0)] == [b"x"]


def _disk_full_scenario(log_dir):
    with eventlog.open(log_dir, segment_bytes=1 << 20, fsync="never") as log:
        p = log.create_topic("t").partition(0)
        written = 0
        with pytest.raises(LogDirectoryError) as info:
            while True:
                p.append([os.urandom(1024) for _ in range(64)])
                written += 64
        assert info.value.errno == errno.ENOSPC
        assert p.end_offset == written
        assert len(p.read(0, max_records=written, max_bytes=1 << 30)) == written
        p._log._check()
        return written


def test_full_disk_raises_enospc_and_leaves_the_log_intact(tmp_path, monkeypatch):
    with small_filesystem(3 << 20) as mountpoint:
        if mountpoint is not None:
            log_dir = mountpoint / "log"
            written = _disk_full_scenario(log_dir)
        else:  # no permission to mount: make the allocator report a full disk instead
            real = os.posix_fallocate
            budget = {"bytes": 2 << 20}

            def fallocate(fd, offset, length):
                budget["bytes"] -= length
                if budget["bytes"] < 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                return real(fd, offset, length)

            monkeypatch.setattr(os, "posix_fallocate", fallocate)
            log_dir = tmp_path / "log"
            written = _disk_full_scenario(log_dir)
            monkeypatch.setattr(os, "posix_fallocate", real)
        assert written > 0
        with eventlog.open(log_dir) as log:  # reopens and recovers cleanly
            p = log.topic("t").partition(0)
            assert p.end_offset == written


def test_a_log_inherited_through_fork_refuses_use(log_dir):
    with eventlog.open(log_dir) as log:
        log.create_topic("t")
        pid = os.fork()
        if pid == 0:  # child
            code = 0
            try:
                log.topic("t")
                code = 1
            except ClosedError:
                code = 0
            except BaseException:
                code = 2
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert log.topic("t").name == "t"  # the parent is unaffected


def test_first_opener_recovers_while_later_openers_wait(log_dir):
    with eventlog.open(log_dir) as log:
        log.create_topic("t").partition(0).append([b"a"])
    code = """
import sys, json, eventlog
with eventlog.open(sys.argv[1]) as log:
    print(json.dumps([log.topic("t").partition(0).end_offset]))
"""
    outs = [run_python(code, str(log_dir)).stdout for _ in range(2)]
    assert [json.loads(o) for o in outs] == [[1], [1]]
