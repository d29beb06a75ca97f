"""Every ```python example in README.md and docs/*.md runs, and module doctests pass.

Each block runs by itself, in a fresh namespace and a fresh working directory, as a
user who copies that one block into a file runs it. A block that truly continues the
examples before it says so in its first line, ``# continues the example above``, so a
reader sees it too: it runs after every earlier block of its page, all in one
namespace (each block in a directory of its own), as the page reads top to bottom.

Every line of a code block a reader may copy (every fence but ```text, which shows a
program's output verbatim) is at most ``MAX_CODE_LINE`` characters: longer lines end
behind a scrollbar on the docs site at 1280 px, and with them the comments at their
ends.
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
_FENCE = re.compile(r"^(```+)([^\n]*)\n(.*?)^\1[ \t]*$", re.S | re.M)
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
CONTINUES = "# continues the example above"
MAX_CODE_LINE = 88


def python_blocks(page: Path) -> list[str]:
    return _BLOCK.findall(page.read_text())


def _blocks() -> list[tuple[Path, int]]:
    return [(page, i) for page in PAGES for i in range(len(python_blocks(page)))]


def _run(code: str, name: str, namespace: dict[str, object], directory: Path,
         monkeypatch: pytest.MonkeyPatch) -> None:
    directory.mkdir()
    monkeypatch.chdir(directory)
    exec(compile(code, name, "exec"), namespace)


@pytest.mark.parametrize(("page", "index"), _blocks(),
                         ids=[f"{p.relative_to(ROOT)}[{i}]" for p, i in _blocks()])
def test_each_example_runs_alone(page: Path, index: int, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch):
    blocks = python_blocks(page)
    block = blocks[index]
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}_{index}"}
    if block.startswith(CONTINUES):
        assert index > 0, f"{page.name} block {index} continues nothing"
        for i, earlier in enumerate(blocks[:index]):
            _run(earlier, f"{page.name}[block {i}]", namespace, tmp_path / f"block-{i}",
                 monkeypatch)
    _run(block, f"{page.name}[block {index}]", namespace, tmp_path / "block", monkeypatch)


def test_a_block_that_needs_the_blocks_above_fails_alone(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch):
    # What this file checks: a block using a name from an earlier block fails by itself.
    page = tmp_path / "page.md"
    page.write_text("```python\nimport eventlog\n```\n\n```python\neventlog.open\n```\n")
    first, second = python_blocks(page)
    _run(first, "first", {}, tmp_path / "a", monkeypatch)
    with pytest.raises(NameError):
        _run(second, "second", {}, tmp_path / "b", monkeypatch)


def code_lines(page: Path) -> list[tuple[str, str]]:
    """``(fence info, line)`` for every line of every code block but ```text ones."""
    out = []
    for match in _FENCE.finditer(page.read_text()):
        info = match.group(2).strip()
        if info == "text":
            continue
        out += [(info, line) for line in match.group(3).splitlines()]
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_code_block_lines_fit_the_page(page: Path):
    # The README's test command is .ci/run's line, verbatim (checked below): not wrapped.
    verbatim = set((ROOT / ".ci" / "run").read_text().splitlines())
    long = [f"{info or 'plain'}: {line}" for info, line in code_lines(page)
            if len(line) > MAX_CODE_LINE and line not in verbatim]
    assert not long, f"lines over {MAX_CODE_LINE} characters:\n" + "\n".join(long)


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
