"""Waking readers when records are appended, across processes, without spinning.

Every partition head holds two 32-bit words (see ``_head``): a *notify counter* that
the writer bumps after each publish, and a *waiters* flag that a reader sets before it
goes to sleep. On Linux a reader sleeps in the kernel on the counters themselves
(``futex``, or ``futex_waitv`` for several partitions at once); the futexes are
shared (not private), keyed by file and offset, so they work across processes. A
writer wakes sleepers only when the waiters flag is set, so appends pay no syscall
while nobody waits.

Where futexes are not available (macOS), readers poll the counters, sleeping from
0.2 ms up to 2 ms between looks.

The flag protocol has the classic race (a reader sets the flag just as a writer looks
at it); the counter closes it: a reader sleeps only while the counter still has the
value it saw before setting the flag, and the writer bumps the counter before looking
at the flag. Callers also sleep in slices of at most ``MAX_SLICE_S``, a safety net.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import platform
import struct
import sys
import time
from collections.abc import Sequence
from typing import Any

NOTIFY_OFFSET = 16
WAITERS_OFFSET = 20
_WORD = struct.Struct("<I")
MAX_SLICE_S = 0.25

_FUTEX_WAIT = 0
_FUTEX_WAKE = 1
_FUTEX2_SIZE_U32 = 2
_CLOCK_MONOTONIC = 1
_SYS_FUTEX = {"x86_64": 202, "aarch64": 98, "arm64": 98}
_SYS_FUTEX_WAITV = 449  # same number on x86_64 and aarch64


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _WaitV(ctypes.Structure):
    _fields_ = [("val", ctypes.c_uint64), ("uaddr", ctypes.c_uint64),
                ("flags", ctypes.c_uint32), ("reserved", ctypes.c_uint32)]


_libc: Any = None
_sys_futex: int | None = None
_waitv_ok = False
_futex_ok = False
# Errors that mean "this call is not available here" (an old kernel; a seccomp filter,
# as some containers install): the waits fall back to polling instead of returning at
# once, which would make a blocked poll spin.
_UNAVAILABLE = frozenset({errno.ENOSYS, errno.EPERM, errno.EACCES})
if sys.platform.startswith("linux"):
    _sys_futex = _SYS_FUTEX.get(platform.machine())
    if _sys_futex is not None:
        try:
            _libc = ctypes.CDLL(None, use_errno=True)
            _libc.syscall.restype = ctypes.c_long
            _waitv_ok = _futex_ok = True  # confirmed (or refuted) on first use
        except OSError:
            _libc = None
            _sys_futex = None


class Word:
    """A 32-bit word of a shared mapping, addressable by the kernel."""

    __slots__ = ("_cobj", "address", "mm", "offset", "pointer")

    def __init__(self, mm: mmap.mmap, offset: int) -> None:
        self.mm: mmap.mmap | bytearray = mm
        self.offset = offset
        self._cobj: Any = None
        self.address = 0
        self.pointer: Any = None  # ctypes.c_void_p(address), for the futex calls
        if _libc is not None:
            self._cobj = ctypes.c_uint32.from_buffer(mm, offset)
            self.address = ctypes.addressof(self._cobj)
            self.pointer = ctypes.c_void_p(self.address)

    def load(self) -> int:
        return int(_WORD.unpack_from(self.mm, self.offset)[0])

    def store(self, value: int) -> None:
        _WORD.pack_into(self.mm, self.offset, value & 0xFFFFFFFF)

    def bump(self) -> None:
        """Add one (wrapping at 32 bits): ``store(load() + 1)`` in one call, the
        writer's step after every publish."""
        mm, offset = self.mm, self.offset
        _WORD.pack_into(mm, offset, (_WORD.unpack_from(mm, offset)[0] + 1) & 0xFFFFFFFF)

    def release(self) -> None:
        """Drop the buffer export so the mapping can be closed (waits on a released
        word poll instead of sleeping on a stale address). The word keeps its last
        value in a buffer of its own: a holder that outlives the mapping (a consumer
        of a topic deleted in this process) reads a word that no longer changes, never
        a closed mapping (``ValueError``)."""
        self._cobj = None
        self.address = 0
        self.pointer = None
        if isinstance(self.mm, mmap.mmap) and not self.mm.closed:
            self.mm = bytearray(self.mm[self.offset:self.offset + _WORD.size])
            self.offset = 0

    def _check(self) -> None:
        """Assert the invariants of a live (not released) word: it lies inside its
        mapping at a 4-byte-aligned offset (futexes need that), and the address the
        kernel sleeps on is the very word ``load`` reads."""
        assert isinstance(self.mm, mmap.mmap) and not self.mm.closed, "released"
        assert self.offset % _WORD.size == 0, self.offset
        assert 0 <= self.offset <= len(self.mm) - _WORD.size, (self.offset, len(self.mm))
        if _libc is None:
            assert self._cobj is None and self.address == 0 and self.pointer is None
            return
        assert self._cobj is not None, "released"
        base = ctypes.addressof(ctypes.c_uint8.from_buffer(self.mm))  # export dropped at once
        assert self.address == ctypes.addressof(self._cobj) == base + self.offset
        assert self.pointer is not None and self.pointer.value == self.address
        assert int(self._cobj.value) == self.load()


