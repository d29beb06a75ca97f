"""The fixtures of eventlog's pytest plugin, re-exported by ``eventlog.testing`` (the
module the ``pytest11`` entry point names) when pytest is importable.

They live apart so that ``eventlog.testing`` (``Harness``, ``ManualClock`` and the
assertion helpers) imports without pytest, after a plain ``pip install eventlog``;
this module is the only one that imports pytest. Each fixture is a thin wrapper over
``Harness``, imported when the fixture runs (``eventlog.testing`` imports this module).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .consumer import Consumer
    from .log import Log
    from .producer import Producer
    from .testing import Harness, ManualClock

__all__ = ["eventlog_clock", "eventlog_consumer", "eventlog_harness", "eventlog_kafka",
           "eventlog_log", "eventlog_open", "eventlog_options", "eventlog_producer"]


@pytest.fixture
def eventlog_options() -> dict[str, Any]:
    """Options for ``eventlog.open`` in the other fixtures (none by default). Override
    it in a ``conftest.py`` or a test module, e.g. to return ``{"partitions": 3}``."""
    return {}


@pytest.fixture
def eventlog_clock() -> ManualClock:
    """A ``ManualClock``. A test that uses this fixture gets its logs (``eventlog_log``,
    ``eventlog_open``) running on it, unless their options name another clock."""
    from .testing import ManualClock  # noqa: PLC0415 - .testing imports this module

    return ManualClock()


@pytest.fixture
def eventlog_harness(request: pytest.FixtureRequest, tmp_path: Path,
                     eventlog_options: dict[str, Any]) -> Iterator[Harness]:
    """The test's ``Harness``: logs under ``tmp_path``, closed at teardown."""
    from .testing import Harness  # noqa: PLC0415 - .testing imports this module

    clock = None
    if "eventlog_clock" in request.fixturenames and "clock" not in eventlog_options:
        clock = request.getfixturevalue("eventlog_clock")
    with Harness(tmp_path, clock=clock, **eventlog_options) as harness:
        yield harness


@pytest.fixture
def eventlog_log(eventlog_harness: Harness) -> Log:
    """A fresh ``Log`` in the test's ``tmp_path`` (kept after a failure, for a look)."""
    return eventlog_harness.log


@pytest.fixture
def eventlog_open(eventlog_harness: Harness) -> Callable[..., Log]:
    """``eventlog_open(path=None, **options) -> Log``: more logs (or a second ``Log`` on
    a directory, as a second service would have), closed at teardown."""
    return eventlog_harness.open


@pytest.fixture
def eventlog_producer(eventlog_harness: Harness) -> Callable[..., Producer]:
    """``eventlog_producer(log=None, **options) -> Producer`` (on ``eventlog_log`` by
    default); every producer made is closed, and so flushed, at teardown."""
    return eventlog_harness.producer


@pytest.fixture
def eventlog_consumer(eventlog_harness: Harness) -> Callable[..., Consumer]:
    """``eventlog_consumer(*topics, log=None, **options) -> Consumer`` (on
    ``eventlog_log`` by default); every consumer made is closed at teardown."""
    return eventlog_harness.consumer


# -- Kafka clients: eventlog serve --------------------------------------------------------

@pytest.fixture
def eventlog_kafka(eventlog_log: Log) -> Iterator[str]:
    """A bootstrap address (``"127.0.0.1:PORT"``) where Kafka clients (confluent-kafka,
    kafka-python, aiokafka, ...) reach ``eventlog_log`` through ``eventlog.serve``; the
    test's ``eventlog_log`` is that same log, so it can check what the clients did.
    Needs the ``serve`` extra. The server stops before the log closes."""
    from .serve import serve  # noqa: PLC0415 (only tests that use the fixture need it)

    with serve(eventlog_log) as server:
        yield server.bootstrap_servers
