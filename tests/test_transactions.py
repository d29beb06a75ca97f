"""Transactions: the producer's calls and states, read_committed, fencing across
processes, timeouts, and a kill between every two writes of commit and abort.

What runs where: the tests that take ``tlog`` (``any_log`` with topics ``in_`` and
``out`` of 2 partitions each and a transactional id ``app``, all named for the test)
run on a log directory and on the session's Kafka broker, whose transaction
coordinator then does the work. ``local_only`` tests say why: the local
coordinator's state files, partitions appended to directly, a kill between two of
the local protocol's writes, compaction, the ``eventlog transactions`` commands.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

import eventlog
from eventlog import TopicPartition
from eventlog._control import encode_marker
from eventlog._format import ATTR_COMMIT, ATTR_CONTROL, ATTR_TRANSACTIONAL, encode_batch
from tests.conftest import ROOT, is_kafka, unique_name

local_only = pytest.mark.local_only


def child(code: str, log_dir, env: dict[str, str] | None = None, timeout: float = 60,
          args: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ, PYTHONPATH=str(ROOT / "src"), **(env or {}))
    return subprocess.run([sys.executable, "-c", code, str(log_dir), *args],
                          capture_output=True, text=True, timeout=timeout, env=full)


def values(log, topic, isolation="read_committed", timeout=30):
    """What a new consumer reads of ``topic`` with ``isolation``: every partition up
    to its last stable offset (read_committed) or its end offset."""
    tps = [TopicPartition(topic, p.id) for p in log.topic(topic).partitions]
    with eventlog.Consumer(log, isolation_level=isolation) as c:
        c.assign(tps)
        ends = c.last_stable_offsets(tps) if isolation == "read_committed" else \
            c.end_offsets(tps)
        out = []
        deadline = time.monotonic() + timeout
        while any(c.position(tp) < ends[tp] for tp in tps):
            assert time.monotonic() < deadline, f"read {len(out)} records, not up to {ends}"
            out.extend(c.poll(timeout=0.2))
        return out


def settled(log, read, expected, timeout=15):
    """``read()``, which must be ``expected``: at once on a directory; on Kafka
    within ``timeout`` s, since commit_transaction returns once the coordinator has
    decided, and the markers and group offsets land a moment later
    (docs/kafka-backend.md)."""
    deadline = time.monotonic() + (timeout if is_kafka(log) else 0)
    while (got := read()) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    assert got == expected


def raises_fenced(log, send):
    """``send()`` raises ProducerFencedError on a directory; on Kafka the broker
    refuses the record, so its future raises it."""
    with pytest.raises(eventlog.ProducerFencedError):
        if is_kafka(log):
            send().result(timeout=30)
        else:
            send()


@pytest.fixture
def out():
    return unique_name("out")


@pytest.fixture
def in_():
    return unique_name("in")


@pytest.fixture
def app():
    """The test's transactional id (the Kafka broker keeps every id of the session)."""
    return unique_name("app")


@pytest.fixture
def tlog(any_log, in_, out):
    any_log.create_topic(in_, partitions=2)
    any_log.create_topic(out, partitions=2)
    return any_log


@pytest.fixture
def TP0(out):
    return TopicPartition(out, 0)


def test_committed_records_show_and_aborted_ones_do_not(tlog, out, app):
    with eventlog.Producer(tlog, transactional_id=app) as p:
        p.init_transactions()
        with p.transaction():
            for i in range(6):
                p.send(out, i, key=i)
        p.begin_transaction()
        for i in range(6):
            p.send(out, 100 + i, key=i)
        p.abort_transaction()
        with p.transaction():
            p.send(out, "last", key=0)
    committed = sorted(r.value for r in values(tlog, out) if r.value != "last")
    assert committed == list(range(6))
    assert "last" in [r.value for r in values(tlog, out)]
    everything = [r.value for r in values(tlog, out, isolation="read_uncommitted")]
    # on Kafka records of a transaction aborted before they were flushed never reach
    # the partition (docs/kafka-backend.md)
    aborted = [] if is_kafka(tlog) else list(range(100, 106))
    assert sorted(v for v in everything if isinstance(v, int)) == list(range(6)) + aborted
    assert not any(isinstance(v, dict) for v in everything)  # markers are never records


