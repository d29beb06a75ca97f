"""Draw docs/images/consumer_status.png: lag over a window of commits for each status.

Each panel is a real scenario run through the library on a ManualClock (a log in a
temporary directory, a consumer committing chosen offsets), and its title is the
status ``log.group_status`` gives it, so the picture shows what the code does
(tests/test_status.py checks the statuses). Regenerate with::

    pip install -e '.[bench]'          # matplotlib
    python docs/images/consumer_status.py
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import eventlog
from eventlog import TopicPartition
from eventlog.testing import ManualClock

OUT = Path(__file__).with_suffix(".png")
TP = TopicPartition("orders", 0)
STEP_MS = 1_000
THRESHOLD = 60            # a fixed lag threshold, for comparison


@dataclass
class Scenario:
    title: str
    caption: str
    times_s: list[float]  # of the commits in the window, from the first
    lags: list[int]       # at each commit
    now_s: float          # when judged
    lag_now: int
    status: str


def run(title: str, caption: str, steps: list[tuple[int, int]], idle_ms: int = 0,
        produce_after: int = 0) -> Scenario:
    """``steps``: (records appended, offset committed) once a second; then ``idle_ms``
    without commits while ``produce_after`` more records arrive."""
    clock = ManualClock()
    with tempfile.TemporaryDirectory() as path, eventlog.open(path, clock=clock) as log:
        log.create_topic("orders")
        part = log.topic("orders").partition(0)
        with eventlog.Consumer(log, group_id="g", enable_auto_commit=False) as consumer:
            consumer.assign([TP])
            for appended, offset in steps:
                if appended:
                    part.append([b"x"] * appended)
                clock.advance(STEP_MS)
                consumer.commit({TP: offset})
        if produce_after:
            part.append([b"x"] * produce_after)
        clock.advance(idle_ms)
        status = log.group_status("g")
        history = log.backend.offset_store("g").read_history()[1][TP][-status.window:]
        first = history[0].timestamp_ms
        judged = status.partitions[TP]
        return Scenario(title, caption, [(c.timestamp_ms - first) / 1000 for c in history],
                        [c.lag for c in history], (status.evaluated_ms - first) / 1000,
                        judged.lag, judged.status)


def scenarios() -> list[Scenario]:
    return [
        run("keeps up", "a commit had lag 0 (rule 2)",
            [(20, 20 * (i + 1)) for i in range(10)]),
        run("burst absorbed", "lag above any threshold, but falling (rule 5)",
            [(300 if i == 0 else 10, 30 + 38 * i) for i in range(10)]),
        run("falling behind", "moving, lag grew at every commit (rule 4)",
            [(20, 10 * (i + 1)) for i in range(10)]),
        run("stalled", "same offset, lag not falling (rule 3)",
            [(8, 5) for _ in range(10)]),
        run("stopped", "no commit for longer than the window spans (rule 1)",
            [(10, 10 * (i + 1) - 5) for i in range(10)], idle_ms=12_000, produce_after=15),
    ]


def main() -> None:
    # imported here: the tests run scenarios() where matplotlib may not be installed
    import matplotlib  # noqa: PLC0415
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    colors = {"OK": "#2e7d32", "WARN": "#ef6c00", "STALL": "#c62828", "STOP": "#6a1b9a"}
    shown = scenarios()
    fig, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown), 3.2), sharey=False)
    for ax, sc in zip(axes, shown, strict=True):
        color = colors[sc.status]
        ax.axvspan(sc.times_s[0], sc.times_s[-1], color="#eceff1", zorder=0,
                   label="the window (10 commits)")
        ax.plot(sc.times_s, sc.lags, "o-", color=color, label="lag at each commit")
        if sc.now_s > sc.times_s[-1]:
            ax.plot([sc.times_s[-1], sc.now_s], [sc.lags[-1], sc.lag_now], ":", color=color)
            ax.plot([sc.now_s], [sc.lag_now], "s", color=color, label="lag now")
        ax.axhline(THRESHOLD, color="#90a4ae", linestyle="--", linewidth=1,
                   label=f"a fixed threshold ({THRESHOLD})")
        ax.set_title(f"{sc.title}: {sc.status}", color=color, fontsize=11)
        ax.set_xlabel(f"seconds\n{sc.caption}", fontsize=8)
        ax.set_ylim(bottom=0)
        ax.tick_params(labelsize=8)
    axes[0].set_ylabel("lag (records)")
    handles, labels = axes[-1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle("Consumer status by Burrow's rules: lag over a window of commits",
                 fontsize=12)
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    fig.savefig(OUT, dpi=110)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
