"""Waking readers across threads and processes: futex, futex_waitv and the poll
fallback. Which path a sleeper took is read from ``/proc/<pid>/task/<tid>/syscall``
(the system call a blocked thread sits in), so the tests see the kernel doing it."""

from __future__ import annotations

import ctypes
import errno
import json
import mmap
import os
import platform
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventlog import _notify
from eventlog._notify import MAX_SLICE_S, Word, wait, wake
from tests.conftest import run_python, spawn_python

SYS_FUTEX = {"x86_64": 202, "aarch64": 98, "arm64": 98}.get(platform.machine())
SYS_FUTEX_WAITV = 449
LINUX = sys.platform.startswith("linux") and SYS_FUTEX is not None


def _kernel_has_futex_waitv() -> bool:
    if not LINUX:
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    # zero words is invalid (EINVAL) where the call exists, ENOSYS where it does not
    return libc.syscall(SYS_FUTEX_WAITV, None, 0, 0, None, 1) == -1 and \
        ctypes.get_errno() != errno.ENOSYS


HAS_WAITV = _kernel_has_futex_waitv()
needs_futex = pytest.mark.skipif(not LINUX, reason="futexes are Linux-only")
needs_waitv = pytest.mark.skipif(not HAS_WAITV, reason="kernel lacks futex_waitv (5.16+)")


@pytest.fixture
def mapping(tmp_path: Path) -> Iterator[mmap.mmap]:
    """A shared file mapping like a partition head (futexes on it are keyed by file)."""
    path = tmp_path / "words"
    path.write_bytes(bytes(4096))
    with open(path, "r+b") as fh:
        mm = mmap.mmap(fh.fileno(), 4096)
    yield mm
    try:
        mm.close()
    except BufferError:  # a Word of a failed test still exports it
        pass


def pairs(mm: mmap.mmap, n: int) -> tuple[list[Word], list[Word]]:
    """``n`` (counter, waiters) pairs at 8-byte strides, as heads lay them out."""
    counters = [Word(mm, 8 * i) for i in range(n)]
    flags = [Word(mm, 8 * i + 4) for i in range(n)]
    for word in (*counters, *flags):
        word._check()
    return counters, flags


def syscall_of(tid: int, pid: int | str = "self") -> int | None:
    """The system call thread ``tid`` of process ``pid`` is blocked in, or None."""
    try:
        with open(f"/proc/{pid}/task/{tid}/syscall") as fh:
            first = fh.read().split()[0]
    except (OSError, IndexError):
        return None
    return int(first) if first.isdigit() else None


class Sleeper(threading.Thread):
    """A thread that calls ``wait`` once and records (result, when it returned)."""

    def __init__(self, counters: list[Word], flags: list[Word], timeout: float) -> None:
        super().__init__(daemon=True)
        self.call = (counters, flags, [w.load() for w in counters], timeout)
        self.tid: int | None = None
        self.result: bool | None = None
        self.began = self.returned_at = 0.0

    def run(self) -> None:
        self.tid = threading.get_native_id()
        self.began = time.monotonic()
        self.result = wait(*self.call)
        self.returned_at = time.monotonic()

    def wait_blocked_in(self, nr: int) -> None:
        if not os.path.exists("/proc/self/task"):
            pytest.skip("no /proc/self/task to see where the sleeper is")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self.tid is not None and syscall_of(self.tid) == nr:
                return
            time.sleep(0.0005)
        raise AssertionError(f"sleeper never blocked in system call {nr} "
                             f"(now in {self.tid and syscall_of(self.tid)})")


def assert_woken(sleeper: Sleeper, bumped_at: float) -> None:
    """The sleeper returned because of the wake, not because its slice ran out."""
    assert sleeper.returned_at - bumped_at < MAX_SLICE_S * 0.8
    if bumped_at - sleeper.began < MAX_SLICE_S * 0.4:  # bumped early in the slice
        assert sleeper.returned_at - sleeper.began < MAX_SLICE_S * 0.8


def bump(word: Word) -> None:
    word.store(word.load() + 1)


@needs_futex
def test_wait_returns_when_another_thread_bumps_and_wakes(mapping):
    (counter,), (flag,) = pairs(mapping, 1)
    sleeper = Sleeper([counter], [flag], MAX_SLICE_S)
    sleeper.start()
    sleeper.wait_blocked_in(SYS_FUTEX)
    assert flag.load() == 1  # it said it sleeps
    bump(counter)
    bumped_at = time.monotonic()
    wake(counter, flag)
    assert flag.load() == 0  # the waker answered the flag
    sleeper.join(5)
    assert sleeper.result is True
    assert_woken(sleeper, bumped_at)
    counter._check()
    flag._check()


