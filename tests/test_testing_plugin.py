"""The testing toolkit: the pytest plugin (through pytester), the assertion helpers, the
manual clock, the harness and the Hypothesis strategies."""

from __future__ import annotations

import importlib.metadata
import sys
import threading
import time

import msgpack
import pytest
from hypothesis import given, settings

import eventlog
from eventlog import ClosedError, InvalidConfigError, Producer, TopicPartition
from eventlog import strategies as els
from eventlog.testing import Harness, ManualClock, drain, read_all, wait_for
from tests.conftest import run_python, spawn_python

pytest_plugins = ["pytester"]

TP = TopicPartition


# -- the plugin, run by pytest itself ------------------------------------------------------


def test_the_plugin_is_registered_as_a_pytest11_entry_point():
    found = [ep for ep in importlib.metadata.entry_points(group="pytest11")
             if ep.value == "eventlog.testing"]
    assert [ep.name for ep in found] == ["eventlog"]


def test_fixtures_give_a_fresh_log_and_close_what_the_factories_made(pytester):
    pytester.makepyfile("""
        import time
        import pytest
        import eventlog

        made = {}

        def test_a(eventlog_log, eventlog_producer, eventlog_consumer, tmp_path):
            assert not eventlog_log.closed
            assert eventlog_log.path.startswith(str(tmp_path))
            assert eventlog_log.topics() == []
            eventlog_log.create_topic("orders", partitions=2)
            producer = eventlog_producer(linger_ms=60_000)   # only close() will flush
            producer.send("orders", {"id": 1}, key="k")
            consumer = eventlog_consumer("orders", group_id="billing")
            made.update(log=eventlog_log, producer=producer, consumer=consumer,
                        path=eventlog_log.path)

        def test_b_teardown_closed_everything_in_order(eventlog_log):
            assert eventlog_log.path != made["path"]
            assert eventlog_log.topics() == []
            assert made["log"].closed
            with pytest.raises(eventlog.ClosedError):
                made["producer"].send("orders", 1)
            with pytest.raises(eventlog.ClosedError):
                made["consumer"].poll()
            # closing the producer flushed it; closing the consumer left the group
            with eventlog.open(made["path"]) as log:
                assert sum(p.end_offset for p in log.topic("orders").partitions) == 1
                assert log.describe_group("billing").members == []

        def test_c_wall_clock_without_the_clock_fixture(eventlog_log, eventlog_producer):
            eventlog_log.create_topic("t")
            md = eventlog_producer().send("t", 1).result()
            assert abs(md.timestamp_ms - time.time() * 1000) < 60_000
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


def test_a_test_that_uses_the_clock_gets_logs_on_it(pytester):
    pytester.makepyfile("""
        import eventlog
        from eventlog import TopicPartition
        from eventlog.testing import ManualClock, DEFAULT_START_MS

        def test_timestamps_follow_the_clock(eventlog_log, eventlog_clock, eventlog_producer,
                                             eventlog_consumer, eventlog_open, tmp_path):
            assert isinstance(eventlog_clock, ManualClock)
            assert eventlog_clock() == DEFAULT_START_MS
            eventlog_log.create_topic("events")
            producer = eventlog_producer()
            first = producer.send("events", "a").result()
            eventlog_clock.advance(60_000)
            second = producer.send("events", "b").result()
            assert (first.timestamp_ms, second.timestamp_ms) == (DEFAULT_START_MS,
                                                                 DEFAULT_START_MS + 60_000)
            consumer = eventlog_consumer()
            tp = TopicPartition("events", 0)
            assert consumer.offsets_for_times({tp: DEFAULT_START_MS + 1}) == {tp: 1}
            other = eventlog_open(tmp_path / "second")   # factories use the clock too
            other.create_topic("x")
            eventlog_clock.set(5)
            assert eventlog_producer(other).send("x", 1).result().timestamp_ms == 5

        def test_every_test_gets_a_new_clock(eventlog_clock):
            assert eventlog_clock() == DEFAULT_START_MS
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_eventlog_options_can_be_overridden(pytester):
    pytester.makeconftest("""
        import pytest

        @pytest.fixture
        def eventlog_options():
            return {"partitions": 3, "fsync": "never"}
    """)
    pytester.makepyfile("""
        def test_defaults_come_from_the_override(eventlog_log):
            assert eventlog_log.options.fsync == "never"
            assert len(eventlog_log.create_topic("t").partitions) == 3
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_wait_for_failure_shows_what_the_topic_contains(pytester):
    pytester.makepyfile("""
        from eventlog.testing import wait_for

        def test_missing_invoice(eventlog_log, eventlog_producer):
            eventlog_log.create_topic("invoices", partitions=2)
            producer = eventlog_producer()
            producer.send("invoices", {"order": 1, "total": 9.5}, key="o-1", partition=0,
                          headers=[("trace", b"abc")])
            producer.send("invoices", "x" * 500, key="o-2", partition=0)
            producer.flush()
            wait_for(eventlog_log, "invoices", lambda records: len(records) == 3,
                     timeout=0.2, description="3 invoices")

        def test_long_topics_are_cut(eventlog_log, eventlog_producer):
            eventlog_log.create_topic("many")
            eventlog_producer().send_batch("many", list(range(1000)))
            wait_for(eventlog_log, "many", lambda records: False, timeout=0.1)

        def test_topic_that_never_appears(eventlog_log):
            wait_for(eventlog_log, "ghost", lambda records: True, timeout=0.1,
                     description="anything")
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines([
        "*AssertionError: timed out after 0.2 s waiting for 3 invoices on topic 'invoices'",
        "*topic 'invoices' holds: [[]0[]] offsets 0..1; [[]1[]] empty",
        "*2 record(s) read:",
        "*invoices[[]0[]]@0 key='o-1' value={'order': 1, 'total': 9.5} "
        "headers=[[]('trace', b'abc')[]]",
        "*invoices[[]0[]]@1 key='o-2' value='xxxxx*...",
    ])
    result.stdout.fnmatch_lines([
        "*waiting for predicate test_long_topics_are_cut.<locals>.<lambda> on topic 'many'",
        "*1000 record(s) read:",
        "*many[[]0[]]@9 key=None value=9",
        "*... 980 more ...",
        "*many[[]0[]]@990 key=None value=990",
    ])
    result.stdout.fnmatch_lines([
        "*waiting for anything on topic 'ghost': the topic does not exist",
    ])
    assert "@10 key" not in result.stdout.str()   # the middle is left out


def test_the_plugin_needs_no_hypothesis(pytester, monkeypatch):
    # A 'hypothesis' package that cannot be imported shadows the real one.
    blocker = pytester.mkdir("blocked")
    (blocker / "hypothesis").mkdir()
    (blocker / "hypothesis" / "__init__.py").write_text(
        "raise ImportError('hypothesis is not installed here')\n")
    monkeypatch.setenv("PYTHONPATH", str(blocker))
    pytester.makepyfile("""
        import sys

        def test_fixtures_work(eventlog_log, eventlog_consumer):
            eventlog_log.create_topic("t")
            assert eventlog_consumer("t").poll() == []
            assert "hypothesis" not in sys.modules
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider",
                                           "-p", "no:hypothesispytest")
    result.assert_outcomes(passed=1)
    child = run_python("import sys\n"
                       "sys.modules['hypothesis'] = None  # makes 'import hypothesis' fail\n"
                       "import eventlog.testing\n"
                       "try:\n"
                       "    import eventlog.strategies\n"
                       "except ImportError:\n"
                       "    print('strategies need hypothesis')\n")
    assert "strategies need hypothesis" in child.stdout


# -- ManualClock and Harness ---------------------------------------------------------------


def test_manual_clock_moves_only_when_told():
    clock = ManualClock(start_ms=10)
    assert clock() == clock.now_ms == 10
    assert clock.advance(5) == 15 and clock() == 15
    clock.set(3)
    assert clock() == 3
    for bad in (-1, 1.5, "1", None, True):
        with pytest.raises(InvalidConfigError):
            clock.advance(bad)
        with pytest.raises(InvalidConfigError):
            clock.set(bad)
    with pytest.raises(InvalidConfigError):
        ManualClock(start_ms=-5)
    assert repr(clock) == "<ManualClock now_ms=3>"


def test_manual_clock_is_thread_safe():
    clock = ManualClock(start_ms=0)
    threads = [threading.Thread(target=lambda: [clock.advance(1) for _ in range(10_000)])
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert clock() == 40_000


def test_clock_drives_group_liveness_without_sleeping(tmp_path):
    clock = ManualClock()
    with Harness(tmp_path, clock=clock) as h:
        h.log.create_topic("jobs", partitions=2)
        stuck = h.consumer("jobs", group_id="workers", max_poll_interval_ms=60_000)
        live = h.consumer("jobs", group_id="workers", max_poll_interval_ms=60_000)
        for _ in range(5):
            stuck.poll(timeout=0.01)
            live.poll(timeout=0.01)
        assert len(stuck.assignment()) == len(live.assignment()) == 1
        clock.advance(60_001)              # 'stuck' has not polled for a minute of log time
        live.poll(timeout=0.01)
        with pytest.raises(eventlog.CommitFailedError):
            stuck.commit()
        stuck.close()                      # it lets go of its partition; 'live' takes it
        deadline = time.monotonic() + 5
        while len(live.assignment()) < 2 and time.monotonic() < deadline:
            live.poll(timeout=0.01)
        assert live.assignment() == {TP("jobs", 0), TP("jobs", 1)}


def test_clock_drives_retention_and_static_membership_without_sleeping(tmp_path):
    clock = ManualClock()
    with Harness(tmp_path, clock=clock) as h:
        h.log.create_topic("audit", retention_ms=3_600_000, segment_bytes=256)
        producer = h.producer()
        for i in range(4):
            producer.send_batch("audit", [f"old {i}"])
        clock.advance(3_600_001)
        for i in range(4):
            producer.send_batch("audit", [f"new {i}" + "." * 200])
        h.log.enforce_retention()
        assert [r.value[:5] for r in read_all(h.log, "audit")] == [f"new {i}" for i in range(4)]

        h.log.create_topic("jobs", partitions=2)
        static = h.consumer("jobs", group_id="g", group_instance_id="w1",
                            session_timeout_ms=30_000)
        other = h.consumer("jobs", group_id="g", session_timeout_ms=30_000)
        for _ in range(5):
            static.poll(timeout=0.01)
            other.poll(timeout=0.01)
        mine = static.assignment()
        static.close()
        clock.advance(29_999)
        other.poll(timeout=0.01)
        assert not other.assignment() & mine          # still reserved for w1
        clock.advance(1_001)    # past the session timeout, and past 'other's next look
        deadline = time.monotonic() + 5
        while other.assignment() != {TP("jobs", 0), TP("jobs", 1)}:
            assert time.monotonic() < deadline
            other.poll(timeout=0.01)


def test_harness_closes_consumers_then_producers_then_logs():
    order = []
    with Harness() as h:
        directory = h.directory
        h.log.create_topic("t")
        second = h.open()                  # opened after h.log: closed before it
        second.create_topic("t")
        producer = h.producer(second, linger_ms=60_000)
        consumer = h.consumer("t", group_id="g")
        producer.send("t", 1)
        for obj, name in ((consumer, "consumer"), (producer, "producer"), (h.log, "log"),
                          (second, "second")):
            original = obj.close
            obj.close = (lambda original=original, name=name, **kw:
                         (order.append(name), original(**kw))[1])
        assert directory.exists()
    assert order == ["consumer", "producer", "second", "log"]
    assert not directory.exists()          # the harness made it, the harness removed it
    with pytest.raises(ClosedError):
        h.producer()
    h.close()                              # idempotent


def test_harness_keeps_a_directory_it_was_given_and_raises_the_first_close_error(tmp_path):
    h = Harness(tmp_path)
    h.log.create_topic("t")
    broken = h.producer()

    def fail(**kw):
        raise OSError("disk on fire")
    broken.close = fail
    consumer = h.consumer("t")
    with pytest.raises(OSError, match="disk on fire"):
        h.close()
    assert h.log.closed                    # the rest was closed anyway
    with pytest.raises(ClosedError):
        consumer.poll()
    assert (tmp_path / "log").exists()
    del broken.close
    broken.close()


# -- read_all, wait_for, drain ---------------------------------------------------------------


def test_read_all_reads_every_partition_in_partition_then_offset_order(log):
    log.create_topic("t", partitions=3)
    with Producer(log) as producer:
        for i in range(30):
            producer.send("t", {"i": i}, key=i)
    records = read_all(log, "t")
    assert len(records) == 30
    assert [(r.partition, r.offset) for r in records] == sorted(
        (r.partition, r.offset) for r in records)
    assert sorted(r.value["i"] for r in records) == list(range(30))
    assert read_all(log, "t", value_deserializer="bytes")[0].value == msgpack.packb(
        records[0].value)
    log.create_topic("empty", partitions=2)
    assert read_all(log, "empty") == []
    with pytest.raises(eventlog.UnknownTopicError):
        read_all(log, "missing")


def test_read_all_ends_while_another_process_keeps_writing(log, log_dir):
    log.create_topic("busy", partitions=2)
    writer = spawn_python(WRITE_FOREVER, str(log_dir), "busy")
    try:
        deadline = time.monotonic() + 10
        while sum(p.end_offset for p in log.topic("busy").partitions) < 100:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        ends = {p.id: p.end_offset for p in log.topic("busy").partitions}
        records = read_all(log, "busy")
        for p, end in ends.items():
            offsets = [r.offset for r in records if r.partition == p]
            assert offsets == list(range(len(offsets))) and len(offsets) >= end
    finally:
        writer.kill()
        writer.wait()


WRITE_FOREVER = """
import sys, time, eventlog
with eventlog.open(sys.argv[1]) as log:
    with eventlog.Producer(log, linger_ms=0) as producer:
        i = 0
        while True:
            producer.send(sys.argv[2], i)
            i += 1
            if i % 50 == 0:
                time.sleep(0.001)
"""

WRITE_LATER = """
import sys, time, eventlog
time.sleep(float(sys.argv[3]))
with eventlog.open(sys.argv[1]) as log:
    if sys.argv[2] not in log:
        log.create_topic(sys.argv[2], partitions=2)
    with eventlog.Producer(log) as producer:
        for i in range(int(sys.argv[4])):
            producer.send(sys.argv[2], {"n": i}, key=i)
"""


def test_wait_for_wakes_when_another_process_writes(log, log_dir):
    log.create_topic("out", partitions=2)
    child = spawn_python(WRITE_LATER, str(log_dir), "out", "0.3", "5")
    try:
        start = time.monotonic()
        records = wait_for(log, "out", lambda rs: len(rs) == 5, timeout=30)
        assert time.monotonic() - start < 15   # long before the timeout
    finally:
        assert child.wait(30) == 0
    assert sorted(r.value["n"] for r in records) == list(range(5))


def test_wait_for_waits_for_a_topic_that_does_not_exist_yet(log, log_dir):
    child = spawn_python(WRITE_LATER, str(log_dir), "later", "0.2", "3")
    try:
        records = wait_for(log, "later", lambda rs: len(rs) >= 3, timeout=30)
    finally:
        assert child.wait(30) == 0
    assert len(records) == 3


def test_wait_for_judges_at_the_start_and_returns_the_records(log):
    log.create_topic("t")
    calls = []

    def always(records):
        calls.append(len(records))
        return True
    assert wait_for(log, "t", always, timeout=0) == []
    assert calls == [0]
    with Producer(log) as producer:
        producer.send_batch("t", [1, 2, 3])
    assert [r.value for r in wait_for(log, "t", lambda rs: rs[-1].value == 3)] == [1, 2, 3]

    def broken(records):
        raise KeyError("bug in the predicate")
    with pytest.raises(KeyError):
        wait_for(log, "t", broken)


def test_drain_returns_everything_assigned_and_leaves_the_consumer_usable(log):
    log.create_topic("t", partitions=3)
    with Producer(log) as producer:
        producer.send_batch("t", list(range(1200)))
    with eventlog.Consumer(log, "t", group_id="g", max_poll_records=100) as consumer:
        assert len(drain(consumer, max_records=250)) == 250
        rest = drain(consumer)
        assert len(rest) == 950
        assert drain(consumer) == []
        with Producer(log) as producer:
            producer.send("t", "one more")
        assert [r.value for r in drain(consumer)] == ["one more"]
        consumer.pause(TP("t", 0))
        with Producer(log) as producer:
            producer.send("t", "paused", partition=0)
        assert drain(consumer) == []           # paused partitions do not count


def test_drain_fails_with_the_lag_when_it_cannot_catch_up(log):
    log.create_topic("t", partitions=2)
    with Producer(log) as producer:
        producer.send_batch("t", list(range(10)), partition=0)
        producer.send_batch("t", list(range(10)), partition=1)
    holder = eventlog.Consumer(log, "t", group_id="g")
    holder.poll(timeout=0.01, max_records=1)   # owns both partitions, then stops polling
    waiting = eventlog.Consumer(log, "t", group_id="g")
    try:
        with pytest.raises(AssertionError) as failure:
            drain(waiting, timeout=0.3)
        message = str(failure.value)
        assert "did not catch up within 0.3 s" in message
        assert "t[" in message and "records left per partition" in message
    finally:
        waiting.close()
        holder.close()


# -- Hypothesis strategies -------------------------------------------------------------------


@settings(max_examples=40)
@given(value=els.values(), key=els.keys(), headers=els.headers())
def test_strategy_values_round_trip_through_a_log(value, key, headers):
    with Harness() as h:
        h.log.create_topic("t")
        h.producer().send("t", value, key=key, headers=headers).result()
        [record] = read_all(h.log, "t")
    assert (record.value, record.key, record.headers) == (value, key, headers)


@given(els.record_streams(partitions=3, max_size=30))
def test_record_streams_look_like_what_a_consumer_polls(records):
    for p in range(3):
        mine = [r for r in records if r.partition == p]
        assert [r.offset for r in mine] == list(range(len(mine)))
        stamps = [r.timestamp_ms for r in mine]
        assert stamps == sorted(stamps)
    assert all(isinstance(r, eventlog.Record) and r.topic == "events" for r in records)


@settings(max_examples=30)
@given(els.records(topic=els.topic_names(), partitions=4))
def test_records_are_valid_records(record):
    assert 0 <= record.partition < 4 and record.offset >= 0
    assert all(isinstance(k, str) and isinstance(v, bytes) for k, v in record.headers)
    with Harness() as h:
        h.log.create_topic(record.topic)   # the names are valid topic names


def test_strategies_reject_bad_arguments():
    with pytest.raises(InvalidConfigError):
        els.records(partitions=0)
    with pytest.raises(InvalidConfigError):
        els.record_streams(min_size=3, max_size=2)


def test_the_strategies_module_is_the_only_one_that_imports_hypothesis():
    child = run_python("import sys, eventlog, eventlog.testing, eventlog.aio\n"
                       "print('hypothesis' in sys.modules)\n")
    assert child.stdout.strip() == "False"
    assert "hypothesis" in sys.modules   # this test process has it, for the tests above
