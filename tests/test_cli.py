"""The ``eventlog`` command, run as a real subprocess against real log directories.

Every test runs ``python -m eventlog ...`` (the console script is the same ``main``)
and checks stdout, stderr and the exit code, error paths included: exit codes and
``eventlog: error:`` messages are part of the interface scripts rely on. Data is set
up and checked through the library where that is quicker than more subprocesses.
"""

from __future__ import annotations

import json
import os
import pty
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

import eventlog
from eventlog import TopicPartition
from tests.conftest import ROOT, run_python

COMMANDS = [
    [], ["topics"], ["topics", "create"], ["topics", "list"], ["topics", "describe"],
    ["topics", "alter"], ["topics", "delete"], ["produce"], ["consume"], ["groups"],
    ["groups", "list"], ["groups", "describe"], ["groups", "lag"], ["groups", "status"],
    ["groups", "reset-offsets"], ["groups", "delete"], ["dump"], ["verify"], ["demo"],
    ["bench"], ["transactions"], ["transactions", "list"], ["transactions", "describe"],
    ["transactions", "abort"],
]


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    env.pop("EVENTLOG_LOG", None)
    env.update(extra or {})
    return env


def cli(*args: object, log: Path | None = None, input: str | None = None,
        env: dict[str, str] | None = None, cwd: Path | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "eventlog"]
    if log is not None:
        argv += ["--log", str(log)]
    return subprocess.run(argv + [str(a) for a in args], input=input, capture_output=True,
                          text=True, timeout=timeout, env=_env(env), cwd=cwd)


def cli_all(*calls: tuple[object, ...], log: Path | None = None,
            timeout: float = 60) -> list[subprocess.CompletedProcess[str]]:
    """Run independent commands at once (each a tuple of arguments) and return their
    results in order: the same checks in a fraction of the time."""
    procs = []
    for args in calls:
        argv = [sys.executable, "-m", "eventlog"]
        if log is not None:
            argv += ["--log", str(log)]
        argv += [str(a) for a in args]
        procs.append((argv, subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                             text=True, env=_env())))
    results = []
    for argv, proc in procs:
        out, err = proc.communicate(timeout=timeout)
        results.append(subprocess.CompletedProcess(argv, proc.returncode, out, err))
    return results


def spawn(*args: object, log: Path, **kwargs: object) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "eventlog", "--log", str(log), *map(str, args)]
    return subprocess.Popen(argv, env=_env(), text=True, **kwargs)  # type: ignore[call-overload]


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    return proc


