"""The transaction state of a log directory: one file per transactional id.

``<log>/transactions/<name>.txn`` holds what Kafka's transaction coordinator keeps
for a transactional id: its producer id and epoch, the state of its current
transaction, the partitions that transaction touched, when it began, its timeout and,
once it is being committed, the offsets to commit. ``<name>.lock`` is the ``flock``
held while the state of that id changes (``TransactionStore.locked``): every process
on the directory reads and writes the same files, so the state is shared by
construction.

A state file has two slots, as the partition head (``_head.py``): a change is written
into the slot *not* holding the newest state, with a sequence number one higher and a
checksum, and fdatasynced before the call returns. A writer killed mid-write, a write
torn by a power loss, or a reader racing a writer, all leave the other slot intact and
valid, so a reader takes the valid slot with the highest sequence: the old state or
the new one, never a mix. One fdatasync per change, and no rename or directory fsync
(a change is a transaction protocol step: a transaction of one record takes three).
A file is created whole (temp file, fsync, rename, fsync of the directory), and
rewritten so when a state outgrows its slots. The byte layout is in docs/format.md;
the protocol that moves a state along is ``_txn_coordinator``.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import struct
import time
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
_MAGIC = b"EvLgTXN2"
_SLOT = struct.Struct("<8sQQI")        # magic, checksum, seq, body length; then the body
_SEQ_LENGTH = struct.Struct("<QI")
_MIN_SLOT_BYTES = 4096                 # a page: a torn write stays within its slot
_MAX_FILE_BYTES = 32 << 20
_RACE_RETRIES = 20                     # reads that find no valid slot (writers racing)
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

    def to_body(self) -> bytes:
        body: bytes = msgpack.packb({
            "id": self.transactional_id, "pid": self.producer_id, "epoch": self.epoch,
            "state": self.state, "partitions": [list(tp) for tp in self.partitions],
            "offsets": [list(o) for o in self.offsets], "start_ms": self.start_ms,
            "timeout_ms": self.timeout_ms, "updated_ms": self.updated_ms})
        return body

    @classmethod
    def from_body(cls, body: bytes) -> TxnState:
        """Parse a slot's body; ``CorruptRecordError`` unless it checks out."""
        try:
            doc = msgpack.unpackb(body, raw=False)
            state = cls(str(doc["id"]), int(doc["pid"]), int(doc["epoch"]), str(doc["state"]),
                        tuple((str(t), int(p)) for t, p in doc["partitions"]),
                        tuple((str(g), str(t), int(p), int(o)) for g, t, p, o in doc["offsets"]),
                        int(doc["start_ms"]), int(doc["timeout_ms"]), int(doc["updated_ms"]))
        except Exception as exc:
            raise CorruptRecordError(f"transaction state is malformed: {exc}") from exc
        if state.state not in STATES or not 0 <= state.epoch <= MAX_EPOCH \
                or state.producer_id < 0:
            raise CorruptRecordError("transaction state holds impossible values")
        return state


def _pack_slot(seq: int, body: bytes) -> bytes:
    tail = _SEQ_LENGTH.pack(seq, len(body)) + body
    return _SLOT.pack(_MAGIC, xxhash.xxh3_64_intdigest(tail), seq, len(body)) + body


def _parse_slot(data: bytes, start: int, size: int) -> tuple[int, bytes] | None:
    """(seq, body) of the slot at ``start``, or None unless it checks out."""
    if size < _SLOT.size or start + size > len(data):
        return None
    magic, checksum, seq, length = _SLOT.unpack_from(data, start)
    if magic != _MAGIC or length > size - _SLOT.size:
        return None
    body = data[start + _SLOT.size:start + _SLOT.size + length]
    if checksum != xxhash.xxh3_64_intdigest(_SEQ_LENGTH.pack(seq, length) + body):
        return None
    return seq, body