def test_an_exception_in_the_block_aborts(tlog, out, app):
    p = eventlog.Producer(tlog, transactional_id=app)
    p.init_transactions()
    with pytest.raises(RuntimeError), p.transaction():
        p.send(out, "doomed", partition=0)
        raise RuntimeError("boom")
    assert values(tlog, out) == []
    with p.transaction():
        p.send(out, "fine", partition=0)
    assert [r.value for r in values(tlog, out)] == ["fine"]
    p.close()


def test_read_committed_stops_at_the_last_stable_offset_and_wakes_on_commit(tlog, out, TP0):
    txn = eventlog.Producer(tlog, transactional_id="slow")
    txn.init_transactions()
    plain = eventlog.Producer(tlog)
    txn.begin_transaction()
    txn.send(out, "in-txn", partition=0).result()
    plain.send(out, "after", partition=0).result()
    with eventlog.Consumer(tlog, isolation_level="read_committed") as c:
        c.assign([TP0])
        assert c.poll(timeout=0.2) == []
        assert c.last_stable_offsets([TP0]) == {TP0: 0}
        assert c.lag() == {TP0: 2} and c.lag(stable=True) == {TP0: 0}
        threading.Timer(0.2, txn.commit_transaction).start()
        got = c.poll(timeout=30)
        assert [r.value for r in got] == ["in-txn", "after"]
        assert [r.offset for r in got] == [0, 1]
        assert c.poll(timeout=0.1) == []
        assert c.position(TP0) == 3          # past the marker at offset 2
        assert c.lag() == {TP0: 0}
    with eventlog.Consumer(tlog) as u:       # read_uncommitted read it at once
        u.assign([TP0])
        assert [r.value for r in u.poll(timeout=1)] == ["in-txn", "after"]
    txn.close()
    plain.close()


def test_offsets_move_with_a_commit_and_never_with_an_abort(tlog, out, in_, app):
    p = eventlog.Producer(tlog, transactional_id=app)
    p.init_transactions()
    tp, group = TopicPartition(in_, 1), unique_name("pipeline")

    def offsets():
        return tlog.group_offsets(group) if group in tlog.groups() else {}

    p.begin_transaction()
    p.send(out, 1)
    p.send_offsets_to_transaction({tp: 5}, group)
    p.abort_transaction()
    assert offsets() == {}
    with p.transaction():
        p.send_offsets_to_transaction({tp: 7}, group)   # offsets alone commit too
    settled(tlog, offsets, {tp: 7})
    with p.transaction():
        p.send(out, 2)
        p.send_offsets_to_transaction({tp: 9, TopicPartition(in_, 0): 3}, group)
    settled(tlog, offsets, {tp: 9, TopicPartition(in_, 0): 3})
    p.close()


def test_calls_in_the_wrong_state_raise_transaction_error(tlog, out, app, TP0):
    p = eventlog.Producer(tlog, transactional_id=app)
    with pytest.raises(eventlog.TransactionError):
        p.begin_transaction()                       # before init_transactions
    p.init_transactions()
    with pytest.raises(eventlog.TransactionError):
        p.commit_transaction()                      # without begin
    with pytest.raises(eventlog.TransactionError):
        p.abort_transaction()
    with pytest.raises(eventlog.TransactionError):
        p.send(out, 1)                            # outside a transaction
    with pytest.raises(eventlog.TransactionError):
        p.send_offsets_to_transaction({TP0: 1}, "g")
    p.begin_transaction()
    with pytest.raises(eventlog.TransactionError):
        p.begin_transaction()                       # twice
    with pytest.raises(eventlog.InvalidConfigError):
        p.send_offsets_to_transaction({TP0: -1}, "g")
    with pytest.raises(eventlog.InvalidGroupError):
        p.send_offsets_to_transaction({TP0: 1}, "bad group/")
    p.commit_transaction()
    p.close()
    with pytest.raises(eventlog.ClosedError):
        p.commit_transaction()
    with pytest.raises(eventlog.ClosedError):
        p.begin_transaction()
    plain = eventlog.Producer(tlog)
    with pytest.raises(eventlog.TransactionError):
        plain.begin_transaction()
    plain.close()


