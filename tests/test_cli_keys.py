"""``eventlog produce/consume --key-format`` (issue 17, item 5), and a following group
consumer stopped by a signal (item 2): real subprocesses, real signals, real logs.

A key the CLI writes must be the key the Python API writes, byte for byte, and so land
on the same partition, whatever the partitioner.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading

import pytest

import eventlog
from eventlog import TopicPartition
from tests.test_cli import cli, make_topic, ok, spawn

CUSTOMERS = [f"customer-{i}" for i in range(12)]
LINES = "".join(json.dumps({"customer": c, "total": i}) + "\n"
                for i, c in enumerate(CUSTOMERS))


def _placed(log_dir, topic: str) -> dict[bytes, tuple[int, object]]:
    """Each stored key (raw bytes) -> (partition, value)."""
    with eventlog.open(log_dir, read_only=True) as log:
        out = {}
        for p in log.topic(topic).partitions:
            for r in p.read(0):
                out[bytes(r.key)] = (p.id, r.value)
        return out


@pytest.mark.parametrize("partitioner", ["murmur2", "xxhash"])
@pytest.mark.parametrize("key_format", ["str", "msgpack", "json", None])
def test_cli_and_api_put_the_same_key_on_the_same_partition(tmp_path, partitioner,
                                                            key_format):
    log_dir = tmp_path / "log"
    make_topic(log_dir, "cli", partitions=8)
    make_topic(log_dir, "api", partitions=8)
    args = ["produce", "cli", "--format", "json", "--key-field", "customer",
            "--partitioner", partitioner, "-q"]
    if key_format is not None:
        args += ["--key-format", key_format]
    ok(cli(*args, log=log_dir, input=LINES))
    options = {} if key_format is None else {"key_serializer": key_format}
    with eventlog.open(log_dir) as log, \
            eventlog.Producer(log, partitioner=partitioner, **options) as producer:
        for c in CUSTOMERS:
            producer.send("api", b"x", key=c)
    cli_keys, api_keys = _placed(log_dir, "cli"), _placed(log_dir, "api")
    assert set(cli_keys) == set(api_keys)
    assert {k: p for k, (p, _) in cli_keys.items()} == {k: p for k, (p, _) in
                                                        api_keys.items()}
    assert len({p for p, _ in cli_keys.values()}) > 1      # really spread
    if key_format == "str":
        assert b"customer-3" in cli_keys                   # no JSON quotes


def test_the_default_key_format_is_the_python_default_msgpack(tmp_path):
    log_dir = tmp_path / "log"
    make_topic(log_dir, "t")
    ok(cli("produce", "t", "--format", "text", "-K", ":", "-q", log=log_dir,
           input="user-7:hello\n"))
    with eventlog.open(log_dir) as log, \
            eventlog.Consumer(log, "t", value_deserializer="bytes") as consumer:
        (record,) = consumer.poll(timeout=5)
    assert (record.key, record.value) == ("user-7", b"hello")


def test_key_format_bytes_stores_the_key_text_as_it_is(tmp_path):
    log_dir = tmp_path / "log"
    make_topic(log_dir, "t")
    ok(cli("produce", "t", "-K", ":", "--key-format", "bytes", "-q", log=log_dir,
           input='k\xe9y:{"a": 1}\n'))
    with eventlog.open(log_dir) as log, \
            eventlog.Consumer(log, "t", key_deserializer="bytes") as consumer:
        (record,) = consumer.poll(timeout=5)
    assert (record.key, record.value) == ("k\xe9y".encode(), {"a": 1})


def test_a_key_field_that_str_cannot_store_is_a_line_error(tmp_path):
    log_dir = tmp_path / "log"
    make_topic(log_dir, "t")
    proc = cli("produce", "t", "--key-field", "id", "--key-format", "str", log=log_dir,
               input='{"id": "a"}\n{"id": 7}\n')
    assert proc.returncode == 1 and "line 2" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    with eventlog.open(log_dir, read_only=True) as log:
        assert log.topic("t").partition(0).end_offset == 1   # line 1 is stored


def test_consume_decodes_keys_independently_of_values(tmp_path):
    log_dir = tmp_path / "log"
    make_topic(log_dir, "t")
    with eventlog.open(log_dir) as log, \
            eventlog.Producer(log, value_serializer="json") as producer:
        producer.send("t", {"id": 1}, key="user-7")          # key: msgpack, the default
        producer.send("t", {"id": 2}, key={"region": "eu"})
    out = ok(cli("consume", "t", "--value-format", "json", "--json", log=log_dir)).stdout
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["key"], r["value"]) for r in rows] == \
        [("user-7", {"id": 1}), ({"region": "eu"}, {"id": 2})]
    out = ok(cli("consume", "t", "--value-format", "json", "--key-format", "bytes",
                 "--template", "{key}", log=log_dir)).stdout
    assert out.splitlines()[0] != "user-7"                  # raw msgpack bytes, shown


# -- a follower stopped by a signal commits every assigned partition ----------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_follower_stopped_by_a_signal_commits_every_partition(tmp_path, sig):
    """The issue's replay: ``--from-end --follow``, a signal, then a plain ``consume
    --group`` must not reread the old records."""
    log_dir = tmp_path / "log"
    make_topic(log_dir, "orders", partitions=3)
    with eventlog.open(log_dir) as log, eventlog.Producer(log) as producer:
        for i in range(30):
            producer.send("orders", {"old": i}, partition=i % 3)
    proc = spawn("consume", "orders", "--group", "g", "--from-end", "--follow",
                 log=log_dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stop = threading.Event()

    def keep_sending() -> None:
        # until the follower (joined, at the end as of then) has printed one
        with eventlog.open(log_dir) as log, eventlog.Producer(log) as producer:
            while not stop.is_set():
                producer.send("orders", {"new": 1}, partition=1).result()
                stop.wait(0.1)

    sender = threading.Thread(target=keep_sending)
    sender.start()
    try:
        assert proc.stdout is not None
        try:
            assert json.loads(proc.stdout.readline()) == {"new": 1}
        finally:
            stop.set()
            sender.join()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        with eventlog.open(log_dir) as log:
            ends = {TopicPartition("orders", p): log.topic("orders").partition(p).end_offset
                    for p in range(3)}
            assert ends[TopicPartition("orders", 0)] == 10
            assert log.group_offsets("g") == ends      # the unprinted ones too
            assert sum(log.group_lag("g").values()) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    again = ok(cli("consume", "orders", "--group", "g", log=log_dir))
    assert again.stdout == "" and "consumed 0 records" in again.stderr
