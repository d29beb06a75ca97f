"""``eventlog.testing`` after a plain ``pip install`` (issue 17, item 12): Harness, the
clock and the helpers import and work in a process where pytest cannot be imported,
and the pytest plugin's fixtures are still there when it can."""

from __future__ import annotations

import pytest

import eventlog.testing
from tests.conftest import ROOT, run_python

NO_PYTEST = r'''
import sys

class NoPytest:
    """A meta-path finder standing in for an environment without pytest."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("pytest", "_pytest"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoPytest())
try:
    import pytest
except ModuleNotFoundError:
    pass
else:
    raise SystemExit("the blocker does not work")

from eventlog.testing import Harness, ManualClock, drain, read_all, wait_for, wait_for_lag

with Harness(clock=ManualClock()) as h:
    h.log.create_topic("orders")
    h.producer().send("orders", {"id": 1}).result()
    assert [r.value for r in read_all(h.log, "orders")] == [{"id": 1}]
    consumer = h.consumer("orders", group_id="billing", enable_auto_commit=False)
    assert len(drain(consumer)) == 1
    consumer.commit()
    assert wait_for_lag(h.log, "billing") == {("orders", 0): 0}
assert not any(m.split(".")[0] in ("pytest", "_pytest") for m in sys.modules)
print("ok")
'''


def test_harness_and_helpers_work_where_pytest_cannot_be_imported():
    assert run_python(NO_PYTEST).stdout == "ok\n"


def test_the_plugin_module_still_offers_every_fixture():
    for name in ("eventlog_log", "eventlog_clock", "eventlog_producer", "eventlog_consumer",
                 "eventlog_open", "eventlog_harness", "eventlog_options"):
        assert callable(getattr(eventlog.testing, name)), name


def test_a_slim_pytest_extra_for_users_and_the_heavy_one_for_the_project():
    tomllib = pytest.importorskip("tomllib")     # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    names = {dep.split(">")[0].split("[")[0].strip() for dep in extras["pytest"]}
    assert names == {"pytest", "hypothesis"}       # eventlog.strategies needs hypothesis
    assert {"pytest", "mypy", "matplotlib"} <= \
        {dep.split(">")[0].split(";")[0].strip() for dep in extras["test"]}
