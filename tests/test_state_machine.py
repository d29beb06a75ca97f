"""A stateful model test of one partition: appends, reads, rolls, reopens, simulated
crashes with torn tails, and flipped bits, checked against an in-memory list."""

from __future__ import annotations

import os
import shutil
import tempfile

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import eventlog
from eventlog import CorruptRecordError
from tests.conftest import SOAK
from tests.test_recovery import crash, reboot


class PartitionModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="eventlog-sm-")
        self.options = {"segment_bytes": 600, "index_interval_bytes": 100, "fsync": "never"}
        self.log = eventlog.open(self.dir, **self.options)
        self.p = self.log.create_topic("t").partition(0)
        self.model: list[tuple[bytes | None, bytes | None, int]] = []

    def teardown(self) -> None:
        if not self.log.closed:
            self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _reopen(self) -> None:
        self.log = eventlog.open(self.dir, **self.options)
        self.p = self.log.topic("t").partition(0)

    def _batches(self):
        """(segment, position, header) of every published batch."""
        plog = self.p._log
        state = plog.state()
        out = []
        for segment in plog.segments.published(state):
            limit = plog.segments.limit(segment, state)
            out.extend((segment, pos, h) for pos, h in segment.headers(0, limit))
        return out

    @rule(values=st.lists(st.one_of(st.none(), st.binary(max_size=150)), min_size=1,
                          max_size=6),
          keyed=st.booleans(), ts=st.integers(min_value=0, max_value=10**12))
    def append(self, values, keyed, ts):
        keys = [b"k%d" % i for i in range(len(values))] if keyed else None
        base = self.p.append(values, keys=keys, timestamps_ms=ts)
        assert base == len(self.model)
        self.model.extend((k, v, ts) for k, v in zip(keys or [None] * len(values), values,
                                                       strict=True))

    @rule(data=st.data())
    def read(self, data):
        offset = data.draw(st.integers(min_value=0, max_value=len(self.model)))
        max_records = data.draw(st.one_of(st.none(), st.integers(min_value=1, max_value=20)))
        max_bytes = data.draw(st.one_of(st.none(), st.integers(min_value=1, max_value=2000)))
        got = self.p.read(offset, max_records=max_records, max_bytes=max_bytes)
        expected = self.model[offset:]
        if max_records is not None:
            expected = expected[:max_records]
        assert [(r.key, r.value, r.timestamp_ms) for r in got] == expected[:len(got)]
        assert [r.offset for r in got] == list(range(offset, offset + len(got)))
        if expected:
            assert got, "a read with records available returned nothing"

    @rule()
    def roll(self):
        self.p.roll()

    @rule()
    def reopen(self):
        self.log.close()
        self._reopen()

    @precondition(lambda self: self.model)
    @rule(data=st.data(), garbage=st.booleans())
    def crash_with_torn_tail(self, data, garbage):
        """The machine lost power: bytes after a random point of the active segment
        (after the durable point) are garbage or gone; recovery keeps the batches
        wholly before the cut."""
        plog = self.p._log
        state = plog.state()
        start = state.recovery_position if state.recovery_base == state.active_base else 0
        if state.active_position <= start:
            return
        cut = data.draw(st.integers(min_value=start, max_value=state.active_position - 1))
        segment = plog.segments[state.active_base]
        keep_offset = state.active_base
        for pos, header in segment.headers(0, state.active_position):
            if pos + header.length <= cut:
                keep_offset = header.next_offset
        path, directory = segment.path, plog.directory
        crash(self.log)
        reboot(directory)
        with open(path, "r+b") as fh:
            fh.seek(cut)
            size = os.path.getsize(path) - cut
            fh.write(os.urandom(min(size, 64)) if garbage else bytes(size))
        self._reopen()
        del self.model[keep_offset:]
        assert self.p.end_offset == len(self.model)

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def flipped_bit_is_detected(self, data):
        batches = self._batches()
        segment, position, header = data.draw(st.sampled_from(batches))
        byte = position + data.draw(st.integers(min_value=0, max_value=header.length - 1))
        bit = 1 << data.draw(st.integers(min_value=0, max_value=7))
        mm = segment.mapping(byte + 1)
        mm[byte] ^= bit
        try:
            self.p._log.segments.forget_positions()
            raised = False
            try:
                self.p.read(header.base_offset, max_records=header.record_count)
            except CorruptRecordError:
                raised = True
            assert raised, f"flip at byte {byte} of {segment.path} went unnoticed"
        finally:
            mm[byte] ^= bit
            self.p._log.segments.forget_positions()

    @invariant()
    def log_matches_model(self):
        assert self.p.end_offset == len(self.model)
        self.p._log._check()


PartitionModel.TestCase.settings = settings(max_examples=40 * SOAK, stateful_step_count=30,
                                            deadline=None)
TestPartitionModel = PartitionModel.TestCase