@pytest.mark.parametrize("bad", ["", 7, 3.5, "x" * 250, "tab\there", b"bytes"])
def test_a_bad_transactional_id_is_refused_and_writes_nothing(tlog, bad):
    with pytest.raises(eventlog.InvalidConfigError):
        eventlog.Producer(tlog, transactional_id=bad)
    if not is_kafka(tlog):
        assert not os.path.exists(os.path.join(tlog.path, "transactions"))


def test_bad_settings_are_refused(tlog, out):
    with pytest.raises(eventlog.InvalidConfigError):
        eventlog.Producer(tlog, transactional_id="a", transaction_timeout_ms=0)
    with pytest.raises(eventlog.InvalidConfigError):
        eventlog.Producer(tlog, transactional_id="a", producer_id=5)
    with pytest.raises(eventlog.InvalidConfigError):
        eventlog.Consumer(tlog, out, isolation_level="serializable")


@local_only("the local coordinator's state file names")
def test_odd_transactional_ids_get_safe_file_names(tlog, out):
    for tid in ("../escape", "ünïcode id", "." , "a" * 249):
        with eventlog.Producer(tlog, transactional_id=tid) as p:
            p.init_transactions()
            with p.transaction():
                p.send(out, tid, partition=0)
    names = os.listdir(os.path.join(tlog.path, "transactions"))
    assert all("/" not in n and len(n) < 120 for n in names)
    assert sorted(r.value for r in values(tlog, out)) == sorted(
        ["../escape", "ünïcode id", ".", "a" * 249])


def test_a_successor_fences_the_first_producer_and_aborts_its_transaction(tlog, out, app):
    first = eventlog.Producer(tlog, transactional_id=app)
    first.init_transactions()
    first.begin_transaction()
    first.send(out, "zombie", partition=0).result()
    second = eventlog.Producer(tlog, transactional_id=app)
    second.init_transactions()
    raises_fenced(tlog, lambda: first.send(out, "more", partition=0))
    with pytest.raises(eventlog.ProducerFencedError):
        first.commit_transaction()
    with second.transaction():
        second.send(out, "successor", partition=0)
    assert [r.value for r in values(tlog, out)] == ["successor"]
    first.close()
    second.close()


@local_only("a partition's direct append")
def test_a_partition_refuses_a_fenced_epoch(tlog, out):
    plog = tlog.topic(out).partition(0)._log
    pid = 12345
    plog.append(encode_batch([b"a"], producer_id=pid, producer_epoch=3, base_sequence=0,
                             attributes=ATTR_TRANSACTIONAL))
    plog.append(encode_marker(pid, 4, False, 0))
    with pytest.raises(eventlog.ProducerFencedError):
        plog.append(encode_batch([b"b"], producer_id=pid, producer_epoch=3, base_sequence=1,
                                 attributes=ATTR_TRANSACTIONAL))
    end = plog.end_offset
    assert plog.append(encode_marker(pid, 4, False, 0)).base_offset == -1  # not twice
    assert plog.end_offset == end
    plog._check()


FENCED_CHILD = r"""
import sys, eventlog
log = eventlog.open(sys.argv[1])
p = eventlog.Producer(log, transactional_id=sys.argv[3])
p.init_transactions()
with p.transaction():
    p.send(sys.argv[2], "from-the-child", partition=1)
p.close(); log.close()
"""


def test_fencing_across_processes(tlog, out, app):
    mine = eventlog.Producer(tlog, transactional_id=app)
    mine.init_transactions()
    mine.begin_transaction()
    mine.send(out, "parent", partition=0).result()
    proc = child(FENCED_CHILD, tlog.path, args=(out, app))
    assert proc.returncode == 0, proc.stderr
    raises_fenced(tlog, lambda: mine.send(out, "parent-again", partition=0))
    with pytest.raises(eventlog.ProducerFencedError):
        mine.commit_transaction()
    assert [r.value for r in values(tlog, out)] == ["from-the-child"]
    mine.close()


HUNG_CHILD = r"""
import os, sys, eventlog
log = eventlog.open(sys.argv[1])
p = eventlog.Producer(log, transactional_id="hung", transaction_timeout_ms=300)
p.init_transactions()
p.begin_transaction()
p.send(sys.argv[2], "never", partition=0).result()
print("sent", flush=True)
os.kill(os.getpid(), 9)
"""


