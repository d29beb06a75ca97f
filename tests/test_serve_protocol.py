"""``eventlog serve`` at the byte level: ApiVersions negotiation, Metadata's advertised
address, pipelining, exact error codes, and hostile input (oversized, negative and
truncated frames, unknown keys and versions, garbage batches, bad CRCs, fuzzed requests).
After each attack the server still answers and the log is intact."""

from __future__ import annotations

import os
import struct
import threading
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

import eventlog
from eventlog._kafka_wire import _apis
from eventlog._kafka_wire import _errors as E
from eventlog._kafka_wire._batch import BatchError, decode_produced
from eventlog._kafka_wire._codec import Reader
from eventlog.errors import ProtocolError

from .conftest import soak
from .kafka_wire import WireClient, batch, produce_body, wait_until

pytest.importorskip("crc32c")
pytest.importorskip("cramjam")


def _still_serving(bootstrap: str, log: eventlog.Log) -> None:
    with WireClient(bootstrap) as c:
        r = c.request(_apis.API_VERSIONS, 3, {"client_software_name": "t",
                                              "client_software_version": "1"})
        assert r["error_code"] == 0
    assert log.check().problems == []


def test_api_versions_lists_every_served_api(eventlog_kafka):
    with WireClient(eventlog_kafka) as c:
        for version in (0, 1, 2, 3):
            r = c.request(_apis.API_VERSIONS, version, {"client_software_name": "t",
                                                        "client_software_version": "1"})
            assert r["error_code"] == 0
            served = {k["api_key"]: (k["min_version"], k["max_version"]) for k in r["api_keys"]}
            assert served == {a.key: (a.min_version, a.max_version)
                              for a in _apis.APIS.values()}


def test_api_versions_too_new_answers_unsupported_with_a_v0_body(eventlog_kafka):
    with WireClient(eventlog_kafka) as c:
        c.send_raw(c.encode(_apis.API_VERSIONS, 9, {"client_software_name": "t",
                                                    "client_software_version": "1"}))
        frame = c.read_frame()
        assert frame is not None
        correlation, body = c.decode(_apis.API_VERSIONS, 0, frame)
        assert correlation == 1
        assert body["error_code"] == E.UNSUPPORTED_VERSION
        assert {k["api_key"] for k in body["api_keys"]} == set(_apis.APIS)
        # the connection stays usable: the client retries with a version listed there
        assert c.request(_apis.API_VERSIONS, 3, {})["error_code"] == 0


def test_metadata_advertises_the_bound_address(eventlog_kafka, eventlog_log):
    eventlog_log.create_topic("m", partitions=3)
    host, port = eventlog_kafka.rsplit(":", 1)
    with WireClient(eventlog_kafka) as c:
        for version in (0, 1, 4, 8, 9, 10, 12):
            r = c.request(_apis.METADATA, version, {"topics": [{"name": "m"}],
                                                    "allow_auto_topic_creation": False})
            assert [(b["host"], b["port"]) for b in r["brokers"]] == [("127.0.0.1", int(port))]
            (topic,) = r["topics"]
            assert [p["partition_index"] for p in topic["partitions"]] == [0, 1, 2]
        topic_id = topic["topic_id"]
        by_id = c.request(_apis.METADATA, 12, {"topics": [{"topic_id": topic_id, "name": None}]})
        assert (by_id["topics"][0]["name"], by_id["topics"][0]["topic_id"]) == ("m", topic_id)
        assert c.request(_apis.METADATA, 12, {"topics": [{"topic_id": uuid.uuid4(), "name": None}]}
                         )["topics"][0]["error_code"] == E.UNKNOWN_TOPIC_ID
        eventlog_log.delete_topic("m")
        eventlog_log.create_topic("m")  # a new topic of the same name gets a new id
        again = c.request(_apis.METADATA, 12, {"topics": [{"name": "m"}],
                                               "allow_auto_topic_creation": False})
        assert again["topics"][0]["topic_id"] != topic_id
        r = c.request(_apis.METADATA, 8, {"topics": [{"name": "absent"}],
                                          "allow_auto_topic_creation": False})
        assert r["topics"][0]["error_code"] == E.UNKNOWN_TOPIC_OR_PARTITION
        assert "absent" not in eventlog_log
        r = c.request(_apis.METADATA, 8, {"topics": [{"name": "bad/name"}],
                                          "allow_auto_topic_creation": True})
        assert r["topics"][0]["error_code"] == E.INVALID_TOPIC_EXCEPTION
    assert host == "127.0.0.1"


