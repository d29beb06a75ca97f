"""The figures of the benchmark report whose data needs care to read: each function
takes a benchmark's report data and returns a matplotlib ``Figure``; ``run_all.py``
saves them, and ``tests/test_benchmarks.py`` checks them on made-up data.

- ``latency_figure``: produce-to-consume latency percentiles as grouped bars on a log
  axis. Its ticks are plain numbers on a 1-2-5 sequence (matplotlib's default log
  ticks read ``3 x 10^2``), and every bar carries its value.
- ``rss_figure``: resident memory while a process reads a log. ``VmRSS`` (which counts
  mapped segment pages) and ``RssAnon`` (the heap alone) differ by a factor of ten or
  more, and the ``RssAnon`` of every run is about the same, so on one axis the runs'
  dashed ``RssAnon`` lines lay on top of each other. ``RssAnon`` gets a panel of its
  own, scaled to its values, and each run its own line style and markers, placed so
  that the markers of different runs do not cover each other.
- ``peers_figure``: an embedded log against a local broker (``bench_broker.py``):
  throughput (produce, consume) on a linear axis from zero, where the peers differ by
  a few times, and latency percentiles on the log axis of ``latency_figure``, where
  they differ by two orders of magnitude; one colour per peer in both panels, one
  legend for the two.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

# The line style and marker of each run's RssAnon line, in run order.
_ANON_STYLES = (("--", "o"), ("-.", "s"), (":", "^"), ((0, (5, 1, 1, 1)), "D"))
_MARKERS_PER_LINE = 8


def nice_ticks(low: float, high: float) -> list[float]:
    """Ticks on the 1-2-5 sequence (1, 2, 5, 10, 20, ...) covering ``[low, high]``."""
    if low <= 0 or high < low:
        raise ValueError(f"log ticks need 0 < low <= high, not {low}, {high}")
    ticks = []
    exponent = math.floor(math.log10(low))
    while True:
        for step in (1, 2, 5):
            tick = step * 10.0 ** exponent
            if tick > high * 1.0001:
                return ticks or [low]
            if tick >= low * 0.9999:
                ticks.append(tick)
        exponent += 1


def latency_figure(plt: Any, labels: Sequence[str],
                   rows: Sequence[tuple[str, Sequence[float]]]) -> Any:
    """Grouped bars: one group per percentile (``labels``), one bar per row
    ``(name, microseconds per percentile)``, its value written on it."""
    fig, ax = plt.subplots(figsize=(7, 3.8))
    _log_bars(ax, labels, rows, lambda v: f"{v:,.0f}", lambda v: f"{v:,.0f}")
    ax.set_ylabel("microseconds (log scale)")
    ax.set_title("Produce-to-consume latency")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def peers_figure(plt: Any, data: dict[str, Any]) -> Any:
    """``bench_broker.py``'s report data drawn: left, records/s, a group each for
    produce and consume, a bar per peer; right, microseconds, a group per percentile
    (p50, p90, p99 of ``data["latency_us"]``), a bar per peer. Peers in the order of
    ``data["produce"]``, each in one colour in both panels; one legend below both."""
    names = list(data["produce"])
    colors = {name: f"C{i}" for i, name in enumerate(names)}
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6))
    from matplotlib.ticker import FuncFormatter

    # Linear, from zero: the peers' rates differ by a few times at most, and a bar
    # twice as tall is then twice as fast.
    values = _bars(left, ["produce", "consume"],
                   [(name, [data["produce"][name], data["consume"][name]])
                    for name in names], _short_rate, colors)
    left.set_ylim(0, max(values) * 1.12)
    left.yaxis.set_major_formatter(FuncFormatter(lambda v, _: _short_rate(v)))
    left.set_ylabel("records/s")
    left.set_title("Throughput, one partition")
    _log_bars(right, ["p50", "p90", "p99"],
              [(name, data["latency_us"][name][:3]) for name in names],
              lambda v: f"{v:,.0f}", lambda v: f"{v:,.0f}", colors)
    right.set_ylabel("microseconds (log scale)")
    right.set_title("Produce-to-consume latency, one record at a time")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[name]) for name in names]
    fig.legend(handles, names, loc="lower center", ncol=min(len(names), 2), fontsize=9,
               frameon=False)
    fig.tight_layout(rect=(0, 0.06 * ((len(names) + 1) // 2) + 0.02, 1, 1))
    return fig


def _short_rate(value: float) -> str:
    """Records/s as a bar value or tick: 850, 12k, 1.2M."""
    if value >= 1e6:
        return f"{value / 1e6:.1f}M"
    if value >= 1e3:
        return f"{value / 1e3:,.0f}k"
    return f"{value:,.0f}"


def _bars(ax: Any, labels: Sequence[str], rows: Sequence[tuple[str, Sequence[float]]],
          value_text: Any, colors: dict[str, str] | None = None) -> list[float]:
    """Grouped bars, a group per label, a bar per row with its value written on it;
    returns every value drawn."""
    width = 0.8 / len(rows)
    for i, (name, row) in enumerate(rows):
        xs = [x + i * width for x in range(len(labels))]
        color = colors[name] if colors else None
        bars = ax.bar(xs, row, width, label=name, color=color)
        ax.bar_label(bars, labels=[value_text(v) for v in row], padding=2, fontsize=8)
    ax.set_xticks([x + width * (len(rows) - 1) / 2 for x in range(len(labels))], labels)
    ax.grid(axis="y", alpha=0.3)
    return [v for _, row in rows for v in row]


def _log_bars(ax: Any, labels: Sequence[str], rows: Sequence[tuple[str, Sequence[float]]],
              value_text: Any, tick_text: Any, colors: dict[str, str] | None = None) -> None:
    """``_bars`` on a log axis: plain ticks on the 1-2-5 sequence (not ``3 x 10^2``),
    no minor ticks."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    values = _bars(ax, labels, rows, value_text, colors)
    ax.set_yscale("log")
    low, high = min(values) * 0.6, max(values) * 1.8   # room above for the values
    ax.set_ylim(low, high)
    ax.yaxis.set_major_locator(FixedLocator(nice_ticks(low, high)))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: tick_text(v)))