@local_only("the local coordinator's timeout, noticed by the next reader or writer (a "
            "broker aborts on its own schedule: transaction.abort.timed.out."
            "transaction.cleanup.interval.ms)")
def test_a_dead_producers_transaction_is_aborted_after_its_timeout(tlog, out, TP0):
    proc = child(HUNG_CHILD, tlog.path, args=(out,))
    assert proc.returncode == -signal.SIGKILL and "sent" in proc.stdout
    with eventlog.Producer(tlog) as plain:
        plain.send(out, "behind it", partition=0)
    with eventlog.Consumer(tlog, isolation_level="read_committed") as c:
        c.assign([TP0])
        got: list = []
        deadline = time.monotonic() + 30
        while not got and time.monotonic() < deadline:
            got = c.poll(timeout=0.5)
        assert [r.value for r in got] == ["behind it"]
    states, _ = tlog.backend.transactions().store.scan()
    assert [s.state for s in states] == ["CompleteAbort"]


CRASHING_END = r"""
import sys, eventlog
from eventlog import TopicPartition
commit = sys.argv[2] == "commit"
log = eventlog.open(sys.argv[1], fsync="always")
p = eventlog.Producer(log, transactional_id="app")
p.init_transactions()
p.begin_transaction()
for i in range(4):
    p.send("out", i, partition=i % 2)
p.send_offsets_to_transaction({TopicPartition("in", 0): 4, TopicPartition("in", 1): 2}, "g")
p.flush()
print("ready", flush=True)
p.commit_transaction() if commit else p.abort_transaction()
print("done", flush=True)
"""


def _crash_steps(log_dir, how):
    """Run the commit (or abort) with a kill at step 1, 2, ... until it completes."""
    for step in range(1, 40):
        with eventlog.open(log_dir / f"{how}-{step}") as log:
            log.create_topic("in", partitions=2)
            log.create_topic("out", partitions=2)
        path = log_dir / f"{how}-{step}"
        code = CRASHING_END.replace("sys.argv[2]", repr(how))
        proc = child(code, path, {"EVENTLOG_TXN_CRASH_AT": str(step)})
        yield step, path, proc
        if "done" in proc.stdout:
            return
    raise AssertionError("the protocol never completed")


@pytest.mark.parametrize("how", ["commit", "abort"])
@local_only("a kill between two writes of the local commit protocol")
def test_a_kill_between_any_two_writes_ends_all_or_nothing(log_dir, how):
    outcomes = []
    for step, path, proc in _crash_steps(log_dir, how):
        with eventlog.open(path) as log:
            # Recovery: a successor's init_transactions finishes what was decided.
            with eventlog.Producer(log, transactional_id="app") as successor:
                successor.init_transactions()
            got = sorted(r.value for r in values(log, "out"))
            offsets = log.group_offsets("g") if "g" in log.groups() else {}
            if got == [0, 1, 2, 3]:
                assert how == "commit"
                assert offsets == {TopicPartition("in", 0): 4, TopicPartition("in", 1): 2}
                outcomes.append("committed")
            else:
                assert got == [], (step, got)
                assert offsets == {}, (step, offsets)
                outcomes.append("aborted")
            if "ready" in proc.stdout:
                assert sorted(r.value for r in values(log, "out", isolation="read_uncommitted")) \
                    == [0, 1, 2, 3]
            for part in log.topic("out").partitions:
                part._log._check()
            states, damaged = log.backend.transactions().store.scan()
            assert not damaged and all(not s.open for s in states)
    if how == "commit":
        # killed before the decision: aborted; after it: committed, at every step
        assert "committed" in outcomes and "aborted" in outcomes
        first = outcomes.index("committed")
        assert outcomes[first:] == ["committed"] * (len(outcomes) - first)
    else:
        assert set(outcomes) == {"aborted"}


