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
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    fig, ax = plt.subplots(figsize=(7, 3.8))
    width = 0.8 / len(rows)
    values = [v for _, row in rows for v in row]
    for i, (name, row) in enumerate(rows):
        xs = [x + i * width for x in range(len(labels))]
        bars = ax.bar(xs, row, width, label=name)
        ax.bar_label(bars, labels=[f"{v:,.0f}" for v in row], padding=2, fontsize=8)
    ax.set_xticks([x + width * (len(rows) - 1) / 2 for x in range(len(labels))], labels)
    ax.set_yscale("log")
    low, high = min(values) * 0.6, max(values) * 1.8   # room above for the values
    ax.set_ylim(low, high)
    ax.yaxis.set_major_locator(FixedLocator(nice_ticks(low, high)))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.grid(axis="y", alpha=0.3)
    ax.set_ylabel("microseconds (log scale)")
    ax.set_title("Produce-to-consume latency")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


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