def rss_figure(plt: Any, runs: Sequence[dict[str, Any]]) -> Any:
    """``VmRSS`` of each run on top, ``RssAnon`` (when sampled) below on its own scale.
    A run is ``{"log_bytes", "records", "samples": [{"records", "VmRSS", "RssAnon"}]}``
    (sizes in KiB, as ``/proc/self/status`` gives them)."""
    has_anon = any("RssAnon" in run["samples"][0] for run in runs if run["samples"])
    if has_anon:
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5.6), sharex=True,
                                          gridspec_kw={"height_ratios": [3, 2]})
    else:
        fig, top = plt.subplots(figsize=(7, 4))
        bottom = None
    for i, run in enumerate(runs):
        label = f"{run['log_bytes'] / 2**20:,.0f} MiB log"
        per = run["log_bytes"] / max(1, run["records"]) / 2**20
        xs = [s["records"] * per for s in run["samples"]]
        line, = top.plot(xs, [s["VmRSS"] / 1024 for s in run["samples"]],
                         label=f"{label}: VmRSS")
        if bottom is not None and "RssAnon" in run["samples"][0]:
            style, marker = _ANON_STYLES[i % len(_ANON_STYLES)]
            every = max(1, len(xs) // _MARKERS_PER_LINE)
            offset = (i * every) // max(1, len(runs))  # markers of runs side by side
            bottom.plot(xs, [s["RssAnon"] / 1024 for s in run["samples"]],
                        linestyle=style, marker=marker, markevery=(offset, every),
                        markersize=5, color=line.get_color(), label=f"{label}: RssAnon")
    top.set_ylabel("VmRSS, MiB")
    top.set_title("Memory of a process reading the whole log")
    top.legend(fontsize=8)
    top.set_ylim(bottom=0)
    last = top
    if bottom is not None:
        bottom.set_ylabel("RssAnon, MiB")
        bottom.legend(fontsize=8)
        bottom.margins(y=0.25)
        last = bottom
    last.set_xlabel("MiB of the log read so far")
    fig.tight_layout()
    return fig
