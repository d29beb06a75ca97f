"""The partition head: two checksummed slots written in turn, the boot id, the notify
words. The byte layout the tests poke at is the one drawn in ``_head``'s docstring."""

from __future__ import annotations

import os
import struct
import subprocess
import threading
import time

import pytest

from eventlog import _notify
from eventlog._head import (
    FILE_BYTES,
    FLAG_CLEAN,
    FLAG_DELETED,
    Head,
    HeadState,
    create,
    current_boot_id,
    initial_state,
)
from eventlog._head import appended as appended_state
from tests.conftest import run_python, spawn_python

SLOT_OFFSETS = (64, 192)
SLOT = struct.Struct("<QqqqqqqqqqQQIIQ")  # body (104 bytes) + xxh3 checksum
NOW_MS = 1_700_000_000_000


@pytest.fixture
def head(tmp_path):
    path = str(tmp_path / "head")
    create(path, initial_state(NOW_MS))
    opened = Head(path)
    opened._check()
    yield opened
    if not opened.mm.closed:
        opened.close()


def slot_seq(path: str, index: int) -> int:
    with open(path, "rb") as fh:
        fh.seek(SLOT_OFFSETS[index])
        return SLOT.unpack(fh.read(SLOT.size))[0]


def flip_byte(path: str, offset: int) -> None:
    """Damage one byte through the file (the head is a shared mapping: the mapped view
    sees it at once), as a torn write or bit rot would."""
    fd = os.open(path, os.O_RDWR)
    try:
        old = os.pread(fd, 1, offset)
        os.pwrite(fd, bytes([old[0] ^ 0xFF]), offset)
    finally:
        os.close(fd)


def appended(st: HeadState, records: int, length: int) -> HeadState:
    """The state after an append of ``records`` records taking ``length`` bytes."""
    return st._replace(end_offset=st.end_offset + records,
                       active_position=st.active_position + length,
                       flags=st.flags & ~FLAG_CLEAN)


def test_create_writes_the_initial_state_in_the_slot_its_seq_names(tmp_path):
    path = str(tmp_path / "head")
    state = initial_state(NOW_MS, base_offset=500)
    create(path, state)
    with pytest.raises(FileExistsError):
        create(path, state)  # never over an existing head
    assert os.path.getsize(path) == FILE_BYTES
    with open(path, "rb") as fh:
        assert fh.read(12) == b"EvLgHEAD" + struct.pack("<I", 1)
    assert slot_seq(path, 1) == 1 and slot_seq(path, 0) == 0  # slot 0 never written
    head = Head(path)
    head._check()
    try:
        got = head.read()
        assert got == state
        assert got is not None and got.clean and not got.deleted
        assert (got.start_offset, got.end_offset, got.active_base) == (500, 500, 500)
        assert got.active_created_ms == NOW_MS and got.active_max_timestamp_ms == -1
        assert head.notify_count() == 0
    finally:
        head.close()


def test_publish_alternates_slots_and_keeps_the_previous_state_in_the_other(head):
    st = head.read()
    assert st is not None
    history = [st]
    for i in range(6):
        st = head.publish(appended(st, records=3, length=100 + i))
        head._check()
        history.append(st)
        assert st.seq == history[-2].seq + 1
        assert head.read() == st
        assert slot_seq(head.path, st.seq % 2) == st.seq
        assert slot_seq(head.path, (st.seq + 1) % 2) == st.seq - 1
    assert st.end_offset == 18 and st.active_position == sum(100 + i for i in range(6))
    assert [s.seq for s in history] == list(range(1, 8))


def test_published_state_is_seen_by_a_head_opened_later_on_the_same_file(head):
    st = head.read()
    assert st is not None
    st = head.publish(appended(st, 1, 64))
    head._check()
    other = Head(head.path)
    try:
        other._check()
        assert other.read() == st
        # and the other way round: both map the same page
        st = other.publish(appended(st, 2, 80))
        other._check()
        assert head.read() == st
        head._check()
    finally:
        other.close()


