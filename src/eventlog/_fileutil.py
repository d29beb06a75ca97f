"""Small, careful file operations shared by every on-disk artifact.

- Metadata is written to a temp file, fsynced, renamed over the target, and the
  directory is fsynced (``atomic_write``), so a reader sees the old or the new file.
- Segment space is allocated before it is mapped (``preallocate``), so a full disk is
  an ``OSError`` at allocation time rather than a SIGBUS on a later page fault.
- ``sync_file`` is a real durability barrier on each platform (F_FULLFSYNC on macOS).
- Files are created with mode 0o600 and directories with 0o700.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

from .errors import LogDirectoryError

FILE_MODE = 0o600
DIR_MODE = 0o700
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def translate_os_error(exc: OSError, action: str) -> LogDirectoryError:
    """Turn an ``OSError`` into a ``LogDirectoryError`` that keeps its errno."""
    err = LogDirectoryError(exc.errno or errno.EIO, f"{action}: {exc.strerror or exc}",
                            exc.filename)
    err.__cause__ = exc
    return err


P = ParamSpec("P")
R = TypeVar("R")


def translate_errors(action: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a public method: an ``OSError`` escaping from it becomes a
    ``LogDirectoryError`` (same errno), so callers only ever see the error tree."""
    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return fn(*args, **kwargs)
            except LogDirectoryError:
                raise
            except OSError as exc:
                raise translate_os_error(exc, f"{action} ({fn.__name__})") from exc
        return wrapper
    return decorate


@contextmanager
def os_errors(action: str) -> Iterator[None]:
    """Translate ``OSError`` raised in the block into ``LogDirectoryError``."""
    try:
        yield
    except LogDirectoryError:
        raise
    except OSError as exc:
        raise translate_os_error(exc, action) from exc


def open_fd(path: str, flags: int, mode: int = FILE_MODE) -> int:
    return os.open(path, flags | _O_CLOEXEC, mode)


def sync_fd(fd: int) -> None:
    """Make the file's written data durable (data and the size needed to read it)."""
    if sys.platform == "darwin":  # pragma: no cover - exercised on macOS only
        try:
            fcntl.fcntl(fd, fcntl.F_FULLFSYNC)
            return
        except OSError:
            pass
        os.fsync(fd)
    else:
        os.fdatasync(fd)


def sync_dir(path: str) -> None:
    """fsync a directory so that a create, rename or unlink in it is durable."""
    fd = os.open(path, os.O_RDONLY | _O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as exc:  # some filesystems refuse fsync on directories
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def atomic_write(path: str, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably.

    Cost: two fsyncs and a rename. A crash at any instant leaves the old or the new
    content, never a mix.
    """
    directory = os.path.dirname(path) or "."
    tmp = temp_name(path)
    fd = open_fd(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        write_all(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    os.close(fd)
    os.replace(tmp, path)
    sync_dir(directory)


def pwrite_all(fd: int, data: bytes, offset: int) -> None:
    """``pwrite`` everything, looping over short writes."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        if written <= 0:
            raise OSError(errno.EIO, "pwrite wrote nothing")
        view = view[written:]
        offset += written


def write_all(fd: int, data: bytes) -> None:
    """``write`` everything, looping over short writes."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.EIO, "write wrote nothing")
        view = view[written:]


def temp_name(path: str) -> str:
    """A temp-file name beside ``path``, unique to this process and thread."""
    return f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"


def read_file(path: str, limit: int) -> bytes:
    """Read a small file whole; refuse anything larger than ``limit`` bytes."""
    fd = open_fd(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise LogDirectoryError(errno.EFBIG, f"{path} is {size} bytes, more than the "
                                    f"{limit} expected", path)
        chunks = []
        while True:
            chunk = os.read(fd, limit + 1)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)[: limit + 1]
    finally:
        os.close(fd)


def preallocate(fd: int, offset: int, length: int) -> None:
    """Reserve ``[offset, offset+length)`` on disk, extending the file.

    Raises ``OSError`` (ENOSPC) when the disk is full, before any page is mapped.
    """
    if length <= 0:
        return
    if hasattr(os, "posix_fallocate"):
        try:
            os.posix_fallocate(fd, offset, length)
            return
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
    # No fallocate: write real zero blocks so that the blocks exist.
    block = bytes(min(length, 1 << 20))
    end = offset + length
    pos = offset
    while pos < end:
        chunk = min(len(block), end - pos)
        pwrite_all(fd, block[:chunk], pos)
        pos += chunk


def makedirs(path: str) -> None:
    os.makedirs(path, mode=DIR_MODE, exist_ok=True)
