"""I/O faults: ENOSPC, EIO and short writes on the Nth file operation, for N = 1, 2, ...
until the operation succeeds, during append, roll, commit, retention, compaction and
recovery. Each time the call raises a clear error (an EventLogError), the log stays
openable, and nothing acknowledged is lost. A failed fsync fails the log (read-only).
"""

from __future__ import annotations

import errno
import os
import shutil
import time

import pytest

import eventlog
from eventlog import EventLogError, TopicPartition
from eventlog.testing import ManualClock
from tests.faults import FaultyOS, crash, injected, rebooted, run_until_success

KINDS = ["ENOSPC", "EIO", "short"]
TP = TopicPartition("t", 0)
STATS: dict[str, int] = {"faults": 0}


def records(log):
    p = log.topic("t").partition(0)
    return [(r.offset, r.key, r.value) for r in p.read(p.start_offset, max_records=10**6)]


def latest_by_key(log):
    out = {}
    for _, key, value in records(log):
        out[key] = value
    return out


def verify_openable(path, check_expected):
    """Reopen (recovering if needed), repair derived data, check the data, append."""
    with eventlog.open(path) as log:
        fixed = log.check(fix=True)
        assert all(p.kind in ("index", "leftover", "offsets") for p in fixed.problems), \
            fixed.problems
        assert log.check().ok
        check_expected(log)
        log.topic("t").partition(0).append([b"after"])


class Scenario:
    """A prepared log (``build``), an operation on it (``run``), what must hold after."""

    options: dict = {}  # noqa: RUF012 - replaced per instance, never mutated

    def build(self, path):
        raise NotImplementedError

    def run(self, path, opened):
        raise NotImplementedError

    def check(self, log, succeeded):
        raise NotImplementedError


class Append(Scenario):
    def __init__(self, fsync):
        self.options = {"fsync": fsync}

    def build(self, path):
        with eventlog.open(path, **self.options) as log:
            log.create_topic("t", segment_bytes=4096).partition(0).append(
                [b"r%d" % i for i in range(5)])
        return None

    def run(self, path, opened):
        log = eventlog.open(path, **self.options)
        opened.append(log)
        log.topic("t").partition(0).append([b"new1", b"new2"])

    def check(self, log, succeeded):
        values = [v for _, _, v in records(log)]
        base = [b"r%d" % i for i in range(5)]
        assert values == [*base, b"new1", b"new2"] or (not succeeded and values == base)


class Roll(Append):
    def build(self, path):
        with eventlog.open(path, **self.options) as log:
            p = log.create_topic("t", segment_bytes=300).partition(0)
            for i in range(5):
                p.append([b"r%d" % i])
            log.topic("t").refresh()

    def run(self, path, opened):
        log = eventlog.open(path, **self.options)
        opened.append(log)
        log.topic("t").partition(0).append([b"x" * 120, b"y" * 120])  # forces a roll

    def check(self, log, succeeded):
        values = [v for _, _, v in records(log)]
        base = [b"r%d" % i for i in range(5)]
        assert values == [*base, b"x" * 120, b"y" * 120] or (not succeeded and values == base)


class Commit(Scenario):
    def build(self, path):
        with eventlog.open(path) as log:
            log.create_topic("t").partition(0).append([b"r%d" % i for i in range(10)])
            with eventlog.Consumer(log, group_id="g") as c:
                c.assign([TP])
                c.commit({TP: 3})

    def run(self, path, opened):
        log = eventlog.open(path)
        opened.append(log)
        c = eventlog.Consumer(log, group_id="g", enable_auto_commit=False)
        c.assign([TP])
        c.commit({TP: 7})
        c.close()

    def check(self, log, succeeded):
        committed = log.group_offsets("g")[TP]
        assert committed == 7 or (not succeeded and committed == 3)


class Retention(Scenario):
    def build(self, path):
        with eventlog.open(path) as log:
            p = log.create_topic("t", segment_bytes=300).partition(0)
            for i in range(20):
                p.append([b"r%03d" % i])
            log.alter_topic("t", retention_bytes=500)

    def run(self, path, opened):
        log = eventlog.open(path)
        opened.append(log)
        log.enforce_retention()

    def check(self, log, succeeded):
        got = records(log)
        assert got, "retention must never delete the active segment"
        assert [v for _, _, v in got] == [b"r%03d" % o for o, _, _ in got]
        assert got[-1][0] == 19
        if succeeded:
            assert log.topic("t").partition(0).start_offset > 0


class Compaction(Scenario):
    def build(self, path):
        with eventlog.open(path) as log:
            p = log.create_topic("t", segment_bytes=400, cleanup_policy="compact",
                                 min_cleanable_dirty_ratio=1.0).partition(0)
            for i in range(25):
                p.append([b"v%d" % i], keys=[b"k%d" % (i % 5)])

    def run(self, path, opened):
        log = eventlog.open(path)
        opened.append(log)
        log.compact()

    def check(self, log, succeeded):
        assert latest_by_key(log) == {b"k%d" % k: b"v%d" % (20 + k) for k in range(5)}


