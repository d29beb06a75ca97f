"""Fault injection for the reliability tests: failing file operations, and a record of
what was fsynced so that a power loss can be simulated afterwards.

Both work by replacing the ``os`` module *inside eventlog's own modules* with a proxy,
so only eventlog's file operations are affected (not pytest's, not the test's).
"""

from __future__ import annotations

import errno
import importlib
import os
import pkgutil
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import eventlog

# The operations that can fail. "short" faults apply to writes only.
FILE_OPERATIONS = frozenset({"open", "pwrite", "write", "fsync", "fdatasync",
                             "posix_fallocate", "replace", "rename", "unlink", "ftruncate",
                             "mkdir", "makedirs"})
WRITES = frozenset({"pwrite", "write"})
SYNCS = frozenset({"fsync", "fdatasync"})


def eventlog_modules() -> list[Any]:
    """Every eventlog module that uses ``os`` (the CLI only calls into these), found
    anew each time so that a module added to the package is never left out."""
    names = [info.name for info in pkgutil.iter_modules(eventlog.__path__, "eventlog.")
             if info.name != "eventlog.__main__"]
    mods = [importlib.import_module(name) for name in names]
    return [m for m in mods if getattr(m, "os", None) is os]


class FaultyOS:
    """The ``os`` module, except that the ``fail_at``-th counted file operation fails
    with ``kind``: "ENOSPC", "EIO", or "short" (a write that writes half its data)."""

    def __init__(self, fail_at: int | None, kind: str, only: frozenset[str] | None = None):
        self._fail_at = fail_at
        self._kind = kind
        self._only = only
        self.calls = 0
        self.triggered: str | None = None

    def _counted(self, name: str) -> bool:
        if self._only is not None and name not in self._only:
            return False
        if self._kind == "short":
            return name in WRITES
        return name in FILE_OPERATIONS

    def __getattr__(self, name: str) -> Any:
        real = getattr(os, name)
        if not self._counted(name):
            return real

        def operation(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.calls == self._fail_at:
                self.triggered = name
                if self._kind == "short":
                    data = memoryview(args[1])
                    half = len(data) // 2
                    if half == 0:
                        raise OSError(errno.EIO, os.strerror(errno.EIO))
                    return real(args[0], data[:half], *args[2:])
                code = errno.ENOSPC if self._kind == "ENOSPC" else errno.EIO
                raise OSError(code, os.strerror(code))
            return real(*args, **kwargs)

        return operation


@contextmanager
def injected(proxy: Any) -> Iterator[Any]:
    """Route eventlog's ``os`` calls through ``proxy`` inside the block."""
    mods = eventlog_modules()
    for m in mods:
        m.os = proxy
    try:
        yield proxy
    finally:
        for m in mods:
            m.os = os


class SyncRecorder:
    """The ``os`` module, recording the content of a file each time it is fsynced and
    the entries of a directory each time it is fsynced."""

    def __init__(self) -> None:
        self.durable: dict[str, bytes] = {}
        self.dir_entries: dict[str, set[str]] = {}

    def __getattr__(self, name: str) -> Any:
        real = getattr(os, name)
        if name in ("replace", "rename"):
            def move(src: Any, dst: Any, *args: Any, **kwargs: Any) -> Any:
                result = real(src, dst, *args, **kwargs)
                old, new = os.fspath(src), os.fspath(dst)
                # fsynced content moves with the file, or with the directory holding it
                for table in (self.durable, self.dir_entries):
                    for key in list(table):
                        if key == old or key.startswith(old + "/"):
                            table[new + key[len(old):]] = table.pop(key)  # type: ignore[index]
                return result
            return move
        if name not in SYNCS:
            return real

        def sync(fd: int) -> Any:
            result = real(fd)
            path = os.readlink(f"/proc/self/fd/{fd}")
            if os.path.isdir(path):
                self.dir_entries[path] = set(os.listdir(path))
            else:
                with open(path, "rb") as fh:   # the fd may be write-only
                    self.durable[path] = fh.read()
            return result

        return sync


PAGE = 4096
SECTOR = 512


def power_loss(root: str, recorder: SyncRecorder, rng: random.Random) -> dict[str, int]:
    """Rewrite the files under ``root`` as a power loss could have left them.

    A page that differs from its last fsynced content comes back old (lost), new
    (written back before the loss), or torn (new up to a sector boundary). A file never
    fsynced comes back with a random subset of its pages, the rest zero, or not at all
    if its directory was not fsynced after it was created. Fsynced data always
    survives. Returns counts of what was done."""
    stats = {"pages_lost": 0, "pages_torn": 0, "pages_kept": 0, "files_lost": 0}
    for dirpath, _, names in os.walk(root):
        listed = recorder.dir_entries.get(dirpath)
        for name in names:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as fh:
                current = fh.read()
            durable = recorder.durable.get(path)
            if durable is None and listed is not None and name not in listed \
                    and rng.random() < 0.5:
                os.unlink(path)
                stats["files_lost"] += 1
                continue
            base = durable if durable is not None else b""
            out = bytearray(current)
            for start in range(0, len(current), PAGE):
                new = current[start:start + PAGE]
                old = base[start:start + PAGE].ljust(len(new), b"\0")
                if new == old:
                    continue
                choice = rng.random()
                if choice < 0.4:
                    out[start:start + len(new)] = old
                    stats["pages_lost"] += 1
                elif choice < 0.6:
                    cut = rng.randrange(1, max(2, len(new) // SECTOR)) * SECTOR
                    out[start:start + len(new)] = new[:cut] + old[cut:]
                    stats["pages_torn"] += 1
                else:
                    stats["pages_kept"] += 1
            with open(path, "r+b") as fh:
                fh.write(out)
    return stats


def crash(log: eventlog.Log) -> None:
    """Drop a Log as a killed process would: no fsync, no clean marker."""
    log._abandon()


@contextmanager
def rebooted() -> Iterator[None]:
    """Make this process look like it runs on a new kernel boot, so recovery may not
    trust the page cache (as after a real OS crash or power loss)."""
    from eventlog import _head

    real = _head.current_boot_id()
    _head._boot_id = real ^ 0xDEADBEEF
    try:
        yield
    finally:
        _head._boot_id = real


def run_until_success(attempt: Callable[[int], bool], limit: int = 500) -> int:
    """Call ``attempt(n)`` for n = 1, 2, ... until it returns True (the operation ran
    without hitting the fault); return how many faults were injected."""
    for n in range(1, limit + 1):
        if attempt(n):
            return n - 1
    raise AssertionError(f"the operation still hit a fault after {limit} attempts")