def fails(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    """Assert a clean failure: the exit code, one error line, no traceback."""
    assert proc.returncode == code, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "eventlog: error: " in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr
    return proc.stderr


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def make_topic(log_dir: Path, name: str = "orders", partitions: int = 1,
               **config: object) -> None:
    with eventlog.open(log_dir) as log:
        log.create_topic(name, partitions, **config)


def records(log_dir: Path, topic: str, **deserializers: str) -> list[eventlog.Record]:
    with eventlog.open(log_dir) as log, eventlog.Consumer(log, topic, **deserializers) as c:
        out: list[eventlog.Record] = []
        while batch := c.poll(timeout=0.2):
            out += batch
    return sorted(out, key=lambda r: (r.partition, r.offset))


# -- common behaviour --------------------------------------------------------------------

def test_every_command_has_help():
    top = ok(cli("--help"))
    assert top.stdout.startswith("usage: eventlog") and top.stderr == ""
    for code in ("0 ", "1 ", "2 ", "3 ", "130", "141"):
        assert f"\n  {code}" in top.stdout  # the exit codes are documented in --help
    # Every other command's --help, in one child process (it is argparse's doing; a
    # process per command would only repeat the interpreter's start-up).
    code = (
        "import contextlib, io, json, sys\n"
        "from eventlog.cli import main\n"
        "results = []\n"
        "for command in json.loads(sys.argv[1]):\n"
        "    out = io.StringIO()\n"
        "    with contextlib.redirect_stdout(out):\n"
        "        try:\n"
        "            main([*command, '--help'])\n"
        "            status = None\n"
        "        except SystemExit as exc:\n"
        "            status = exc.code\n"
        "    results.append([command, status, out.getvalue()])\n"
        "print(json.dumps(results))\n")
    proc = run_python(code, json.dumps(COMMANDS[1:]))
    for command, status, text in json.loads(proc.stdout):
        assert status == 0, command
        assert text.startswith(f"usage: eventlog {' '.join(command)}"), (command, text)
        assert "--help" in text


def test_python_m_eventlog_and_the_console_script_are_the_same_command():
    version = ok(cli("--version")).stdout
    assert version.strip() == f"eventlog {eventlog.__version__}"
    script = Path(sys.executable).parent / "eventlog"
    if not script.exists():
        pytest.skip("the console script is not installed in this environment")
    proc = subprocess.run([str(script), "--version"], capture_output=True, text=True,
                          env=_env(), timeout=60)
    assert proc.returncode == 0 and proc.stdout == version


def test_usage_errors_exit_2():
    no_command, unknown, no_log, bad_value = cli_all(
        (), ("nope",), ("topics", "list"), ("consume", "t", "--max", "zero"))
    fails(no_command, 2, "required")
    fails(unknown, 2, "invalid choice")
    fails(no_log, 2, "--log DIR", "EVENTLOG_LOG")
    fails(bad_value, 2, "--max")


def test_reading_commands_do_not_create_a_log_directory(tmp_path):
    missing = tmp_path / "missing"
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    *reads, foreign_read, foreign_create = cli_all(
        ("--log", missing, "topics", "describe", "t"), ("--log", missing, "consume", "t"),
        ("--log", missing, "groups", "lag"), ("--log", missing, "verify"),
        ("--log", foreign, "topics", "list"), ("--log", foreign, "topics", "create", "t"))
    for proc in reads:
        fails(proc, 1, "does not exist")
    assert not missing.exists()
    fails(foreign_read, 1, "not an eventlog log directory")
    fails(foreign_create, 1, "not an eventlog directory")
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


def test_the_log_directory_comes_from_the_environment_or_after_the_command(tmp_path):
    log_dir = tmp_path / "log"
    ok(cli("topics", "create", "orders", env={"EVENTLOG_LOG": str(log_dir)}))
    listed = ok(cli("topics", "list", "--log", log_dir, "--json"))
    assert [t["name"] for t in json.loads(listed.stdout)] == ["orders"]


# -- topics ------------------------------------------------------------------------------

def test_topics_create_list_describe_alter_delete(tmp_path):
    log_dir = tmp_path / "log"
    created = ok(cli("topics", "create", "orders", "--partitions", 3,
                     "--config", "retention.ms=7d", "-c", "segment_bytes=1MiB",
                     "-c", "retention_bytes=none", "-c", "min_cleanable_dirty_ratio=0.25",
                     log=log_dir))
    assert created.stdout == "created topic orders with 3 partitions\n"
    doc = json.loads(ok(cli("topics", "create", "events", "--json", log=log_dir)).stdout)
    assert doc["name"] == "events" and doc["created"] is True and len(doc["partitions"]) == 1

    with eventlog.open(log_dir) as log:
        config = log.topic("orders").config
        assert (config.retention_ms, config.segment_bytes) == (7 * 86_400_000, 1 << 20)
        assert config.retention_bytes is None and config.min_cleanable_dirty_ratio == 0.25
        log.topic("orders").partition(1).append([b"a", b"b"])

    listed, listed_json, described = cli_all(
        ("topics", "list"), ("topics", "list", "--json"), ("topics", "describe", "orders"),
        log=log_dir)
    table = ok(listed).stdout.splitlines()
    assert table[0].split() == ["TOPIC", "PARTITIONS", "RECORDS", "SIZE", "CLEANUP",
                                "RETENTION"]
    assert table[2].split()[:3] == ["orders", "3", "2"] and table[2].endswith("7 d")
    assert [(t["name"], t["partitions"], t["records"])
            for t in json.loads(ok(listed_json).stdout)] == [("events", 1, 0), ("orders", 3, 2)]
    described = ok(described).stdout
    assert "topic orders: 3 partitions, 2 records" in described
    assert "retention_ms               604800000 (7 d)  (set)" in described
    assert "cleanup_policy             delete\n" in described
    rows = described.split("PARTITION")[1].splitlines()[1:]
    assert [r.split()[:4] for r in rows] == [["0", "0", "0", "0"], ["1", "0", "2", "2"],
                                             ["2", "0", "0", "0"]]

    altered = ok(cli("topics", "alter", "orders", "-c", "cleanup.policy=compact",
                     "--delete-config", "retention_ms", "--partitions", 5, log=log_dir))
    assert "cleanup_policy=compact" in altered.stdout and "partitions 3 -> 5" in altered.stdout
    doc = json.loads(ok(cli("topics", "describe", "orders", "--json", log=log_dir)).stdout)[0]
    assert doc["config"]["cleanup_policy"] == "compact"
    assert doc["config"]["retention_ms"] is None and len(doc["partitions"]) == 5

    assert ok(cli("topics", "delete", "orders", "events", log=log_dir)).stdout == \
        "deleted topic orders\ndeleted topic events\n"
    fails(cli("topics", "describe", "orders", log=log_dir), 1, "'orders' does not exist")
    ok(cli("topics", "delete", "orders", "--if-exists", log=log_dir))


def test_topic_errors_change_nothing(tmp_path):
    log_dir = tmp_path / "log"
    make_topic(log_dir, "orders", partitions=2)
    results = cli_all(
        ("topics", "create", "t", "-c", "retention_ms=soon"),
        ("topics", "create", "t", "-c", "segment_bytes=10"),
        ("topics", "create", "t", "-c", "colour=blue"),
        ("topics", "create", "t", "-c", "retention_ms"),
        ("topics", "create", "../t"),
        ("topics", "create", "orders"),
        ("topics", "alter", "orders", "--partitions", 1),
        ("topics", "alter", "orders", "-c", "cleanup_policy=shred"),
        ("topics", "alter", "orders"),
        ("topics", "delete", "orders", "ghost"), log=log_dir)
    expected = [(1, "retention_ms needs an integer"), (1, "segment_bytes must be at least"),
                (1, "unknown topic setting 'colour'"), (2, "NAME=VALUE"),
                (1, "invalid topic name"), (1, "already exists"), (1, "only grow"),
                (1, "cleanup_policy must be one of"), (2, "nothing to change"),
                (1, "'ghost' does not exist")]
    for proc, (code, message) in zip(results, expected):
        fails(proc, code, message)
    assert "exists already" in ok(cli("topics", "create", "orders", "--if-not-exists",
                                      log=log_dir)).stdout
    with eventlog.open(log_dir) as log:
        assert log.topics() == ["orders"]
        assert log.topic("orders").num_partitions == 2
        assert log.topic("orders").config == eventlog.TopicConfig()


# -- produce -----------------------------------------------------------------------------

def test_produce_msgpack_lines_with_key_field_and_headers_reach_a_python_consumer(tmp_path):
    log_dir = tmp_path / "log"
    make_topic(log_dir, "orders", partitions=3)
    lines = '{"id": 1, "user": "ada"}\n\n{"id": 2, "user": "bob"}\n{"id": 3, "user": "ada"}\n'
    proc = ok(cli("produce", "orders", "--key-field", "user", "-H", "source=cli",
                  "--json", input=lines, log=log_dir))
    reported = json_lines(proc.stdout)
    assert [r["line"] for r in reported] == [1, 3, 4]   # the blank line is skipped
    assert "produced 3 records to orders" in proc.stderr
    got = records(log_dir, "orders")
    assert sorted(r.value["id"] for r in got) == [1, 2, 3]
    by_id = {r.value["id"]: r for r in got}
    assert by_id[1].key == "ada" and by_id[1].headers == [("source", b"cli")]
    assert by_id[1].partition == by_id[3].partition  # same key, same partition
    assert {(r["partition"], r["offset"]) for r in reported} == \
        {(r.partition, r.offset) for r in got}


def test_produce_text_and_json_formats_store_what_they_say(tmp_path):
    log_dir = tmp_path / "log"
    make_topic(log_dir, "raw")
    ok(cli("produce", "raw", "--format", "text", "-K", ":", "--key-format", "bytes",
           input="k1:hello: world\r\n" "k2:\n", log=log_dir))
    ok(cli("produce", "raw", "--format", "json", input='{"a":  [1, 2]}\n', log=log_dir))
    got = records(log_dir, "raw", key_deserializer="bytes", value_deserializer="bytes")
    assert [(r.key, r.value) for r in got] == [(b"k1", b"hello: world"), (b"k2", b""),
                                               (None, b'{"a":[1,2]}')]


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
def test_produce_of_hostile_nesting_is_a_one_line_error_not_a_traceback(tmp_path, fmt):
    log_dir = tmp_path / "log"
    make_topic(log_dir, "orders")
    deep_valid = "[" * 600 + "]" * 600  # valid JSON, deeper than msgpack packs
    proc = cli("produce", "orders", "--format", fmt,
               input='{"id": 1}\n' + deep_valid + "\n" + "[" * 100_000 + "\n", log=log_dir)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "eventlog: error: line 3: not valid JSON here (nested too deeply); use --format "
        "text for raw text"), proc.stderr
    assert len(records(log_dir, "orders", value_deserializer="bytes")) == 2