# The futex address argument of each word woken so far, built once (a c_void_p costs
# 0.1 us a call); cleared when it grows past _MAX_WAKE_ADDRESSES (mappings come and go).
_wake_addresses: dict[int, ctypes.c_void_p] = {}
_MAX_WAKE_ADDRESSES = 4096


def wake(counter: Word, waiters: Word) -> None:
    """After bumping ``counter``: wake every reader sleeping on it, if any said so.

    Cost: one 4-byte read while nobody sleeps; else a store and a ``futex`` wake (4
    arguments: FUTEX_WAKE reads no more)."""
    if _WORD.unpack_from(waiters.mm, waiters.offset)[0]:
        waiters.store(0)
        address = counter.address
        if address:  # (0: no futexes here, or a released word)
            arg = _wake_addresses.get(address)
            if arg is None:
                if len(_wake_addresses) >= _MAX_WAKE_ADDRESSES:
                    _wake_addresses.clear()
                arg = _wake_addresses[address] = ctypes.c_void_p(address)
            _libc.syscall(_sys_futex, arg, _FUTEX_WAKE, 0x7FFFFFFF)


def wait(counters: Sequence[Word], waiters: Sequence[Word], expected: Sequence[int],
         timeout: float) -> bool:
    """Sleep until one of ``counters`` differs from ``expected`` or ``timeout`` (seconds,
    capped at ``MAX_SLICE_S``) passes. Returns True if a counter changed.

    Cost while sleeping: none (a futex) or a look every 0.2-2 ms (the fallback)."""
    timeout = min(timeout, MAX_SLICE_S)
    if timeout <= 0:
        return any(w.load() != v for w, v in zip(counters, expected, strict=True))
    for flag in waiters:
        flag.store(1)
    for word, value in zip(counters, expected, strict=True):
        if word.load() != value:
            return True
    if _futex_ok and counters and counters[0].address:
        if len(counters) == 1:
            # (the word is read inline after the wake: it is on a record's way)
            word, value = counters[0], expected[0]
            if not _futex_wait(word, value, timeout):
                return _poll(counters, expected, timeout)
            return bool(_WORD.unpack_from(word.mm, word.offset)[0] != value)
        if not _futex_waitv(counters, expected, timeout):
            return _poll(counters, expected, timeout)
        return any(w.load() != v for w, v in zip(counters, expected, strict=True))
    return _poll(counters, expected, timeout)


def _futex_wait(word: Word, value: int, timeout: float) -> bool:
    """Sleep on one word. False if futexes are not available here after all."""
    global _futex_ok
    ts = _Timespec(int(timeout), int((timeout % 1) * 1e9))
    # (the word's pointer is built once; ctypes passes an int value as a C int,
    # masked to 32 bits: what the kernel compares with the u32 word)
    result = _libc.syscall(_sys_futex, word.pointer, _FUTEX_WAIT, value,
                           ctypes.byref(ts), None, 0)
    if result < 0 and ctypes.get_errno() in _UNAVAILABLE:
        _futex_ok = False
        return False
    return True


def _futex_waitv(counters: Sequence[Word], expected: Sequence[int], timeout: float) -> bool:
    """Wait on up to 128 words at once (Linux 5.16+). False if the kernel lacks it."""
    global _waitv_ok
    if not _waitv_ok or len(counters) > 128:
        return False
    arr = (_WaitV * len(counters))()
    for i, (word, value) in enumerate(zip(counters, expected, strict=True)):
        arr[i].val = value
        arr[i].uaddr = word.address
        arr[i].flags = _FUTEX2_SIZE_U32
    deadline = time.clock_gettime(time.CLOCK_MONOTONIC) + timeout
    ts = _Timespec(int(deadline), int((deadline % 1) * 1e9))
    result = _libc.syscall(_SYS_FUTEX_WAITV, arr, len(counters), 0, ctypes.byref(ts),
                           _CLOCK_MONOTONIC)
    if result < 0 and ctypes.get_errno() in _UNAVAILABLE:
        _waitv_ok = False
        return False
    return True


def _poll(counters: Sequence[Word], expected: Sequence[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    pause = 0.0002
    while True:
        if any(w.load() != v for w, v in zip(counters, expected, strict=True)):
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(pause, left))
        pause = min(pause * 2, 0.002)