def test_torn_slot_falls_back_to_previous_state(head):
    st = head.read()
    assert st is not None
    previous = head.publish(appended(st, 1, 50))
    newest = head.publish(appended(previous, 1, 50))
    head._check()
    flip_byte(head.path, SLOT_OFFSETS[newest.seq % 2] + 20)  # inside end_offset
    assert head.read() == previous
    head._check()  # one torn slot is a state the head must recognise
    # The writer (reading the previous state under its lock) overwrites the torn slot.
    again = head.publish(appended(previous, 5, 70))
    head._check()
    assert again.seq == newest.seq and head.read() == again
    assert again.end_offset == previous.end_offset + 5


def test_torn_slot_with_a_higher_seq_is_skipped(head):
    """``read`` tries the slot with the higher raw seq first; a torn write can leave any
    seq there, so it must still fall through to the valid slot."""
    st = head.read()
    assert st is not None
    older = head.publish(appended(st, 1, 10))
    newest = head.publish(appended(older, 1, 10))
    fd = os.open(head.path, os.O_RDWR)
    try:
        os.pwrite(fd, struct.pack("<Q", 1 << 63), SLOT_OFFSETS[older.seq % 2])
    finally:
        os.close(fd)
    assert slot_seq(head.path, older.seq % 2) > newest.seq
    assert head.read() == newest
    head._check()


def _publish_from_another_process(head: Head, records: int) -> None:
    run_python("import sys\n"
               "from eventlog._head import Head\n"
               "head = Head(sys.argv[1])\n"
               "st = head.read()\n"
               "for _ in range(int(sys.argv[2])):\n"
               "    st = head.publish(st._replace(end_offset=st.end_offset + 1,\n"
               "                                  active_position=st.active_position + 9))\n"
               "head.close()\n", head.path, str(records))


def _write_seq(head: Head, slot: int, seq: int) -> None:
    fd = os.open(head.path, os.O_RDWR)
    try:
        os.pwrite(fd, struct.pack("<Q", seq), SLOT_OFFSETS[slot])
    finally:
        os.close(fd)


# What may happen to a head between two appends of its writer, as the writer finds it
# under the lock; each leaves a state read() decides, and read_for_writer must agree.
HEAD_CHANGES = {
    "nothing": lambda head, st: None,
    "another process published once": lambda head, st: _publish_from_another_process(
        head, 1),
    "another process published twice": lambda head, st: _publish_from_another_process(
        head, 2),
    "own slot garbled": lambda head, st: flip_byte(head.path,
                                                  SLOT_OFFSETS[st.seq % 2] + 20),
    "own slot's checksum garbled": lambda head, st: flip_byte(
        head.path, SLOT_OFFSETS[st.seq % 2] + 104),
    "other slot garbled": lambda head, st: flip_byte(head.path,
                                                    SLOT_OFFSETS[(st.seq + 1) % 2] + 20),
    "torn write with a higher seq in the other slot": lambda head, st: _write_seq(
        head, (st.seq + 1) % 2, st.seq + 1),
    "same seq in the other slot": lambda head, st: _write_seq(head, (st.seq + 1) % 2,
                                                              st.seq),
    "both slots garbled": lambda head, st: (flip_byte(head.path, SLOT_OFFSETS[0] + 20),
                                            flip_byte(head.path, SLOT_OFFSETS[1] + 20)),
}


@pytest.mark.parametrize("change", sorted(HEAD_CHANGES))
def test_read_for_writer_agrees_with_read_whatever_happened_since_the_publish(head,
                                                                             change):
    st = head.read()
    assert st is not None
    st = head.publish(appended(st, 2, 40))
    st = head.publish(appended(st, 3, 50))
    assert head.read_for_writer() == head.read() == st
    HEAD_CHANGES[change](head, st)
    expected = head.read()
    assert head.read_for_writer() == expected
    if change == "nothing":
        assert head.read_for_writer() is st  # the writer's shortcut: nothing decoded
    elif expected is not None:
        # and the writer goes on from what it found, as before
        after = head.publish(appended(expected, 1, 10))
        assert head.read_for_writer() == head.read() == after


