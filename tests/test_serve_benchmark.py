"""benchmarks/bench_serve.py runs end to end on tiny inputs (without the broker): the
script that produces the figures in docs/kafka-protocol.md does not rot."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytest.importorskip("confluent_kafka")
pytest.importorskip("crc32c")


def test_bench_serve_smoke(tmp_path):
    out = tmp_path / "serve.md"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_serve.py"),
                           "--records", "2000", "--repeat", "1", "--latency", "20",
                           "--no-kafka", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = out.read_text()
    assert "| eventlog serve |" in text and "| eventlog serve, in the client's process |" in text
    assert "Kafka broker: not measured (--no-kafka)" in text
