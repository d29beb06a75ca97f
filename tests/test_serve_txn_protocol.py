"""The transaction APIs of ``eventlog serve`` at the byte level: Kafka's error codes
for each wrong step (fenced epochs, partitions not added, offsets without
AddOffsetsToTxn, control batches from a client, bad timeouts), FindCoordinator for
transactional ids, and read_committed Fetch's LSO and aborted transactions. After
each refusal the log is intact."""

from __future__ import annotations

from typing import Any

import pytest

import eventlog
from eventlog._kafka_wire import _apis
from eventlog._kafka_wire import _errors as E
from eventlog._kafka_wire._batch import build_batch, encode_records

from .kafka_wire import WireClient, produce_body

pytest.importorskip("crc32c")

ADD_PARTITIONS, ADD_OFFSETS, END_TXN, TXN_OFFSET_COMMIT = (_apis.APIS[k]
                                                           for k in (24, 25, 26, 28))


def _txn_batch(values: list[bytes], pid: int, epoch: int, sequence: int,
               attributes: int = 0x10) -> bytes:
    n = len(values)
    records = encode_records(range(n), [0] * n, [None] * n, values, None)
    return build_batch(0, n - 1, 1_700_000_000_000, 1_700_000_000_000, n, records,
                       attributes=attributes, producer_id=pid, producer_epoch=epoch,
                       base_sequence=sequence)


class _Txn:
    """A transactional id driven request by request."""

    def __init__(self, c: WireClient, tid: str) -> None:
        self.c, self.tid = c, tid
        r = c.request(_apis.INIT_PRODUCER_ID, 1, {"transactional_id": tid,
                                                  "transaction_timeout_ms": 30_000})
        assert r["error_code"] == 0
        self.pid, self.epoch = r["producer_id"], r["producer_epoch"]
        self.sequence = 0

    def ids(self, epoch: int | None = None) -> dict[str, Any]:
        return {"transactional_id": self.tid, "producer_id": self.pid,
                "producer_epoch": self.epoch if epoch is None else epoch}

    def add(self, topic: str, *partitions: int, epoch: int | None = None) -> list[int]:
        r = self.c.request(ADD_PARTITIONS, 1, {**self.ids(epoch), "topics": [
            {"name": topic, "partitions": list(partitions)}]})
        return [p["error_code"] for p in r["results"][0]["results"]]

    def produce(self, topic: str, values: list[bytes], epoch: int | None = None,
                attributes: int = 0x10) -> dict[str, Any]:
        body = produce_body(topic, 0, _txn_batch(values, self.pid,
                                                 self.epoch if epoch is None else epoch,
                                                 self.sequence, attributes))
        body["transactional_id"] = self.tid
        r = self.c.request(_apis.PRODUCE, 8, body)
        out: dict[str, Any] = r["responses"][0]["partition_responses"][0]
        if out["error_code"] == 0:
            self.sequence += len(values)
        return out

    def end(self, commit: bool, epoch: int | None = None) -> int:
        r = self.c.request(END_TXN, 1, {**self.ids(epoch), "committed": commit})
        return int(r["error_code"])


def _fetch(c: WireClient, topic: str, offset: int, isolation: int) -> dict[str, Any]:
    r = c.request(_apis.FETCH, 11, {
        "replica_id": -1, "max_wait_ms": 0, "min_bytes": 1, "max_bytes": 1 << 20,
        "isolation_level": isolation, "session_id": 0, "session_epoch": -1,
        "topics": [{"topic": topic, "partitions": [
            {"partition": 0, "current_leader_epoch": -1, "fetch_offset": offset,
             "log_start_offset": -1, "partition_max_bytes": 1 << 20}]}],
        "forgotten_topics_data": [], "rack_id": ""})
    part: dict[str, Any] = r["responses"][0]["partitions"][0]
    return part


