"""Idempotent-producer state: sequence decisions, snapshots, and the manager that keeps
the state of a partition in step with its log (first build, catch-up with other
writers, snapshots at rolls, rebuild after a layout change). ``_check()`` runs after
every mutation."""

from __future__ import annotations

import pytest

from eventlog import CorruptRecordError, OutOfOrderSequenceError
from eventlog._format import encode_batch
from eventlog._partition import PartitionLog, StorageContext
from eventlog._producer_state import (
    SEQUENCE_MODULUS,
    ProducerState,
    load_snapshots,
    snapshot_bases,
    snapshot_path,
    write_snapshot,
)
from eventlog.config import LogOptions, TopicConfig
from tests.test_segments import Clock, open_partition

PID = 7


def recorded(state, *batches):
    """Record (producer id, base sequence, base offset, count) batches, checking."""
    for pid, seq, offset, count in batches:
        state.record(pid, seq, offset, count)
        state._check()
    return state


def idempotent(values, seq, pid=PID):
    return encode_batch(values, producer_id=pid, base_sequence=seq)


def test_a_continuing_sequence_is_appended_and_a_replay_is_a_duplicate():
    state = recorded(ProducerState(), (PID, 0, 0, 3), (PID, 3, 3, 2))
    assert state.last_sequence(PID) == 4
    assert state.check(PID, 5, 4) == (0, False, [])
    assert state.check(PID, 3, 2) == (2, True, [3, 4])      # a replay of the last batch
    assert state.check(PID, 0, 3) == (3, True, [0, 1, 2])
    assert state.check(99, 1234, 1) == (0, False, [])       # a new producer starts anywhere


def test_an_overlapping_batch_skips_its_stored_records():
    state = recorded(ProducerState(), (PID, 0, 10, 4))
    assert state.check(PID, 2, 5) == (2, False, [12, 13])


def test_a_gap_in_the_sequence_raises():
    state = recorded(ProducerState(), (PID, 0, 0, 2))
    with pytest.raises(OutOfOrderSequenceError, match="1 record"):
        state.check(PID, 3, 1)


def test_sequences_wrap_at_two_to_the_31():
    state = recorded(ProducerState(), (PID, SEQUENCE_MODULUS - 2, 0, 2), (PID, 0, 2, 3))
    assert state.last_sequence(PID) == 2
    assert state.check(PID, SEQUENCE_MODULUS - 1, 2) == (2, True, [1, 2])


def test_a_snapshot_round_trips_and_damage_is_refused(tmp_path):
    state = recorded(ProducerState(), (PID, 0, 0, 3), (8, 5, 3, 1), (PID, 3, 4, 2))
    data = state.to_bytes(100)
    again = ProducerState.from_bytes(data, 100)
    again._check()
    assert again.to_bytes(100) == data
    with pytest.raises(CorruptRecordError, match="another offset"):
        ProducerState.from_bytes(data, 101)
    for i in range(0, len(data), 7):
        damaged = bytearray(data)
        damaged[i] ^= 0x10
        with pytest.raises(CorruptRecordError):
            ProducerState.from_bytes(bytes(damaged), 100)
    write_snapshot(str(tmp_path), 100, state)
    write_snapshot(str(tmp_path), 40, ProducerState())
    assert snapshot_bases(str(tmp_path)) == [40, 100]
    assert [b for b, _ in load_snapshots(str(tmp_path), 99)] == [40]
    with open(snapshot_path(str(tmp_path), 100), "r+b") as fh:
        fh.seek(30)
        fh.write(b"\xff")
    assert [b for b, _ in load_snapshots(str(tmp_path), 1000)] == [40]  # damaged: skipped


def test_a_snapshot_whose_batches_disagree_with_its_sequence_is_refused():
    import msgpack
    import xxhash

    from eventlog._producer_state import _SNAPSHOT_HEADER, _SNAPSHOT_MAGIC

    body = msgpack.packb({"offset": 0, "producers": [[PID, 9, [[0, 0, 3]]]]})
    data = _SNAPSHOT_HEADER.pack(_SNAPSHOT_MAGIC, xxhash.xxh3_64_intdigest(body)) + body
    with pytest.raises(CorruptRecordError, match="inconsistent"):
        ProducerState.from_bytes(data, 0)


def check_all(plog):
    plog._check()
    plog._producers._check(plog.state())


def test_the_state_is_rebuilt_from_the_newest_snapshot_and_the_batches_after_it(tmp_path):
    plog = open_partition(tmp_path / "p", segment_bytes=200)
    seq = 0
    for _ in range(30):
        plog.append(idempotent([b"v" * 20], seq))
        seq += 1
        check_all(plog)
    assert plog.last_sequence(PID) == 29
    for _ in range(20):          # the state is built now: rolls snapshot it
        plog.append(idempotent([b"v" * 20], seq))
        seq += 1
    check_all(plog)
    assert snapshot_bases(plog.directory)
    plog.close()
    reopened = open_partition(tmp_path / "p", segment_bytes=200)
    try:
        assert reopened.last_sequence(PID) == 49
        result = reopened.append(idempotent([b"v" * 20], 48))   # a replay
        assert result.base_offset == -1 and result.stored_offsets == [48]
        check_all(reopened)
    finally:
        reopened.close()


def test_a_writer_catches_up_with_the_batches_of_another_writer(tmp_path):
    first = open_partition(tmp_path / "p")
    second = PartitionLog(first.directory, TopicConfig,
                          StorageContext(LogOptions(fsync="never", clock=Clock())))
    try:
        first.append(idempotent([b"a", b"b"], 0))
        assert second.last_sequence(PID) == 1     # built from the log
        first.append(idempotent([b"c"], 2))
        assert second.last_sequence(PID) == 2     # caught up from the new batch
        result = second.append(idempotent([b"c"], 2))
        assert result.base_offset == -1 and result.stored_offsets == [2]
        second.append(idempotent([b"d"], 3))
        with pytest.raises(OutOfOrderSequenceError):
            first.append(idempotent([b"f"], 5))
        check_all(first)
        check_all(second)
    finally:
        second.close()
        first.close()


def test_a_layout_change_makes_the_next_use_rebuild_the_state(tmp_path):
    plog = open_partition(tmp_path / "p", segment_bytes=200)
    try:
        for seq in range(30):
            plog.append(idempotent([b"v" * 20], seq))
        assert plog.last_sequence(PID) == 29
        bases = plog.segments.bases
        plog.delete_records(bases[-1])               # every sealed segment goes
        check_all(plog)
        assert not [b for b in snapshot_bases(plog.directory) if b < bases[-1]]
        # the producer's batches that remain (or the newest snapshot) still say 29
        assert plog.last_sequence(PID) == 29
        plog.append(idempotent([b"v"], 30))
        check_all(plog)
    finally:
        plog.close()
