"""Every ```python example in README.md and docs/*.md runs, and module doctests pass.

The blocks of one page run in order in one namespace, in a fresh working directory,
so a page can build on its earlier examples.
"""

from __future__ import annotations

import doctest
import importlib
import os
import pkgutil
import re
from pathlib import Path

import pytest

import eventlog
from tests.conftest import ROOT

_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]


def python_blocks(page: Path) -> list[str]:
    return _BLOCK.findall(page.read_text())


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_page_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    blocks = python_blocks(page)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    for i, block in enumerate(blocks):
        code = compile(block, f"{page.name}[block {i}]", "exec")
        exec(code, namespace)


def test_every_docs_page_has_a_runnable_example():
    for page in sorted((ROOT / "docs").glob("**/*.md")):
        if page.name in ("format.md",):  # a byte-layout reference: diagrams, no API
            continue
        assert python_blocks(page), f"{page} has no ```python example"


def _modules():
    yield eventlog
    for info in pkgutil.iter_modules(eventlog.__path__, "eventlog."):
        if info.name != "eventlog.__main__":
            yield importlib.import_module(info.name)


@pytest.mark.parametrize("module", list(_modules()), ids=lambda m: m.__name__)
def test_module_doctests(module, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_readme_opens_with_the_two_setup_commands_that_ci_runs():
    text = (ROOT / "README.md").read_text()
    first_block = re.search(r"```sh\n(.*?)```", text, re.S).group(1).strip().splitlines()
    assert len(first_block) == 2
    run_demo, run_tests = first_block
    assert "eventlog demo" in run_demo
    assert "pytest" in run_tests
    ci = (ROOT / ".ci" / "run").read_text()
    assert run_tests in ci, ".ci/run must run the README's test command"
    assert os.access(ROOT / ".ci" / "run", os.X_OK)
