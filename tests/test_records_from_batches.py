"""Records built from decoded batches: the one-record path and the column path of
``records_from_batches`` both give what the batch's columns say, record for record.

A batch of one record (what a producer flushing each send writes) is built from its
fields directly; longer runs go through the columns. Both are held here to an oracle
made from ``DecodedBatch``'s column accessors, over batches read back from real log
files (dense, keyed or not, headers, per-record and log-append timestamps, control
markers) and over sparse batches as compaction writes them, from every start offset
and with every ``max_records`` cut (a cut to one record takes the one-record path in
the middle of a longer batch).
"""

from __future__ import annotations

import tempfile
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import eventlog
from eventlog._format import ATTR_CONTROL, decode_batch, encode_batch, write_batch
from eventlog._types import Record, TimestampType, records_from_batches

_KEY = st.one_of(st.none(), st.binary(max_size=8))
_VALUE = st.one_of(st.none(), st.binary(max_size=8))
_HEADERS = st.one_of(st.none(), st.lists(st.tuples(st.sampled_from(["a", "b"]),
                                                   st.binary(max_size=4)), max_size=2))
_RECORD = st.tuples(_KEY, _VALUE, _HEADERS, st.integers(min_value=0, max_value=10**6))
# batches of one to four records each, as the producer writes them
_BATCHES = st.lists(st.lists(_RECORD, min_size=1, max_size=4), min_size=1, max_size=4)


def keys_fn(column: list[Any]) -> list[Any]:
    return [None if k is None else ("key", k) for k in column]


def values_fn(column: list[Any]) -> list[Any]:
    return [None if v is None else ("value", v) for v in column]


def oracle(batches: list[Any], offset: int, topic: str, partition: int,
           max_records: int | None, deserialize: bool) -> list[Record]:
    out = []
    for batch in batches:
        if batch.header.attributes & ATTR_CONTROL:
            continue
        count = batch.header.record_count
        keys = list(batch.key_column())
        values = list(batch.values)
        if deserialize:
            if batch.keys is not None:
                keys = keys_fn(keys)
            values = values_fn(values)
        kind = (TimestampType.LOG_APPEND_TIME if batch.header.attributes & 0x01
                else TimestampType.CREATE_TIME)
        for i, (at, ts, headers) in enumerate(zip(batch.offsets(), batch.timestamps(),
                                                  batch.header_column(), strict=True)):
            if at < offset:
                continue
            out.append(Record(topic, partition, at, ts, keys[i], values[i], headers, kind))
        assert len(batch.values) == count
    return out if max_records is None else out[:max_records]


def check_every_start(batches: list[Any], first: int, end: int) -> None:
    for offset in range(first, end + 1):
        for max_records in (None, 1, 2, 3):
            for deserialize in (False, True):
                fns = (keys_fn, values_fn) if deserialize else (None, None)
                got = records_from_batches(batches, offset, "t", 3, max_records, *fns)
                assert got == oracle(batches, offset, "t", 3, max_records, deserialize)
                assert all(type(r) is Record for r in got)


@settings(max_examples=40, deadline=None)
@given(_BATCHES, st.sampled_from(["create_time", "log_append_time"]), st.booleans())
def test_records_from_log_files_match_their_columns(batches, timestamp_type, txn):
    with tempfile.TemporaryDirectory() as tmp:
        with eventlog.open(tmp, fsync="never") as log:
            log.create_topic("t", timestamp_type=timestamp_type)
            options = {"transactional_id": "x"} if txn else {}
            with eventlog.Producer(log, key_serializer="bytes", value_serializer="bytes",
                                   **options) as producer:
                if txn:
                    producer.init_transactions()
                    producer.begin_transaction()
                for records in batches:
                    for key, value, headers, ts in records:
                        producer.send("t", value, key=key, headers=headers,
                                      timestamp_ms=ts)
                    producer.flush()
                if txn:
                    producer.commit_transaction()
            plog = log.backend.partition("t", 0)
            read = plog.fetch(0, 1 << 20)
            assert sum(b.header.record_count for b in read
                       if not b.header.attributes & ATTR_CONTROL) == \
                sum(map(len, batches))
            check_every_start(read, 0, plog.end_offset)


@settings(max_examples=40, deadline=None)
@given(st.lists(_RECORD, min_size=1, max_size=5), st.data())
def test_records_from_sparse_batches_match_their_columns(records, data):
    gaps = data.draw(st.lists(st.integers(min_value=1, max_value=3), min_size=len(records),
                              max_size=len(records)))
    deltas = [sum(gaps[:i + 1]) - gaps[0] for i in range(len(records))]
    keys, values, headers, timestamps = (list(c) for c in zip(*records, strict=True))
    encoded = encode_batch(values, keys, timestamps, headers, offset_deltas=deltas)
    buf = bytearray(encoded.size)
    write_batch(buf, 0, encoded, 100)
    batch = decode_batch(buf, 0, len(buf))
    check_every_start([batch], 100, batch.header.next_offset)
