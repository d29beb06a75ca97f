"""Shared fixtures and helpers for the test suite.

``EVENTLOG_SOAK`` scales the long-running tests (crash loops, fuzzing, stress):
``EVENTLOG_SOAK=1`` (the default) keeps the whole suite within a few minutes on two
cores; ``EVENTLOG_SOAK=50`` runs fifty times as many cycles.

Both backends: a test that takes ``any_log`` (or ``any_address``, or ``backend``)
runs twice, on a log directory (``[local]``) and on ``kafka://`` the session's real
broker (``[kafka]``, marked ``kafka``). The broker lives for the whole run, so such a
test names its topics, groups and transactional ids with ``unique_name``. A test of
what only a log directory has (segment files, ``check()``, fsync, ``kill -9`` of a
writer, the storage seam) carries ``@pytest.mark.local_only("why")``: it runs once,
locally, and ``pytest -m local_only`` lists every such test.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

import eventlog

SOAK = max(1, int(os.environ.get("EVENTLOG_SOAK", "1")))
ROOT = Path(__file__).resolve().parent.parent

settings.register_profile("default", deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("soak", deadline=None, max_examples=200 * SOAK,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("soak" if SOAK > 1 else "default")


def soak(n: int) -> int:
    """``n`` scaled by EVENTLOG_SOAK."""
    return n * SOAK


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path / "log"


@pytest.fixture
def log(log_dir: Path) -> Iterator[eventlog.Log]:
    with eventlog.open(log_dir) as opened:
        yield opened


def run_python(code: str, *args: str, timeout: float = 60, check: bool = True
               ) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (a real separate process)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                          text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"child failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def spawn_python(code: str, *args: str, **kwargs: object) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, text=True,
                            **kwargs)  # type: ignore[call-overload]


def complete_json_lines(path: Path) -> list[Any]:
    """The JSON lines of a file that processes append to, without a last line cut short
    by a ``kill -9`` in the middle of a write."""
    return [json.loads(line) for line in path.read_text().splitlines(keepends=True)
            if line.endswith("\n")]


@contextlib.contextmanager
def small_filesystem(size_bytes: int) -> Iterator[Path | None]:
    """A real, tiny tmpfs to fill up, or None where mounting is not permitted."""
    mountpoint = Path(tempfile.mkdtemp(prefix="eventlog-small-fs-"))
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs",
                           str(mountpoint)], capture_output=True, check=False)
    if proc.returncode != 0:
        mountpoint.rmdir()
        yield None
        return
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)
        with contextlib.suppress(OSError):
            mountpoint.rmdir()


def fill_disk_error() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# -- both backends ----------------------------------------------------------------------

BACKENDS = ("local", pytest.param("kafka", marks=pytest.mark.kafka))


def unique_name(prefix: str = "t") -> str:
    """A topic, group or transactional id no other test uses (the Kafka broker keeps
    every topic and group of the session)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """``"local"`` or ``"kafka"``: which backend ``any_log`` is on (parametrized by
    ``pytest_generate_tests``)."""
    return str(getattr(request, "param", "local"))