def test_produce_stops_at_a_bad_line_after_storing_the_lines_before_it(tmp_path):
    log_dir = tmp_path / "log"
    make_topic(log_dir, "orders")
    proc = cli("produce", "orders", "--json", input='{"id": 1}\n{"id": 2}\nnot json\n{"id": 4}\n',
               log=log_dir)
    fails(proc, 1, "line 3: not valid JSON", "--format text")
    assert [r["offset"] for r in json_lines(proc.stdout)] == [0, 1]
    assert [r.value for r in records(log_dir, "orders")] == [{"id": 1}, {"id": 2}]


def test_produce_errors(tmp_path):
    log_dir = tmp_path / "log"
    make_topic(log_dir, "small", max_message_bytes=16)
    fails(cli("produce", "ghost", input="1\n", log=log_dir), 1, "'ghost' does not exist")
    fails(cli("produce", "small", "--partition", 3, input="1\n", log=log_dir), 1,
          "partitions 0..0")
    fails(cli("produce", "small", input='"' + "x" * 40 + '"\n', log=log_dir), 1,
          "line 1", "max_message_bytes=16")
    fails(cli("produce", "small", "-K", "=", input="no separator\n", log=log_dir), 1,
          "line 1: no key separator")
    fails(cli("produce", "small", "--key-field", "id", input="[1]\n", log=log_dir), 1,
          "line 1: no field 'id'")
    fails(cli("produce", "small", "--format", "text", "--key-field", "id", log=log_dir), 2,
          "--key-field needs")
    assert records(log_dir, "small") == []