@local_only("log.compact() and segment files")
def test_compaction_never_resurrects_aborted_records(log):
    log.create_topic("kv", cleanup_policy="compact", segment_bytes=400,
                     min_compaction_lag_ms=0, delete_retention_ms=0)
    plain = eventlog.Producer(log, linger_ms=0)
    txn = eventlog.Producer(log, transactional_id="kv-writer", linger_ms=0)
    txn.init_transactions()
    for round_ in range(3):
        plain.send("kv", f"good-{round_}", key="a").result()
        txn.begin_transaction()
        txn.send("kv", f"aborted-{round_}", key="a").result()
        txn.send("kv", f"aborted-{round_}", key="b").result()
        txn.abort_transaction()
        with txn.transaction():
            txn.send("kv", f"committed-{round_}", key="c")
    txn.begin_transaction()
    txn.send("kv", "open", key="c").result()      # undecided: nothing after it is cleaned
    for i in range(10):
        plain.send("kv", "x" * 50, key=f"filler-{i}").result()
    part = log.topic("kv").partition(0)
    part._log.roll()
    log.compact("kv")          # (rolls compacted already; this finishes the job)
    assert len(part._log.segments.bases) > 2
    seen = {}
    for r in values(log, "kv", isolation="read_uncommitted"):
        seen.setdefault(r.key, []).append(r.value)
    assert seen["a"] == ["good-2"]          # aborted values never won, nor came back
    assert "b" not in seen
    assert seen["c"][0] == "committed-2" and "open" in seen["c"]
    committed = {r.key: r.value for r in values(log, "kv")}
    assert committed["a"] == "good-2" and committed["c"] == "committed-2"
    txn.commit_transaction()
    assert {r.key: r.value for r in values(log, "kv")}["c"] == "open"
    part._log._check()
    txn.close()
    plain.close()


@local_only("segments rolled at 300 bytes and the producer state rebuilt from them")
def test_delete_records_and_retention_inside_a_transaction_keep_decisions(log):
    log.create_topic("t", segment_bytes=300)
    txn = eventlog.Producer(log, transactional_id="w", linger_ms=0)
    txn.init_transactions()
    plain = eventlog.Producer(log, linger_ms=0)
    txn.begin_transaction()
    for i in range(8):
        txn.send("t", f"aborted-{i}").result()
        plain.send("t", f"plain-{i}").result()
    txn.abort_transaction()
    txn.begin_transaction()
    for i in range(8):
        txn.send("t", f"committed-{i}").result()
    tp = TopicPartition("t", 0)
    start = log.delete_records(tp, 20)          # in the middle of the open transaction
    assert start == 20 and len(log.topic("t").partition(0)._log.segments.bases) > 1
    with eventlog.Consumer(log, isolation_level="read_committed") as c:
        c.assign([tp])
        assert c.poll(timeout=0.2) == []        # held at the open transaction
        txn.commit_transaction()
        got = []
        while batch := c.poll(timeout=0.5):
            got.extend(batch)
    assert [r.value for r in got] == [f"committed-{i}" for i in range(8) if 17 + i >= 20]
    with eventlog.Producer(log, transactional_id="w") as again:   # producer state rebuilt
        again.init_transactions()
        with again.transaction():
            again.send("t", "after")
    assert [r.value for r in values(log, "t")][-1] == "after"
    txn.close()
    plain.close()


HUNG_FOR_CLI = r"""
import os, sys, eventlog
log = eventlog.open(sys.argv[1])
p = eventlog.Producer(log, transactional_id="job-1")
p.init_transactions()
with p.transaction():
    p.send(sys.argv[2], "kept", partition=0)
p.begin_transaction()
p.send(sys.argv[2], "hung", partition=0).result()
os.kill(os.getpid(), 9)
"""


