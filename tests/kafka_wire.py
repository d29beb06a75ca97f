"""Helpers for the tests of ``eventlog serve``: a raw Kafka-protocol client (for the
requests real clients never send: hostile frames, exact error codes, pipelining), a
record-batch builder, and where to find kcat."""

from __future__ import annotations

import os
import shutil
import socket
import struct
import time
from typing import Any

import pytest

from eventlog._kafka_wire import _apis
from eventlog._kafka_wire._batch import build_batch, encode_records
from eventlog._kafka_wire._codec import Reader, Writer
from eventlog._kafka_wire._compression import compress

_SIZE = struct.Struct(">i")


class WireClient:
    """One connection speaking Kafka's protocol with the server's schemas."""

    def __init__(self, bootstrap: str, timeout: float = 10.0) -> None:
        host, port = bootstrap.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self._correlation = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> WireClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def encode(self, api: _apis.Api, version: int, body: dict[str, Any],
               correlation_id: int | None = None) -> bytes:
        if correlation_id is None:
            self._correlation += 1
            correlation_id = self._correlation
        w = Writer()
        w.int16(api.key)
        w.int16(version)
        w.int32(correlation_id)
        w.string("wire-test", False)
        flexible = api.flexible(version)
        if flexible:
            w.empty_tagged_fields()
        api.request.write(w, body, version, flexible)
        payload = w.getvalue()
        return _SIZE.pack(len(payload)) + payload

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_frame(self) -> bytes | None:
        """The next response frame, or None when the server closed the connection."""
        head = self._recv(4)
        if head is None:
            return None
        (size,) = _SIZE.unpack(head)
        return self._recv(size)

    def _recv(self, n: int) -> bytes | None:
        buf = b""
        while len(buf) < n:
            try:
                chunk = self.sock.recv(n - len(buf))
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            buf += chunk
        return buf

    def decode(self, api: _apis.Api, version: int, frame: bytes,
               header_version: int | None = None) -> tuple[int, dict[str, Any]]:
        r = Reader(frame)
        correlation_id = r.int32()
        flexible = api.flexible(version)
        if flexible and api is not _apis.API_VERSIONS:
            r.skip_tagged_fields()
        return correlation_id, api.response.read(r, version, flexible)

    def request(self, api: _apis.Api, version: int, body: dict[str, Any]) -> dict[str, Any]:
        self.send_raw(self.encode(api, version, body))
        frame = self.read_frame()
        assert frame is not None, "the server closed the connection"
        correlation_id, response = self.decode(api, version, frame)
        assert correlation_id == self._correlation
        return response

    def closed_by_server(self, timeout: float = 10.0) -> bool:
        """True once the server has closed this connection (reads EOF)."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True


def batch(values: list[bytes | None], *, keys: list[bytes | None] | None = None,
          timestamps: list[int] | None = None,
          headers: list[list[tuple[str, bytes]] | None] | None = None, codec: int = 0,
          producer_id: int = -1, producer_epoch: int = -1, base_sequence: int = -1) -> bytes:
    """A RecordBatch v2 as a producer would send it."""
    n = len(values)
    ts = timestamps or [1_700_000_000_000] * n
    records = encode_records(range(n), [t - ts[0] for t in ts], keys or [None] * n, values,
                             headers)
    return build_batch(0, n - 1, ts[0], max(ts), n, compress(codec, records),
                       attributes=codec, producer_id=producer_id,
                       producer_epoch=producer_epoch, base_sequence=base_sequence)


def produce_body(topic: str, partition: int, records: bytes, acks: int = -1
                 ) -> dict[str, Any]:
    return {"transactional_id": None, "acks": acks, "timeout_ms": 5000,
            "topic_data": [{"name": topic, "partition_data": [
                {"index": partition, "records": records}]}]}


def kcat() -> str | None:
    """The kcat binary (``$EVENTLOG_KCAT`` or on PATH); skips the test if there is none,
    unless ``EVENTLOG_REQUIRE_KCAT`` is set (as ``.ci/run`` does): then it fails."""
    path = os.environ.get("EVENTLOG_KCAT") or shutil.which("kcat")
    if path is None:
        if os.environ.get("EVENTLOG_REQUIRE_KCAT"):
            pytest.fail("kcat is required here (EVENTLOG_REQUIRE_KCAT) but was not found")
        pytest.skip("kcat is not installed")
    return path


def wait_until(predicate: Any, timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)
