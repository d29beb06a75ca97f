"""The listening socket and the connections: frames in, responses out, in order.

One thread accepts; each connection gets a thread of its own that reads a frame,
answers it and only then reads the next, so pipelined requests are answered in the
order they came (Kafka's broker does the same: one request per connection at a time).
A long-polling Fetch or a JoinGroup waiting for the rest of its group blocks only its
own connection. Threads suit the work: handlers spend their time in the log's
memory-mapped I/O, in futex waits and in ``zlib``/``cramjam``/``crc32c``, which release
the GIL; the Python that remains (framing, record codecs) is short per request.

Limits for untrusted input: a frame is at most ``max_frame_bytes`` (Kafka's
``socket.request.max.bytes``, 100 MiB by default) and is read into one buffer of its
announced size only after that check, so a connection holds at most one frame. An
oversized or negative length prefix, a truncated frame, an unknown API key or an
unsupported version (other than ApiVersions, which answers ``UNSUPPORTED_VERSION``
as Kafka does), or any request that does not parse closes that connection; the server
and the log go on. At most ``max_connections`` connections are open at once (a thread
each); one more is closed as soon as it is accepted.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any

from ..errors import ProtocolError
from . import _errors
from ._apis import API_VERSIONS, APIS
from ._codec import Reader, Writer

__all__ = ["DEFAULT_MAX_CONNECTIONS", "DEFAULT_MAX_FRAME_BYTES", "Handler", "RequestContext",
           "Server"]

log = logging.getLogger("eventlog.serve")

DEFAULT_MAX_FRAME_BYTES = 100 * 2**20
DEFAULT_MAX_CONNECTIONS = 1000  # each is a thread: bounded, as Kafka's max.connections
_SIZE = struct.Struct(">i")
_ACCEPT_POLL_S = 0.2


class RequestContext:
    """What a handler knows of the request besides its body."""

    __slots__ = ("client_host", "client_id", "correlation_id", "local_host", "local_port",
                 "version")

    def __init__(self, version: int, correlation_id: int, client_id: str | None,
                 local: tuple[str, int], client_host: str) -> None:
        self.version = version
        self.correlation_id = correlation_id
        self.client_id = client_id
        self.local_host, self.local_port = local
        self.client_host = client_host


# A handler answers a decoded request with a response dict, or None for no response
# (Produce with acks=0).
Handler = Callable[[RequestContext, dict[str, Any]], "dict[str, Any] | None"]


def _api_versions_body() -> list[dict[str, int]]:
    return [{"api_key": a.key, "min_version": a.min_version, "max_version": a.max_version}
            for a in sorted(APIS.values(), key=lambda a: a.key)]


class Server:
    """Accepts connections on ``host:port`` and answers with ``handlers``. Thread-safe."""

    def __init__(self, handlers: dict[int, Handler], host: str, port: int, *,
                 max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS) -> None:
        self._handlers = handlers
        self.max_frame_bytes = max_frame_bytes
        self.max_connections = max_connections
        self.stopping = threading.Event()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._listener.bind((host, port))
            self._listener.listen(128)
        except OSError:
            self._listener.close()
            raise
        self._listener.settimeout(_ACCEPT_POLL_S)
        self.host: str = host
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True,
                                          name=f"eventlog-serve-accept-{self.port}")

    def start(self) -> None:
        """Start accepting connections."""
        self._acceptor.start()

    @property
    def connection_count(self) -> int:
        """Connections open now."""
        with self._lock:
            return len(self._connections)

    def _accept_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self.stopping.is_set():
                    return
                continue
            conn.settimeout(None)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            thread = threading.Thread(target=self._serve_connection, args=(conn,),
                                      daemon=True, name="eventlog-serve-conn")
            with self._lock:
                if self.stopping.is_set():
                    conn.close()
                    return
                if len(self._connections) >= self.max_connections:
                    log.warning("refusing a connection: %d are open (max_connections)",
                                len(self._connections))
                    conn.close()
                    continue
                self._connections[conn] = thread
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, close every connection, and wait for their threads."""
        self.stopping.set()
        if self._acceptor.is_alive():
            self._acceptor.join(timeout)
        self._listener.close()
        with self._lock:
            connections = list(self._connections.items())
        for conn, _ in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for _, thread in connections:
            if thread is not threading.current_thread():
                thread.join(timeout)

    def _serve_connection(self, conn: socket.socket) -> None:
        try:
            local = conn.getsockname()[:2]
            peer = conn.getpeername()[0]
            while not self.stopping.is_set():
                frame = self._read_frame(conn)
                if frame is None:
                    return
                response = self._answer(frame, local, peer)
                if response is not None:
                    conn.sendall(response)
        except ProtocolError as exc:
            log.info("closing a connection: %s", exc)
        except OSError:
            pass  # the client went away (or stop() shut the socket)
        except Exception:
            log.exception("closing a connection after an internal error")
        finally:
            with self._lock:
                self._connections.pop(conn, None)
            conn.close()

    def _read_exactly(self, conn: socket.socket, n: int) -> bytearray | None:
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            k = conn.recv_into(view[got:])
            if k == 0:
                if got:
                    raise ProtocolError(f"connection closed inside a frame ({got} of {n} "
                                        "bytes)")
                return None
            got += k
        return buf

    def _read_frame(self, conn: socket.socket) -> bytearray | None:
        prefix = self._read_exactly(conn, 4)
        if prefix is None:
            return None
        (size,) = _SIZE.unpack(prefix)
        if size < 8 or size > self.max_frame_bytes:
            raise ProtocolError(f"frame length {size} outside [8, {self.max_frame_bytes}]")
        frame = self._read_exactly(conn, size)
        if frame is None:
            raise ProtocolError("connection closed after a length prefix")
        return frame

    def _answer(self, frame: bytearray, local: tuple[str, int], peer: str) -> bytes | None:
        """The response frame to one request frame (None: no response)."""
        r = Reader(frame)  # no copy: fields are sliced out of the frame as they are read
        api_key = r.int16()
        version = r.int16()
        correlation_id = r.int32()
        client_id = r.string(False, True)
        api = APIS.get(api_key)
        if api is None:
            raise ProtocolError(f"unknown API key {api_key}")
        w = Writer()
        w.int32(correlation_id)
        if not api.min_version <= version <= api.max_version:
            if api is not API_VERSIONS:
                raise ProtocolError(f"{api.name} v{version} is not supported")
            # Kafka answers a too-new ApiVersions with a v0 body and UNSUPPORTED_VERSION,
            # so the client can retry with a version listed there.
            API_VERSIONS.response.write(w, {"error_code": _errors.UNSUPPORTED_VERSION,
                                            "api_keys": _api_versions_body()}, 0, False)
            return self._frame(w)
        flexible = api.flexible(version)
        if flexible:
            r.skip_tagged_fields()
        request = api.request.read(r, version, flexible)
        log.debug("%s v%d from %s (%s)", api.name, version, peer, client_id)
        ctx = RequestContext(version, correlation_id, client_id, local, peer)
        if api is API_VERSIONS:
            body: dict[str, Any] | None = {"error_code": 0, "api_keys": _api_versions_body()}
        else:
            body = self._handlers[api_key](ctx, request)
        if body is None:
            return None
        if flexible and api is not API_VERSIONS:
            w.empty_tagged_fields()  # response header v1
        api.response.write(w, body, version, flexible)
        return self._frame(w)

    @staticmethod
    def _frame(w: Writer) -> bytes:
        payload = w.getvalue()
        return _SIZE.pack(len(payload)) + payload
