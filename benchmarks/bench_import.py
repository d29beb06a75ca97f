"""How long `import eventlog` takes in a fresh interpreter, with bytecode.

    python benchmarks/bench_import.py [--runs 21] [--compare OTHER_SRC_DIR] [--out FILE]

Each run starts a new interpreter that times ``import eventlog`` with
``time.perf_counter`` and reports the modules it loaded; bytecode is compiled first,
into a private cache (``PYTHONPYCACHEPREFIX``), so the figure is the import a user sees
on the second run of a program. ``--compare`` times another source tree (say, an
older checkout's ``src``) in the same run, the two alternating. The self times of
``python -X importtime`` show where the time goes (the ten largest are listed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

from _harness import command_line, report, table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHILD = ("import time, sys, json\nt = time.perf_counter()\nimport eventlog\n"
         "print(json.dumps([time.perf_counter() - t, len(sys.modules)]))")


def _env(src: str, cache: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(PYTHONPATH=src, PYTHONPYCACHEPREFIX=cache)
    return env


def import_once(src: str, cache: str) -> tuple[float, int]:
    out = subprocess.run([sys.executable, "-c", CHILD], env=_env(src, cache),
                         capture_output=True, text=True, check=True).stdout
    seconds, modules = json.loads(out)
    return float(seconds), int(modules)


def importtime(src: str, cache: str) -> list[tuple[int, str]]:
    """(self µs, module) of every module ``import eventlog`` loaded, largest first."""
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", "import eventlog"],
                         env=_env(src, cache), capture_output=True, text=True,
                         check=True).stderr
    rows = []
    for line in err.splitlines():
        if line.startswith("import time:") and "self [us]" not in line:
            own, _cumulative, name = line[len("import time:"):].split("|")
            rows.append((int(own), name.strip()))
    return sorted(rows, reverse=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--compare", help="another source directory to time alongside")
    parser.add_argument("--out")
    args = parser.parse_args()
    trees = {"this tree": os.path.join(ROOT, "src")}
    if args.compare:
        trees["--compare"] = os.path.abspath(args.compare)
    caches = {name: tempfile.mkdtemp(prefix="eventlog-bench-pyc-") for name in trees}
    for name, src in trees.items():
        import_once(src, caches[name])  # compiles the bytecode
    times: dict[str, list[float]] = {name: [] for name in trees}
    modules: dict[str, int] = {}
    for _ in range(args.runs):
        for name, src in trees.items():
            seconds, modules[name] = import_once(src, caches[name])
            times[name].append(seconds)
    rows = [(f"{name} ({trees[name]})", f"{statistics.median(times[name]) * 1e3:.1f}",
             f"{min(times[name]) * 1e3:.1f}", str(modules[name])) for name in trees]
    body = (f"`import eventlog` in a fresh interpreter, with bytecode, {args.runs} runs "
            "each (alternating):\n\n"
            + table(rows, ("source", "median ms", "fastest ms", "modules loaded")))
    for name, src in trees.items():
        top = importtime(src, caches[name])
        body += (f"\n\nLargest self times of `python -X importtime -c 'import eventlog'`, "
                 f"{name}, total {sum(t for t, _ in top) / 1e3:.1f} ms:\n\n"
                 + table([(module, f"{us / 1e3:.2f}") for us, module in top[:10]],
                         ("module", "self ms")))
    data = {name: {"median_s": statistics.median(times[name]), "modules": modules[name]}
            for name in trees}
    report("Import time", command_line(), body, args.out, data)


if __name__ == "__main__":
    main()
