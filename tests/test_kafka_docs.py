"""docs/kafka-backend.md's examples, run once more against the real broker (tests/
test_docs.py runs them on a log directory): the page says its code is the same for both."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import ROOT
from tests.test_docs import python_blocks

pytest.importorskip("confluent_kafka")


def test_moving_to_kafka_examples_run_on_a_real_broker(kafka_broker: Any, tmp_path,
                                                      monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EVENTLOG_KAFKA_URL", f"kafka://{kafka_broker.bootstrap_servers}")
    namespace: dict[str, object] = {"__name__": "docs_kafka_backend"}
    blocks = python_blocks(ROOT / "docs" / "kafka-backend.md")
    assert any("EVENTLOG_KAFKA_URL" in block for block in blocks)
    for i, block in enumerate(blocks):
        exec(compile(block, f"kafka-backend.md[block {i}]", "exec"), namespace)
