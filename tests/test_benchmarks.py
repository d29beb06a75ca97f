"""The benchmark suite runs end to end: ``benchmarks/run_all.py --smoke`` (every
benchmark on tiny inputs, about 15 s) writes results.md and the PNG plots.

A peer library that is not installed is not a failure, but the report must say it was
not measured; any eventlog benchmark that fails makes run_all.py exit 1.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from tests.conftest import ROOT

PEERS = {"lmdb": "lmdb", "diskcache": "diskcache", "persist-queue": "persistqueue"}
SECTIONS = ("Storage layer", "Producer throughput", "Consumer", "against peers",
            "Open and recovery time", "Memory while reading", "Scaling", "Import time")
PLOTS = ("produce.png", "consume.png", "latency.png", "open.png", "rss.png", "scaling.png")


def test_run_all_smoke_writes_results_and_plots(tmp_path):
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run_all.py"), "--smoke", "--out", str(out)],
        capture_output=True, text=True, timeout=600)
    logs = "".join(f"\n--- {p.name}\n{p.read_text()[-2000:]}" for p in out.glob("*.log.tmp"))
    assert proc.returncode == 0, proc.stdout + proc.stderr + logs

    text = (out / "results.md").read_text()
    for section in SECTIONS:
        assert section in text, f"results.md lacks the {section!r} section"
    assert "FAILED" not in text
    assert "## Targets" in text and "| target | measured | verdict |" in text
    assert "Machine: " in text and "run_all.py --smoke" in text
    for peer, module in PEERS.items():
        if importlib.util.find_spec(module) is None:
            assert f"{peer}: not installed" in text
        else:
            assert f"{peer}: not installed" not in text

    pngs = sorted(p.name for p in out.glob("*.png"))
    if importlib.util.find_spec("matplotlib") is None:
        assert "matplotlib is not installed" in text
        pytest.skip("matplotlib is not installed: results.md checked, plots not drawn")
    assert set(PLOTS) <= set(pngs), pngs
    for name in PLOTS:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"![{name}]({name})" in text