@needs_futex
def test_a_bump_without_a_wake_is_seen_only_when_the_slice_ends(mapping):
    """The sleeper is in the kernel, not polling: a writer that skips the wake (nobody
    had set the flag when it looked) is noticed at the end of the slice, no sooner."""
    (counter,), (flag,) = pairs(mapping, 1)
    started = time.monotonic()
    sleeper = Sleeper([counter], [flag], MAX_SLICE_S)
    sleeper.start()
    sleeper.wait_blocked_in(SYS_FUTEX)
    bump(counter)
    sleeper.join(5)
    assert sleeper.result is True
    assert sleeper.returned_at - started >= MAX_SLICE_S * 0.9


@needs_waitv
def test_several_words_sleep_in_futex_waitv_and_any_one_wakes(mapping):
    counters, flags = pairs(mapping, 3)
    sleeper = Sleeper(counters, flags, MAX_SLICE_S)
    sleeper.start()
    sleeper.wait_blocked_in(SYS_FUTEX_WAITV)
    assert [f.load() for f in flags] == [1, 1, 1]
    bump(counters[2])
    bumped_at = time.monotonic()
    wake(counters[2], flags[2])
    sleeper.join(5)
    assert sleeper.result is True
    assert_woken(sleeper, bumped_at)
    assert [f.load() for f in flags] == [1, 1, 0]  # only the woken word's flag answered
    for word in (*counters, *flags):
        word._check()


@needs_waitv
def test_several_words_without_a_wake_wait_out_the_slice(mapping):
    counters, flags = pairs(mapping, 2)
    started = time.monotonic()
    sleeper = Sleeper(counters, flags, MAX_SLICE_S)
    sleeper.start()
    sleeper.wait_blocked_in(SYS_FUTEX_WAITV)
    bump(counters[0])
    sleeper.join(5)
    assert sleeper.result is True
    assert sleeper.returned_at - started >= MAX_SLICE_S * 0.9


@pytest.mark.parametrize("n", [1, 3])
def test_timeout_with_no_bump_returns_false(mapping, n):
    counters, flags = pairs(mapping, n)
    t0 = time.monotonic()
    assert wait(counters, flags, [w.load() for w in counters], 0.05) is False
    elapsed = time.monotonic() - t0
    assert 0.045 <= elapsed < 1.0
    assert [f.load() for f in flags] == [1] * n  # flags stay up: no writer answered


def test_timeout_is_capped_at_one_slice(mapping):
    counters, flags = pairs(mapping, 1)
    t0 = time.monotonic()
    assert wait(counters, flags, [0], 30.0) is False
    assert MAX_SLICE_S * 0.9 <= time.monotonic() - t0 < MAX_SLICE_S + 2.0


@pytest.mark.parametrize("n", [1, 3])
def test_a_counter_already_moved_returns_at_once(mapping, n):
    counters, flags = pairs(mapping, n)
    expected = [w.load() for w in counters]
    bump(counters[-1])
    t0 = time.monotonic()
    assert wait(counters, flags, expected, MAX_SLICE_S) is True
    assert time.monotonic() - t0 < MAX_SLICE_S * 0.8


def test_non_positive_timeout_never_sleeps_nor_raises_the_flag(mapping):
    (counter,), (flag,) = pairs(mapping, 1)
    for timeout in (0.0, -1.0):
        assert wait([counter], [flag], [counter.load()], timeout) is False
    assert flag.load() == 0


def test_wake_answers_the_waiters_flag_only_when_it_is_set(mapping):
    (counter,), (flag,) = pairs(mapping, 1)
    wake(counter, flag)
    assert flag.load() == 0
    flag.store(1)
    wake(counter, flag)
    assert flag.load() == 0
    counter._check()


def test_word_store_wraps_at_32_bits_and_is_seen_by_the_mapping(mapping):
    word = Word(mapping, 12)
    word.store((1 << 32) + 7)
    word._check()
    assert word.load() == 7
    assert mapping[12:16] == (7).to_bytes(4, "little")


