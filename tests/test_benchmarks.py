"""The benchmark suite runs end to end: ``benchmarks/run_all.py --smoke`` (every
benchmark on tiny inputs, about 15 s) writes results.md and the PNG plots.

A peer library that is not installed is not a failure, but the report must say it was
not measured; any eventlog benchmark that fails makes run_all.py exit 1.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

PEERS = {"lmdb": "lmdb", "diskcache": "diskcache", "persist-queue": "persistqueue"}
SECTIONS = ("Storage layer", "Producer throughput", "Consumer", "against peers",
            "Open and recovery time", "Memory while reading", "Scaling", "Import time",
            "against a local Kafka broker")
PLOTS = ("produce.png", "consume.png", "latency.png", "open.png", "rss.png", "scaling.png",
         "broker.png")


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


def test_bench_broker_without_java_measures_the_rest_and_says_what_it_did_not(tmp_path):
    # PATH holds only this interpreter's directory: no java, no mvn for the broker.
    pytest.importorskip("confluent_kafka")
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    env["PATH"] = os.path.dirname(sys.executable)
    out = tmp_path / "broker.md"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_broker.py"), "--records", "500",
         "--repeat", "1", "--latency", "10", "--out", str(out)],
        capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows: dict[str, str] = {}   # the first table's row of each peer
    for line in out.read_text().splitlines():
        if line.startswith("| "):
            rows.setdefault(line.split(" | ")[0].strip("| "), line)
    for peer in ("confluent-kafka on a Kafka broker", "eventlog on Kafka (kafka://)"):
        assert "not measured: no Kafka broker: Java 17+ is not installed" in rows[peer]
    for peer in ("eventlog embedded", "confluent-kafka through eventlog serve"):
        produce = rows[peer].split(" | ")[1]
        assert re.fullmatch(r"[0-9,]+", produce), rows[peer]


# -- the plots that need care to read (benchmarks/_plots.py), on made-up data ----------

def _plots_module():
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    spec = importlib.util.spec_from_file_location("_plots", ROOT / "benchmarks" / "_plots.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_latency_plot_has_plain_ticks_and_a_value_on_every_bar():
    plots = _plots_module()
    import matplotlib.pyplot as plt

    rows = [("same process", [240.0, 290.0, 358.0, 2475.0]),
            ("across processes", [249.0, 313.0, 401.0, 4091.0])]
    fig = plots.latency_figure(plt, ["p50", "p90", "p99", "max"], rows)
    fig.canvas.draw()
    ax = fig.axes[0]
    low, high = ax.get_ylim()
    ticks = [t.get_text() for t, v in zip(ax.get_yticklabels(), ax.get_yticks(),
                                           strict=True) if low <= v <= high]
    assert len(ticks) >= 3, ticks
    assert all(re.fullmatch(r"[0-9][0-9,]*", t) for t in ticks), ticks  # not 3x10^2
    assert not [t for t in ax.get_yticklabels(minor=True) if t.get_text()]
    values = sorted(t.get_text() for t in ax.texts)
    assert values == sorted(f"{v:,.0f}" for _, row in rows for v in row)
    plt.close(fig)


def test_the_memory_plot_tells_every_runs_rssanon_line_apart():
    plots = _plots_module()
    import matplotlib.pyplot as plt

    runs = [{"log_bytes": size << 20, "records": size * 1000,
             "samples": [{"records": n * size * 100, "VmRSS": 20_000 + n * size * 100,
                          "RssAnon": 20_000} for n in range(11)]}
            for size in (256, 1024, 3072)]
    fig = plots.rss_figure(plt, runs)
    anon = [line for ax in fig.axes for line in ax.get_lines()
            if line.get_label().endswith("RssAnon")]
    assert len(anon) == 3
    styles = {(str(line.get_linestyle()), line.get_marker()) for line in anon}
    assert len(styles) == 3, styles                        # each run its own look
    assert len({line.get_marker() for line in anon}) == 3
    vmrss_axes = {line.axes for ax in fig.axes for line in ax.get_lines()
                  if line.get_label().endswith("VmRSS")}
    assert not vmrss_axes & {line.axes for line in anon}   # RssAnon on its own scale
    anon_low, anon_high = anon[0].axes.get_ylim()
    [vmrss_ax] = vmrss_axes
    assert anon_high - anon_low < 0.2 * (vmrss_ax.get_ylim()[1] - vmrss_ax.get_ylim()[0])
    plt.close(fig)


def test_the_broker_plot_keeps_each_peers_colour_and_values_in_both_panels():
    plots = _plots_module()
    import matplotlib.pyplot as plt

    data = {"produce": {"broker": 150_000.0, "embedded": 600_000.0, "serve": 90_000.0},
            "consume": {"broker": 450_000.0, "embedded": 700_000.0, "serve": 1.2e6},
            "latency_us": {"broker": [1800.0, 4200.0, 16000.0, 30000.0],
                           "embedded": [110.0, 150.0, 400.0, 3000.0],
                           "serve": [420.0, 600.0, 3000.0, 5000.0]}}
    fig = plots.peers_figure(plt, data)
    fig.canvas.draw()
    throughput, latency = fig.axes
    assert throughput.get_yscale() == "linear" and throughput.get_ylim()[0] == 0
    assert latency.get_yscale() == "log"
    for ax in (throughput, latency):
        low, high = ax.get_ylim()
        ticks = [t.get_text() for t, v in zip(ax.get_yticklabels(), ax.get_yticks(),
                                               strict=True) if low <= v <= high]
        assert len(ticks) >= 3, ticks
        assert all(re.fullmatch(r"[0-9][0-9,.]*[kM]?", t) for t in ticks), ticks
    assert sorted(t.get_text() for t in throughput.texts) == sorted(
        ["150k", "600k", "90k", "450k", "700k", "1.2M"])
    assert sorted(t.get_text() for t in latency.texts) == sorted(   # p50, p90, p99 only
        f"{v:,.0f}" for row in data["latency_us"].values() for v in row[:3])
    for name in data["produce"]:
        bars = [bar for ax in (throughput, latency) for group in ax.containers
                if group.get_label() == name for bar in group]
        assert len(bars) == 2 + 3                              # both panels
        assert len({tuple(bar.get_facecolor()) for bar in bars}) == 1, name
    [legend] = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == list(data["produce"])
    plt.close(fig)


def test_nice_ticks_follow_one_two_five():
    plots = _plots_module()
    assert plots.nice_ticks(150, 6000) == [200, 500, 1000, 2000, 5000]
    with pytest.raises(ValueError):
        plots.nice_ticks(0, 10)
