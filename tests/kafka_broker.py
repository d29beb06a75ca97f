"""Real Apache Kafka brokers for the tests and the benchmarks: no Docker, no tarball.

The jars are Kafka's own, fetched once from Maven Central by the pom beside this file
(``tests/kafka/pom.xml``) into a cache outside the repository,
``$EVENTLOG_KAFKA_CACHE`` or ``~/.cache/eventlog/kafka-<version>/``, reused by later
runs and clean clones. A :class:`KafkaCluster` formats KRaft data directories in a
temporary directory and runs one JVM per node (``kafka.Kafka``), each a combined broker
and controller on free loopback ports, with a small heap. It is ready when a metadata
request lists every broker; :meth:`KafkaCluster.stop` sends SIGTERM and kills what has
not exited after a grace period. On Linux the JVMs also die with the process that
started them (``PR_SET_PDEATHSIG``), so a killed test run leaves no broker behind.

Used by the ``kafka_broker`` and ``kafka_cluster`` fixtures of ``tests/conftest.py``
and by ``benchmarks/bench_kafka.py``::

    with KafkaCluster(nodes=1) as cluster:
        cluster.bootstrap_servers   # "127.0.0.1:PORT"

:func:`unavailable_reason` says in one line why no broker can run here (no Java 17+,
no Maven and no cached jars); the fixtures skip with it, or fail when
``EVENTLOG_REQUIRE_KAFKA=1`` (CI).
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType

POM = Path(__file__).resolve().parent / "kafka" / "pom.xml"
REQUIRE_ENV = "EVENTLOG_REQUIRE_KAFKA"
START_TIMEOUT_S = 90.0        # two busy cores: a start takes seconds, CI may be slower
STOP_GRACE_S = 20.0
_COMPLETE = ".complete"       # written last: a cache directory without it is unfinished


def kafka_version() -> str:
    """The Kafka version the pom pins."""
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", POM.read_text())
    assert match, f"no kafka.version in {POM}"
    return match.group(1)


def cache_dir() -> Path:
    """Where the jars of this Kafka version live between runs."""
    base = os.environ.get("EVENTLOG_KAFKA_CACHE")
    root = Path(base) if base else Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "eventlog"
    return root / f"kafka-{kafka_version()}"


def _java_major() -> int | None:
    java = shutil.which("java")
    if java is None:
        return None
    proc = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', proc.stderr + proc.stdout)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def unavailable_reason() -> str | None:
    """One line saying why no broker can run on this machine, or None if one can."""
    major = _java_major()
    if major is None:
        return "no Kafka broker: Java 17+ is not installed (no `java` on PATH)"
    if major < 17:
        return f"no Kafka broker: Kafka {kafka_version()} needs Java 17+, found Java {major}"
    if not (cache_dir() / _COMPLETE).exists() and shutil.which("mvn") is None:
        return "no Kafka broker: Maven (`mvn`) is needed once to fetch Kafka's jars"
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        return "no Kafka broker: confluent-kafka is not installed (pip install -e '.[test]')"
    return None


def ensure_jars() -> Path:
    """The directory of the broker's jars, fetched with Maven the first time.

    Safe against concurrent test runs: the first one fetches under a lock into a
    temporary directory and renames it into place; the others wait and reuse it.
    """
    target = cache_dir()
    if (target / _COMPLETE).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / _COMPLETE).exists():
            return target
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            proc = subprocess.run(
                ["mvn", "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
                 "-DincludeScope=runtime", f"-DoutputDirectory={staging}"],
                capture_output=True, text=True, timeout=900)
            if proc.returncode != 0:
                raise RuntimeError(f"mvn could not fetch Kafka's jars:\n{proc.stdout[-4000:]}"
                                   f"\n{proc.stderr[-4000:]}")
            if not any(staging.glob("kafka_2.13-*.jar")):
                raise RuntimeError(f"mvn left no kafka_2.13 jar in {staging}")
            (staging / _COMPLETE).write_text(kafka_version() + "\n")
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    return target


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> list[str]:
    # Linux: the JVM gets SIGKILL when the process that started it dies, so a test run
    # killed with -9 does not leave brokers holding ports and memory. util-linux's
    # setpriv sets PR_SET_PDEATHSIG, which survives exec, without a preexec_fn (unsafe
    # in a process with threads, as librdkafka's are).
    setpriv = shutil.which("setpriv") if sys.platform == "linux" else None
    return [setpriv, "--pdeathsig", "KILL"] if setpriv else []


_LOG4J = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log_file}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.file.ref = file
"""