def test_check_rejects_a_misaligned_or_released_word(mapping):
    misaligned = Word(mapping, 2)
    with pytest.raises(AssertionError):
        misaligned._check()
    misaligned.release()
    word = Word(mapping, 4)
    word._check()
    word.release()
    if LINUX:
        with pytest.raises(AssertionError, match="released"):
            word._check()


@needs_waitv
def test_futex_waitv_wakes_a_sleeper_in_another_process(tmp_path):
    """Shared (not private) futexes: a waker in one process reaches a sleeper on the
    same file in another, through futex_waitv. The child writes when each of its
    slices began (monotonic time is system-wide), so a wake that arrives is told
    apart from a slice that merely ran out."""
    path = tmp_path / "words"
    path.write_bytes(bytes(4096))
    with open(path, "r+b") as fh:
        mm = mmap.mmap(fh.fileno(), 4096)
    counters, flags = [Word(mm, 0), Word(mm, 8)], [Word(mm, 4), Word(mm, 12)]
    child = spawn_python(
        "import mmap, struct, sys, time\n"
        "from eventlog._notify import Word, wait\n"
        "fh = open(sys.argv[1], 'r+b')\n"
        "mm = mmap.mmap(fh.fileno(), 4096)\n"
        "counters = [Word(mm, 0), Word(mm, 8)]\n"
        "flags = [Word(mm, 4), Word(mm, 12)]\n"
        "changed, deadline = False, time.monotonic() + 20\n"
        "while not changed and time.monotonic() < deadline:\n"
        "    began = time.monotonic()\n"
        "    struct.pack_into('<d', mm, 64, began)\n"
        "    changed = wait(counters, flags, [0, 0], 0.25)\n"
        "print(changed, began, time.monotonic(), counters[1].load())\n",
        str(path), stdout=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:  # until the child sleeps in futex_waitv early in a slice
            if syscall_of(child.pid, child.pid) == SYS_FUTEX_WAITV:
                began = struct.unpack_from("<d", mm, 64)[0]
                if time.monotonic() - began < 0.05:
                    break
            if time.monotonic() > deadline:
                pytest.skip("cannot see the child blocked in futex_waitv")
            time.sleep(0.0005)
        assert flags[1].load() == 1
        bumped_at = time.monotonic()
        bump(counters[1])
        wake(counters[1], flags[1])
        out, _ = child.communicate(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for word in (*counters, *flags):
            word.release()
        mm.close()
    changed, slice_began, returned, value = out.split()
    assert (changed, value) == ("True", "1")
    assert float(slice_began) < bumped_at < float(returned)
    # Woken: well before the slice's 0.25 s ran out.
    assert float(returned) - float(slice_began) < MAX_SLICE_S * 0.8


# The fallbacks, in a fresh interpreter each: the module picks its path at import.
_FALLBACK_CHILD = r"""
import ctypes, errno, json, mmap, platform, sys, tempfile, threading, time
mode = sys.argv[1]
calls = {"waitv": 0}
if mode == "no-futex":        # a platform without futexes (as macOS): readers poll
    platform.machine = lambda: "no-such-machine"
elif mode == "no-waitv":      # a kernel before 5.16: futex_waitv answers ENOSYS
    real_cdll = ctypes.CDLL
    class OldKernel:
        def __init__(self, *args, **kwargs):
            self.real = real_cdll(*args, **kwargs)
            self.real.syscall.restype = ctypes.c_long
            def syscall(nr, *rest):
                if nr == 449:
                    calls["waitv"] += 1
                    ctypes.set_errno(errno.ENOSYS)
                    return -1
                return self.real.syscall(nr, *rest)
            self.syscall = syscall
    ctypes.CDLL = OldKernel
elif mode == "seccomp":       # a sandbox that forbids both futex calls: EPERM
    real_cdll = ctypes.CDLL
    futex_nr = {"x86_64": 202, "aarch64": 98, "arm64": 98}[platform.machine()]
    class Sandboxed:
        def __init__(self, *args, **kwargs):
            self.real = real_cdll(*args, **kwargs)
            self.real.syscall.restype = ctypes.c_long
            def syscall(nr, *rest):
                if nr in (449, futex_nr):
                    calls["waitv"] += 1
                    ctypes.set_errno(errno.EPERM)
                    return -1
                return self.real.syscall(nr, *rest)
            self.syscall = syscall
    ctypes.CDLL = Sandboxed
from eventlog._notify import Word, wait, wake

fh = tempfile.TemporaryFile()
fh.write(bytes(4096)); fh.flush()
mm = mmap.mmap(fh.fileno(), 4096)
counters = [Word(mm, 0), Word(mm, 8), Word(mm, 16)]
flags = [Word(mm, 4), Word(mm, 12), Word(mm, 20)]
for w in counters + flags:
    w._check()
out = {"address": counters[0].address}

def bumped_after(n, delay, do_wake):
    # wait on n words; another thread bumps the last after `delay`; seconds from bump
    # to return (a sleeper in the kernel would not see a bump without a wake before
    # the 0.25 s slice ends)
    cs, fs = counters[:n], flags[:n]
    expected = [w.load() for w in cs]
    when = []
    def bumper():
        time.sleep(delay)
        cs[-1].store(cs[-1].load() + 1)
        when.append(time.monotonic())
        if do_wake:
            wake(cs[-1], fs[-1])
    t = threading.Thread(target=bumper); t.start()
    changed = wait(cs, fs, expected, 0.25)
    returned = time.monotonic()
    t.join()
    return changed, returned - when[0]

out["one"] = bumped_after(1, 0.06, False)
out["several"] = bumped_after(3, 0.06, False)
out["several_again"] = bumped_after(2, 0.06, True)
t0 = time.monotonic()
out["timeout"] = [wait(counters, flags, [w.load() for w in counters], 0.05),
                  time.monotonic() - t0]
out["waitv_calls"] = calls["waitv"]
print(json.dumps(out))
"""


def test_poll_fallback_without_futexes_sees_a_bump_without_a_wake():
    out = json.loads(run_python(_FALLBACK_CHILD, "no-futex").stdout)
    assert out["address"] == 0  # no kernel address: every wait polls
    for case in ("one", "several", "several_again"):
        changed, seconds_after_bump = out[case]
        assert changed is True
        assert seconds_after_bump < 0.1, (case, seconds_after_bump)  # polled, ~2 ms
    changed, elapsed = out["timeout"]
    assert changed is False and 0.045 <= elapsed < 1.0


@needs_futex
def test_kernel_without_futex_waitv_falls_back_to_polling_for_several_words():
    out = json.loads(run_python(_FALLBACK_CHILD, "no-waitv").stdout)
    assert out["address"] != 0
    changed, after = out["one"]  # one word still sleeps in futex: the bump waits it out
    assert changed is True and after >= 0.15  # 0.19 s: until the slice ends
    for case in ("several", "several_again"):
        changed, seconds_after_bump = out[case]
        assert changed is True
        assert seconds_after_bump < 0.1, (case, seconds_after_bump)
    assert out["waitv_calls"] == 1  # refuted once, then never asked again
    changed, elapsed = out["timeout"]
    assert changed is False and 0.045 <= elapsed < 1.0


@needs_futex
def test_futex_calls_refused_by_a_sandbox_fall_back_to_polling_not_spinning():
    out = json.loads(run_python(_FALLBACK_CHILD, "seccomp").stdout)
    for case in ("one", "several", "several_again"):
        changed, seconds_after_bump = out[case]
        assert changed is True
        assert seconds_after_bump < 0.1, (case, seconds_after_bump)  # polled
    # A wait with nothing to see lasts its timeout: it did not return at once (which
    # would make a blocked Consumer.poll spin).
    changed, elapsed = out["timeout"]
    assert changed is False and 0.045 <= elapsed < 1.0
    assert out["waitv_calls"] <= 2  # each call refused once, then never asked again


def test_a_wait_without_time_still_reports_a_counter_that_moved(tmp_path):
    with open(tmp_path / "words", "w+b") as fh:
        fh.write(bytes(4096))
        fh.flush()
        mm = mmap.mmap(fh.fileno(), 4096)
        counter, flag = _notify.Word(mm, 0), _notify.Word(mm, 4)
        try:
            assert wait([counter], [flag], [0], 0.0) is False
            counter.store(1)
            assert wait([counter], [flag], [0], 0.0) is True
            assert wait([counter], [flag], [1], -1.0) is False
            counter._check()
        finally:
            counter.release()
            flag.release()
            assert counter.address == 0
            mm.close()


def test_word_offsets_are_those_of_the_head_layout():
    """``_head``'s docstring places the two words at these offsets of its prefix."""
    assert (_notify.NOTIFY_OFFSET, _notify.WAITERS_OFFSET) == (16, 20)