def test_find_coordinator_answers_for_transactional_ids(eventlog_kafka):
    with WireClient(eventlog_kafka) as c:
        r = c.request(_apis.FIND_COORDINATOR, 2, {"key": "tx", "key_type": 1})
        assert r["error_code"] == 0
        assert (r["host"], r["port"]) == ("127.0.0.1", int(eventlog_kafka.rsplit(":", 1)[1]))
        assert c.request(_apis.FIND_COORDINATOR, 2, {"key": "tx", "key_type": 7}
                         )["error_code"] == E.INVALID_REQUEST


def test_init_producer_id_bumps_the_epoch_and_checks_its_arguments(eventlog_kafka):
    with WireClient(eventlog_kafka) as c:
        first, second = _Txn(c, "t1"), _Txn(c, "t1")
        assert (second.pid, second.epoch) == (first.pid, first.epoch + 1)
        for tid, timeout, code in (("t2", 0, E.INVALID_TRANSACTION_TIMEOUT),
                                   ("t2", 10**9, E.INVALID_TRANSACTION_TIMEOUT),
                                   ("", 1000, E.INVALID_REQUEST)):
            r = c.request(_apis.INIT_PRODUCER_ID, 1, {"transactional_id": tid,
                                                      "transaction_timeout_ms": timeout})
            assert r["error_code"] == code


def test_wrong_steps_get_kafkas_error_codes_and_leave_the_log_intact(eventlog_kafka,
                                                                      eventlog_log):
    eventlog_log.create_topic("t")
    with WireClient(eventlog_kafka) as c:
        txn = _Txn(c, "wrong")
        # a transactional batch before AddPartitionsToTxn
        assert txn.produce("t", [b"early"])["error_code"] == E.INVALID_TXN_STATE
        assert txn.add("nope", 0) == [E.UNKNOWN_TOPIC_OR_PARTITION]
        assert txn.add("t", 0, epoch=txn.epoch - 1 if txn.epoch else 5) == \
            [E.INVALID_PRODUCER_EPOCH]
        assert txn.add("t", 0) == [0]
        # a client may not write markers
        assert txn.produce("t", [b"m"], attributes=0x30)["error_code"] == E.INVALID_RECORD
        assert txn.produce("t", [b"a", b"b"])["error_code"] == 0
        # TxnOffsetCommit before AddOffsetsToTxn
        r = c.request(TXN_OFFSET_COMMIT, 2, {**txn.ids(), "group_id": "g", "topics": [
            {"name": "t", "partitions": [{"partition_index": 0, "committed_offset": 2,
                                          "committed_leader_epoch": -1,
                                          "committed_metadata": None}]}]})
        assert r["topics"][0]["partitions"][0]["error_code"] == E.INVALID_TXN_STATE
        assert c.request(ADD_OFFSETS, 1, {**txn.ids(), "group_id": ""}
                         )["error_code"] == E.INVALID_GROUP_ID
        assert txn.end(True, epoch=txn.epoch + 1) == E.INVALID_PRODUCER_EPOCH
        # a newer producer of the id fences this one: its open transaction is aborted
        newer = _Txn(c, "wrong")
        assert txn.produce("t", [b"late"])["error_code"] == E.INVALID_PRODUCER_EPOCH
        assert txn.end(True) == E.INVALID_PRODUCER_EPOCH
        assert newer.end(False) == 0
    assert log_values(eventlog_log) == [b"a", b"b"]   # and the abort marker
    assert eventlog_log.check().problems == []


def log_values(log: eventlog.Log) -> list[bytes]:
    return [r.value for r in log.topic("t").partition(0).read(0)]