@local_only("the eventlog transactions and dump commands read a directory")
def test_cli_lists_describes_and_aborts_transactions_and_dump_shows_markers(tlog, out):
    proc = child(HUNG_FOR_CLI, tlog.path, args=(out,))
    assert proc.returncode == -signal.SIGKILL, proc.stderr

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "eventlog", "--log", tlog.path, *args],
                              capture_output=True, text=True, timeout=60,
                              env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))

    listing = cli("transactions", "list", "--json")
    assert listing.returncode == 0, listing.stderr
    [doc] = json.loads(listing.stdout)
    assert doc["transactional_id"] == "job-1" and doc["state"] == "Ongoing"
    assert doc["partitions"] == [[out, 0]] and doc["timed_out"] is False
    assert [r.value for r in values(tlog, out)] == ["kept"]    # held at the hung one
    aborted = cli("transactions", "abort", "job-1", "--json")
    assert aborted.returncode == 0, aborted.stderr
    assert json.loads(aborted.stdout)[0]["state"] == "CompleteAbort"
    assert [r.value for r in values(tlog, out)] == ["kept"]
    described = cli("transactions", "describe", "job-1")
    assert described.returncode == 0 and "CompleteAbort" in described.stdout
    assert cli("transactions", "describe", "nope").returncode == 1
    dump = cli("dump", os.path.join(tlog.path, "topics", out, "0"))
    assert dump.returncode == 0, dump.stderr
    assert "control:commit" in dump.stdout and "control:abort" in dump.stdout
    assert dump.stdout.count(",transactional") == 4   # two records, two markers


@local_only("a partition's direct append")
def test_a_retried_transactional_batch_is_stored_once(tlog, out):
    plog = tlog.topic(out).partition(0)._log
    batch = encode_batch([b"x", b"y"], producer_id=77, producer_epoch=0, base_sequence=0,
                         attributes=ATTR_TRANSACTIONAL)
    first = plog.append(batch)
    again = plog.append(batch)                       # a retry after a lost reply
    assert first.base_offset == 0 and again.base_offset == -1
    assert again.stored_offsets == [0, 1] and plog.end_offset == 2
    # a new epoch starts its sequence again
    assert plog.append(encode_batch([b"z"], producer_id=77, producer_epoch=1, base_sequence=0,
                                    attributes=ATTR_TRANSACTIONAL)).base_offset == 2
    plog._check()


def test_an_unknown_topic_in_a_transaction_raises_and_leaves_it_usable(tlog, out, app):
    with eventlog.Producer(tlog, transactional_id=app) as p:
        p.init_transactions()
        with p.transaction():
            with pytest.raises(eventlog.UnknownTopicError):
                p.send("no-such-topic", 1)
            with pytest.raises(eventlog.UnknownTopicError):
                p.send_batch("no-such-topic", [1, 2])
            p.send(out, "ok", partition=1)
        if not is_kafka(tlog):   # (the local coordinator's view)
            assert tlog.describe_transaction(app).state == "CompleteCommit"
    assert [r.value for r in values(tlog, out)] == ["ok"]
    assert "no-such-topic" not in tlog


def test_send_batch_inside_a_transaction(tlog, out):
    with eventlog.Producer(tlog, transactional_id="bulk") as p:
        p.init_transactions()
        p.begin_transaction()
        meta = p.send_batch(out, list(range(50)), partition=0)
        assert len(meta) == 50
        assert values(tlog, out) == []
        p.commit_transaction()
    assert [r.value for r in values(tlog, out)] == list(range(50))


@local_only("a kill between two writes of the local commit protocol")
def test_a_consumer_taking_over_settles_a_decided_transactions_offsets(log_dir):
    """Killed after the decision to commit, before its offsets: the next consumer of
    the group reads the offsets the transaction committed, not the old ones."""
    seen_prepared = False
    for step in range(1, 12):
        path = log_dir / f"s{step}"
        with eventlog.open(path) as log:
            log.create_topic("in", partitions=2)
            log.create_topic("out", partitions=2)
            with eventlog.Producer(log) as feed:
                for i in range(10):
                    feed.send("in", i, partition=i % 2)
        code = CRASHING_END.replace("sys.argv[2]", repr("commit"))
        proc = child(code, path, {"EVENTLOG_TXN_CRASH_AT": str(step)})
        if "done" in proc.stdout:
            break
        with eventlog.open(path) as log:
            state = log.backend.transactions().store.read("app")
            if state is None or state.state != "PrepareCommit":
                continue
            seen_prepared = True
            with eventlog.Consumer(log, "in", group_id="g", enable_auto_commit=False) as c:
                first: dict[int, int] = {}
                while batch := c.poll(timeout=0.5):
                    for r in batch:
                        first.setdefault(r.partition, r.offset)
            assert first == {0: 4, 1: 2}      # from the offsets the transaction decided
            assert log.describe_transaction("app").state == "CompleteCommit"
            assert sorted(r.value for r in values(log, "out")) == [0, 1, 2, 3]
    assert seen_prepared