# -- consume -----------------------------------------------------------------------------

@pytest.fixture
def orders_log(tmp_path) -> Path:
    """Topic orders: partition 0 has ids 0-4 at t=1000..5000 ms, partition 1 ids 5-6."""
    log_dir = tmp_path / "log"
    with eventlog.open(log_dir) as log:
        log.create_topic("orders", partitions=2)
        with eventlog.Producer(log) as producer:
            producer.send_batch("orders", [{"id": i} for i in range(5)],
                                keys=[f"user-{i % 2}" for i in range(5)], partition=0,
                                timestamps_ms=[1000 * (i + 1) for i in range(5)],
                                headers=[[("n", str(i).encode())] for i in range(5)])
            producer.send_batch("orders", [{"id": 5}, {"id": 6}], partition=1,
                                timestamps_ms=[6000, 7000])
    return log_dir


def ids(text: str) -> list[int]:
    return [json.loads(line)["id"] for line in text.splitlines()]


def test_consume_output_formats(orders_log):
    plain, as_json, templated, bad_field, conflict = cli_all(
        ("consume", "orders", "--partition", 0),
        ("consume", "orders", "--json", "-q"),
        ("consume", "orders", "-p", 0, "--max", 2, "-q", "--template",
         r"{partition}:{offset}\t{key} {value[id]} {value[missing]} {headers[n]} "
         r"{timestamp_ms:>6}"),
        ("consume", "orders", "--template", "{nope}"),
        ("consume", "orders", "--json", "--format", "value"), log=orders_log)
    assert ok(plain).stdout.splitlines()[0] == '{"id":0}'
    assert plain.stderr == "consumed 5 records\n"
    lines = json_lines(ok(as_json).stdout)
    assert len(lines) == 7   # partitions interleave; find the first record of partition 0
    first = next(line for line in lines if (line["partition"], line["offset"]) == (0, 0))
    assert first == {"topic": "orders", "partition": 0, "offset": 0, "timestamp_ms": 1000,
                        "timestamp": "1970-01-01T00:00:01.000Z", "key": "user-0",
                        "value": {"id": 0}, "headers": [["n", "0"]]}
    assert ok(templated).stdout == \
        "0:0\tuser-0 0 null 0   1000\n0:1\tuser-1 1 null 1   2000\n"
    fails(bad_field, 2, "unknown field {nope}")
    fails(conflict, 2, "--json conflicts")


def test_consume_shows_undecodable_values_safely(tmp_path):
    log_dir = tmp_path / "log"
    make_topic(log_dir, "raw")
    with eventlog.open(log_dir) as log:
        log.topic("raw").partition(0).append([b"plain text", b"\x1b[31mred\nline\xff"])
    proc, as_text, as_bytes = cli_all(
        ("consume", "raw", "-q"),
        ("consume", "raw", "--value-format", "text", "--json", "-q", "--max", 1),
        ("consume", "raw", "--value-format", "bytes", "--json", "-q", "--offset", 1),
        log=log_dir)
    assert ok(proc).stdout == "plain text\n\\x1b[31mred\\nline\\xff\n"
    assert proc.stderr.count("warning") == 1 and "not valid msgpack" in proc.stderr
    assert json_lines(ok(as_text).stdout)[0]["value"] == "plain text"
    assert json_lines(ok(as_bytes).stdout)[0]["value"] == {"base64": "G1szMW1yZWQKbGluZf8="}