def test_read_committed_fetch_reports_the_lso_and_the_aborted_transactions(
        eventlog_kafka, eventlog_log):
    eventlog_log.create_topic("t")
    with WireClient(eventlog_kafka) as c:
        a, b = _Txn(c, "a"), _Txn(c, "b")
        assert a.add("t", 0) == [0] and b.add("t", 0) == [0]
        assert a.produce("t", [b"a0"])["base_offset"] == 0
        assert b.produce("t", [b"b0", b"b1"])["base_offset"] == 1
        part = _fetch(c, "t", 0, isolation=1)
        assert (part["high_watermark"], part["last_stable_offset"]) == (3, 0)
        assert part["records"] == b"" and part["aborted_transactions"] == []
        assert a.end(False) == 0          # marker at 3
        part = _fetch(c, "t", 0, isolation=1)
        assert part["last_stable_offset"] == 1   # b is still open at 1
        assert part["aborted_transactions"] == [{"producer_id": a.pid, "first_offset": 0}]
        assert b.end(True) == 0           # marker at 4
        part = _fetch(c, "t", 0, isolation=1)
        assert (part["high_watermark"], part["last_stable_offset"]) == (5, 5)
        assert part["aborted_transactions"] == [{"producer_id": a.pid, "first_offset": 0}]
        plain = _fetch(c, "t", 0, isolation=0)
        assert plain["aborted_transactions"] is None
        assert plain["records"] == part["records"]
        # ListOffsets latest: the LSO for read_committed
        r = c.request(_apis.LIST_OFFSETS, 5, {"replica_id": -1, "isolation_level": 1,
                                              "topics": [{"name": "t", "partitions": [
                                                  {"partition_index": 0,
                                                   "current_leader_epoch": -1,
                                                   "timestamp": -1}]}]})
        assert r["topics"][0]["partitions"][0]["offset"] == 5


def test_txn_offset_commit_v3_flexible_and_end_commits_the_offsets(eventlog_kafka,
                                                                   eventlog_log):
    eventlog_log.create_topic("t")
    with WireClient(eventlog_kafka) as c:
        txn = _Txn(c, "offs")
        assert c.request(ADD_OFFSETS, 2, {**txn.ids(), "group_id": "g"})["error_code"] == 0
        r = c.request(TXN_OFFSET_COMMIT, 3, {
            **txn.ids(), "group_id": "g", "generation_id": -1, "member_id": "",
            "group_instance_id": None, "topics": [{"name": "t", "partitions": [
                {"partition_index": 0, "committed_offset": 7, "committed_leader_epoch": -1,
                 "committed_metadata": ""}]}]})
        assert r["topics"][0]["partitions"][0]["error_code"] == 0
        assert "g" not in eventlog_log.groups()   # nothing before the commit
        assert txn.end(True) == 0
    assert eventlog_log.group_offsets("g") == {eventlog.TopicPartition("t", 0): 7}


@pytest.mark.parametrize("version", [0, 1, 2, 3])
def test_every_advertised_version_runs_a_whole_transaction(eventlog_kafka, eventlog_log,
                                                           version):
    eventlog_log.create_topic("t")
    with WireClient(eventlog_kafka) as c:
        txn = _Txn(c, f"v{version}")
        v = min(version, ADD_PARTITIONS.max_version)
        r = c.request(ADD_PARTITIONS, v, {**txn.ids(), "topics": [
            {"name": "t", "partitions": [0]}]})
        assert r["results"][0]["results"][0]["error_code"] == 0
        assert txn.produce("t", [b"r"])["error_code"] == 0
        assert c.request(ADD_OFFSETS, min(version, ADD_OFFSETS.max_version),
                         {**txn.ids(), "group_id": "g"})["error_code"] == 0
        r = c.request(TXN_OFFSET_COMMIT, version, {
            **txn.ids(), "group_id": "g", "generation_id": -1, "member_id": "",
            "group_instance_id": None, "topics": [{"name": "t", "partitions": [
                {"partition_index": 0, "committed_offset": 1, "committed_leader_epoch": -1,
                 "committed_metadata": None}]}]})
        assert r["topics"][0]["partitions"][0]["error_code"] == 0
        r = c.request(END_TXN, min(version, END_TXN.max_version),
                      {**txn.ids(), "committed": True})
        assert r["error_code"] == 0
    assert eventlog_log.group_offsets("g") == {eventlog.TopicPartition("t", 0): 1}
    assert log_values(eventlog_log) == [b"r"]