@local_only("the local coordinator's transactions() listing and state files")
def test_read_only_logs_read_committed_and_list_but_never_write(tlog, out, app, TP0):
    p = eventlog.Producer(tlog, transactional_id=app, transaction_timeout_ms=1)
    p.init_transactions()
    with p.transaction():
        p.send(out, "done", partition=0)
    p.begin_transaction()
    p.send(out, "open", partition=0).result()
    time.sleep(0.01)                     # timed out: but a read-only reader may not abort
    before = sorted(os.listdir(os.path.join(tlog.path, "transactions")))
    with eventlog.open(tlog.path, read_only=True) as ro:
        with eventlog.Consumer(ro, isolation_level="read_committed") as c:
            c.assign([TP0])
            assert [r.value for r in c.poll(timeout=0.3)] == ["done"]
            assert c.poll(timeout=0.6) == []
        [desc] = ro.transactions()
        assert desc.state == "Ongoing" and desc.timed_out
        with pytest.raises(eventlog.ReadOnlyError):
            ro.abort_transaction(app)
        with pytest.raises(eventlog.UnknownTransactionalIdError):
            ro.describe_transaction("nobody")
    assert sorted(os.listdir(os.path.join(tlog.path, "transactions"))) == before
    assert tlog.describe_transaction(app).state == "Ongoing"
    assert tlog.abort_transaction(app).state == "CompleteAbort"
    with pytest.raises(eventlog.ProducerFencedError):
        p.commit_transaction()
    p.close()


def test_read_committed_in_small_polls_through_big_batches(tlog, out, TP0):
    with eventlog.Producer(tlog, transactional_id=unique_name("big")) as p:
        p.init_transactions()
        for round_ in range(3):
            p.begin_transaction()
            p.send_batch(out, [f"{round_}-{i}" for i in range(50)], partition=0)
            p.commit_transaction() if round_ != 1 else p.abort_transaction()
    with eventlog.Consumer(tlog, isolation_level="read_committed",
                           max_poll_records=7) as c:
        c.assign([TP0])
        got = []
        end = tlog.topic(out).partition(0).end_offset
        deadline = time.monotonic() + 30
        while c.position(TP0) < end and time.monotonic() < deadline:
            batch = c.poll(timeout=0.2)
            assert len(batch) <= 7
            got.extend(batch)
            if not is_kafka(tlog):
                c._fetcher._check()
        assert c.position(TP0) == end
    assert [r.value for r in got] == [f"{r}-{i}" for r in (0, 2) for i in range(50)]


SUCCESSOR = r"""
import sys, eventlog
log = eventlog.open(sys.argv[1], fsync="always")
with eventlog.Producer(log, transactional_id="app") as p:
    p.init_transactions()
print("recovered", flush=True)
"""


@local_only("a kill inside the local recovery protocol")
def test_a_recovery_killed_at_any_step_is_finished_by_the_next(log_dir):
    """The committer dies after its decision; its successor dies at each step of the
    recovery in turn; whoever comes next still ends with the transaction committed
    everywhere, its offsets moved, and no marker twice."""
    template = log_dir / "template"
    code = CRASHING_END.replace("sys.argv[2]", repr("commit"))
    for step in range(1, 12):   # the first kill that leaves a decided transaction
        shutil.rmtree(template, ignore_errors=True)
        with eventlog.open(template) as log:
            log.create_topic("in", partitions=2)
            log.create_topic("out", partitions=2)
        child(code, template, {"EVENTLOG_TXN_CRASH_AT": str(step)})
        with eventlog.open(template) as log:
            state = log.backend.transactions().store.read("app")
            if state is not None and state.state == "PrepareCommit":
                break
    else:
        raise AssertionError("no step left the transaction decided")
    for step in range(1, 20):
        path = log_dir / f"r{step}"
        shutil.copytree(template, path)
        proc = child(SUCCESSOR, path, {"EVENTLOG_TXN_CRASH_AT": str(step)})
        with eventlog.open(path) as log:
            with eventlog.Producer(log, transactional_id="app") as last:
                last.init_transactions()
            assert sorted(r.value for r in values(log, "out")) == [0, 1, 2, 3]
            assert log.group_offsets("g") == {TopicPartition("in", 0): 4,
                                              TopicPartition("in", 1): 2}
            for p in (0, 1):
                markers = [b for b in log.topic("out").partition(p)._log.fetch(0)
                           if b.header.attributes & ATTR_CONTROL
                           and b.header.attributes & ATTR_COMMIT]
                assert len(markers) == 1, (step, p)
        if "recovered" in proc.stdout:
            return
    raise AssertionError("the successor never finished")


