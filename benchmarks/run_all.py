"""Run the whole benchmark suite; write a markdown results table and PNG plots.

    python benchmarks/run_all.py [--quick | --smoke] [--huge] [--out benchmarks/results]
                                 [--only NAME ...] [--docs-images DIR] [--report-only]

Each benchmark script runs in a process of its own, one after another, so that one
workload's memory and garbage do not weigh on the next. Every script compares eventlog
with baselines measured in the same run and reports medians of repeats; this script
collects their reports into ``OUT/results.md``, checks the performance targets of issue 9
on the ratios, and draws ``OUT/*.png`` with matplotlib.

Modes: the default (full) mode takes 10-20 minutes on 2 cores and needs ~3.5 GiB of free
disk space in the temp directory (the RSS benchmark reads a 3 GiB log); ``--quick`` runs
every benchmark on small inputs in about a minute; ``--smoke`` (for the test suite) runs
them on tiny inputs, whose figures mean nothing. ``--huge`` adds a 10M-record log (about
1 GiB) to the open and recovery benchmark. A peer library that is not installed (``pip
install 'eventlog[bench]'``) is reported as not measured; a failing eventlog benchmark
makes the run exit with status 1. The ``broker`` section starts a real Apache Kafka
broker (``tests/kafka_broker.py``: Java 17+, Kafka's jars fetched once with Maven), in
every mode; without them, or without confluent-kafka, it reports the peers that need
them as not measured.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Any

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
sys.path.insert(0, BENCH)
from _harness import JSON_ENV, machine, table  # noqa: E402
from _plots import latency_figure, peers_figure, rss_figure  # noqa: E402

# (name, script, arguments per mode, what it measures)
SECTIONS: list[tuple[str, str, dict[str, list[str]], str]] = [
    ("storage", "bench_storage.py", {
        "full": [], "quick": ["--records", "50000", "--repeat", "3"],
        "smoke": ["--records", "2000", "--repeat", "1"]},
     "partition-layer append and read against raw file loops"),
    ("producer", "bench_producer.py", {
        "full": [], "quick": ["--records", "50000", "--repeat", "3"],
        "smoke": ["--records", "2000", "--repeat", "1"]},
     "send() and send_batch() against raw append loops"),
    ("consumer", "bench_consumer.py", {
        "full": [], "quick": ["--records", "50000", "--repeat", "3", "--latency", "1000"],
        "smoke": ["--records", "2000", "--repeat", "1", "--latency", "100"]},
     "poll() throughput, produce-to-consume latency, idle CPU"),
    ("peers", "bench_peers.py", {
        "full": [], "quick": ["--records", "30000", "--slow-records", "300", "--repeat", "3"],
        "smoke": ["--records", "2000", "--slow-records", "50", "--repeat", "1"]},
     "produce and consume against sqlite3, lmdb, diskcache, persist-queue"),
    ("open", "bench_open.py", {
        "full": [], "quick": ["--sizes", "1000,10000,100000", "--repeat", "3",
                              "--crash-repeat", "1"],
        "smoke": ["--sizes", "1000,10000", "--repeat", "1", "--crash-repeat", "1"]},
     "open and recovery time as the log grows"),
    ("rss", "bench_rss.py", {
        # Smaller segments in the short modes, so that even their small logs are
        # larger than the few segments a reader keeps mapped.
        "full": [], "quick": ["--sizes-mib", "32,128", "--segment-mib", "4", "--samples", "20"],
        "smoke": ["--sizes-mib", "2,8", "--segment-mib", "1", "--samples", "5"]},
     "RSS while reading a log far larger than a naive loader could hold"),
    ("scaling", "bench_scaling.py", {
        "full": [], "quick": ["--records", "20000", "--repeat", "2", "--process-repeat", "1",
                              "--latency", "200", "--idle", "1,64,256"],
        "smoke": ["--records", "2000", "--repeat", "1", "--processes", "1,2",
                  "--partitions", "1,4", "--latency", "20", "--idle", "1,8"]},
     "partitions 1-64 (throughput, latency), producer processes 1-4, idle partitions"),
    ("transactions", "bench_transactions.py", {
        "full": [], "quick": ["--records", "10000", "--repeat", "3"],
        "smoke": ["--records", "500", "--repeat", "1"]},
     "transactions of 1, 10, 100 records against plain send; read_committed cost"),
]
SECTIONS.append(
    ("import", "bench_import.py", {
        "full": [], "quick": ["--runs", "9"], "smoke": ["--runs", "2"]},
     "`import eventlog` in a fresh interpreter, with bytecode"))
# The broker's start is a few seconds (8 s on 2 idle cores with the tiny smoke
# inputs), so even --smoke runs it; without Java 17+/Maven or confluent-kafka the
# script reports those peers as not measured and succeeds.
SECTIONS.append(
    ("broker", "bench_broker.py", {
        "full": [], "quick": ["--records", "20000", "--repeat", "2", "--latency", "300"],
        "smoke": ["--records", "2000", "--repeat", "1", "--latency", "20"]},
     "confluent-kafka on a local Kafka broker beside eventlog embedded, eventlog on "
     "Kafka and confluent-kafka through `eventlog serve`: throughput and latency"))
TIMEOUT_S = {"full": 3600, "quick": 600, "smoke": 300}


def run_section(name: str, script: str, args: list[str], out: str, timeout: float
                ) -> dict:
    """Run one benchmark script; return its JSON report, or why there is none."""
    md, js, logfile = (os.path.join(out, f"{name}.{ext}.tmp") for ext in ("md", "json", "log"))
    for path in (md, js):
        if os.path.exists(path):
            os.remove(path)
    command = ["python", os.path.join("benchmarks", script), *args]
    env = dict(os.environ, **{JSON_ENV: js})
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (os.path.join(ROOT, "src"), env.get("PYTHONPATH")) if p)
    start = time.monotonic()
    with open(logfile, "w") as log:
        try:
            proc = subprocess.run([sys.executable, *command[1:], "--out", md], cwd=ROOT,
                                  env=env, stdout=log, stderr=subprocess.STDOUT,
                                  timeout=timeout)
            status = proc.returncode
        except subprocess.TimeoutExpired:
            status = f"timed out after {timeout:.0f} s"
    seconds = time.monotonic() - start
    result = {"name": name, "command": " ".join(command), "seconds": seconds,
              "status": status, "log": logfile}
    if status == 0 and os.path.exists(js) and os.path.exists(md):
        with open(js) as fh:
            result["report"] = json.load(fh)
        with open(md) as fh:
            # results.md states the machine once, and each command without --out.
            result["markdown"] = "".join(
                line.replace(f" --out {md}", "") for line in fh
                if not line.startswith(("Machine: ", "Figures are medians")))
    else:
        with open(logfile) as fh:
            result["tail"] = fh.read()[-3000:]
        if status == 0:
            result["status"] = "wrote no report"
    return result


# -- targets -------------------------------------------------------------------------

def targets(sections: dict[str, dict]) -> list[tuple[str, str, str]]:
    """(target, measured, verdict) for each target of issue 9 that was measured."""
    rows: list[tuple[str, str, str]] = []

    def check(label: str, value: float | None, goal: float, fmt: str, higher: bool = True,
              missing: str = "not measured") -> None:
        if value is None:
            rows.append((label, missing, "—"))
            return
        met = value >= goal if higher else value <= goal
        rows.append((label, fmt.format(value), "met" if met else "**missed**"))

    peers = sections.get("peers", {}).get("report", {}).get("data", {})
    produce = {k: v["rate"] for k, v in peers.get("produce", {}).items()}
    consume = {k: v["rate"] for k, v in peers.get("consume", {}).items()}

    def ratio(table_: dict[str, float], a: str, b: str) -> float | None:
        return table_[a] / table_[b] if a in table_ and b in table_ else None

    send, bulk = "eventlog send() + flush()", "eventlog send_batch()"
    check("produce: send() + flush() ≥ 0.6x the raw loop (packb)",
          ratio(produce, send, "raw loop (packb)"), 0.6, "{:.2f}x")
    check("produce: send_batch() ≥ 1.0x the raw loop (packb)",
          ratio(produce, bulk, "raw loop (packb)"), 1.0, "{:.2f}x")
    check("consume: Consumer.poll() ≥ 0.7x the raw read loop",
          ratio(consume, "eventlog Consumer.poll()", "raw read loop"), 0.7, "{:.2f}x")
    missing = peers.get("missing", {})
    check("produce: send_batch() ≥ 1.5x sqlite3 (executemany, 1000 rows/transaction)",
          ratio(produce, bulk, "sqlite3, executemany"), 1.5, "{:.2f}x",
          missing=missing.get("sqlite3", "not measured"))
    check("produce: send() + flush() ≥ 1.5x sqlite3 (executemany, 1000 rows/transaction)",
          ratio(produce, send, "sqlite3, executemany"), 1.5, "{:.2f}x",
          missing=missing.get("sqlite3", "not measured"))
    check("produce: send() + flush() ≥ 50x persist-queue (SQLiteQueue.put, auto_commit)",
          ratio(produce, send, "persist-queue put, auto_commit"), 50, "{:.0f}x",
          missing=missing.get("persist-queue", "not measured"))

    opened = sections.get("open", {}).get("report", {}).get("data", {})
    if opened.get("clean_s"):
        clean, sizes = opened["clean_s"], opened["sizes"]
        # Largest against smallest log: opens take milliseconds, so one noisy size in
        # between says little; the table shows them all.
        check(f"clean open independent of log size: {sizes[-1]:,} records / "
              f"{sizes[0]:,} records ≤ 2x (every size: "
              f"{', '.join(f'{c * 1e3:.1f}' for c in clean)} ms)",
              clean[-1] / clean[0], 2.0, "{:.2f}x", higher=False)
    else:
        check("clean open independent of log size", None, 0, "")
    issue16(sections, check)
    rss = sections.get("rss", {}).get("report", {}).get("data", {}).get("runs")
    if rss:
        small, large = rss[0], rss[-1]
        growth = large["log_bytes"] / small["log_bytes"]
        check(f"RSS independent of log size: peak VmRSS, {large['log_bytes'] / 2**20:,.0f} "
              f"MiB log / {small['log_bytes'] / 2**20:,.0f} MiB log ({growth:.0f}x the data) "
              "≤ 1.5x", large["peak_kib"] / small["peak_kib"], 1.5, "{:.2f}x", higher=False)

        def anon(run: dict) -> int:
            return max(s.get("RssAnon", 0) for s in run["samples"])

        if anon(small):
            check("… the same for RssAnon (heap only, mapped segment pages left out)",
                  anon(large) / anon(small), 1.5, "{:.2f}x", higher=False)
    else:
        check("RSS independent of log size", None, 0, "")
    return rows


def issue16(sections: dict[str, dict], check: Any) -> None:
    """The targets of issue 16 (latency near the machine's floor, fast defaults, a
    fast import, keyed bulk sends over many partitions)."""
    consumer = sections.get("consumer", {}).get("report", {}).get("data", {})
    lat = consumer.get("latency_us")
    check("latency across processes, one record sent alone and flushed: p50 ≤ 3x the "
          "os.pipe floor between the same processes"
          + (f" ({lat['cross_p50']:.0f} vs {lat['pipe_p50']:.0f} µs; the design's floor, a "
             f"bare mmap log in Python, {lat['bare_p50']:.0f} µs)" if lat else ""),
          lat["cross_p50"] / lat["pipe_p50"] if lat else None, 3.0, "{:.1f}x", higher=False)
    check("… p99 ≤ 5x the floor's p99"
          + (f" ({lat['cross_p99']:.0f} vs {lat['pipe_p99']:.0f} µs)" if lat else ""),
          lat["cross_p99"] / lat["pipe_p99"] if lat else None, 5.0, "{:.1f}x", higher=False)
    check("Consumer.poll(), defaults and a group, ≥ 0.8x the tight raw read loop",
          consumer.get("poll_vs_raw"), 0.8, "{:.2f}x")
    rates = sections.get("producer", {}).get("report", {}).get("data", {}).get("rates", {})
    send, raw = rates.get("send() + flush()"), rates.get("raw loop (packb)")
    check("send() + flush(), defaults, ≥ 0.7x the raw write loop (packb + length + write)",
          send / raw if send and raw else None, 0.7, "{:.2f}x")
    imported = sections.get("import", {}).get("report", {}).get("data", {}).get("this tree")
    check("`import eventlog` ≤ 60 ms with bytecode (median of fresh interpreters)",
          imported["median_s"] * 1e3 if imported else None, 60, "{:.1f} ms", higher=False)
    scaling = sections.get("scaling", {}).get("report", {}).get("data", {})
    parts = scaling.get("partitions", [])
    if 1 in parts and 64 in parts:
        one, many = scaling["batch"][parts.index(1)], scaling["batch"][parts.index(64)]
        check("keyed send_batch() over 64 partitions ≤ 1.5x the time of one (steady state)",
              one / many, 1.5, "{:.2f}x", higher=False)
    else:
        check("keyed send_batch() over 64 partitions ≤ 1.5x the time of one", None, 0, "")


# -- plots ---------------------------------------------------------------------------

def plots(sections: dict[str, dict], out: str) -> tuple[dict[str, list[str]], str | None]:
    """Draw the PNGs; return {section: [file names]} and why none were drawn, if so."""
    try:
        import matplotlib
    except ImportError:
        return {}, "matplotlib is not installed (`pip install 'eventlog[bench]'`): no plots"
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawn: dict[str, list[str]] = {}

    def save(fig, section: str, name: str) -> None:
        fig.tight_layout()
        fig.savefig(os.path.join(out, name), dpi=110)
        plt.close(fig)
        drawn.setdefault(section, []).append(name)

    def bars(section: str, name: str, rates: dict[str, dict], title: str) -> None:
        names = list(rates)[::-1]
        values = [rates[n]["rate"] for n in names]
        colors = ["tab:blue" if n.startswith("eventlog") else
                  "tab:gray" if n.startswith("raw") else "tab:orange" for n in names]
        fig, ax = plt.subplots(figsize=(8, 0.35 * len(names) + 1.2))
        ax.barh(names, values, color=colors)
        ax.set_xscale("log")
        ax.set_xlabel("records/s (log scale; blue: eventlog, gray: raw loops, orange: peers)")
        ax.set_title(title)
        for y, v in enumerate(values):
            ax.text(v, y, f" {v:,.0f}", va="center", fontsize=8)
        ax.set_xlim(right=max(values) * 8)
        save(fig, section, name)

    peers = sections.get("peers", {}).get("report", {}).get("data")
    if peers:
        bars("peers", "produce.png", peers["produce"], "Produce throughput")
        bars("peers", "consume.png", peers["consume"], "Consume throughput (decoded to dicts)")

    consumer = sections.get("consumer", {}).get("report")
    if consumer:
        for tab in consumer["tables"]:
            if tab["header"][:1] == ["producer and consumer"]:
                rows = [(row[0], [float(v) for v in row[1:]]) for row in tab["rows"]]
                save(latency_figure(plt, tab["header"][1:], rows), "consumer",
                     "latency.png")

    opened = sections.get("open", {}).get("report", {}).get("data")
    if opened and opened.get("sizes"):
        fig, ax = plt.subplots(figsize=(7, 4))
        for key, label in (("clean_s", "clean close"), ("crash_s", "after kill -9"),
                           ("reboot_s", "after kill -9 + reboot (validates all)")):
            ax.plot(opened["sizes"], [s * 1e3 for s in opened[key]], marker="o", label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("records in the log")
        ax.set_ylabel("open to newest record, ms")
        ax.set_title("Open and recovery time vs log size")
        ax.legend()
        save(fig, "open", "open.png")

    rss = sections.get("rss", {}).get("report", {}).get("data", {}).get("runs")
    if rss:
        save(rss_figure(plt, rss), "rss", "rss.png")

    broker = sections.get("broker", {}).get("report", {}).get("data")
    if broker and broker.get("produce"):
        save(peers_figure(plt, broker), "broker", "broker.png")

    scaling = sections.get("scaling", {}).get("report", {}).get("data")
    if scaling:
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
        for key, label in (("send", "send() + flush()"), ("batch", "send_batch()"),
                           ("poll", "Consumer.poll()")):
            left.plot(scaling["partitions"], [r / 1e6 for r in scaling[key]], marker="o",
                      label=label)
        left.set_xscale("log", base=2)
        left.set_xticks(scaling["partitions"], [str(p) for p in scaling["partitions"]])
        left.set_ylim(bottom=0)
        left.set_xlabel("partitions")
        left.set_ylabel("M records/s")
        left.set_title("Partitions (keyed records)")
        left.legend()
        for key, label in (("own", "a partition each"), ("shared", "all on partition 0")):
            right.plot(scaling["processes"], [r / 1e6 for r in scaling[key]], marker="o",
                       label=label)
        right.set_xticks(scaling["processes"], [str(p) for p in scaling["processes"]])
        right.set_ylim(bottom=0)
        right.set_xlabel(f"producer processes ({os.cpu_count()} cores)")
        right.set_ylabel("M records/s, all processes")
        right.set_title("Producer processes, send() + flush()")
        right.legend()
        save(fig, "scaling", "scaling.png")
    return drawn, None


# -- the report ----------------------------------------------------------------------

def write_results(out: str, mode: str, command: str, sections: dict[str, dict],
                  started: datetime.datetime, seconds: float) -> str:
    drawn, no_plots = plots(sections, out)
    parts = [
        "# eventlog benchmark results\n",
        f"Machine: {machine()}  \nCommand: `{command}` ({mode} mode)  \n"
        f"Started: {started:%Y-%m-%d %H:%M} UTC, took {seconds / 60:.1f} min  \n"
        "Every figure is a median of repeated runs; every ratio compares workloads "
        "measured in the same run, their repeats interleaved. The machine may be shared "
        "and noisy: compare ratios, not absolute rates, across machines and runs.\n",
    ]
    if mode == "smoke":
        parts.append("**Smoke mode: tiny inputs, to check the suite runs. These figures "
                     "mean nothing.**\n")
    parts.append("## Targets (issues 9 and 16)\n\n" + table(
        targets(sections), ("target", "measured", "verdict")) + "\n")
    status_rows = []
    for name, _, _, what in SECTIONS:
        if name not in sections:
            continue
        s = sections[name]
        status = "ok" if s["status"] == 0 else f"**FAILED: {s['status']}**"
        status_rows.append((name, f"`{s['command']}`", what, f"{s['seconds']:.0f}", status))
    parts.append("## Benchmarks run\n\n" + table(
        status_rows, ("benchmark", "command", "measures", "seconds", "status")) + "\n")
    missing = sections.get("peers", {}).get("report", {}).get("data", {}).get("missing")
    if missing:
        parts.append("**Peers not measured:** " + "; ".join(
            f"{k}: {v}" for k, v in missing.items()) + "\n")
    missing = sections.get("broker", {}).get("report", {}).get("data", {}).get("missing")
    if missing:
        parts.append("**Not measured beside the Kafka broker:** " + "; ".join(
            f"{k}: {v}" for k, v in missing.items()) + "\n")
    if no_plots:
        parts.append(f"**Plots: {no_plots}.**\n")
    for name, *_ in SECTIONS:
        if name not in sections:
            continue
        s = sections[name]
        if "markdown" in s:
            parts.append(s["markdown"].strip() + "\n")
        else:
            parts.append(f"## {name}: FAILED ({s['status']})\n\nOutput (end):\n\n```text\n"
                         f"{s.get('tail', '').strip()}\n```\n")
        for png in drawn.get(name, []):
            parts.append(f"![{png}]({png})\n")
    path = os.path.join(out, "results.md")
    with open(path, "w") as fh:
        fh.write("\n".join(parts))
    return path


def copy_images(out: str, target: str | None) -> None:
    if target:
        os.makedirs(target, exist_ok=True)
        for name in os.listdir(out):
            if name.endswith(".png"):
                shutil.copy(os.path.join(out, name), target)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small inputs, about a minute")
    mode.add_argument("--smoke", action="store_true",
                      help="tiny inputs, to check that the suite runs (tests use it)")
    parser.add_argument("--huge", action="store_true",
                        help="open/recovery benchmark up to 10M records (~1 GiB more disk)")
    parser.add_argument("--out", default=os.path.join("benchmarks", "results"),
                        help="output directory (default: benchmarks/results)")
    parser.add_argument("--only", nargs="+", choices=[s[0] for s in SECTIONS],
                        help="run only these benchmarks")
    parser.add_argument("--docs-images", metavar="DIR",
                        help="also copy the PNGs here (docs/images/benchmarks for the site)")
    parser.add_argument("--report-only", action="store_true",
                        help="measure nothing: rewrite results.md and the plots from the "
                             "reports the last run left in --out")
    args = parser.parse_args()
    mode_name = "smoke" if args.smoke else "quick" if args.quick else "full"
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    run_file = os.path.join(out, "run.json.tmp")
    if args.report_only:
        with open(run_file) as fh:
            run = json.load(fh)
        path = write_results(out, run["mode"], run["command"], run["sections"],
                             datetime.datetime.fromisoformat(run["started"]), run["seconds"])
        copy_images(out, args.docs_images)
        print(f"[run_all] wrote {path}")
        return 0
    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.monotonic()
    sections: dict[str, dict] = {}
    for name, script, modes, _ in SECTIONS:
        if args.only and name not in args.only:
            continue
        extra = list(modes[mode_name])
        if name == "open" and args.huge:
            extra.append("--huge")
        print(f"[run_all] {name}: {script} {' '.join(extra)}", flush=True)
        sections[name] = run_section(name, script, extra, out, TIMEOUT_S[mode_name])
        s = sections[name]
        print(f"[run_all] {name}: {'ok' if s['status'] == 0 else s['status']} "
              f"in {s['seconds']:.1f} s", flush=True)
    command = " ".join(["python", os.path.relpath(os.path.abspath(sys.argv[0]), ROOT),
                        *sys.argv[1:]])
    seconds = time.monotonic() - t0
    with open(run_file, "w") as fh:
        json.dump({"mode": mode_name, "command": command, "started": started.isoformat(),
                   "seconds": seconds, "sections": sections}, fh)
    path = write_results(out, mode_name, command, sections, started, seconds)
    copy_images(out, args.docs_images)
    failed = [n for n, s in sections.items() if s["status"] != 0]
    print(f"[run_all] wrote {path}" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
