"""The partition head: the published state of a partition, shared by all processes.

``head`` is a 4 KiB file in the partition directory, memory-mapped by every process
that uses the partition. The writer publishes a new state after the bytes of a batch
are in the segment; readers in any process bound every read by the published state,
never by a file size. Its layout::

    0    8s  magic b"EvLgHEAD"     8   u32 version
    16   u32 notify counter (futex word; bumped after every publish)
    20   u32 waiters flag (set by a reader about to sleep; see _notify)
    64   slot 0                     192  slot 1

A slot is ``<Qqqqqqqqqq QQ II Q>`` (112 bytes): seq, end_offset, start_offset,
active_base, active_position, active_created_ms, active_max_timestamp_ms,
recovery_base, recovery_position, recovery_offset, boot_id (128 bits), flags,
layout_epoch, and a checksum (xxh3_64 of the 104 bytes before it).

The writer (holding the partition lock) writes the slot *not* holding the newest
state, so a reader that races a write, or a writer killed mid-write, leaves one slot
that checks out: readers take the valid slot with the highest seq. No reader ever
waits on a writer. A slot that fails its checksum while a writer holds the lock is
damage (a writer killed mid-publish, or garbled bytes) and may have held the newest
state, so the writer then keeps the whole batches after the older state's end rather
than cutting them as a dead writer's debris (``damaged_slot``; issue 18).

``boot_id`` names the kernel boot that wrote the state. While it matches the running
kernel, no OS crash or power loss happened since: the page cache, and so every
published byte, is intact, and recovery after a process crash only has to cut what a
dying writer left beyond the published end. ``layout_epoch`` grows whenever segments
are deleted or replaced (retention, compaction, recovery), telling readers in other
processes to list the segment files again.

``recovery_*`` is the durable point: everything before it was fsynced. It is set
only after the fsync returned, so whatever version of this page survives a power
loss names a point at or before the data that really is on disk. Recovery validates
from the segment that holds it. ``FLAG_CLEAN`` marks a log closed cleanly by its last
user: the state is exact and recovery can skip validation.

The head file is also the partition's lock file (``flock``, see ``_partition``).

A log opened ``read_only`` maps the head read-only (``Head(path, read_only=True)``):
it reads states and never publishes, and, since it may not set the waiters flag
either, its readers poll the notify counter (``_notify.wait`` polls a word that has
no address) instead of sleeping on the futex.
"""

from __future__ import annotations

import mmap
import os
import struct
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import NamedTuple

import xxhash

from . import _fileutil, _notify
from .errors import CorruptRecordError

FILE_NAME = "head"
FILE_BYTES = 4096
_MAGIC = b"EvLgHEAD"
_VERSION = 1
_PREFIX = struct.Struct("<8sI")
_SLOT_OFFSETS = (64, 192)
_SLOT_BODY = struct.Struct("<QqqqqqqqqqQQII")
# The body in two parts, for the writer: the fields that change with every append, and
# the tail (boot id, flags, layout epoch) that it packs again only when it changes.
_SLOT_FIELDS = struct.Struct("<Qqqqqqqqqq")
_SLOT_TAIL = struct.Struct("<QQII")
_SLOT_CHECKSUM = struct.Struct("<Q")
_SLOT_BYTES = _SLOT_BODY.size + _SLOT_CHECKSUM.size  # 112
_BODY_BYTES = _SLOT_BODY.size
_SEQ = struct.Struct("<Q")
_SLOT = struct.Struct(_SLOT_BODY.format + "Q")  # body and checksum in one unpack
# both slots' seqs in one unpack, from the first slot's offset
_SEQS = struct.Struct(f"<Q{_SLOT_OFFSETS[1] - _SLOT_OFFSETS[0] - 8}xQ")
_SLOT_ORDER = (_SLOT_OFFSETS, _SLOT_OFFSETS[::-1])  # by whether slot 1's seq is higher
_OTHER_SLOT = {_SLOT_OFFSETS[0]: _SLOT_OFFSETS[1], _SLOT_OFFSETS[1]: _SLOT_OFFSETS[0]}
_U64 = (1 << 64) - 1