def test_consume_starting_positions(orders_log):
    calls = {
        (): list(range(7)),
        ("--from-end",): [],
        ("--offset", 3): [3, 4],                       # clamped in partition 1
        ("--offset", -1): [4, 6],                      # the last of each partition
        ("--partition", 0, "--offset", 2, "--max", 2): [2, 3],
        ("--from-time", 4500): [4, 5, 6],              # epoch milliseconds
        ("--from-time", "1970-01-01T00:00:05.5Z"): [5, 6],
        ("--from-time=now-1min",): [],
    }
    results = cli_all(*(("consume", "orders", "-q", *args) for args in calls),
                      log=orders_log)
    for (args, expected), proc in zip(calls.items(), results):
        assert sorted(ids(ok(proc).stdout)) == expected, args
    bad_time, bad_partition, with_group = cli_all(
        ("consume", "orders", "--from-time", "yesterday"),
        ("consume", "orders", "--partition", 2),
        ("consume", "orders", "--group", "g", "--offset", 1), log=orders_log)
    fails(bad_time, 2, "not a point in time")
    fails(bad_partition, 1, "partitions 0..1")
    fails(with_group, 2, "--offset cannot be used with --group")


def test_consume_as_a_group_commits_what_it_printed_and_resumes(orders_log):
    first = ok(cli("consume", "orders", "--group", "billing", "--max", 3, log=orders_log))
    assert len(ids(first.stdout)) == 3 and "as group billing" in first.stderr
    with eventlog.open(orders_log) as log:
        assert sum(log.group_offsets("billing").values()) == 3
    rest = ok(cli("consume", "orders", "-g", "billing", "-q", log=orders_log))
    assert sorted(ids(first.stdout) + ids(rest.stdout)) == list(range(7))
    assert ok(cli("consume", "orders", "-g", "billing", "-q", log=orders_log)).stdout == ""
    lag = json.loads(ok(cli("groups", "lag", "billing", "--json", log=orders_log)).stdout)
    assert [(r["partition"], r["committed"], r["lag"]) for r in lag] == [(0, 5, 0), (1, 2, 0)]


