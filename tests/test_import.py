"""`import eventlog` loads only what a plain produce/consume needs (issue 16).

The CLI, the Prometheus exporter, the hypothesis strategies, the asyncio front ends
and the pytest helpers load on first use (``eventlog.aio`` and friends through the
package's ``__getattr__``); so do standard modules that only rare paths use. How long
the import takes is measured in benchmarks/, not asserted here.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT

LAZY = ("eventlog.cli", "eventlog.prometheus", "eventlog.strategies", "eventlog.aio",
        "eventlog.testing", "hypothesis", "prometheus_client", "argparse", "asyncio",
        "concurrent.futures", "socket", "uuid", "random")


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"import sys, json\n{code}\nprint(json.dumps(sorted(sys.modules)))"],
        capture_output=True, text=True, check=True, cwd=ROOT,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_import_eventlog_leaves_the_tools_unloaded():
    loaded = _modules_after("import eventlog")
    assert "eventlog.producer" in loaded and "eventlog.consumer" in loaded
    assert not loaded & set(LAZY), sorted(loaded & set(LAZY))


def test_a_produce_and_consume_loads_none_of_them_either():
    loaded = _modules_after(
        "import eventlog, tempfile\n"
        "with eventlog.open(tempfile.mkdtemp()) as log:\n"
        "    log.create_topic('t')\n"
        "    with eventlog.Producer(log) as p:\n"
        "        p.send('t', {'a': 1}).result()\n"
        "    with eventlog.Consumer(log, 't', group_id='g') as c:\n"
        "        assert c.poll(timeout=5)[0].value == {'a': 1}\n")
    # A group member names its host (as Kafka's client.id); tempfile, this test's own, uses random.
    lazy = set(LAZY) - {"socket", "random"}
    assert not loaded & lazy, sorted(loaded & lazy)


def test_lazy_submodules_load_on_attribute_access():
    loaded = _modules_after("import eventlog\nassert eventlog.aio.AIOConsumer\n"
                            "assert callable(eventlog.testing.__getattribute__)")
    assert {"eventlog.aio", "eventlog.testing"} <= loaded


def test_an_unknown_attribute_still_raises_attribute_error():
    import eventlog

    try:
        eventlog.no_such_thing  # noqa: B018
    except AttributeError as exc:
        assert "no_such_thing" in str(exc)
    else:
        raise AssertionError("eventlog.no_such_thing did not raise")