@local_only("a kill inside the local recovery protocol")
def test_a_failed_end_is_finished_by_calling_the_decided_end_again(log_dir):
    """A full disk at each file operation of a commit in turn: the producer then says
    what was decided, and calling that end again finishes it (or, when the failure
    failed the whole log, the next producer after a reopen does): all or nothing."""
    from tests.faults import FaultyOS, injected

    only = frozenset({"open", "write", "pwrite", "replace", "rename", "posix_fallocate"})
    for n in range(1, 200):
        path = log_dir / f"f{n}"
        log = eventlog.open(path)
        log.create_topic("out", partitions=2)
        p = eventlog.Producer(log, transactional_id="app", linger_ms=0)
        p.init_transactions()
        p.begin_transaction()
        for i in range(4):
            p.send("out", i, partition=i % 2)
        p.send_offsets_to_transaction({TopicPartition("in", 0): 4}, "g")
        p.flush()
        fault = FaultyOS(n, "ENOSPC", only)
        failed = None
        with injected(fault):
            try:
                p.commit_transaction()
            except eventlog.EventLogError as exc:
                failed = exc
        if fault.triggered is None:
            assert failed is None
            p.close()
            log.close()
            return
        state = p._txn.state
        # in_transaction: it failed before anything was written; a retry may commit
        committed = failed is None or state in ("decided_commit", "in_transaction")
        if failed is not None:
            assert state in ("decided_commit", "abortable", "in_transaction"), \
                (n, state, failed)
            if state != "in_transaction":
                wrong = p.abort_transaction if committed else p.commit_transaction
                with pytest.raises(eventlog.TransactionError):
                    wrong()
            try:
                (p.commit_transaction if committed else p.abort_transaction)()
            except eventlog.LogFailedError:
                pass   # the failure failed the log: the next producer finishes it
        p.close()
        log.close()
        with eventlog.open(path) as log:
            with eventlog.Producer(log, transactional_id="app") as successor:
                successor.init_transactions()
            got = sorted(r.value for r in values(log, "out"))
            offsets = log.group_offsets("g") if "g" in log.groups() else {}
            assert got == ([0, 1, 2, 3] if committed else []), (n, got, failed)
            assert offsets == ({TopicPartition("in", 0): 4} if committed else {}), n
    raise AssertionError("the commit never ran without a fault")


@local_only("the local coordinator's state slots")
def test_a_torn_state_slot_leaves_the_previous_state_and_readers_never_see_none(log):
    from eventlog._txn_state import TransactionStore, TxnState

    store = TransactionStore(log.path)
    with store.locked("s"):
        store.write(TxnState("s", 1, 0))
        store.write(TxnState("s", 1, 1))
    path = store.path("s")
    with open(path, "r+b") as fh:       # tear the newest slot (slot 1, from byte 4096)
        fh.seek(4096 + 40)
        fh.write(b"\xff" * 8)
    assert store.read("s").epoch == 0
    with store.locked("s"):             # the next write goes into the torn slot
        store.write(TxnState("s", 1, 2))
    assert store.read("s").epoch == 2
    big = TxnState("s", 1, 3, "Ongoing", partitions=tuple(("t" * 40, i) for i in range(400)))
    with store.locked("s"):             # outgrows 4 KiB slots: the file is rewritten
        store.write(big)
    assert store.read("s") == big and os.path.getsize(path) > 8192
    stop = threading.Event()
    misses = []

    def reader():
        while not stop.is_set():
            if store.read("s") is None:
                misses.append(1)

    thread = threading.Thread(target=reader)
    thread.start()
    for epoch in range(4, 200):
        with store.locked("s"):
            store.write(TxnState("s", 1, epoch))
    stop.set()
    thread.join()
    assert misses == [] and store.read("s").epoch == 199