def test_consume_follow_prints_new_records_and_stops_cleanly_on_sigint(orders_log):
    proc = spawn("consume", "orders", "--group", "tail", "--follow", "-q", log=orders_log,
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        seen = [proc.stdout.readline() for _ in range(7)]      # what is stored
        assert sorted(json.loads(line)["id"] for line in seen) == list(range(7))
        with eventlog.open(orders_log) as log:
            with eventlog.Producer(log) as producer:
                producer.send("orders", {"id": 100}, partition=1).result()
            assert proc.stdout.readline() == '{"id":100}\n'   # arrives while following
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=20)
            assert proc.returncode == 0, err
            assert out == "" and "Traceback" not in err
            assert log.group_offsets("tail") == {TopicPartition("orders", 0): 5,
                                                 TopicPartition("orders", 1): 3}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_consume_into_a_closed_pipe_exits_141(tmp_path):
    log_dir = tmp_path / "log"
    make_topic(log_dir, "big")
    with eventlog.open(log_dir) as log, eventlog.Producer(log) as producer:
        producer.send_batch("big", ["x" * 100] * 20_000)   # far more than a pipe buffer
    proc = spawn("consume", "big", "-q", log=log_dir, stdout=subprocess.PIPE,
                 stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()
    assert proc.wait(timeout=30) == 141
    assert "Traceback" not in proc.stderr.read()


# -- groups ------------------------------------------------------------------------------

def test_groups_list_describe_lag(orders_log):
    ok(cli("consume", "orders", "-g", "billing", "--max", 4, "-q", log=orders_log))
    listed, listed_json, described, described_json, lag, ghost = cli_all(
        ("groups", "list"), ("groups", "list", "--json"), ("groups", "describe", "billing"),
        ("groups", "describe", "billing", "--json"), ("groups", "lag"),
        ("groups", "describe", "ghost"), log=orders_log)
    table = ok(listed).stdout.splitlines()
    assert table[0].split() == ["GROUP", "STATE", "MEMBERS", "PARTITIONS", "LAG"]
    assert table[1].split() == ["billing", "Empty", "0", "2", "3"]
    assert json.loads(ok(listed_json).stdout) == \
        [{"group_id": "billing", "state": "Empty", "members": 0, "partitions": 2, "lag": 3}]
    assert ok(described).stdout.startswith("group billing: Empty, generation")
    doc = json.loads(ok(described_json).stdout)[0]
    assert [(p["partition"], p["committed"], p["end_offset"], p["lag"])
            for p in doc["partitions"]] == [(0, 2, 5, 3), (1, 2, 2, 0)]
    assert "group billing: total lag 3" in ok(lag).stdout
    fails(ghost, 1, "'ghost' does not exist")


def test_groups_status_exits_with_the_status_and_3_when_it_cannot_tell(tmp_path):
    """OK, WARN and ERR groups built on a ManualClock near the wall clock (the command
    judges at its own now): exit 0, 1, 2; anything that prevents a status exits 3."""
    from eventlog.testing import ManualClock
    log_dir = tmp_path / "log"
    # Commits 10 s apart: the command judges a group STOP once its last commit is older
    # than its window spans (90 s for 10 commits, 40 s for --window 5), so the nine
    # commands, started at once on a busy machine, judge these groups as built.
    now = time.time_ns() // 1_000_000
    clock = ManualClock(start_ms=now - 90_000)
    with eventlog.open(log_dir, clock=clock) as log:
        log.create_topic("orders", partitions=2)
        part = log.topic("orders").partition(0)
        consumer = eventlog.Consumer(log, group_id="ahead", enable_auto_commit=False)
        consumer.assign([TopicPartition("orders", 0)])
        behind = eventlog.Consumer(log, group_id="behind", enable_auto_commit=False)
        behind.assign([TopicPartition("orders", 0)])
        for step in range(1, 11):           # the last commit is at the wall clock's now
            part.append([b"x"] * 20)
            consumer.commit({TopicPartition("orders", 0): 20 * step})
            behind.commit({TopicPartition("orders", 0): 10 * step})   # lag 10, 20, ...
            if step < 10:
                clock.advance(10_000)
        consumer.close()
        behind.close()
        clock.set(1_000)                    # long ago: a group that stopped with lag
        stopped = eventlog.Consumer(log, group_id="stopped", enable_auto_commit=False)
        stopped.assign([TopicPartition("orders", 0)])
        stopped.commit({TopicPartition("orders", 0): 5})
        stopped.close()
    ahead, behind_, stopped_, as_json, ghost, bad_window, no_group, unknown_option, \
        described = cli_all(
            ("groups", "status", "ahead"), ("groups", "status", "behind"),
            ("groups", "status", "stopped"), ("groups", "status", "behind", "--json",
                                              "--window", 5),
            ("groups", "status", "ghost"), ("groups", "status", "ahead", "--window", 1),
            ("groups", "status"), ("groups", "status", "ahead", "--bogus"),
            ("groups", "describe", "behind", "--json"), log=log_dir)
    assert ok(ahead).stdout.splitlines()[0] == \
        "group ahead: OK (2 OK; window 10 commits)"
    assert ahead.stdout.splitlines()[2].split() == \
        ["TOPIC", "PARTITION", "STATUS", "LAG", "LAG_MS", "COMMITTED", "END", "COMMITS"]
    assert ahead.stdout.splitlines()[3].split() == \
        ["orders", "0", "OK", "0", "0", "200", "200", "10"]
    assert behind_.returncode == 1, behind_.stderr
    assert behind_.stdout.startswith("group behind: WARN (1 WARN, 1 OK;")
    assert stopped_.returncode == 2 and "STOP" in stopped_.stdout, stopped_.stderr
    assert as_json.returncode == 1
    doc = json.loads(as_json.stdout)
    assert (doc["status"], doc["window"]) == ("WARN", 5)
    assert {k: doc["partitions"]["orders:0"][k] for k in ("status", "lag", "committed",
                                                          "end_offset", "commits")} == \
        {"status": "WARN", "lag": 100, "committed": 100, "end_offset": 200, "commits": 5}
    assert doc["partitions"]["orders:0"]["lag_ms"] >= 0
    fails(ghost, 3, "'ghost' does not exist")
    fails(bad_window, 3, "window must be at least 2")
    fails(no_group, 3, "GROUP")
    fails(unknown_option, 3, "unrecognized arguments: --bogus")
    doc = json.loads(ok(described).stdout)[0]
    assert doc["status"] == "WARN"
    assert [(p["partition"], p["status"]) for p in doc["partitions"]] == [(0, "WARN"), (1, "OK")]


def test_reset_offsets_is_a_dry_run_until_execute_and_refused_while_a_member_lives(
        orders_log):
    ok(cli("consume", "orders", "-g", "billing", "-q", log=orders_log))

    def committed() -> dict[int, int]:
        with eventlog.open(orders_log) as log:
            return {tp.partition: o for tp, o in log.group_offsets("billing").items()}

    dry = ok(cli("groups", "reset-offsets", "billing", "--to-earliest", log=orders_log))
    assert dry.stdout.splitlines()[1:] == ["orders          0        5    0",
                                           "orders          1        2    0"]
    assert "dry run" in dry.stderr and committed() == {0: 5, 1: 2}
    done = ok(cli("groups", "reset-offsets", "billing", "--shift-by", -2, "--execute",
                  "--json", log=orders_log))
    assert json.loads(done.stdout)["executed"] is True
    assert committed() == {0: 3, 1: 0}
    ok(cli("groups", "reset-offsets", "billing", "--to-datetime", 2000, "--topic", "orders",
           "--execute", log=orders_log))
    assert committed() == {0: 1, 1: 0}
    fresh = ok(cli("groups", "reset-offsets", "new", "--topic", "orders", "--to-latest",
                   "--execute", "-q", log=orders_log))
    assert fresh.stderr == ""

    member = spawn("consume", "orders", "-g", "billing", "--follow", "-q", log=orders_log,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while committed() != {0: 5, 1: 2}:   # it consumed, so it is a live member
            assert time.monotonic() < deadline and member.poll() is None
            time.sleep(0.05)
        reset, delete = cli_all(("groups", "reset-offsets", "billing", "--to-earliest",
                                 "--execute"), ("groups", "delete", "billing"), log=orders_log)
        fails(reset, 1, "live member")
        fails(delete, 1, "live member")
        assert committed() == {0: 5, 1: 2}
        member.send_signal(signal.SIGTERM)
        assert member.wait(timeout=20) == 0
    finally:
        if member.poll() is None:
            member.kill()
            member.wait()
    assert ok(cli("groups", "delete", "billing", "new", log=orders_log)).stdout == \
        "deleted group billing\ndeleted group new\n"
    assert ok(cli("groups", "list", "--json", log=orders_log)).stdout == "[]\n"


# -- verify and dump ---------------------------------------------------------------------

def damaged_log(tmp_path: Path) -> tuple[Path, Path]:
    """A log whose first (sealed) segment has a flipped byte in its second batch."""
    log_dir = tmp_path / "log"
    with eventlog.open(log_dir) as log:
        part = log.create_topic("t", segment_bytes=1024).partition(0)
        for i in range(30):
            part.append([b"value-%d" % i] * 5)
    segment = log_dir / "topics" / "t" / "0" / "00000000000000000000.log"
    data = bytearray(segment.read_bytes())
    first_length = struct.unpack_from("<I", data, 4)[0]
    data[first_length + 70] ^= 0xFF
    segment.write_bytes(bytes(data))
    return log_dir, segment


def test_verify_passes_a_healthy_log_and_fails_a_damaged_one_with_exit_3(tmp_path):
    healthy = tmp_path / "healthy"
    make_topic(healthy, "orders", partitions=2)
    ok(cli("produce", "orders", input='{"id": 1}\n{"id": 2}\n', log=healthy))
    log_dir, _ = damaged_log(tmp_path)
    good, good_json, bad, bad_json, consume = cli_all(
        ("--log", healthy, "verify"), ("--log", healthy, "verify", "--json"),
        ("--log", log_dir, "verify"), ("--log", log_dir, "verify", "--json"),
        ("--log", log_dir, "consume", "t"))
    report = ok(good).stdout
    assert report.startswith("checked 2 segments, 1 batches, 2 records, ")
    assert report.rstrip().endswith(": OK")
    assert json.loads(ok(good_json).stdout)["ok"] is True
    assert bad.returncode == 3, bad.stderr
    assert "corrupt  no     topics/t/0/00000000000000000000.log  checksum mismatch" in \
        bad.stdout
    assert bad.stdout.rstrip().endswith("1 problem")
    assert bad_json.returncode == 3
    doc = json.loads(bad_json.stdout)
    assert doc["ok"] is False and doc["problems"][0]["kind"] == "corrupt"
    fails(consume, 3, "damaged data: checksum mismatch")


def test_verify_draws_a_progress_bar_only_on_a_terminal(tmp_path):
    log_dir = tmp_path / "log"
    make_topic(log_dir, "orders")
    with eventlog.open(log_dir) as log:
        log.topic("orders").partition(0).append([b"1", b"2"])
    assert ok(cli("verify", log=log_dir)).stderr == ""   # not a terminal: no bar
    primary, secondary = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "eventlog", "--log", str(log_dir),
                             "verify"], env=_env(), stdout=subprocess.PIPE,
                            stderr=secondary, text=True)
    os.close(secondary)
    drawn = b""
    while True:
        try:
            chunk = os.read(primary, 4096)
        except OSError:   # EIO: the child closed the terminal
            break
        if not chunk:
            break
        drawn += chunk
    os.close(primary)
    assert proc.wait(timeout=30) == 0
    assert b"verifying [" in drawn and b"100%" in drawn
    assert drawn.endswith(b"\r")   # erased at the end