FLAG_CLEAN = 0x1    # closed cleanly by its last user: the state is exact
FLAG_DELETED = 0x2  # the topic was deleted: refuse every further read and write

_xxh3 = xxhash.xxh3_64_intdigest


class HeadState(NamedTuple):
    seq: int
    end_offset: int
    start_offset: int
    active_base: int
    active_position: int
    active_created_ms: int
    active_max_timestamp_ms: int
    recovery_base: int
    recovery_position: int
    recovery_offset: int
    boot_id: int
    flags: int
    layout_epoch: int

    @property
    def clean(self) -> bool:
        return bool(self.flags & FLAG_CLEAN)

    @property
    def deleted(self) -> bool:
        return bool(self.flags & FLAG_DELETED)


# tuple.__new__ bound to HeadState builds a state without a Python-level frame
# (``HeadState._make`` is one): ``read`` runs at every fetch.
_make_state: Callable[[Iterable[int]], HeadState] = partial(tuple.__new__, HeadState)
# A state from a tuple of its 13 fields, without ``_make``'s Python-level call and
# length check: for the append path, whose tuples are built from a state's own fields.
_new_state = tuple.__new__


def appended(st: HeadState, end_offset: int, active_position: int,
             active_max_timestamp_ms: int) -> HeadState:
    """``st`` after a batch was appended to its active segment (``st._replace`` of the
    three fields, at a fifth of its cost: this runs on every append)."""
    return _new_state(HeadState, (st[0], end_offset, st[2], st[3], active_position, st[5],
                                  active_max_timestamp_ms, st[7], st[8], st[9], st[10],
                                  st[11], st[12]))


def initial_state(now_ms: int, base_offset: int = 0) -> HeadState:
    """The state of a new, empty partition whose first segment is ``base_offset``."""
    return HeadState(1, base_offset, base_offset, base_offset, 0, now_ms, -1, base_offset, 0,
                     base_offset, current_boot_id(), FLAG_CLEAN, 0)


def _check_state(state: HeadState) -> None:
    """Assert that ``state`` is one a writer may publish: offsets ordered (ranges are
    half-open), the durable point at or before the published end, only known flags."""
    assert state.seq >= 1, state
    assert 0 <= state.start_offset <= state.end_offset, state
    assert 0 <= state.active_base <= state.end_offset, state
    assert state.active_position >= 0, state
    assert state.active_position > 0 or state.end_offset == state.active_base, state
    assert state.active_max_timestamp_ms >= -1, state
    assert 0 <= state.recovery_base <= state.recovery_offset <= state.end_offset, state
    assert state.recovery_position >= 0, state
    assert (state.recovery_base, state.recovery_position) <= \
        (state.active_base, state.active_position), state
    assert 0 <= state.boot_id < 1 << 128, state
    assert state.flags & ~(FLAG_CLEAN | FLAG_DELETED) == 0, state
    assert state.layout_epoch >= 0, state


def _pack_slot(state: HeadState, seq: int | None = None) -> bytes:
    boot = state[10]  # (fields by index: this runs on every append)
    body = _SLOT_BODY.pack(state[0] if seq is None else seq, *state[1:10], boot >> 64,
                           boot & _U64, state[11], state[12])
    return body + _SLOT_CHECKSUM.pack(_xxh3(body))


_boot_id: int | None = None


def current_boot_id() -> int:
    """A 128-bit id of the running kernel boot (Linux); 0 where none can be read,
    which makes every open after a crash validate as if the machine had rebooted."""
    global _boot_id
    if _boot_id is None:
        try:
            with open("/proc/sys/kernel/random/boot_id", "rb") as fh:
                _boot_id = int(fh.read(64).strip().replace(b"-", b""), 16) & ((1 << 128) - 1)
        except (OSError, ValueError):
            _boot_id = 0
    return _boot_id


