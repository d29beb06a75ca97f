"""What every command shares: exit codes, errors, opening the log directory, and the
parsing of option values (topic settings, sizes, durations, points in time, headers).

Errors a user can cause are raised as :class:`CliError` (or an ``EventLogError`` from
the library); ``main`` turns both into one ``eventlog: error: ...`` line on stderr and
the documented exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

from .. import open as open_log
from ..config import TopicConfig
from ..config import setting_name as library_setting_name
from ..errors import InvalidConfigError
from ..log import MARKER_FILE, Log

# Exit codes (docs/cli.md, "Exit codes"): a script may rely on these.
EXIT_OK = 0
EXIT_ERROR = 1          # eventlog refused the operation or it failed
EXIT_USAGE = 2          # the command line is malformed (argparse's own code)
EXIT_PROBLEMS = 3       # verify or dump found damaged data
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), except where a command documents otherwise
EXIT_BROKEN_PIPE = 141  # stdout was closed early (128 + SIGPIPE), as `cat | head` reports

LOG_ENV = "EVENTLOG_LOG"


class CliError(Exception):
    """An error to report as ``eventlog: error: <message>`` with exit code ``code``."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


def usage_error(args: argparse.Namespace, message: str) -> CliError:
    """A usage error found after parsing (conflicting options): exit code 2."""
    parser: argparse.ArgumentParser | None = getattr(args, "parser", None)
    if parser is not None:
        parser.print_usage(sys.stderr)
    return CliError(message, EXIT_USAGE)


# -- the log directory -------------------------------------------------------------------

def log_path(args: argparse.Namespace) -> str:
    """The log directory: ``--log DIR``, else ``$EVENTLOG_LOG``; a usage error if none."""
    path: str | None = getattr(args, "log", None) or os.environ.get(LOG_ENV) or None
    if not path:
        raise usage_error(args, f"no log directory: give --log DIR or set {LOG_ENV}")
    return path


# Commands of other modules that only read, by (command, action): they open the log
# read_only. The modules of the other reading commands say so themselves.
_READING = frozenset({("groups", "list"), ("groups", "describe"), ("groups", "lag"),
                      ("groups", "status"), ("disk", None)})


def reads_only(args: argparse.Namespace) -> bool:
    """True for a command of ``_READING``."""
    action = getattr(args, f"{getattr(args, 'command', '')}_command", None)
    return (getattr(args, "command", None), action) in _READING


@contextmanager
def opened_log(args: argparse.Namespace, *, create: bool = False,
               read_only: bool | None = None, **options: Any) -> Iterator[Log]:
    """Open the log directory of ``args``.

    Only commands that create something pass ``create=True``; every other command
    refuses a directory that does not exist or is not a log directory, rather than
    leaving an empty log behind a typo. Commands that only read open it
    ``read_only`` (``read_only=True``, or by default ``reads_only(args)``): they
    create, write and lock nothing, so they work on a read-only mount and beside
    running writers.
    """
    path = log_path(args)
    if read_only is None:
        read_only = reads_only(args)
    if read_only:
        options["read_only"] = True
    if not create:
        if not os.path.exists(path):
            raise CliError(f"log directory {path} does not exist")
        if not os.path.isdir(path):
            raise CliError(f"{path} is not a directory")
        if not os.path.exists(os.path.join(path, MARKER_FILE)):
            raise CliError(f"{path} is not an eventlog log directory (it has no "
                           f"{MARKER_FILE})")
    with open_log(path, **options) as log:
        yield log


# -- topic settings ----------------------------------------------------------------------

_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20,
               "g": 1 << 30, "gib": 1 << 30}
_DURATION_UNITS = {"": 1, "ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000,
                   "d": 86_400_000}
_NUMBER = re.compile(r"(-?[0-9][0-9_]*)\s*([A-Za-z]*)")
NO_LIMIT_WORDS = ("none", "null", "-1")


@dataclasses.dataclass(frozen=True)
class SettingKind:
    """How to read one topic setting from text."""

    type: str        # "int", "float" or "str"
    optional: bool   # None ("no limit") is allowed
    default: Any


