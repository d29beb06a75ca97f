"""How commands show things: aligned tables, JSON, records, sizes, times, progress.

Two outputs, one per audience. People get plain-text tables (aligned columns, no
colours, no third-party dependency) and one record per line; scripts get ``--json``:
one JSON document, or JSON lines for record streams. JSON output never depends on
whether stdout is a terminal.

Stored keys and values are bytes; a *format* (``msgpack``, ``json``, ``str``, ``bytes``)
says how to decode them. A value that does not decode is shown as raw bytes, with one
warning on stderr, rather than stopping a dump or a consumer midway. In text output,
control characters are escaped, so a record is always one line and a value can never
drive the terminal; in JSON output, bytes are a string when they are valid UTF-8 and
``{"base64": "..."}`` otherwise.
"""

from __future__ import annotations

import base64
import json
import math
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from string import Formatter
from typing import Any, TextIO

from ..serde import deserializer
from ._common import EXIT_USAGE, CliError

FORMATS = ("msgpack", "json", "str", "text", "bytes")

# C0 controls (tab excepted), DEL and C1 controls: escaped in text output.
_ESCAPES = {i: f"\\x{i:02x}" for i in (*range(0x20), *range(0x7F, 0xA0)) if i != 0x09}
_ESCAPES.update({0x0A: "\\n", 0x0D: "\\r"})


# -- tables and JSON ---------------------------------------------------------------------