def create(path: str, state: HeadState) -> None:
    """Write a new head file holding ``state`` (caller fsyncs the directory)."""
    buf = bytearray(FILE_BYTES)
    _PREFIX.pack_into(buf, 0, _MAGIC, _VERSION)
    off = _SLOT_OFFSETS[state.seq % 2]
    buf[off:off + _SLOT_BYTES] = _pack_slot(state)
    fd = _fileutil.open_fd(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        _fileutil.write_all(fd, bytes(buf))
        os.fsync(fd)
    finally:
        os.close(fd)


class _ReadOnlyWord(_notify.Word):
    """A notify word of a read-only mapping: ``load`` reads it, ``store`` does nothing
    (a read-only log writes no byte), and it has no address (ctypes addresses only
    writable buffers), so ``_notify.wait`` polls it instead of sleeping on a futex."""

    __slots__ = ()

    def __init__(self, mm: mmap.mmap, offset: int) -> None:
        self.mm = mm
        self.offset = offset
        self._cobj = None
        self.address = 0
        self.pointer = None

    def store(self, value: int) -> None:
        pass


class Head:
    """The mapped head file of one partition, in one process.

    ``read`` is lock-free and safe from any thread; ``publish`` must be called with
    the partition lock held. With ``read_only`` the file is opened and mapped
    read-only and nothing is ever written to it (``publish`` and ``sync`` are not
    for such a head); a head cut short raises ``CorruptRecordError`` then, since
    restoring its size would be a write.
    """

    def __init__(self, path: str, read_only: bool = False) -> None:
        self.path = path
        self.read_only = read_only
        if read_only:
            self._map_read_only(path)
            return
        self.fd = _fileutil.open_fd(path, os.O_RDWR)
        try:
            if os.fstat(self.fd).st_size < FILE_BYTES:
                # A head cut short (crash during creation, or damage): restore its size.
                # Growing is always safe for other processes' mappings.
                _fileutil.preallocate(self.fd, 0, FILE_BYTES)
            self.mm = mmap.mmap(self.fd, FILE_BYTES)
        except BaseException:
            os.close(self.fd)
            raise
        magic, version = _PREFIX.unpack_from(self.mm, 0)
        if magic != _MAGIC or version != _VERSION:
            # Damaged prefix: rewrite it; the slots carry their own checksums.
            _PREFIX.pack_into(self.mm, 0, _MAGIC, _VERSION)
        self.counter = _notify.Word(self.mm, _notify.NOTIFY_OFFSET)
        self.waiters = _notify.Word(self.mm, _notify.WAITERS_OFFSET)
        # (slot offset, bytes, state) of this object's last publish: see read_for_writer
        self._published: tuple[int, bytes, HeadState] | None = None
        self._tail: tuple[tuple[int, ...], bytes] = ((), b"")  # (fields, packed) last used

    def _map_read_only(self, path: str) -> None:
        self.fd = _fileutil.open_fd(path, os.O_RDONLY)
        try:
            size = os.fstat(self.fd).st_size
            if size < FILE_BYTES:
                raise CorruptRecordError(f"{path} is {size} bytes, not {FILE_BYTES}: the "
                                         "head was cut short; open the log without "
                                         "read_only to recover it")
            self.mm = mmap.mmap(self.fd, FILE_BYTES, access=mmap.ACCESS_READ)
        except BaseException:
            os.close(self.fd)
            raise
        self.counter = _ReadOnlyWord(self.mm, _notify.NOTIFY_OFFSET)
        self.waiters = _ReadOnlyWord(self.mm, _notify.WAITERS_OFFSET)
        self._published = None
        self._tail = ((), b"")

    def read(self) -> HeadState | None:
        """The newest valid state, or None when neither slot checks out.

        Cost: the slot with the higher seq is verified first (one xxh3 over 104
        bytes); the other is read only if that one fails its checksum."""
        mm = self.mm
        seq0, seq1 = _SEQS.unpack_from(mm, _SLOT_OFFSETS[0])
        for off in _SLOT_ORDER[seq1 > seq0]:
            raw = mm[off:off + _SLOT_BYTES]  # one copy: a racing publish cannot tear it
            f = _SLOT.unpack(raw)
            if f[14] != _xxh3(raw[:_BODY_BYTES]):
                continue
            return _make_state((*f[:10], (f[10] << 64) | f[11], f[12], f[13]))
        return None

    def read_for_writer(self) -> HeadState | None:
        """``read``, for the writer holding the partition lock: the same state, and
        when the newest slot is byte for byte the one this object published last (no
        other writer, in any process, published since), without decoding it.

        Equivalent to ``read``: a publish by anyone else writes the other slot with a
        higher seq (so the seq compare fails) and the one after it rewrites ours (so
        the byte compare fails); bytes equal to a checksummed slot check out; and
        damage to either slot fails one of the compares. Cost: a 112-byte compare and
        one 8-byte read; ``read``'s when it falls back."""
        published = self._published
        if published is not None:
            off, raw, state = published
            mm = self.mm
            if mm[off:off + _SLOT_BYTES] == raw and \
                    _SEQ.unpack_from(mm, _OTHER_SLOT[off])[0] < state[0]:
                return state
        return self.read()

    def publish(self, state: HeadState) -> HeadState:
        """Write ``state`` as the successor of the state it was derived from
        (``state.seq`` is the seq that was read under the lock) into the older slot,
        then bump the notify counter and wake the readers that sleep on it. Returns
        the state as written. Cost: one xxh3 over 104 bytes; a futex wake when a
        reader sleeps."""
        return self._write(_new_state(HeadState, (state[0] + 1, *state[1:])))

    def publish_appended(self, st: HeadState, end_offset: int, active_position: int,
                         active_max_timestamp_ms: int) -> HeadState:
        """``publish(appended(st, end_offset, active_position,
        active_max_timestamp_ms))`` with one state built instead of two: the append
        path's publish."""
        return self._write(_new_state(HeadState, (
            st[0] + 1, end_offset, st[2], st[3], active_position, st[5],
            active_max_timestamp_ms, st[7], st[8], st[9], st[10], st[11], st[12])))

    def _write(self, new: HeadState) -> HeadState:
        """Write ``new`` (seq already advanced) into the slot its seq names, bump the
        counter, wake the sleepers."""
        off = _SLOT_OFFSETS[new[0] & 1]
        tail = self._tail
        if new[10:] != tail[0]:  # boot id, flags or layout epoch changed: pack anew
            boot = new[10]
            tail = self._tail = (new[10:], _SLOT_TAIL.pack(boot >> 64, boot & _U64, new[11],
                                                           new[12]))
        body = _SLOT_FIELDS.pack(*new[:10]) + tail[1]
        raw = body + _SLOT_CHECKSUM.pack(_xxh3(body))
        self.mm[off:off + _SLOT_BYTES] = raw
        counter = self.counter
        counter.bump()
        _notify.wake(counter, self.waiters)
        self._published = (off, raw, new)
        return new

    def damaged_slot(self) -> int | None:
        """The slot (0 or 1) whose bytes fail their checksum, or None when both check
        out. A torn or garbled slot may have held the newest state: ``read`` then
        returns the one before it, and what the lost state published (acknowledged
        records) lies after that one's end, so the writer must keep it, not cut it
        (``Recovery.cut_debris``). A slot never written (zero, beside the first state
        ``create`` wrote) is not damaged. Meant for a writer, which holds the lock, so
        no publish is under way; see ``damaged_slot_settled`` otherwise. Cost: two
        xxh3 over 104 bytes."""
        mm = self.mm
        raws = [mm[off:off + _SLOT_BYTES] for off in _SLOT_OFFSETS]
        valid = [_SLOT_CHECKSUM.unpack_from(raw, _BODY_BYTES)[0] == _xxh3(raw[:_BODY_BYTES])
                 for raw in raws]
        for index, raw in enumerate(raws):
            if valid[index]:
                continue
            other = 1 - index
            if not any(raw) and valid[other] and _SEQ.unpack_from(raws[other])[0] <= 1:
                continue  # never written yet
            return index
        return None

    def damaged_slot_settled(self, settle_s: float = 0.05) -> int | None:
        """``damaged_slot`` for a caller without the writer lock (``check``): a slot
        being written fails its checksum for a moment, so a slot counts as damaged
        only if it still is, with the same bytes, ``settle_s`` seconds later."""
        slot = self.damaged_slot()
        if slot is None:
            return None
        off = _SLOT_OFFSETS[slot]
        before = self.mm[off:off + _SLOT_BYTES]
        time.sleep(settle_s)
        if self.damaged_slot() == slot and self.mm[off:off + _SLOT_BYTES] == before:
            return slot
        return None

    def notify_count(self) -> int:
        return self.counter.load()

    def _check(self) -> None:
        """Assert the invariants of the mapped file (tests call it after every mutation).

        The mapping covers the whole file and the prefix is ours; each slot either
        checks out or is torn (its checksum fails); at least one checks out, and
        ``read`` returns the valid slot with the highest seq; a valid slot sits at the
        slot its seq's parity names, two valid slots hold consecutive seqs, and every
        valid state is self-consistent. Cost: two xxh3 over 104 bytes and one fstat.
        Meant for a quiescent head (a concurrent ``publish`` can make it fail)."""
        mm = self.mm
        assert len(mm) == FILE_BYTES, len(mm)
        assert os.fstat(self.fd).st_size >= FILE_BYTES
        assert _PREFIX.unpack_from(mm, 0) == (_MAGIC, _VERSION)
        assert _PREFIX.size <= _notify.NOTIFY_OFFSET < _notify.WAITERS_OFFSET
        assert _SLOT_OFFSETS[0] >= _notify.WAITERS_OFFSET + 4
        assert _SLOT_OFFSETS[0] + _SLOT_BYTES <= _SLOT_OFFSETS[1]
        assert _SLOT_OFFSETS[1] + _SLOT_BYTES <= FILE_BYTES
        for word, offset in ((self.counter, _notify.NOTIFY_OFFSET),
                             (self.waiters, _notify.WAITERS_OFFSET)):
            assert word.mm is mm and word.offset == offset, (word.offset, offset)
        assert self.waiters.load() in (0, 1), self.waiters.load()
        valid: list[HeadState] = []
        for index, off in enumerate(_SLOT_OFFSETS):
            raw = mm[off:off + _SLOT_BYTES]
            if _SLOT_CHECKSUM.unpack_from(raw, _BODY_BYTES)[0] != _xxh3(raw[:_BODY_BYTES]):
                continue  # torn (or never written): read() must skip it
            f = _SLOT_BODY.unpack_from(raw)
            state = _make_state((*f[:10], (f[10] << 64) | f[11], f[12], f[13]))
            assert state.seq % 2 == index, (state.seq, index)
            _check_state(state)
            valid.append(state)
        assert valid, "neither slot of the head checks out"
        if len(valid) == 2:
            assert abs(valid[0].seq - valid[1].seq) == 1, (valid[0].seq, valid[1].seq)
        assert self.read() == max(valid, key=lambda st: st.seq)

    def sync(self) -> None:
        """Make the head durable (clean-shutdown marker, first write after it)."""
        self.mm.flush()
        _fileutil.sync_fd(self.fd)

    def close(self) -> None:
        """Unmap and close the file. Idempotent."""
        if self.fd < 0:
            return
        self._published = None
        self.counter.release()
        self.waiters.release()
        try:
            self.mm.close()
        except BufferError:  # an export outlives the words (none known): unmapped when
            pass             # it goes, as any mapping is
        os.close(self.fd)
        self.fd = -1