def setting_kinds() -> dict[str, SettingKind]:
    """Every topic setting, from ``TopicConfig``'s fields (their annotations are
    strings such as ``"int | None"``)."""
    kinds = {}
    for f in dataclasses.fields(TopicConfig):
        text = str(f.type)
        base = "float" if "float" in text else "int" if "int" in text else "str"
        kinds[f.name] = SettingKind(base, "None" in text, f.default)
    return kinds


def setting_name(name: str) -> str:
    """The library's name of a setting; Kafka's dotted names are accepted too
    (``retention.ms`` is ``retention_ms``), by the library's one table
    (``config.KAFKA_TOPIC_SETTINGS``); dashes may stand for underscores."""
    key = name.strip().lower()
    return library_setting_name(key if "." in key else key.replace("-", "_"))


def parse_int_with_unit(name: str, text: str) -> int:
    """An int, with a unit suffix for ``*_bytes`` (KiB, MiB, GiB; K, M, G) and ``*_ms``
    (ms, s, min, h, d) settings."""
    match = _NUMBER.fullmatch(text.strip())
    units = _SIZE_UNITS if name.endswith("_bytes") else \
        _DURATION_UNITS if name.endswith("_ms") else {"": 1}
    if match is None or match.group(2).lower() not in units:
        hint = {id(_SIZE_UNITS): " (units: KiB, MiB, GiB)",
                id(_DURATION_UNITS): " (units: ms, s, min, h, d)"}.get(id(units), "")
        raise InvalidConfigError(f"{name} needs an integer{hint}, not {text!r}")
    return int(match.group(1)) * units[match.group(2).lower()]


def parse_setting(name: str, text: str) -> tuple[str, Any]:
    """``(setting, value)`` from a ``--config name=text`` item, converted to the
    setting's type. ``none`` (or Kafka's ``-1``) means "no limit" for settings that
    allow it. Raises ``InvalidConfigError``; the library checks ranges."""
    key = setting_name(name)
    kind = setting_kinds()[key]
    value = text.strip()
    if kind.optional and value.lower() in NO_LIMIT_WORDS:
        return key, None
    if kind.type == "int":
        return key, parse_int_with_unit(key, value)
    if kind.type == "float":
        try:
            return key, float(value)
        except ValueError:
            raise InvalidConfigError(f"{key} needs a number, not {text!r}") from None
    return key, value


def key_value(text: str) -> tuple[str, str]:
    """argparse type for ``NAME=VALUE`` items (``--config``, ``--header``)."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, not {text!r}")
    return name.strip(), value


def header_item(text: str) -> tuple[str, bytes]:
    """argparse type for ``--header NAME=VALUE``: the value is stored as UTF-8."""
    name, value = key_value(text)
    return name, value.encode("utf-8")


# -- numbers and points in time ----------------------------------------------------------

def positive_int(text: str) -> int:
    """argparse type: an int >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an int >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, not {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, not {text!r}")
    return value


def seconds(text: str) -> float:
    """argparse type: a duration in seconds (a float >= 0)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, not {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, not {text!r}")
    return value


_RELATIVE = re.compile(r"(?:now)?\s*-\s*([0-9]+)\s*(ms|s|min|h|d)", re.IGNORECASE)


def point_in_time(text: str) -> int:
    """argparse type: a point in time as epoch milliseconds.

    Accepts epoch milliseconds (``1714561200000``), ISO 8601 (``2024-05-01``,
    ``2024-05-01T12:00:00Z``, ``2024-05-01T14:00+02:00``; without a zone it is local
    time), ``now``, or a time before now (``now-10min``, ``now-2h``, ``now-7d``; the
    ``now`` may be left out after an ``=``: ``--from-time=-2h``).
    """
    value = text.strip()
    if value.isdigit():
        return int(value)
    if value.lower() == "now":
        return time.time_ns() // 1_000_000
    relative = _RELATIVE.fullmatch(value)
    if relative is not None:
        delta = int(relative.group(1)) * _DURATION_UNITS[relative.group(2).lower()]
        return time.time_ns() // 1_000_000 - delta
    iso = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a point in time: {text!r} (use epoch milliseconds, ISO 8601 such as "
            "2024-05-01T12:00:00Z, or now-10min / now-2h / now-7d)") from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # naive: local time
    return round(moment.astimezone(timezone.utc).timestamp() * 1000)