def test_dump_shows_batches_and_records_and_reports_a_damaged_batch(tmp_path):
    _, segment = damaged_log(tmp_path)
    before = (segment.read_bytes(), segment.stat().st_mtime_ns)
    proc = cli("dump", segment, "--records", "--value-format", "str")
    assert proc.returncode == 3, proc.stderr
    out = proc.stdout.splitlines()
    assert out[0] == f"segment {segment}: 1024 bytes"
    assert out[1].startswith("position: 0 base_offset: 0 last_offset: 4 count: 5 ")
    assert out[1].endswith("valid: yes")
    assert out[2].startswith("| offset: 0 timestamp: ") and "value: value-0" in out[2]
    damaged = [i for i, line in enumerate(out) if line.startswith("DAMAGED")]
    assert len(damaged) == 1
    assert "checksum mismatch" in out[damaged[0]] and "next valid batch" in out[damaged[0]]
    assert out[damaged[0] - 1].endswith("valid: no")
    assert out[damaged[0] + 1].startswith("position: ") and " base_offset: 10 " in \
        out[damaged[0] + 1]   # it went on after the damaged batch
    assert out[-1].startswith("summary: 7 batches, 35 records, 1 damaged region")
    assert (segment.read_bytes(), segment.stat().st_mtime_ns) == before   # read-only

    lines = json_lines(cli("dump", segment, "--json").stdout)
    assert [d["type"] for d in lines].count("damage") == 1
    assert lines[-1]["type"] == "summary" and lines[-1]["batches"] == 7

    # A destroyed header: dump searches for the next whole batch.
    data = bytearray(before[0])
    data[0:4] = b"XXXX"
    copy = tmp_path / "copy.log"
    copy.write_bytes(bytes(data))
    proc = cli("dump", copy, "--json")
    assert proc.returncode == 3
    first = json_lines(proc.stdout)[0]
    assert first["type"] == "damage" and "bad batch magic" in first["error"]
    assert first["resumed_at"] == 230   # the second batch is damaged too


