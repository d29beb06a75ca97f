"""Read-only access (issue 18, item 2; API.md "Read-only access").

``eventlog.open(path, read_only=True)`` never creates, writes or locks a file: it works
on a read-only mount and beside running writers, and producing, committing or changing
anything raises ``ReadOnlyError``. The CLI's reading commands use it, and a normal
open of a log on a read-only file system says that the file system is read-only.

The read-only file system is real: a read-only bind mount of the log directory (root,
as CI runs). Where mounting is not permitted the directory tree is made read-only with
``chmod`` instead, which is weaker (it gives EACCES, not EROFS), and the tests that need
EROFS are skipped there.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import eventlog
from eventlog import EventLogError, TopicPartition
from tests.conftest import ROOT, spawn_python

TP = TopicPartition("t", 0)


@contextlib.contextmanager
def read_only_view(source: Path) -> Iterator[tuple[Path, str]]:
    """``source`` seen through a read-only bind mount ("mount"), or where mounting is
    not permitted, ``source`` itself made read-only with chmod ("chmod")."""
    mnt = Path(tempfile.mkdtemp(prefix="eventlog-ro-"))

    def run(*args: str) -> bool:
        return subprocess.run(args, capture_output=True, check=False).returncode == 0

    if run("mount", "--bind", str(source), str(mnt)):
        if run("mount", "-o", "remount,bind,ro", str(mnt)):
            try:
                yield mnt, "mount"
            finally:
                run("umount", "-l", str(mnt))
                mnt.rmdir()
            return
        run("umount", "-l", str(mnt))
    mnt.rmdir()
    modes = {}
    for root, dirs, files in os.walk(source):
        for name in [*dirs, *files, ""]:
            path = os.path.join(root, name)
            modes[path] = os.stat(path).st_mode
            os.chmod(path, modes[path] & ~0o222)
    try:
        yield source, "chmod"
    finally:
        for path, mode in modes.items():
            os.chmod(path, mode)


def digest(directory: Path) -> str:
    """Names, sizes, contents and modification times of every file and directory."""
    h = hashlib.sha256()
    for root, dirs, files in sorted(os.walk(directory)):
        for name in sorted(dirs + files):
            path = os.path.join(root, name)
            st = os.stat(path)
            h.update(f"{path}:{st.st_size}:{st.st_mtime_ns}".encode())
            if name in files:
                with open(path, "rb") as fh:
                    h.update(fh.read())
    return h.hexdigest()


def build(path: Path) -> list[int]:
    """A log with two topics, a few segments, and a group that committed: returns the
    values of topic t, partition 0."""
    with eventlog.open(path) as log:
        log.create_topic("t", partitions=2, segment_bytes=1024, retention_bytes=1 << 30)
        log.create_topic("c", cleanup_policy="compact")
        with eventlog.Producer(log) as producer:
            for i in range(300):
                producer.send("t", i, key=i % 7)
        with eventlog.Consumer(log, "t", group_id="g", enable_auto_commit=False) as c:
            got = 0
            while got < 100:
                got += len(c.poll(timeout=1, max_records=100 - got))
            c.commit()
        return [r.value for r in log.topic("t").partition(0).read(0, max_records=1000)]


def run_cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    return subprocess.run([sys.executable, "-m", "eventlog", *args], input=stdin,
                          capture_output=True, text=True, timeout=60, env=env, check=False)


def test_a_log_on_a_read_only_file_system_reads_with_read_only(tmp_path):
    values = build(tmp_path / "log")
    with read_only_view(tmp_path) as (view, _):
        path = view / "log"
        before = digest(path)
        with eventlog.open(path, read_only=True) as log:
            assert log.read_only
            assert log.topics() == ["c", "t"]
            p = log.topic("t").partition(0)
            assert [r.value for r in p.read(0, max_records=1000)] == values
            assert len(p.read(37, max_records=3)) >= 1          # an index lookup
            assert p.offset_for_time(0) == 0
            assert sum(d.end_offset for d in log.describe_topic("t").partitions) == 300
            assert log.groups() == ["g"]
            assert sum(log.group_offsets("g").values()) == 100
            assert sum(log.group_lag("g").values()) == 200
            assert log.describe_group("g").state == "Empty"
            assert log.check().ok
            consumer = eventlog.Consumer(log, "t")      # no group: reads only
            got = []
            deadline = time.monotonic() + 10
            while len(got) < 300 and time.monotonic() < deadline:
                got += consumer.poll(timeout=0.1)
            consumer.close()
            assert sorted(r.value for r in got) == list(range(300))
            assert log.metrics().partition("t", 0).end_offset == len(values)
        assert digest(path) == before


def test_every_write_on_a_read_only_log_raises_read_only_error(tmp_path):
    build(tmp_path / "log")
    with read_only_view(tmp_path) as (view, _):
        path = view / "log"
        before = digest(path)
        with eventlog.open(path, read_only=True) as log:
            t = log.topic("t")
            attempts = {
                "producer": lambda: eventlog.Producer(log),
                "append": lambda: t.partition(0).append([b"x"]),
                "create_topic": lambda: log.create_topic("new"),
                "delete_topic": lambda: log.delete_topic("t"),
                "alter_topic": lambda: log.alter_topic("t", retention_ms=5),
                "add_partitions": lambda: t.add_partitions(1),
                "delete_records": lambda: log.delete_records(TP, 5),
                "enforce_retention": log.enforce_retention,
                "compact": log.compact,
                "reset_group_offsets": lambda: log.reset_group_offsets(
                    "g", to_earliest=True, dry_run=True),
                "delete_group": lambda: log.delete_group("g"),
                "repair": lambda: log.check(fix=True),
            }
            for name, attempt in attempts.items():
                with pytest.raises(eventlog.ReadOnlyError, match="read_only=True"):
                    attempt()
                    pytest.fail(f"{name} did not raise")
            with eventlog.Consumer(log, group_id="g", enable_auto_commit=False) as c:
                c.assign([TP])
                assert c.position(TP) == log.group_offsets("g")[TP]   # reads commits
                c.poll(timeout=0.1)
                with pytest.raises(eventlog.ReadOnlyError):
                    c.commit()                                          # committing
            with pytest.raises(eventlog.ReadOnlyError, match="joining consumer group"):
                eventlog.Consumer(log, "t", group_id="g")               # joining a group
            assert issubclass(eventlog.ReadOnlyError, EventLogError)
            assert log.topics() == ["c", "t"]
        assert digest(path) == before


def test_read_only_needs_an_existing_log_and_creates_nothing(tmp_path):
    with pytest.raises(eventlog.LogDirectoryError) as info:
        eventlog.open(tmp_path / "missing", read_only=True)
    assert info.value.errno == errno.ENOENT
    (tmp_path / "empty").mkdir()
    with pytest.raises(eventlog.LogDirectoryError):
        eventlog.open(tmp_path / "empty", read_only=True)
    assert sorted(os.listdir(tmp_path)) == ["empty"]
    assert os.listdir(tmp_path / "empty") == []
    with pytest.raises(eventlog.InvalidConfigError):
        eventlog.open(tmp_path / "x", read_only="yes")


def test_a_normal_open_of_a_read_only_file_system_says_so(tmp_path):
    build(tmp_path / "log")
    with read_only_view(tmp_path) as (view, how):
        if how != "mount":
            pytest.skip("needs a read-only mount (EROFS); chmod gives EACCES")
        with pytest.raises(eventlog.LogDirectoryError) as info:
            eventlog.open(view / "log")
        assert info.value.errno == errno.EROFS
        assert "read-only file system" in str(info.value)
        assert "read_only=True" in str(info.value)
        assert "not writable by this user" not in str(info.value)
        with pytest.raises(eventlog.LogDirectoryError) as info:
            eventlog.open(view / "fresh")               # creating one there, neither
        assert info.value.errno == errno.EROFS
        result = run_cli("--log", str(view / "log"), "produce", "t", stdin="1\n")
        assert result.returncode == 1
        assert "read-only file system" in result.stderr
        assert "not writable by this user" not in result.stderr


def test_the_cli_reading_commands_work_on_a_read_only_file_system(tmp_path):
    build(tmp_path / "log")
    with read_only_view(tmp_path) as (view, _):
        path = str(view / "log")
        before = digest(view / "log")
        for command, expect in [
                (["topics", "list"], "t "),
                (["topics", "describe", "t"], "PARTITION"),
                (["consume", "t", "-p", "0", "-n", "3"], "consumed 3 records"),
                (["groups", "list"], "g "),
                (["groups", "describe", "g"], "COMMITTED"),
                (["groups", "lag"], "total lag 200"),
                (["verify"], "OK"),
                (["dump", os.path.join(path, "topics", "t", "0")], "summary"),
        ]:
            result = run_cli("--log", path, *command)
            assert result.returncode == 0, (command, result.stderr)
            assert expect in result.stdout + result.stderr, (command, result.stdout)
            assert "Traceback" not in result.stderr
        for command in (["verify", "--repair"], ["consume", "t", "--group", "g", "-n", "1"],
                        ["topics", "create", "u"]):
            result = run_cli("--log", path, *command)
            assert result.returncode == 1, (command, result.stderr)
            assert result.stderr.startswith("eventlog: error:"), result.stderr
        assert digest(view / "log") == before


READER = """
import json, os, sys, time
sys.path.insert(0, sys.argv[2])
import eventlog
from tests.faults import injected