class KafkaNode:
    """One JVM: a combined KRaft broker and controller."""

    def __init__(self, cluster: KafkaCluster, node_id: int) -> None:
        self.cluster = cluster
        self.node_id = node_id
        self.port = free_port()
        self.controller_port = free_port()
        self.dir = cluster.dir / f"node-{node_id}"
        self.data_dir = self.dir / "data"
        self.properties = self.dir / "server.properties"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def write_config(self, voters: str, settings: dict[str, str]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        config = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},"
                         f"CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            **settings,
        }
        self.properties.write_text("".join(f"{k}={v}\n" for k, v in config.items()))
        (self.dir / "log4j2.properties").write_text(_LOG4J.format(
            log_file=self.dir / "server.log", level=self.cluster.log_level))

    def _java(self, main: str, *args: str) -> list[str]:
        return ["java", *self.cluster.jvm_options,
                f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}",
                "-cp", f"{self.cluster.jars}/*", main, *args]

    def format(self, cluster_id: str) -> None:
        proc = subprocess.run(
            self._java("kafka.tools.StorageTool", "format", "-t", cluster_id,
                       "-c", str(self.properties), "--ignore-formatted"),
            capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"formatting node {self.node_id} failed:\n"
                               f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")

    def start(self) -> None:
        """Start the JVM (returns at once; the cluster waits for readiness)."""
        assert self.process is None or self.process.poll() is not None, "already running"
        out = open(self.dir / "stdout.log", "ab")
        try:
            self.process = subprocess.Popen(
                [*_die_with_parent(), *self._java("kafka.Kafka", str(self.properties))],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        finally:
            out.close()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """``kill -9``: a crash, nothing flushed or handed over."""
        if self.running:
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM (a clean shutdown), then SIGKILL after ``grace_s``."""
        if not self.running:
            return
        assert self.process is not None
        self.process.terminate()
        try:
            self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log_tail(self, chars: int = 3000) -> str:
        parts = []
        for name in ("stdout.log", "server.log"):
            path = self.dir / name
            if path.exists():
                parts.append(f"--- node {self.node_id} {name} ---\n"
                             + path.read_text(errors="replace")[-chars:])
        return "\n".join(parts)


class KafkaCluster:
    """``nodes`` Kafka processes on loopback, formatted with one cluster id.

    One node: internal topics with replication factor 1. Three nodes: replication
    factor 3 and ``min.insync.replicas=2`` by default, so an ``acks=all`` write is on
    two brokers before it is acknowledged, and a killed broker is fenced in seconds.
    ``settings`` add to or override the brokers' ``server.properties``.
    """

    def __init__(self, nodes: int = 1, *, heap_mb: int = 384,
                 settings: dict[str, str] | None = None, log_level: str = "WARN",
                 jvm_options: list[str] | None = None) -> None:
        self.jars = ensure_jars()
        self.dir = Path(tempfile.mkdtemp(prefix="eventlog-kafka-"))
        self.log_level = log_level
        self.jvm_options = jvm_options if jvm_options is not None else [
            f"-Xmx{heap_mb}m", f"-Xms{min(heap_mb, 64)}m", "-XX:+UseSerialGC",
            "-Djava.awt.headless=true"]
        self.nodes = [KafkaNode(self, i + 1) for i in range(nodes)]
        rf = "1" if nodes == 1 else "3"
        min_isr = "1" if nodes == 1 else "2"
        defaults = {
            "num.partitions": "1",
            "default.replication.factor": rf,
            "min.insync.replicas": min_isr,
            "auto.create.topics.enable": "false",
            # Tests stamp records long ago (1970, 2023). A stock broker keeps a topic
            # created without retention_ms for 7 days and looks every 5 minutes, so it
            # would delete such records in the middle of a test: keep them, as a
            # directory does.
            "log.retention.ms": "-1",
            "offsets.topic.replication.factor": rf,
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": min_isr,
            "transaction.state.log.num.partitions": "1",
            "share.coordinator.state.topic.replication.factor": rf,
            "share.coordinator.state.topic.min.isr": min_isr,
            "share.coordinator.state.topic.num.partitions": "1",
            "group.initial.rebalance.delay.ms": "0",
            "log.cleaner.dedupe.buffer.size": "2097152",
            "num.network.threads": "2",
            "num.io.threads": "2",
            "background.threads": "2",
            "num.recovery.threads.per.data.dir": "1",
            # a killed node is fenced after this, and the failover tests wait for that
            "broker.session.timeout.ms": "4000",
            "broker.heartbeat.interval.ms": "500",
            **(settings or {}),
        }
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        self.cluster_id = _random_cluster_id()
        for node in self.nodes:
            node.write_config(voters, defaults)
        for node in self.nodes:
            node.format(self.cluster_id)

    @property
    def bootstrap_servers(self) -> str:
        """Every node's address, comma-separated, as clients take it."""
        return ",".join(n.address for n in self.nodes)

    def start(self, timeout: float = START_TIMEOUT_S) -> KafkaCluster:
        """Start every node (together: the quorum needs a majority) and wait for them."""
        for node in self.nodes:
            if not node.running:
                node.start()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        """Until every running node accepts connections on its listener (a broker opens
        it once it has caught up with the metadata) and a metadata request lists every
        running node as a broker."""
        from confluent_kafka.admin import AdminClient

        running = [n for n in self.nodes if n.running]
        admin = AdminClient({"bootstrap.servers": ",".join(n.address for n in running),
                             "log_level": 0, "logger": _quiet_logger()})
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            for node in self.nodes:
                if node.process is not None and node.process.poll() is not None \
                        and node.process.returncode not in (0, -signal.SIGKILL):
                    raise RuntimeError(f"Kafka node {node.node_id} exited with "
                                       f"{node.process.returncode}:\n{node.log_tail()}")
            closed = [n.node_id for n in running if not _accepts(n.port)]
            if closed:
                last = f"nodes {closed} not listening yet"
            else:
                try:
                    brokers = set(admin.list_topics(timeout=2).brokers)
                    if {n.node_id for n in running} <= brokers:
                        return
                    last = f"brokers {sorted(brokers)} registered"
                except Exception as exc:  # librdkafka's errors until it answers
                    last = exc
            time.sleep(0.2)
        raise RuntimeError(f"Kafka did not answer within {timeout:.0f} s ({last}):\n"
                           + "\n".join(n.log_tail() for n in self.nodes))

    def stop(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL) and remove the data directories."""
        for node in self.nodes:
            if node.running:
                assert node.process is not None
                node.process.terminate()
        # The last nodes of a cluster that stops whole wait for a controller quorum that
        # is gone; their data is thrown away, so they get a short grace.
        grace_s = STOP_GRACE_S if len(self.nodes) == 1 else 5.0
        for node in self.nodes:
            node.stop(grace_s)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> KafkaCluster:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _random_cluster_id() -> str:
    # what `kafka-storage.sh random-uuid` prints: 16 random bytes, URL-safe base64, and,
    # as Kafka's Uuid.randomUuid() does, never one starting with "-": the storage tool's
    # command line would take it for an option (1 id in 64; it failed a run here).
    import base64

    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _quiet_logger() -> object:
    import logging

    logger = logging.getLogger("tests.kafka_broker.librdkafka")
    logger.setLevel(logging.CRITICAL)
    return logger
