"""``eventlog.serve``: Kafka's wire protocol on a log, for unmodified Kafka clients.

    with eventlog.serve(log, host="127.0.0.1", port=0) as server:
        server.bootstrap_servers       # "127.0.0.1:PORT" for any Kafka client

The server runs in threads of this process (one per connection, one accepting, one
expiring group sessions) over ``log``, which stays an ordinary eventlog log: its own
producers and consumers, here or in other processes, use it at the same time. It needs
the ``serve`` extra (``pip install 'eventlog[serve]'``: crc32c and cramjam).
See docs/kafka-protocol.md for the APIs and versions served and the differences from a
Kafka cluster. There is no authentication and no TLS: listen on loopback (the default)
or a trusted network only.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._kafka_wire._server import Handler
    from .log import Log

__all__ = ["KafkaServer", "serve"]


class KafkaServer:
    """A Kafka protocol server over one ``Log``; a context manager. Thread-safe.

    ``auto_create_topics`` (Kafka's ``auto.create.topics.enable``, on by default as in
    Kafka) creates a topic of ``num_partitions`` partitions when a client asks for its
    metadata and allows it. ``max_frame_bytes`` bounds one request (Kafka's
    ``socket.request.max.bytes``); ``max_connections`` bounds the connections open at
    once (a thread each; Kafka's ``max.connections``). ``group_min_session_timeout_ms``
    is Kafka's ``group.min.session.timeout.ms`` (6 s): lower it in tests that kill consumers.
    The log is not closed by the server.
    """

    def __init__(self, log: Log, host: str = "127.0.0.1", port: int = 0, *,
                 auto_create_topics: bool = True, num_partitions: int = 1,
                 max_frame_bytes: int = 100 * 2**20, max_connections: int = 1000,
                 group_min_session_timeout_ms: int = 6_000) -> None:
        # the protocol server's modules load here, not at ``import eventlog``
        from ._kafka_wire import _apis  # noqa: PLC0415
        from ._kafka_wire._admin import AdminHandlers  # noqa: PLC0415
        from ._kafka_wire._batch import crc32c  # noqa: PLC0415
        from ._kafka_wire._broker import Broker  # noqa: PLC0415
        from ._kafka_wire._compression import require_codecs  # noqa: PLC0415
        from ._kafka_wire._fetch import FetchHandler  # noqa: PLC0415
        from ._kafka_wire._group_apis import GroupHandlers  # noqa: PLC0415
        from ._kafka_wire._group_coordinator import GroupCoordinator  # noqa: PLC0415
        from ._kafka_wire._produce import ProduceHandlers  # noqa: PLC0415
        from ._kafka_wire._server import Server  # noqa: PLC0415

        require_codecs()
        crc32c(b"")
        log.backend.check_open()
        self.log = log
        self._broker = Broker(log, auto_create_topics=auto_create_topics,
                              num_partitions=num_partitions,
                              max_inflated_bytes=max_frame_bytes)
        self._groups = GroupCoordinator(self._broker.stopping,
                                        min_session_timeout_ms=group_min_session_timeout_ms)
        admin = AdminHandlers(self._broker)
        data = ProduceHandlers(self._broker)
        fetch = FetchHandler(self._broker)
        groups = GroupHandlers(self._broker, self._groups)
        handlers: dict[int, Handler] = {
            _apis.PRODUCE.key: data.produce,
            _apis.FETCH.key: fetch.fetch,
            _apis.LIST_OFFSETS.key: data.list_offsets,
            _apis.METADATA.key: admin.metadata,
            _apis.OFFSET_COMMIT.key: groups.offset_commit,
            _apis.OFFSET_FETCH.key: groups.offset_fetch,
            _apis.FIND_COORDINATOR.key: groups.find_coordinator,
            _apis.JOIN_GROUP.key: groups.join_group,
            _apis.HEARTBEAT.key: groups.heartbeat,
            _apis.LEAVE_GROUP.key: groups.leave_group,
            _apis.SYNC_GROUP.key: groups.sync_group,
            _apis.DESCRIBE_GROUPS.key: groups.describe_groups,
            _apis.LIST_GROUPS.key: groups.list_groups,
            _apis.CREATE_TOPICS.key: admin.create_topics,
            _apis.DELETE_TOPICS.key: admin.delete_topics,
            _apis.DELETE_RECORDS.key: admin.delete_records,
            _apis.INIT_PRODUCER_ID.key: data.init_producer_id,
            _apis.DESCRIBE_CONFIGS.key: admin.describe_configs,
            _apis.CREATE_PARTITIONS.key: admin.create_partitions,
        }
        self._server = Server(handlers, host, port, max_frame_bytes=max_frame_bytes,
                              max_connections=max_connections)
        self._closed = False
        self._groups.start()
        self._server.start()

    @property
    def host(self) -> str:
        """The address listened on."""
        return self._server.host

    @property
    def port(self) -> int:
        """The port listened on (the one chosen, for ``port=0``)."""
        return self._server.port

    @property
    def bootstrap_servers(self) -> str:
        """``"HOST:PORT"``, for a Kafka client's ``bootstrap.servers``."""
        host = self.host
        if host in ("", "0.0.0.0"):  # noqa: S104 (the wildcard is what we compare with)
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        return f"{host}:{self.port}"

    @property
    def connection_count(self) -> int:
        """Client connections open now."""
        return self._server.connection_count

    def close(self) -> None:
        """Stop: close the listener and every connection (waiting requests answer
        first). Idempotent. The log stays open."""
        if self._closed:
            return
        self._closed = True
        self._broker.stopping.set()
        self._groups.stop()
        self._server.stop()

    def __enter__(self) -> KafkaServer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else self.bootstrap_servers
        return f"<KafkaServer {state} on {self.log.backend.path!r}>"


def serve(log: Log, host: str = "127.0.0.1", port: int = 0, **options: Any) -> KafkaServer:
    """Serve ``log`` to Kafka clients on ``host:port`` (``port=0``: any free port) and
    return the running ``KafkaServer``; use it as a context manager, or call ``close``.
    ``options``: see ``KafkaServer``. Raises ``ImportError`` naming the ``serve`` extra
    when its libraries are missing, ``OSError`` when the address cannot be bound."""
    return KafkaServer(log, host, port, **options)
