"""The ``eventlog`` command (also ``python -m eventlog``): produce, consume, inspect and
administer a log directory from a shell.

For a log directory, it gives what ``kafka-topics``, ``kafka-console-producer``,
``kafka-console-consumer``, ``kafka-consumer-groups``, ``kafka-dump-log`` and ``kcat``
give for a Kafka cluster::

    eventlog --log DIR topics create|list|describe|alter|delete
    eventlog --log DIR produce TOPIC          lines from stdin
    eventlog --log DIR consume TOPIC          records to stdout
    eventlog --log DIR groups list|describe|lag|status|reset-offsets|delete
    eventlog --log DIR transactions list|describe|abort
    eventlog dump FILE...                     batches of segment files, read-only
    eventlog --log DIR verify                 checksums of a whole log
    eventlog --log DIR disk                   disk space, free space, time until full
    eventlog demo                             a producer and two workers, in processes
    eventlog bench                            throughput on this machine
    eventlog serve --port 9092                Kafka clients on the log (Kafka's protocol)
    eventlog mirror SRC DST                   copy topics between logs and Kafka clusters

Design:

- One module per command family (``_topics``, ``_records``, ``_groups``, ``_inspect``,
  ``_disk``, ``_demo``, ``_bench``); each registers its subcommands here and does its work
  through the public library API (``dump`` alone reads segment bytes with
  ``eventlog._format``, so it needs no open log and changes nothing; ``disk`` takes
  only its rate arithmetic from ``eventlog._disk``).
- The log directory is ``--log DIR`` (before or after the command name) or
  ``$EVENTLOG_LOG``. Only commands that create something create a directory.
- Results go to stdout: aligned tables for people, ``--json`` for scripts (JSON lines
  for record streams). Diagnostics and summaries go to stderr; ``-q`` silences the
  summaries.
- Exit codes are fixed (see ``_common`` and docs/cli.md): 0 success, 1 an error from
  eventlog, 2 a malformed command line, 3 damaged data found, 130 interrupted, 141
  stdout closed early (``groups status`` alone exits with the group's status: 0 OK,
  1 WARN, 2 ERR, 3 for any failure). An expected error is one ``eventlog: error: ...``
  line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from .. import __version__
from ..errors import CorruptRecordError, EventLogError
from ._bench import register as _register_bench
from ._common import (
    EXIT_BROKEN_PIPE,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_PROBLEMS,
    EXIT_USAGE,
    LOG_ENV,
    CliError,
)
from ._demo import register as _register_demo
from ._disk import register as _register_disk
from ._groups import register as _register_groups
from ._inspect import register as _register_inspect
from ._mirror import register as _register_mirror
from ._records import register as _register_records
from ._serve import register as _register_serve
from ._topics import register as _register_topics
from ._transactions import register as _register_transactions

__all__ = ["build_parser", "main"]

_EPILOG = f"""\
The log directory is --log DIR (before or after the command) or ${LOG_ENV}.
Run 'eventlog COMMAND --help' for the options of a command; docs/cli.md is the
reference.

exit codes:
  0    success
  1    eventlog refused the operation or it failed (unknown topic or group,
       invalid setting, group has live members, I/O error, ...); disk: the
       free space runs out within --within
  2    the command line is malformed (unknown option, missing argument, ...)
  3    verify or dump found damaged data (also when a read meets a corrupt batch)
  130  interrupted (Ctrl-C); consume stops normally on Ctrl-C and exits 0
  141  stdout was closed before the output was written (e.g. piped into head)

groups status exits with the group's status instead, as a monitoring check does:
  0 OK, 1 WARN, 2 ERR, and 3 when no status could be given (any error above,
  a malformed command line included)
"""


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors read ``eventlog: error: ...`` (exit code 2, or
    the command's ``error_exit`` default: see ``_failed``)."""

    def error(self, message: str) -> Any:
        self.print_usage(sys.stderr)
        self.exit(self.get_default("error_exit") or EXIT_USAGE, f"eventlog: error: {message}\n")


def _log_options() -> _Parser:
    parser = _Parser(add_help=False)
    parser.add_argument("--log", metavar="DIR", default=argparse.SUPPRESS,
                        help=f"the log directory (default: ${LOG_ENV})")
    return parser


def _output_options() -> _Parser:
    parser = _Parser(add_help=False)
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="machine-readable JSON output")
    parser.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="no confirmations or summaries (errors are still shown)")
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: global options, commands, their options."""
    log_options, output_options = _log_options(), _output_options()
    parser = _Parser(prog="eventlog", parents=[log_options, output_options],
                     description="Produce, consume, inspect and administer an eventlog "
                                 "log directory.",
                     epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"eventlog {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     title="commands", parser_class=_Parser)

    def add(name: str, *, help: str, description: str, common: bool = True,
            log: bool = True, sub: Any = None) -> argparse.ArgumentParser:
        parents = (([log_options] if log else []) + [output_options]) if common else []
        target = commands if sub is None else sub
        child: argparse.ArgumentParser = target.add_parser(
            name, help=help, description=description, parents=parents,
            epilog="exit codes: see 'eventlog --help'")
        child.set_defaults(parser=child)
        return child

    for register in (_register_topics, _register_records, _register_groups,
                     _register_inspect, _register_disk, _register_demo, _register_bench,
                     _register_transactions, _register_serve, _register_mirror):
        register(add)
    return parser


def _error(message: str) -> None:
    try:
        sys.stderr.write(f"eventlog: error: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _os_error_message(exc: OSError) -> str:
    if not exc.strerror:
        return str(exc)
    if exc.filename and str(exc.filename) not in exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return exc.strerror


def _stdout_closed() -> int:
    # Later writes (and the flush at exit) would fail again: point stdout at /dev/null.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass
    return EXIT_BROKEN_PIPE


def _failed(args: argparse.Namespace, code: int) -> int:
    """The exit code of a failed command: ``code``, unless the command's exit codes
    report something else (``groups status`` exits 1 and 2 for WARN and ERR, so it sets
    ``error_exit`` to 3 for every failure)."""
    error_exit: int | None = getattr(args, "error_exit", None)
    return code if error_exit is None else error_exit


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``eventlog`` command with ``argv`` (default: ``sys.argv[1:]``) and return
    its exit code."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # reported by the command's own parser: its usage, its exit code
        getattr(args, "parser", parser).error(f"unrecognized arguments: {' '.join(extra)}")
    for name, default in (("log", None), ("json", False), ("quiet", False)):
        if not hasattr(args, name):
            setattr(args, name, default)
    try:
        code = int(args.func(args))
        sys.stdout.flush()
        return code
    except CliError as exc:
        _error(str(exc))
        return _failed(args, exc.code)
    except BrokenPipeError:
        return _stdout_closed()
    except CorruptRecordError as exc:
        _error(f"damaged data: {exc}")
        return _failed(args, EXIT_PROBLEMS)
    except EventLogError as exc:
        _error(str(exc) if not isinstance(exc, OSError) else _os_error_message(exc))
        return _failed(args, EXIT_ERROR)
    except OSError as exc:
        _error(_os_error_message(exc))
        return _failed(args, EXIT_ERROR)
    except KeyboardInterrupt:
        _error("interrupted")
        return EXIT_INTERRUPTED