def test_publish_appended_writes_what_publish_of_the_appended_state_writes(tmp_path, head):
    # Two heads on two files, one published through each path; the tail the writer
    # caches (boot id, flags, layout epoch) changes in between.
    path = str(tmp_path / "other")
    create(path, initial_state(NOW_MS))
    other = Head(path)
    try:
        st = head.read()
        assert st is not None and st == other.read()
        for step, change in enumerate([{}, {"flags": 0}, {}, {"boot_id": (1 << 128) - 3},
                                       {"layout_epoch": 7}, {}, {"flags": FLAG_DELETED}]):
            st = st._replace(**change)
            end, position, max_ts = st.end_offset + step + 1, st.active_position + 64, step
            got = head.publish_appended(st, end, position, max_ts)
            want = other.publish(appended_state(st, end, position, max_ts))
            assert got == want and got.seq == st.seq + 1
            assert head.mm[64:320] == other.mm[64:320]  # both slots, byte for byte
            assert head.read() == got
            head._check()
            st = got
    finally:
        other.close()


def test_both_slots_torn_reads_none_and_fails_the_check(head):
    st = head.read()
    assert st is not None
    head.publish(appended(st, 1, 10))
    for off in SLOT_OFFSETS:
        flip_byte(head.path, off + 100)  # inside the checksum
    assert head.read() is None
    with pytest.raises(AssertionError, match="neither slot"):
        head._check()


def test_damaged_prefix_is_rewritten_on_open_and_slots_survive(head):
    st = head.read()
    assert st is not None
    st = head.publish(appended(st, 4, 200))
    head.close()
    flip_byte(head.path, 0)
    flip_byte(head.path, 9)  # magic and version
    reopened = Head(head.path)
    try:
        reopened._check()
        assert reopened.read() == st
        with open(head.path, "rb") as fh:
            assert fh.read(8) == b"EvLgHEAD"
    finally:
        reopened.close()


def test_head_cut_short_is_grown_back_keeping_the_slots(head):
    st = head.read()
    assert st is not None
    st = head.publish(appended(st, 1, 10))
    head.close()
    os.truncate(head.path, SLOT_OFFSETS[1] + SLOT.size)  # both slots still inside
    reopened = Head(head.path)
    try:
        assert os.path.getsize(head.path) == FILE_BYTES
        reopened._check()
        assert reopened.read() == st
    finally:
        reopened.close()


def test_boot_id_of_all_128_bits_round_trips(head):
    st = head.read()
    assert st is not None
    for boot in ((1 << 128) - 1, (1 << 127) | 0xDEAD, 1 << 64, (1 << 64) - 1, 0):
        st = head.publish(st._replace(boot_id=boot))
        head._check()
        assert head.read() == st
        assert st.boot_id == boot


def test_boot_id_names_the_running_kernel_in_every_process():
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            expected = int(fh.read().strip().replace("-", ""), 16)
    except OSError:
        pytest.skip("no /proc/sys/kernel/random/boot_id here")
    assert current_boot_id() == expected != 0
    assert initial_state(NOW_MS).boot_id == expected
    child = run_python("from eventlog._head import current_boot_id; print(current_boot_id())")
    assert int(child.stdout) == expected


def test_boot_id_is_zero_where_the_kernel_names_no_boot():
    """Zero never matches a recorded boot, so every open after a crash validates."""
    child = run_python(
        "import builtins\n"
        "real_open = builtins.open\n"
        "def no_boot_id(path, *a, **k):\n"
        "    if 'boot_id' in str(path):\n"
        "        raise PermissionError(13, 'denied', path)\n"
        "    return real_open(path, *a, **k)\n"
        "builtins.open = no_boot_id\n"
        "from eventlog._head import current_boot_id, initial_state\n"
        "print(current_boot_id(), initial_state(0).boot_id)\n")
    assert child.stdout.split() == ["0", "0"]


