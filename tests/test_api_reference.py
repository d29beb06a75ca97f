"""The API reference (docs/reference/, rendered by mkdocstrings) shows the whole public
API: every public name is rendered by a ``::: name`` directive, every public method and
property of a public class has a docstring (mkdocstrings leaves out members without
one, and ``mkdocs build --strict`` does not notice), and no rendered signature shows an
undocumented name as a default (``fetch_max_bytes=DEFAULT_FETCH_MAX_BYTES`` tells a
reader nothing; ``4 << 20`` does).
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import eventlog
from tests.conftest import ROOT

REFERENCE = ROOT / "docs" / "reference"
# The public modules: each one's __all__ is public API.
MODULES = ["eventlog", "eventlog.aio", "eventlog.config", "eventlog.errors",
           "eventlog.monitoring", "eventlog.prometheus", "eventlog.serde",
           "eventlog.strategies", "eventlog.testing"]
_DIRECTIVE = re.compile(r"^::: ([\w.]+)\n((?:[ \t]+.*\n?)*)", re.M)


def rendered() -> dict[str, bool]:
    """Each ``::: name`` directive of the reference, and whether it renders members."""
    out = {}
    for page in sorted(REFERENCE.glob("*.md")):
        for match in _DIRECTIVE.finditer(page.read_text()):
            options = match.group(2)
            out[match.group(1)] = not re.search(r"^\s*members:\s*false\s*$", options, re.M)
    return out


def public_objects() -> Iterator[tuple[str, str, Any]]:
    """``(module, name, object)`` for every name in a public module's ``__all__``."""
    seen = set()
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if name.startswith("__") or id(obj) in seen:
                continue
            seen.add(id(obj))
            yield module_name, name, obj


def _defining_module(obj: Any) -> str:
    return getattr(obj, "__module__", "") or ""


def _is_rendered(module_name: str, name: str, obj: Any, directives: dict[str, bool]
                 ) -> bool:
    home = _defining_module(obj)
    if f"{module_name}.{name}" in directives or f"{home}.{name}" in directives:
        return True
    for module in (module_name, home):
        if directives.get(module):  # a module rendered with its members
            listed = getattr(importlib.import_module(module), "__all__", None)
            if listed is None or name in listed:
                return True
    return False


def public_members(cls: type) -> Iterator[tuple[str, Any]]:
    """The public methods and properties a class defines itself (not its fields)."""
    fields = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) \
        else set(getattr(cls, "_fields", ()))
    for name, value in vars(cls).items():
        if name.startswith("_") or name in fields:
            continue
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if isinstance(value, property) or inspect.isfunction(value):
            yield name, value


def _doc(value: Any) -> str:
    target = value.fget if isinstance(value, property) else value
    return (getattr(target, "__doc__", None) or "").strip()


def test_every_public_name_is_in_the_reference():
    directives = rendered()
    missing = [f"{module}.{name}" for module, name, obj in public_objects()
               if not _is_rendered(module, name, obj, directives)]
    assert not missing, f"not rendered by any '::: name' in docs/reference: {missing}"


def test_every_public_name_method_and_property_has_a_docstring():
    missing = []
    for module, name, obj in public_objects():
        if not (inspect.isclass(obj) or callable(obj)):
            continue
        if not (inspect.getdoc(obj) or "").strip():
            missing.append(f"{module}.{name}")
        if inspect.isclass(obj) and not issubclass(obj, BaseException):
            missing += [f"{module}.{name}.{member}" for member, value in public_members(obj)
                        if not _doc(value)]
    assert not missing, f"no docstring (so not in the reference): {missing}"


def _literal(node: ast.expr) -> bool:
    """A default a reader understands as shown: constants and arithmetic on them."""
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.UnaryOp):
        return _literal(node.operand)
    if isinstance(node, ast.BinOp):
        return _literal(node.left) and _literal(node.right)
    if isinstance(node, (ast.Tuple, ast.List)):
        return all(_literal(e) for e in node.elts)
    return False


def _signatures(obj: Any) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    try:
        source = textwrap.dedent(inspect.getsource(obj))
    except (OSError, TypeError):
        return
    tree = ast.parse(source)
    top = tree.body[0]
    if isinstance(top, (ast.FunctionDef, ast.AsyncFunctionDef)):
        yield top.name, top
    elif isinstance(top, ast.ClassDef):
        for node in top.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and \
                    (node.name == "__init__" or not node.name.startswith("_")):
                yield f"{top.name}.{node.name}", node


def _explained(node: ast.expr, home: ModuleType) -> bool:
    """A default a reader can look up: a literal, a name the reference documents (in
    its module's ``__all__``), or an object of another library (prometheus_client's
    ``REGISTRY``)."""
    if _literal(node):
        return True
    if isinstance(node, ast.Name):
        if node.id in getattr(home, "__all__", ()):
            return True
        value = getattr(home, node.id, None)
        kind = type(value).__module__
        return value is not None and not kind.startswith(("eventlog", "builtins"))
    return False


def test_no_rendered_signature_shows_a_private_default():
    shown = []
    for module, _name, obj in public_objects():
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        if _defining_module(obj).split(".")[0] != "eventlog":
            continue
        home = importlib.import_module(_defining_module(obj))
        for where, fn in _signatures(obj):
            args = fn.args
            for default in [*args.defaults, *(d for d in args.kw_defaults if d)]:
                if not _explained(default, home):
                    shown.append(f"{module}.{where}: {ast.unparse(default)}")
    assert not shown, f"defaults that render as an undocumented name: {shown}"


def test_literal_defaults_agree_with_the_internal_ones():
    from eventlog._fetcher import DEFAULT_FETCH_MAX_BYTES
    from eventlog._status import DEFAULT_WINDOW

    def default(fn: Any, name: str) -> Any:
        return inspect.signature(fn).parameters[name].default

    assert default(eventlog.Consumer, "fetch_max_bytes") == DEFAULT_FETCH_MAX_BYTES
    assert default(eventlog.Log.group_status, "window") == DEFAULT_WINDOW
    from eventlog._kafka_wire._group_coordinator import MIN_SESSION_TIMEOUT_MS
    from eventlog._kafka_wire._server import DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_FRAME_BYTES

    assert default(eventlog.KafkaServer, "max_frame_bytes") == DEFAULT_MAX_FRAME_BYTES
    assert default(eventlog.KafkaServer, "max_connections") == DEFAULT_MAX_CONNECTIONS
    assert default(eventlog.KafkaServer, "group_min_session_timeout_ms") == \
        MIN_SESSION_TIMEOUT_MS


@pytest.mark.parametrize("module", MODULES)
def test_public_modules_declare_their_names(module: str):
    loaded: ModuleType = importlib.import_module(module)
    assert loaded.__all__, module
    assert all(hasattr(loaded, name) for name in loaded.__all__)


def test_the_reference_pages_are_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in sorted(REFERENCE.glob("*.md")):
        assert f"reference/{page.name}" in nav, page.name


def test_the_checks_above_would_notice(tmp_path: Path):
    class Undocumented:
        def method(self):
            pass

    assert [name for name, value in public_members(Undocumented) if not _doc(value)] == \
        ["method"]
    node = ast.parse("def f(x=_SOME_NAME, y=4 << 20): pass").body[0]
    assert isinstance(node, ast.FunctionDef)
    assert [_explained(d, eventlog) for d in node.args.defaults] == [False, True]
    assert eventlog.__all__