def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], out: TextIO) -> None:
    """Write an aligned table: numbers right-aligned, everything else left-aligned,
    columns two spaces apart. ``None`` shows as ``-``."""
    cells = [[("-" if v is None else str(v)) for v in row] for row in rows]
    numeric = [any(r[i] != "-" for r in cells) and all(_is_number(r[i]) for r in cells)
               for i in range(len(headers))]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w)
                 for v, w, num in zip(values, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    out.write(line(list(headers)) + "\n")
    for row in cells:
        out.write(line(row) + "\n")


_NUMBER = re.compile(r"-|-?[0-9][0-9,]*(\.[0-9]+)?")


def _is_number(text: str) -> bool:
    return _NUMBER.fullmatch(text) is not None


def jsonable(obj: Any) -> Any:
    """``obj`` made JSON-ready: bytes as text (or base64), map keys as strings,
    non-finite floats as strings, anything else msgpack may produce as its repr."""
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    if isinstance(obj, (bytes, bytearray, memoryview)):
        data = bytes(obj)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(data).decode("ascii")}
    if isinstance(obj, Mapping):
        return {_json_key(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return repr(obj)


def _json_key(key: Any) -> str:
    if isinstance(key, str):
        return key
    converted = jsonable(key)
    return converted if isinstance(converted, str) else json.dumps(converted)


def dumps(obj: Any) -> str:
    """Compact JSON of ``obj`` (through ``jsonable``), non-ASCII kept as is."""
    return json.dumps(jsonable(obj), ensure_ascii=False, separators=(", ", ": "))


def write_json(obj: Any, out: TextIO) -> None:
    out.write(dumps(obj) + "\n")


# -- values as text ----------------------------------------------------------------------

def escape(text: str) -> str:
    """``text`` with control characters escaped (``\\n``, ``\\x1b``, ...)."""
    return text.translate(_ESCAPES)


def show(value: Any) -> str:
    """One value on one line: strings as they are, bytes as UTF-8 with other bytes
    escaped, ``None`` as ``null``, everything else as compact JSON."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return escape(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return escape(bytes(value).decode("utf-8", "backslashreplace"))
    return escape(json.dumps(jsonable(value), ensure_ascii=False, separators=(",", ":")))


def show_headers(headers: Sequence[tuple[str, bytes]]) -> str:
    return ",".join(f"{show(k)}={show(v)}" for k, v in headers)


def iso_ms(timestamp_ms: int) -> str:
    """``2024-05-01T12:00:00.000Z`` (UTC), or the number when it is no real time."""
    try:
        moment = datetime.fromtimestamp(timestamp_ms / 1000, timezone.utc)
    except (ValueError, OverflowError, OSError):
        return str(timestamp_ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{timestamp_ms % 1000:03d}Z"


def human_bytes(n: int) -> str:
    """``1536`` -> ``1.5 KiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_ms(ms: int) -> str:
    """``86400000`` -> ``1 d``; the largest unit that divides it exactly."""
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("min", 60_000), ("s", 1000)):
        if ms and ms % size == 0:
            return f"{ms // size} {unit}"
    return f"{ms} ms"


def show_setting(name: str, value: Any) -> str:
    """A topic setting for people: the value, and its size or duration when useful."""
    if value is None:
        return "none"
    if isinstance(value, int) and not isinstance(value, bool):
        if name.endswith("_bytes") and value >= 1024:
            return f"{value} ({human_bytes(value)})"
        if name.endswith("_ms") and value >= 1000:
            return f"{value} ({human_ms(value)})"
    return str(value)


# -- decoding stored bytes ---------------------------------------------------------------

class Decoder:
    """Decodes stored keys or values with a format; what does not decode is returned as
    raw bytes, and the first such record is reported once on stderr."""

    def __init__(self, fmt: str, what: str, err: TextIO) -> None:
        self.format = "str" if fmt == "text" else fmt
        self.what = what
        self._fn: Callable[[bytes], Any] = deserializer(self.format)
        self._err = err
        self._warned = False

    def __call__(self, data: bytes | None, topic: str, partition: int, offset: int) -> Any:
        """``data`` decoded; ``topic``, ``partition`` and ``offset`` name the record in
        the warning (a partition < 0 means ``topic`` is a file name)."""
        if data is None or self.format == "bytes":
            return data
        try:
            return self._fn(data)
        except Exception as exc:  # any deserializer failure: show the bytes instead
            if not self._warned:
                self._warned = True
                where = f"{topic} offset {offset}" if partition < 0 else \
                    f"{topic}[{partition}] offset {offset}"
                self._err.write(f"eventlog: warning: the {self.what} of {where} is not "
                                f"valid {self.format} ({type(exc).__name__}); shown as raw "
                                f"bytes (choose another --{self.what}-format)\n")
            return bytes(data)


# -- templates ---------------------------------------------------------------------------

TEMPLATE_FIELDS = ("topic", "partition", "offset", "timestamp_ms", "timestamp", "key",
                   "value", "headers")


class Field:
    """A key, value or headers in a template: ``{value}`` formats as ``show`` does,
    ``{value[id]}`` looks inside maps and lists (missing: ``null``)."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __format__(self, spec: str) -> str:
        return format(show(self.obj), spec)

    def __getitem__(self, key: Any) -> Field:
        obj = self.obj
        if isinstance(obj, Mapping):
            if key in obj:
                return Field(obj[key])
            if isinstance(key, str) and key.lstrip("-").isdigit() and int(key) in obj:
                return Field(obj[int(key)])
            return Field(None)
        if isinstance(obj, (list, tuple)) and isinstance(key, int) and -len(obj) <= key \
                < len(obj):
            return Field(obj[key])
        return Field(None)


_TEMPLATE_ESCAPES = {"\\t": "\t", "\\n": "\n", "\\\\": "\\"}


def compile_template(template: str) -> str:
    """Check a ``--template`` and expand ``\\t``, ``\\n`` and ``\\\\``; a usage error
    names an unknown field or a malformed template."""
    for escaped, char in _TEMPLATE_ESCAPES.items():
        template = template.replace(escaped, char)
    try:
        names = [name for _, name, _, _ in Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise CliError(f"--template: {exc}", EXIT_USAGE) from None
    for name in names:
        root = name.split("[", 1)[0].split(".", 1)[0]
        if root not in TEMPLATE_FIELDS:
            raise CliError(f"--template: unknown field {{{name}}}; fields: "
                           f"{', '.join(TEMPLATE_FIELDS)}", EXIT_USAGE)
    sample = {"topic": "t", "partition": 0, "offset": 0, "timestamp_ms": 0,
              "timestamp": iso_ms(0), "key": Field(None), "value": Field(None),
              "headers": Field({})}
    render_template(template, sample)
    return template


def render_template(template: str, fields: Mapping[str, Any]) -> str:
    try:
        return template.format_map(fields)
    except (KeyError, IndexError, ValueError, AttributeError, TypeError) as exc:
        raise CliError(f"--template: {type(exc).__name__}: {exc}", EXIT_USAGE) from None


# -- progress ----------------------------------------------------------------------------

class Progress:
    """A progress callback ``(done_bytes, total_bytes)`` for long runs.

    On a terminal it redraws a bar on ``stream`` at most ten times a second and erases
    it at the end; elsewhere it writes a plain line every ``line_every_s`` seconds, so
    logs of a long run show that it is alive and short runs print nothing.
    """

    def __init__(self, label: str, stream: TextIO | None = None,
                 line_every_s: float = 10.0) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.tty = _isatty(self.stream)
        self.started = time.monotonic()
        self._line_every_s = line_every_s
        self._last_draw = 0.0
        self._last_line = self.started
        self._drawn = 0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if self.tty:
            if now - self._last_draw >= 0.1 or (done >= total and self._drawn):
                self._last_draw = now
                self._draw(done, total, now)
        elif now - self._last_line >= self._line_every_s:
            self._last_line = now
            pct = 100 * done / total if total else 100.0
            self.stream.write(f"{self.label}: {pct:.0f}% ({human_bytes(done)} of "
                              f"{human_bytes(total)})\n")
            self.stream.flush()

    def _draw(self, done: int, total: int, now: float) -> None:
        columns = shutil.get_terminal_size((80, 24)).columns
        fraction = min(1.0, done / total) if total else 1.0
        tail = (f" {fraction * 100:3.0f}% {human_bytes(done)}/{human_bytes(total)} "
                f"{now - self.started:.1f}s")
        width = max(10, min(40, columns - len(self.label) - len(tail) - 4))
        filled = int(width * fraction)
        text = f"{self.label} [{'#' * filled}{'.' * (width - filled)}]{tail}"[:columns - 1]
        self.stream.write("\r" + text.ljust(self._drawn))
        self.stream.flush()
        self._drawn = len(text)

    def finish(self) -> None:
        """Erase the bar (terminal only)."""
        if self.tty and self._drawn:
            self.stream.write("\r" + " " * self._drawn + "\r")
            self.stream.flush()
            self._drawn = 0


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
