"""The transaction state of a log directory: one file per transactional id.

``<log>/transactions/<name>.txn`` holds what Kafka's transaction coordinator keeps
for a transactional id: its producer id and epoch, the state of its current
transaction, the partitions that transaction touched, when it began, its timeout and,
once it is being committed, the offsets to commit. ``<name>.lock`` is the ``flock``
held while the state of that id changes (``TransactionStore.locked``): every process
on the directory reads and writes the same files, so the state is shared by
construction.

A file is replaced whole (temp file, fsync, rename, fsync of the directory:
``_fileutil.atomic_write``): a reader sees the old state or the new one, and a
checksum catches a damaged file. The byte layout is in docs/format.md; the protocol
that moves a state along is ``_txn_coordinator``.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import msgpack
import xxhash

from . import _fileutil
from .errors import CorruptRecordError, InvalidConfigError

__all__ = ["ENDED", "STATES", "TRANSACTIONS_DIR", "TransactionStore", "TxnState",
           "validate_transactional_id"]

TRANSACTIONS_DIR = "transactions"
EMPTY, ONGOING = "Empty", "Ongoing"
PREPARE_COMMIT, PREPARE_ABORT = "PrepareCommit", "PrepareAbort"
COMPLETE_COMMIT, COMPLETE_ABORT = "CompleteCommit", "CompleteAbort"
STATES = (EMPTY, ONGOING, PREPARE_COMMIT, PREPARE_ABORT, COMPLETE_COMMIT, COMPLETE_ABORT)
ENDED = frozenset((EMPTY, COMPLETE_COMMIT, COMPLETE_ABORT))  # no transaction open
MAX_ID_CHARS = 249
MAX_EPOCH = 32767          # the header's u16 epoch, kept clear of its sign bit
_SUFFIX, _LOCK_SUFFIX = ".txn", ".lock"
_MAGIC = b"EvLgTXN1"
_HEADER = struct.Struct("<8sQ")
_MAX_FILE_BYTES = 16 << 20
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")


def validate_transactional_id(tid: object) -> str:
    """``tid`` if it is a sane transactional id, else ``InvalidConfigError``: a
    non-empty ``str`` of at most 249 printable characters."""
    if not isinstance(tid, str):
        raise InvalidConfigError(f"transactional_id must be a str, not {type(tid).__name__}")
    if not 1 <= len(tid) <= MAX_ID_CHARS or not tid.isprintable():
        shown = tid if len(tid) <= 60 else tid[:57] + "..."
        raise InvalidConfigError(f"invalid transactional_id {shown!r}: use 1 to "
                                 f"{MAX_ID_CHARS} printable characters")
    return tid


def file_stem(tid: str) -> str:
    """The file name (without suffix) of ``tid``: itself when that is a safe, short
    name, else ``~`` and a hash (``~`` is never part of a plain name)."""
    if _PLAIN_NAME.fullmatch(tid):
        return tid
    return "~" + xxhash.xxh3_128_hexdigest(tid.encode())


@dataclass(frozen=True)
class TxnState:
    """The state of one transactional id (immutable: a change is a new value)."""

    transactional_id: str
    producer_id: int
    epoch: int
    state: str = EMPTY
    partitions: tuple[tuple[str, int], ...] = ()
    offsets: tuple[tuple[str, str, int, int], ...] = ()  # (group, topic, partition, offset)
    start_ms: int = -1
    timeout_ms: int = 60_000
    updated_ms: int = 0

    @property
    def open(self) -> bool:
        """True while a transaction is open or being decided."""
        return self.state not in ENDED

    def but(self, **changes: Any) -> TxnState:
        return replace(self, **changes)

    def to_bytes(self) -> bytes:
        body: bytes = msgpack.packb({
            "id": self.transactional_id, "pid": self.producer_id, "epoch": self.epoch,
            "state": self.state, "partitions": [list(tp) for tp in self.partitions],
            "offsets": [list(o) for o in self.offsets], "start_ms": self.start_ms,
            "timeout_ms": self.timeout_ms, "updated_ms": self.updated_ms})
        return _HEADER.pack(_MAGIC, xxhash.xxh3_64_intdigest(body)) + body

    @classmethod
    def from_bytes(cls, data: bytes) -> TxnState:
        """Parse a state file; ``CorruptRecordError`` unless it checks out."""
        if len(data) < _HEADER.size:
            raise CorruptRecordError("transaction state file is truncated")
        magic, checksum = _HEADER.unpack_from(data)
        body = data[_HEADER.size:]
        if magic != _MAGIC or checksum != xxhash.xxh3_64_intdigest(body):
            raise CorruptRecordError("transaction state file fails its checksum")
        try:
            doc = msgpack.unpackb(body, raw=False)
            state = cls(str(doc["id"]), int(doc["pid"]), int(doc["epoch"]), str(doc["state"]),
                        tuple((str(t), int(p)) for t, p in doc["partitions"]),
                        tuple((str(g), str(t), int(p), int(o)) for g, t, p, o in doc["offsets"]),
                        int(doc["start_ms"]), int(doc["timeout_ms"]), int(doc["updated_ms"]))
        except Exception as exc:
            raise CorruptRecordError(f"transaction state file is malformed: {exc}") from exc
        if state.state not in STATES or not 0 <= state.epoch <= MAX_EPOCH \
                or state.producer_id < 0:
            raise CorruptRecordError("transaction state file holds impossible values")
        return state


class TransactionStore:
    """The ``transactions/`` directory of a log: read, write and lock the state of
    transactional ids. Thread-safe and process-safe (every change under the id's
    ``flock``)."""

    def __init__(self, log_path: str, read_only: bool = False) -> None:
        self.directory = os.path.join(log_path, TRANSACTIONS_DIR)
        self._read_only = read_only

    def path(self, tid: str) -> str:
        return os.path.join(self.directory, file_stem(tid) + _SUFFIX)

    @contextmanager
    def locked(self, tid: str) -> Iterator[None]:
        """Hold the id's lock (threads and processes: each holder opens its own
        descriptor, and ``flock`` locks conflict across descriptors)."""
        with _fileutil.os_errors("locking transaction state"):
            _fileutil.makedirs(self.directory)
            fd = _fileutil.open_fd(os.path.join(self.directory, file_stem(tid) + _LOCK_SUFFIX),
                                   os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the flock

    def read(self, tid: str) -> TxnState | None:
        """The state of ``tid`` (None: none, or a damaged file: see ``scan``)."""
        try:
            state = TxnState.from_bytes(_fileutil.read_file(self.path(tid), _MAX_FILE_BYTES))
        except FileNotFoundError:
            return None
        except CorruptRecordError:
            return None
        return state if state.transactional_id == tid else None

    def stamp(self, tid: str) -> tuple[int, int]:
        """(inode, mtime) of the id's file, (0, 0) without one: changes with every
        write (a write replaces the file). One ``stat``."""
        try:
            st = os.stat(self.path(tid))
        except FileNotFoundError:
            return (0, 0)
        return (st.st_ino, st.st_mtime_ns)

    def write(self, state: TxnState) -> tuple[int, int]:
        """Replace the state of its id (caller holds the lock), durably: temp file,
        fsync, rename, fsync of the directory. Returns its new stamp."""
        with _fileutil.os_errors("writing transaction state"):
            _fileutil.makedirs(self.directory)
            path = self.path(state.transactional_id)
            _fileutil.atomic_write(path, state.to_bytes())
            st = os.stat(path)
        return (st.st_ino, st.st_mtime_ns)

    def delete(self, tid: str) -> None:
        """Forget ``tid`` (caller holds the lock)."""
        try:
            os.unlink(self.path(tid))
        except FileNotFoundError:
            pass

    def scan(self) -> tuple[list[TxnState], list[str]]:
        """Every readable state, sorted by id, and the names of damaged files.
        Cost: a directory listing and a read of each file."""
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return [], []
        except OSError as exc:
            if exc.errno == errno.ENOTDIR:
                return [], []
            raise
        states, damaged = [], []
        for name in names:
            if not name.endswith(_SUFFIX):
                continue
            try:
                data = _fileutil.read_file(os.path.join(self.directory, name), _MAX_FILE_BYTES)
                states.append(TxnState.from_bytes(data))
            except FileNotFoundError:
                continue
            except CorruptRecordError:
                damaged.append(name)
        states.sort(key=lambda s: s.transactional_id)
        return states, damaged