def test_pipelined_requests_are_answered_in_order(eventlog_kafka, eventlog_log):
    eventlog_log.create_topic("p")
    with WireClient(eventlog_kafka) as c:
        frames = []
        for i in range(60):
            if i % 3 == 0:
                frames.append(c.encode(_apis.PRODUCE, 8, produce_body("p", 0, batch([b"%d" % i])),
                                       correlation_id=i))
            elif i % 3 == 1:
                frames.append(c.encode(_apis.METADATA, 8, {"topics": None}, correlation_id=i))
            else:
                frames.append(c.encode(_apis.API_VERSIONS, 3, {}, correlation_id=i))
        c.send_raw(b"".join(frames))
        order = []
        offsets = []
        for i in range(60):
            frame = c.read_frame()
            assert frame is not None
            api = (_apis.PRODUCE, _apis.METADATA, _apis.API_VERSIONS)[i % 3]
            correlation, body = c.decode(api, (8, 8, 3)[i % 3], frame)
            order.append(correlation)
            if api is _apis.PRODUCE:
                offsets.append(body["responses"][0]["partition_responses"][0]["base_offset"])
    assert order == list(range(60))
    assert offsets == list(range(20))


def _produce_code(bootstrap: str, records: bytes, topic: str = "h") -> int:
    with WireClient(bootstrap) as c:
        r = c.request(_apis.PRODUCE, 8, produce_body(topic, 0, records))
        return int(r["responses"][0]["partition_responses"][0]["error_code"])


def test_bad_batches_get_kafkas_error_codes_and_leave_the_log_intact(eventlog_kafka,
                                                                      eventlog_log):
    eventlog_log.create_topic("h", max_message_bytes=10_000)
    good = batch([b"ok"])
    assert _produce_code(eventlog_kafka, good) == 0
    flipped = bytearray(good)
    flipped[-1] ^= 0xFF
    assert _produce_code(eventlog_kafka, bytes(flipped)) == E.CORRUPT_MESSAGE      # CRC
    assert _produce_code(eventlog_kafka, b"\x00" * 70) == E.UNSUPPORTED_FOR_MESSAGE_FORMAT
    assert _produce_code(eventlog_kafka, os.urandom(200)) in (
        E.CORRUPT_MESSAGE, E.UNSUPPORTED_FOR_MESSAGE_FORMAT)
    assert _produce_code(eventlog_kafka, good[:40]) == E.CORRUPT_MESSAGE         # truncated
    assert _produce_code(eventlog_kafka, good + good) == E.INVALID_RECORD         # two batches
    assert _produce_code(eventlog_kafka, batch([b"x" * 20_000])) == E.MESSAGE_TOO_LARGE
    assert _produce_code(eventlog_kafka, batch([b"z"], codec=1)[:-3]) == E.CORRUPT_MESSAGE
    assert _produce_code(eventlog_kafka, batch([b"t"], timestamps=[-5])) == E.INVALID_TIMESTAMP
    assert _produce_code(eventlog_kafka, good, topic="nope") == E.UNKNOWN_TOPIC_OR_PARTITION
    eventlog_log.create_topic("compacted", cleanup_policy="compact")
    assert _produce_code(eventlog_kafka, good, topic="compacted") == E.INVALID_RECORD
    assert _produce_code(eventlog_kafka, batch([b"v"], keys=[b"k"]), topic="compacted") == 0
    # a gzip bomb: refused, never inflated past the server's limit
    bomb = batch([b"\x00" * (2 * 2**20)], codec=1)
    with eventlog.serve(eventlog_log, max_frame_bytes=2**20) as small:
        assert _produce_code(small.bootstrap_servers, bomb) == E.CORRUPT_MESSAGE
    assert [r.value for r in eventlog_log.topic("h").partition(0).read(0)] == [b"ok"]
    _still_serving(eventlog_kafka, eventlog_log)


@pytest.mark.parametrize("codec", [1, 2, 3, 4])
def test_every_codec_decodes_to_the_same_records(eventlog_kafka, eventlog_log, codec):
    eventlog_log.create_topic("h")
    values = [os.urandom(n) for n in (0, 1, 100, 5000)]
    assert _produce_code(eventlog_kafka, batch(values, keys=[b"k"] * 4, codec=codec)) == 0
    assert [r.value for r in eventlog_log.topic("h").partition(0).read(0)] == values