@pytest.fixture
def any_address(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> str:
    """What to give ``eventlog.open``: a fresh log directory, or the session broker's
    ``kafka://`` address (tests that open the log with options of their own)."""
    if backend == "local":
        return str(tmp_path / "log")
    pytest.importorskip("confluent_kafka")
    broker = request.getfixturevalue("kafka_broker")
    return f"kafka://{broker.bootstrap_servers}"


@pytest.fixture
def any_log(any_address: str) -> Iterator[eventlog.Log]:
    """A log on each backend in turn: a directory, then the session's Kafka broker."""
    with eventlog.open(any_address) as opened:
        yield opened


def is_kafka(log: eventlog.Log) -> bool:
    """Whether ``log`` was opened on ``kafka://``."""
    return str(log.path).startswith("kafka://")


def drain(consumer: eventlog.Consumer, count: int, timeout: float = 30.0) -> list[Any]:
    """Poll until ``count`` records came (or ``timeout`` passed: then fewer)."""
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        got += consumer.poll(timeout=0.5)
    return got


def read_all(log: eventlog.Log, topic: str, *, raw: bool = False, timeout: float = 30.0
             ) -> list[Any]:
    """Every record of ``topic`` now, by (partition, offset), read through a group-less
    ``Consumer`` with ``assign`` (the public way on both backends) up to the end
    offsets; ``raw`` leaves keys and values as the bytes stored. (For topics without
    transactions: their markers take offsets no record is returned for.)"""
    de = "bytes" if raw else None
    tps = [eventlog.TopicPartition(topic, p.id) for p in log.topic(topic).partitions]
    with eventlog.Consumer(log, key_deserializer=de, value_deserializer=de) as consumer:
        consumer.assign(tps)
        ends = consumer.end_offsets(tps)
        upto = consumer.beginning_offsets(tps)   # the next offset to see, per partition
        got: list[Any] = []
        deadline = time.monotonic() + timeout
        while any(upto[tp] < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise AssertionError(f"{topic}: read up to {upto}, not up to {ends}")
            for record in consumer.poll(timeout=0.2):
                got.append(record)
                upto[eventlog.TopicPartition(topic, record.partition)] = record.offset + 1
    return sorted(got, key=lambda r: (r.partition, r.offset))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run every test that uses ``backend`` (``any_log``, ``any_address``) on both
    backends, or on the local one alone when it is marked ``local_only``."""
    if "backend" in metafunc.fixturenames:
        local_only = metafunc.definition.get_closest_marker("local_only") is not None
        metafunc.parametrize("backend", ["local"] if local_only else BACKENDS,
                             indirect=True)


def _kafka(nodes: int) -> Iterator[Any]:
    from tests import kafka_broker

    reason = kafka_broker.unavailable_reason()
    if reason is not None:
        if os.environ.get(kafka_broker.REQUIRE_ENV) == "1":
            pytest.fail(f"{reason} ({kafka_broker.REQUIRE_ENV}=1)", pytrace=False)
        pytest.skip(reason)
    with kafka_broker.KafkaCluster(nodes, heap_mb=384 if nodes == 1 else 320) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[Any]:
    """A real single-node Kafka broker for the whole run (tests/kafka_broker.py):
    ``.bootstrap_servers``. Skips without Java/Maven unless EVENTLOG_REQUIRE_KAFKA=1."""
    yield from _kafka(1)


@pytest.fixture(scope="session")
def kafka_cluster() -> Iterator[Any]:
    """Three real Kafka brokers (replication factor 3, min.insync.replicas=2) for
    failover tests; ``.nodes[i].kill()`` / ``.start()``, ``.wait_ready()``. A test
    that kills a node starts it again before it ends."""
    yield from _kafka(3)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use a Kafka broker carry the ``kafka`` marker (``-m "not kafka"``);
    a ``local_only`` marker must say why."""
    for item in items:
        marker = item.get_closest_marker("local_only")
        if marker is not None and not (len(marker.args) == 1 and isinstance(
                marker.args[0], str) and marker.args[0].strip()):
            raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.local_only needs the "
                                    "reason as one string")
        if {"kafka_broker", "kafka_cluster"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.kafka)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print what the reliability tests exercised (their module-level ``STATS``), so a
    run's figures can be quoted in docs/reliability.md with the command that made them."""
    lines = []
    for name, module in sorted(sys.modules.items()):
        stats = getattr(module, "STATS", None)
        if name.startswith("tests.test_rel_") and isinstance(stats, dict) and any(stats.values()):
            figures = ", ".join(f"{key}={value:,}" for key, value in stats.items())
            lines.append(f"{name.removeprefix('tests.')}: {figures}")
    if lines:
        terminalreporter.write_sep("-", f"reliability figures (EVENTLOG_SOAK={SOAK})")
        for line in lines:
            terminalreporter.write_line(line)