CHANGES = {"write", "pwrite", "ftruncate", "truncate", "posix_fallocate", "replace",
           "rename", "unlink", "remove", "rmdir", "mkdir", "makedirs", "fsync",
           "fdatasync", "link", "symlink", "chmod", "utime"}

class Recorder:
    '''``os`` for eventlog's modules, recording every call that could change a file.'''
    def __init__(self):
        self.calls = []
    def __getattr__(self, name):
        real = getattr(os, name)
        if name == "open":
            def opener(path, flags, *rest, **kw):
                if flags & (os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_WRONLY):
                    self.calls.append(["open", str(path), flags])
                return real(path, flags, *rest, **kw)
            return opener
        if name in CHANGES:
            def change(*args, **kw):
                self.calls.append([name, *map(str, args[:1])])
                return real(*args, **kw)
            return change
        return real

def my_locks():
    pid = str(os.getpid())
    with open("/proc/locks") as fh:
        return [line for line in fh if line.split()[4] == pid]

recorder = Recorder()
values, locks = [], []
with injected(recorder):
    with eventlog.open(sys.argv[1], read_only=True) as log:
        consumer = eventlog.Consumer(log, "t", value_deserializer="bytes")
        print("reading", flush=True)
        deadline = time.monotonic() + 60
        while len(values) < int(sys.argv[3]) and time.monotonic() < deadline:
            got = consumer.poll(timeout=0.1)
            values += [r.value.decode() for r in got]
            if got:
                locks += my_locks()
                log.describe_topic("t")
                if "w" in log.groups():
                    log.group_lag("w")
        consumer.close()
        locks += my_locks()