def test_duplicate_idempotent_batch_is_not_appended_again(eventlog_kafka, eventlog_log):
    eventlog_log.create_topic("h")
    first = batch([b"a", b"b"], producer_id=77, producer_epoch=0, base_sequence=0)
    second = batch([b"c"], producer_id=77, producer_epoch=0, base_sequence=2)
    gap = batch([b"d"], producer_id=77, producer_epoch=0, base_sequence=9)
    with WireClient(eventlog_kafka) as c:
        def send(records):
            r = c.request(_apis.PRODUCE, 8, produce_body("h", 0, records))
            return r["responses"][0]["partition_responses"][0]
        assert (send(first)["base_offset"], send(second)["base_offset"]) == (0, 2)
        again = send(first)  # a retry of a batch that was stored: its first offset again
        assert (again["error_code"], again["base_offset"]) == (0, 0)
        assert send(gap)["error_code"] == E.OUT_OF_ORDER_SEQUENCE_NUMBER
    assert [r.value for r in eventlog_log.topic("h").partition(0).read(0)] == [b"a", b"b", b"c"]


def test_acks_zero_gets_no_answer(eventlog_kafka, eventlog_log):
    eventlog_log.create_topic("h")
    with WireClient(eventlog_kafka) as c:
        c.send_raw(c.encode(_apis.PRODUCE, 8, produce_body("h", 0, batch([b"q"]), acks=0)))
        # the next answer is for the next request: nothing came for the first
        assert c.request(_apis.API_VERSIONS, 3, {})["error_code"] == 0
    assert eventlog_log.topic("h").partition(0).end_offset == 1


def test_fetch_out_of_range_and_max_bytes(eventlog_kafka, eventlog_log):
    eventlog_log.create_topic("f")
    for i in range(5):
        assert _produce_code(eventlog_kafka, batch([b"%d" % i * 300]), topic="f") == 0

    def fetch(offset, partition_max=1 << 20, max_bytes=1 << 20):
        with WireClient(eventlog_kafka) as c:
            r = c.request(_apis.FETCH, 11, {
                "replica_id": -1, "max_wait_ms": 0, "min_bytes": 0, "max_bytes": max_bytes,
                "topics": [{"topic": "f", "partitions": [
                    {"partition": 0, "fetch_offset": offset,
                     "partition_max_bytes": partition_max}]}]})
            return r["responses"][0]["partitions"][0]

    assert fetch(99)["error_code"] == E.OFFSET_OUT_OF_RANGE
    eventlog_log.delete_records(("f", 0), 2)
    low = fetch(0)
    assert (low["error_code"], low["log_start_offset"], low["high_watermark"]) \
        == (E.OFFSET_OUT_OF_RANGE, 2, 5)
    whole = fetch(2)["records"]
    one = fetch(2, partition_max=10)["records"]       # at least one whole batch
    assert 0 < len(one) < len(whole)
    assert struct.unpack_from(">q", one)[0] == 2
    assert fetch(5)["records"] == b""


def test_long_poll_is_woken_by_an_in_process_append(eventlog_kafka, eventlog_log):
    eventlog_log.create_topic("w")
    result = {}

    def poll():
        with WireClient(eventlog_kafka, timeout=60) as c:
            result["r"] = c.request(_apis.FETCH, 11, {
                "replica_id": -1, "max_wait_ms": 30_000, "min_bytes": 1,
                "max_bytes": 1 << 20, "topics": [{"topic": "w", "partitions": [
                    {"partition": 0, "fetch_offset": 0, "partition_max_bytes": 1 << 20}]}]})

    t = threading.Thread(target=poll)
    t.start()
    with eventlog.Producer(eventlog_log) as p:
        p.send("w", b"wake", partition=0).result()
    t.join(20)  # well before the poll's 30 s: the append woke it
    assert not t.is_alive()
    part = result["r"]["responses"][0]["partitions"][0]
    assert part["high_watermark"] == 1 and part["records"]


