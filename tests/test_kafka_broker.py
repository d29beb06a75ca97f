"""The real-broker harness itself (tests/kafka_broker.py): it starts, answers Kafka
clients, survives a kill -9 of one of three nodes, and says why when it cannot run."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests import kafka_broker
from tests.conftest import ROOT


def _round_trip(bootstrap: str, topic: str, count: int) -> list[bytes | None]:
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    # (generous: right after a node's kill -9 the quorum may be electing a controller on
    # a busy machine; 30 s ran out once in .ci/run)
    admin.create_topics([NewTopic(topic, 1)], request_timeout=90)[topic].result(timeout=120)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for i in range(count):
        producer.produce(topic, value=b"v%d" % i)
    assert producer.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{topic}",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    values: list[bytes | None] = []
    for _ in range(200):
        if len(values) >= count:
            break
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            values.append(msg.value())
    consumer.close()
    return values


def test_single_broker_answers_kafka_clients(kafka_broker: Any) -> None:
    host, _, port = kafka_broker.bootstrap_servers.partition(":")
    assert host == "127.0.0.1" and int(port) > 0
    topic = f"harness-{uuid.uuid4().hex[:8]}"
    assert _round_trip(kafka_broker.bootstrap_servers, topic, 20) == \
        [b"v%d" % i for i in range(20)]


def test_three_brokers_survive_a_killed_node(kafka_cluster: Any) -> None:
    from confluent_kafka.admin import AdminClient

    assert len(kafka_cluster.nodes) == 3
    victim = kafka_cluster.nodes[2]
    victim.kill()
    assert not victim.running
    try:
        # two of three replicas left: acks=all still succeeds with min.insync.replicas=2
        others = ",".join(n.address for n in kafka_cluster.nodes if n.running)
        # Until the dead node is fenced (broker.session.timeout.ms), the metadata may name
        # it as the controller that a topic creation must go to ("Timed out waiting for
        # controller"): wait until the others leave it out, as a Kafka operator would.
        survivors = AdminClient({"bootstrap.servers": others})
        deadline = time.monotonic() + 60
        while victim.node_id in survivors.list_topics(timeout=10).brokers:
            assert time.monotonic() < deadline, "the killed node was never fenced"
            time.sleep(0.25)
        topic = f"harness-{uuid.uuid4().hex[:8]}"
        assert _round_trip(others, topic, 10) == [b"v%d" % i for i in range(10)]
    finally:
        victim.start()
        kafka_cluster.wait_ready()
    admin = AdminClient({"bootstrap.servers": kafka_cluster.bootstrap_servers})
    assert set(admin.list_topics(timeout=10).brokers) == {1, 2, 3}


def test_without_java_the_reason_is_one_line(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    reason = kafka_broker.unavailable_reason()
    assert reason is not None and "Java" in reason and "\n" not in reason


def test_required_broker_fails_instead_of_skipping(tmp_path: Path) -> None:
    test = tmp_path / "test_needs_kafka.py"
    test.write_text("def test_it(kafka_broker):\n    pass\n")
    (tmp_path / "conftest.py").write_text("from tests.conftest import kafka_broker  # noqa\n")
    env = dict(os.environ, PATH=str(tmp_path), PYTHONPATH=f"{ROOT}:{ROOT / 'src'}")
    env.pop(kafka_broker.REQUIRE_ENV, None)  # CI sets it for the whole run
    base = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
            str(test)]
    skipped = subprocess.run(base, capture_output=True, text=True, env=env, cwd=tmp_path,
                             timeout=120)
    assert skipped.returncode == 0, skipped.stdout
    assert "1 skipped" in skipped.stdout and "Java 17+" in skipped.stdout
    env[kafka_broker.REQUIRE_ENV] = "1"
    failed = subprocess.run(base, capture_output=True, text=True, env=env, cwd=tmp_path,
                            timeout=120)
    assert failed.returncode == 1, failed.stdout
    assert "1 error" in failed.stdout and kafka_broker.REQUIRE_ENV in failed.stdout


def test_cluster_ids_are_kafkas_shape_and_never_look_like_an_option() -> None:
    import base64

    ids = [kafka_broker._random_cluster_id() for _ in range(3000)]
    # An id starting with "-" fails `kafka-storage format -t ID` (1 id in 64 would).
    assert not [i for i in ids if i.startswith("-")]
    assert len(set(ids)) == len(ids)
    assert all(len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids)