def _newest(data: bytes) -> tuple[int, int, bytes] | None:
    """(slot index, seq, body) of the newest valid slot of a state file's bytes."""
    size = len(data) // 2
    best = None
    for index in (0, 1):
        found = _parse_slot(data, index * size, size)
        if found is not None and (best is None or found[0] > best[1]):
            best = (index, found[0], found[1])
    return best


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

    def _load(self, path: str) -> tuple[int, bytes, tuple[int, int, bytes] | None]:
        """The file's inode, bytes and newest valid slot (None: damaged). A read that
        races writers may see both slots mid-write: it looks again, a few times.
        Raises ``FileNotFoundError`` without a file."""
        for _ in range(_RACE_RETRIES):
            fd = _fileutil.open_fd(path, os.O_RDONLY)
            try:
                st = os.fstat(fd)
                if st.st_size > _MAX_FILE_BYTES:
                    raise CorruptRecordError(f"{path} is {st.st_size} bytes: not a state file")
                data = os.pread(fd, st.st_size, 0)
            finally:
                os.close(fd)
            newest = _newest(data)
            if newest is not None:
                return st.st_ino, data, newest
            time.sleep(0.001)
        return st.st_ino, data, None

    def read_checked(self, tid: str) -> TxnState | None:
        """The state of ``tid``, None without one; ``CorruptRecordError`` if its file
        is damaged."""
        try:
            _, _, newest = self._load(self.path(tid))
        except FileNotFoundError:
            return None
        if newest is None:
            raise CorruptRecordError(f"the transaction state of {tid!r} is damaged")
        state = TxnState.from_body(newest[2])
        return state if state.transactional_id == tid else None

    def read(self, tid: str) -> TxnState | None:
        """The state of ``tid`` (None: none, or a damaged file: see ``scan``)."""
        try:
            return self.read_checked(tid)
        except CorruptRecordError:
            return None

    def stamp(self, tid: str) -> tuple[int, int]:
        """(inode, sequence) of the id's newest state, (0, 0) without one: changes
        with every write. Cost: one small file read."""
        try:
            ino, _, newest = self._load(self.path(tid))
        except FileNotFoundError:
            return (0, 0)
        return (ino, newest[1] if newest is not None else -1)

    def write(self, state: TxnState) -> tuple[int, int]:
        """Make ``state`` the newest state of its id, durably (caller holds the
        lock): into the slot not holding the newest state, fdatasynced; a new file,
        or one whose slots are too small, is written whole (temp file, fsync, rename,
        fsync of the directory). Returns the new stamp."""
        body = state.to_body()
        path = self.path(state.transactional_id)
        with _fileutil.os_errors("writing transaction state"):
            _fileutil.makedirs(self.directory)
            try:
                _, data, newest = self._load(path)
            except (FileNotFoundError, CorruptRecordError):
                data, newest = b"", None
            size = len(data) // 2
            seq = newest[1] + 1 if newest is not None else 1
            if newest is None or _SLOT.size + len(body) > size:
                size = _MIN_SLOT_BYTES
                while _SLOT.size + len(body) > size:
                    size *= 2
                slot = _pack_slot(seq, body)
                _fileutil.atomic_write(path, slot.ljust(2 * size, b"\0"))
                return (os.stat(path).st_ino, seq)
            target = 1 - newest[0]
            fd = _fileutil.open_fd(path, os.O_WRONLY)
            try:
                _fileutil.pwrite_all(fd, _pack_slot(seq, body).ljust(size, b"\0"),
                                     target * size)
                _fileutil.sync_fd(fd)
                ino = os.fstat(fd).st_ino
            finally:
                os.close(fd)
        return (ino, seq)

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
                _, _, newest = self._load(os.path.join(self.directory, name))
                if newest is None:
                    raise CorruptRecordError(name)
                states.append(TxnState.from_body(newest[2]))
            except FileNotFoundError:
                continue
            except CorruptRecordError:
                damaged.append(name)
        states.sort(key=lambda s: s.transactional_id)
        return states, damaged