print(json.dumps({"values": values, "calls": recorder.calls, "locks": locks}))
"""

WRITER = """
import sys, time, eventlog
with eventlog.open(sys.argv[1], fsync="interval", fsync_interval_ms=20) as log:
    p = log.topic("t").partition(0)
    consumer = eventlog.Consumer(log, "t", group_id="w", enable_auto_commit=False,
                                 value_deserializer="bytes")
    for i in range(int(sys.argv[2])):
        p.append([b"%d" % (i * 5 + j) for j in range(5)])
        print(i, flush=True)
        if consumer.poll(timeout=0):
            consumer.commit()
        time.sleep(0.002)
    sys.stdin.read()
"""


def test_read_only_beside_running_writers_creates_writes_and_locks_nothing(tmp_path):
    """A writer process appends (rolling segments) and commits for a group, then is
    killed with kill -9; a reader process with a read-only log follows it, woken by
    the notify counter it polls, and makes no call that creates or changes a file and
    holds no lock at any time."""
    path = tmp_path / "log"
    with eventlog.open(path) as log:
        log.create_topic("t", segment_bytes=2048, index_interval_bytes=100)
    batches = 300
    reader = spawn_python(READER, str(path), str(ROOT), str(batches * 5),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert reader.stdout is not None
    assert reader.stdout.readline().strip() == "reading"
    writer = spawn_python(WRITER, str(path), str(batches), stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE)
    assert writer.stdout is not None
    acked = -1
    for line in writer.stdout:
        acked = int(line)
        if acked == batches - 1:
            break
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    assert acked == batches - 1, "the writer died early"
    out, err = reader.communicate(timeout=60)
    assert reader.returncode == 0, err
    result = json.loads(out)
    assert result["calls"] == [], result["calls"][:5]
    assert result["locks"] == []
    assert result["values"] == [str(i) for i in range(batches * 5)]


MEMBER = """
import sys, eventlog
log = eventlog.open(sys.argv[1])
consumer = eventlog.Consumer(log, "t", group_id="g")
consumer.poll(timeout=0.5)
print("joined", flush=True)
sys.stdin.read()  # stay a live member until the parent closes stdin
consumer.close()
log.close()
"""


def test_a_read_only_log_judges_group_members_alive_without_taking_a_lock(
        tmp_path, monkeypatch):
    from eventlog import _group

    path = tmp_path / "log"
    with eventlog.open(path) as log:
        log.create_topic("t")
    member = spawn_python(MEMBER, str(path), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert member.stdout.readline().strip() == "joined"
        taken = []
        real_flock = _group.fcntl.flock
        monkeypatch.setattr(_group.fcntl, "flock",
                            lambda fd, op: (taken.append(op), real_flock(fd, op))[1])
        with eventlog.open(path, read_only=True) as log:
            (described,) = log.describe_group("g").members
            assert described.alive
            assert log.metrics().group("g").members == 1
        assert taken == []   # judged from /proc/locks: no lock, not even for an instant
    finally:
        member.stdin.close()
        member.wait(10)
    with eventlog.open(path, read_only=True) as log:
        assert not any(m.alive for m in log.describe_group("g").members)
