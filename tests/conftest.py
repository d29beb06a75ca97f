"""Shared fixtures and helpers for the test suite.

``EVENTLOG_SOAK`` scales the long-running tests (crash loops, fuzzing, stress):
``EVENTLOG_SOAK=1`` (the default) keeps the whole suite within a few minutes on two
cores; ``EVENTLOG_SOAK=50`` runs fifty times as many cycles.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
import sys
import tempfile
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
    """Tests that use a Kafka broker carry the ``kafka`` marker (``-m "not kafka"``)."""
    for item in items:
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