class Recovery(Scenario):
    def build(self, path):
        log = eventlog.open(path, fsync="always")
        p = log.create_topic("t", segment_bytes=500).partition(0)
        for i in range(12):
            p.append([b"r%d" % i])
        position = p._log.state().active_position
        segment = p._log._segments[p._log.state().active_base].path
        crash(log)
        with open(segment, "r+b") as fh:   # a batch a writer died in the middle of
            fh.seek(position)
            fh.write(b"EvLg" + os.urandom(40))
        for name in os.listdir(os.path.dirname(segment)):
            if name.endswith(".index") and name != os.path.basename(segment)[:-4] + ".index":
                os.unlink(os.path.join(os.path.dirname(segment), name))

    def run(self, path, opened):
        with rebooted():
            log = eventlog.open(path)
        opened.append(log)

    def check(self, log, succeeded):
        assert [v for _, _, v in records(log)] == [b"r%d" % i for i in range(12)]


SCENARIOS = {"append": Append("never"), "append-fsync-always": Append("always"),
             "roll": Roll("interval"), "commit": Commit(), "retention": Retention(),
             "compaction": Compaction(), "recovery": Recovery()}


# Appends and retention write through the memory map and unlink files: they make no
# write()/pwrite() call for a short write to hit.
CASES = [(name, kind) for name in SCENARIOS for kind in KINDS
         if kind != "short" or name in ("roll", "commit", "compaction", "recovery")]


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_a_fault_at_every_file_operation(tmp_path, name, kind):
    scenario = SCENARIOS[name]
    template = tmp_path / "template"
    scenario.build(template)

    def attempt(n):
        work = tmp_path / f"attempt-{n}"
        shutil.copytree(template, work)
        proxy = FaultyOS(n, kind)
        opened: list = []
        error = None
        with injected(proxy):
            try:
                scenario.run(work, opened)
            except EventLogError as exc:
                error = exc
            except Exception as exc:  # anything else is a bug
                pytest.fail(f"{name}: a {kind} fault at operation {n} ({proxy.triggered}) "
                            f"raised {type(exc).__name__}: {exc}")
        for log in opened:        # faults are off again
            try:
                log.close()
            except EventLogError:
                crash(log)
        if proxy.triggered and error is None:
            # the fault was absorbed (derived data, or a retried short write)
            pass
        if error is not None and isinstance(error, OSError) and kind != "short":
            assert error.errno in (errno.ENOSPC, errno.EIO), error
        verify_openable(work, lambda log: scenario.check(log, error is None))
        shutil.rmtree(work)
        return proxy.triggered is None

    faults = run_until_success(attempt)
    STATS["faults"] += faults
    assert faults >= 1


def test_a_failed_fsync_makes_the_log_read_only(log_dir):
    with eventlog.open(log_dir, fsync="always") as log:
        p = log.create_topic("t").partition(0)
        p.append([b"before"])
        with injected(FaultyOS(1, "EIO", only=frozenset({"fdatasync", "fsync"}))):
            with pytest.raises(eventlog.LogFailedError):
                p.append([b"lost?"])
        assert log.failed
        with pytest.raises(eventlog.LogFailedError):     # stays failed, no pretending
            p.append([b"later"])
        with pytest.raises(eventlog.LogFailedError):
            eventlog.Producer(log).send("t", "x").result()
        assert [r.value for r in p.read(0)] == [b"before"]
    with eventlog.open(log_dir) as log:                  # reopening recovers
        p = log.topic("t").partition(0)
        assert next(r.value for r in p.read(0)) == b"before"
        p.append([b"works again"])


def test_a_failed_background_fsync_says_what_failed_and_when(log_dir):
    clock = ManualClock(1_700_000_000_000)   # 2023-11-14T22:13:20Z
    with eventlog.open(log_dir, fsync="interval", fsync_interval_ms=10, clock=clock) as log:
        p = log.create_topic("t").partition(0)
        p.append([b"first"])   # clears the clean flag (an fsync of its own, in append)
        with injected(FaultyOS(1, "EIO", only=frozenset({"fdatasync", "fsync"}))):
            p.append([b"dirty"])  # only the flusher fsyncs now
            deadline = time.monotonic() + 5
            while not log.failed:
                assert time.monotonic() < deadline, "the flusher never ran"
                time.sleep(0.01)
        clock.advance(60_000)
        with pytest.raises(eventlog.LogFailedError) as failed:
            p.append([b"later"])
        message = str(failed.value)
        assert message.startswith("an fsync failed at 2023-11-14T22:13:20.000+00:00 "
                                  "(OSError: [Errno 5] "), message
        assert "refuses writes until it is reopened" in message
        assert isinstance(failed.value.__cause__, OSError)