@pytest.mark.parametrize("frame", [
    struct.pack(">i", 2**31 - 1),                       # oversized length prefix
    struct.pack(">i", -7),                              # negative length
    struct.pack(">i", 3) + b"abc",                      # shorter than a header
    struct.pack(">ihhi", 10, 999, 0, 1) + b"\xff\xff",  # unknown API key
    struct.pack(">ihhi", 10, 0, 99, 1) + b"\xff\xff",   # unsupported Produce version
    struct.pack(">ihhi", 12, 3, 8, 1) + b"\x00\x02zz",  # Metadata cut short
], ids=["oversized", "negative", "tiny", "unknown-key", "unknown-version", "truncated-body"])
def test_hostile_frames_close_only_that_connection(eventlog_kafka, eventlog_log, frame):
    with WireClient(eventlog_kafka) as bystander, WireClient(eventlog_kafka) as attacker:
        attacker.send_raw(frame)
        assert attacker.closed_by_server()
        assert bystander.request(_apis.API_VERSIONS, 3, {})["error_code"] == 0
    _still_serving(eventlog_kafka, eventlog_log)


def test_truncated_frame_then_disconnect(eventlog_kafka, eventlog_log):
    with WireClient(eventlog_kafka) as c:
        c.send_raw(struct.pack(">i", 1000) + b"x" * 10)
    _still_serving(eventlog_kafka, eventlog_log)


# -- fuzzing the request decoder ------------------------------------------------------------

_SCHEMAS = [(api, v) for api in _apis.APIS.values()
            for v in range(api.min_version, api.max_version + 1)]


@given(st.sampled_from(_SCHEMAS), st.binary(max_size=300))
def test_request_decoder_raises_only_protocol_error(schema, data):
    api, version = schema
    try:
        api.request.read(Reader(data), version, api.flexible(version))
    except ProtocolError:
        pass


@given(st.binary(max_size=400))
def test_batch_decoder_raises_only_batch_error(data):
    try:
        decode_produced(data, 1 << 20)
    except BatchError:
        pass


@given(st.integers(0, 60), st.binary(min_size=1, max_size=8))
def test_corrupted_real_batch_is_refused(position, junk):
    data = bytearray(batch([b"value", b"other"], keys=[b"k", None],
                           headers=[[("h", b"v")], None]))
    data[position:position + len(junk)] = junk
    try:
        decoded = decode_produced(bytes(data), 1 << 20)
    except BatchError:
        return
    # only an unchanged batch (or a change outside what the CRC covers) decodes
    assert decoded[0].values == [b"value", b"other"]


@pytest.mark.slow
def test_fuzzed_frames_against_the_running_server(eventlog_kafka, eventlog_log):
    rng = __import__("random").Random(14)
    eventlog_log.create_topic("fz")
    keys = sorted(_apis.APIS)
    for _ in range(soak(40)):
        api = _apis.APIS[rng.choice(keys)]
        version = rng.randint(api.min_version, api.max_version)
        body = os.urandom(rng.randint(0, 200))
        frame = struct.pack(">hhi", api.key, version, 1) + b"\x00\x01x" + body
        with WireClient(eventlog_kafka, timeout=30) as c:
            if api in (_apis.JOIN_GROUP, _apis.SYNC_GROUP):
                continue  # a parsable random join may legitimately wait for its group
            c.send_raw(struct.pack(">i", len(frame)) + frame)
            c.sock.settimeout(30)
            c.read_frame()  # an answer, or the server closed it: either is fine
    _still_serving(eventlog_kafka, eventlog_log)


def test_connections_past_the_limit_are_closed(eventlog_log):
    with eventlog.serve(eventlog_log, max_connections=2) as server:
        a, b = WireClient(server.bootstrap_servers), WireClient(server.bootstrap_servers)
        with a, b:
            assert a.request(_apis.API_VERSIONS, 3, {})["error_code"] == 0
            assert b.request(_apis.API_VERSIONS, 3, {})["error_code"] == 0
            with WireClient(server.bootstrap_servers) as third:
                assert third.closed_by_server()
        wait_until(lambda: server.connection_count == 0, what="the connections to close")
        with WireClient(server.bootstrap_servers) as c:  # served again
            assert c.request(_apis.API_VERSIONS, 3, {})["error_code"] == 0


def test_the_public_defaults_are_the_servers():
    import inspect

    from eventlog import serve as public
    from eventlog._kafka_wire import _group_coordinator, _server

    assert callable(public)
    params = inspect.signature(eventlog.KafkaServer).parameters
    assert params["max_frame_bytes"].default == _server.DEFAULT_MAX_FRAME_BYTES
    assert params["max_connections"].default == _server.DEFAULT_MAX_CONNECTIONS
    assert params["group_min_session_timeout_ms"].default == \
        _group_coordinator.MIN_SESSION_TIMEOUT_MS