@pytest.mark.parametrize("broken", [
    {"start_offset": 11},                      # start past the end
    {"active_base": 11},                       # active segment past the end
    {"recovery_offset": 11},                   # durable point past the end
    {"recovery_base": 8, "recovery_offset": 10},  # durable point after the active end
    {"active_position": 0},                    # empty active segment holding records
    {"flags": 0x80},                           # a flag nobody defines
    {"active_max_timestamp_ms": -2},
])
def test_check_rejects_an_inconsistent_published_state(head, broken):
    st = head.read()
    assert st is not None
    st = head.publish(st._replace(end_offset=10, active_base=5, active_position=300,
                                  recovery_base=0, recovery_position=40,
                                  recovery_offset=3, start_offset=2))
    head._check()  # the consistent baseline passes
    head.publish(st._replace(**broken))
    with pytest.raises(AssertionError):
        head._check()


def test_check_rejects_slots_whose_seqs_are_not_consecutive(head):
    st = head.read()
    assert st is not None
    head.publish(st._replace(seq=st.seq + 4))  # a writer that skipped states
    with pytest.raises(AssertionError):
        head._check()


def test_deleted_flag_is_published_with_the_state(head):
    st = head.read()
    assert st is not None
    st = head.publish(st._replace(flags=st.flags | FLAG_DELETED))
    head._check()
    got = head.read()
    assert got is not None and got.deleted and got.clean


def test_publish_bumps_the_notify_counter_once_and_wraps_at_32_bits(head):
    st = head.read()
    assert st is not None
    for expected in range(1, 4):
        st = head.publish(appended(st, 1, 10))
        head._check()
        head.counter._check()
        assert head.notify_count() == expected
    head.counter.store(0xFFFFFFFF)
    head.publish(appended(st, 1, 10))
    head._check()
    assert head.notify_count() == 0


def test_publish_wakes_a_thread_sleeping_on_the_counter(head):
    st = head.read()
    assert st is not None
    seen = head.notify_count()
    result: list[tuple[bool, float]] = []

    def sleeper() -> None:
        t0 = time.monotonic()
        changed = _notify.wait([head.counter], [head.waiters], [seen], _notify.MAX_SLICE_S)
        result.append((changed, time.monotonic() - t0))

    thread = threading.Thread(target=sleeper)
    thread.start()
    deadline = time.monotonic() + 5
    while head.waiters.load() == 0 and time.monotonic() < deadline:
        time.sleep(0.001)  # until the sleeper has said it is about to sleep
    assert head.waiters.load() == 1
    head._check()
    new = head.publish(appended(st, 1, 10))
    thread.join(5)
    assert not thread.is_alive()
    assert head.waiters.load() == 0  # the publish cleared the flag it answered
    head._check()
    assert result[0][0] is True
    assert head.read() == new and head.notify_count() == seen + 1


def test_publish_wakes_a_reader_in_another_process(head):
    st = head.read()
    assert st is not None
    child = spawn_python(
        "import sys, time\n"
        "from eventlog import _notify\n"
        "from eventlog._head import Head\n"
        "head = Head(sys.argv[1])\n"
        "seen = head.notify_count()\n"
        "changed = False\n"
        "deadline = time.monotonic() + 10\n"
        "while not changed and time.monotonic() < deadline:\n"
        "    changed = _notify.wait([head.counter], [head.waiters], [seen], 0.25)\n"
        "print(changed, head.read().end_offset, head.notify_count() - seen)\n"
        "head.close()\n", head.path, stdout=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while head.waiters.load() == 0 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert head.waiters.load() == 1, "the child never went to sleep"
        st = head.publish(appended(st, 7, 300))
        head._check()
        out, _ = child.communicate(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0
    assert out.split() == ["True", str(st.end_offset), "1"]


def test_close_unmaps_and_releases_the_file(head):
    st = head.read()
    assert st is not None
    st = head.publish(appended(st, 2, 20))
    fd = head.fd
    head.close()
    assert head.mm.closed
    with pytest.raises(OSError):
        os.fstat(fd)
    with pytest.raises(ValueError):
        head.read()
    reopened = Head(head.path)
    try:
        reopened._check()
        assert reopened.read() == st
        assert reopened.notify_count() == 1
    finally:
        reopened.close()


def test_close_is_idempotent(tmp_path):
    path = str(tmp_path / "head")
    create(path, initial_state(1, 0))
    head = Head(path)
    head._check()
    head.close()
    head.close()
    assert head.mm.closed and head.fd == -1