def test_dump_a_partition_directory_and_its_indexes(tmp_path):
    log_dir = tmp_path / "log"
    make_topic(log_dir, "orders")
    with eventlog.open(log_dir) as log:
        log.topic("orders").partition(0).append([b"a", b"b"], headers=[[("h", b"1")], None])
    partition = log_dir / "topics" / "orders" / "0"
    bogus = tmp_path / "bogus.index"
    bogus.write_bytes(b"garbage")
    directory, index, missing, damaged = cli_all(
        ("dump", partition, "-r", "--value-format", "text"),
        ("dump", partition / "00000000000000000000.index"),
        ("dump", tmp_path / "nothing.log"), ("dump", bogus, "--json"))
    assert "value: a headers: h=1" in ok(directory).stdout
    assert "value: b headers: -" in directory.stdout
    assert "offset: 0 position: 0" in ok(index).stdout
    fails(missing, 1, "No such file")
    assert damaged.returncode == 3 and json_lines(damaged.stdout)[0]["type"] == "damage"


# -- demo and bench ----------------------------------------------------------------------

def test_demo_runs_a_producer_and_two_worker_processes_and_can_run_again(tmp_path):
    proc = ok(cli("demo", cwd=tmp_path, timeout=120))
    out = proc.stdout
    assert (tmp_path / "demo-log" / "eventlog.json").exists()   # ./demo-log by default
    for needle in ("topic orders has 4 partitions", "worker-1  assigned orders[",
                   "worker-2  assigned orders[", "producer  sent 2000 orders",
                   "lag 0 (", "done: 2000 orders produced, processed and committed"):
        assert needle in out, out
    worker_pids = {line.split("(pid ")[1].split(")")[0] for line in out.splitlines()
                   if "started (pid" in line}
    assert len(worker_pids) == 2 and str(proc.args) and os.getpid() not in worker_pids
    lags = [int(line.split(" lag ")[1].split()[0]) for line in out.splitlines()
            if " lag " in line]
    assert max(lags) > 0 and lags[-1] == 0   # lag was reported as it drained
    processed = sum(int(line.split("processing ")[1].split()[0])
                    for line in out.splitlines() if "stopped after processing" in line)
    assert processed == 2000

    again = ok(cli("demo", "--orders", 200, cwd=tmp_path, timeout=120))
    assert "(fresh)" in again.stdout and "done: 200 orders" in again.stdout
    with eventlog.open(tmp_path / "demo-log") as log:
        assert sum(p.end_offset for p in log.topic("orders").partitions) == 200

    (tmp_path / "not-a-log").mkdir()
    (tmp_path / "not-a-log" / "thesis.tex").write_text("precious")
    fails(cli("demo", "--dir", tmp_path / "not-a-log"), 1, "leaves it alone")
    assert (tmp_path / "not-a-log" / "thesis.tex").read_text() == "precious"


def test_bench_reports_throughput(tmp_path):
    proc = ok(cli("bench", "--records", 2000, "--runs", 1, "--dir", tmp_path, "--json"))
    doc = json.loads(proc.stdout)
    assert len(doc["results"]) == 5
    assert all(r["records"] == 2000 and r["records_per_s"] > 0 for r in doc["results"])
    assert list(tmp_path.iterdir()) == []   # the temporary log is gone
    table = ok(cli("bench", "-n", 500, "--runs", 1)).stdout
    assert "WORKLOAD" in table and "send_batch(), msgpack dicts" in table
