"""Small benchmark harness: repeated runs, medians, ratios, machine details, markdown.

Every benchmark in this directory compares eventlog with baselines measured in the
same run (the machines are noisy) and reports medians of several repeats.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

# run_all.py sets this to a file path: report() then also writes its tables and data
# there as JSON, so that the suite can draw plots and check targets without parsing
# markdown. Scripts run on their own are unaffected.
JSON_ENV = "EVENTLOG_BENCH_JSON"
_tables: list[dict[str, list[Any]]] = []  # every table() of this process, in order


@dataclass
class Result:
    name: str
    unit_count: int                      # records handled per run
    seconds: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def rate(self) -> float:
        return self.unit_count / self.median


def sample_records(n: int, seed: int = 1) -> list[bytes]:
    """``n`` msgpack-encoded order dicts of about 100 bytes each."""
    out = []
    for i in range(n):
        out.append(msgpack.packb({
            "id": i, "user": f"user-{(i * 7919 + seed) % 10000:05d}",
            "amount": round((i % 1000) * 1.25, 2), "currency": "EUR",
            "items": ["sku-%03d" % (i % 300), "sku-%03d" % ((i + 1) % 300)],
            "ts": 1_700_000_000_000 + i,
        }))
    return out


def sample_dicts(n: int, seed: int = 1) -> list[dict[str, object]]:
    return [msgpack.unpackb(b) for b in sample_records(n, seed)]


def freeze_inputs() -> None:
    """Move everything allocated so far (the benchmark's input data) out of the cyclic
    garbage collector's sight, so that collections triggered by a workload do not walk
    hundreds of thousands of input objects that are no part of it."""
    gc.collect()
    gc.freeze()


def measure(result: Result, run: Callable[[str], object], repeat: int) -> Result:
    """Run ``run(tmpdir)`` ``repeat`` times, each in a fresh directory.

    ``run`` may return a generator: then only the part between its start and its
    first ``yield`` is timed (set-up before, tear-down such as close() after).
    """
    for _ in range(repeat):
        tmp = tempfile.mkdtemp(prefix="eventlog-bench-")
        try:
            start = time.perf_counter()
            gen = run(tmp)
            if hasattr(gen, "__next__"):
                start = next(gen)  # type: ignore[call-overload]
                elapsed = time.perf_counter() - start
                for _ in gen:  # type: ignore[attr-defined]
                    pass
            else:
                elapsed = time.perf_counter() - start
            result.seconds.append(elapsed)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return result


def interleave(results: dict[str, Result],
               runs: Sequence[tuple[str, Callable[[str], object]]], repeat: int) -> None:
    """Run every workload of ``runs`` once per round, ``repeat`` rounds, starting each
    round one workload later, so that drift in machine speed (other jobs, thermal
    limits, the page cache filling) hits every workload alike."""
    for round_ in range(repeat):
        shift = round_ % len(runs)
        for name, run in [*runs[shift:], *runs[:shift]]:
            measure(results[name], run, 1)


def memory_kib() -> dict[str, int]:
    """This process's resident memory from /proc/self/status, in KiB: ``VmRSS`` (all
    resident pages), ``RssAnon`` (heap, stacks), ``RssFile`` (resident pages of mapped
    files, which the kernel may drop) and ``VmHWM`` (peak VmRSS). Linux only; elsewhere
    ``VmRSS`` and ``VmHWM`` come from getrusage (the peak, in both)."""
    out: dict[str, int] = {}
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                    out[key] = int(value.split()[0])
    except OSError:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = peak // 1024 if sys.platform == "darwin" else peak
        out = {"VmRSS": peak, "VmHWM": peak}
    return out


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()} "
            f"({platform.python_implementation()}), {platform.system()} {platform.release()}")


def table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    _tables.append({"header": list(header), "rows": [list(row) for row in rows]})
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def report(title: str, command: str, body: str, out: str | None,
           data: dict[str, Any] | None = None) -> None:
    """Print the markdown section, write it to ``out`` if given, and, when run by
    run_all.py, write the tables and ``data`` (raw figures) as JSON."""
    text = (f"## {title}\n\nMachine: {machine()}  \nCommand: `{command}`  \n"
            f"Figures are medians of repeated runs; ratios compare runs made in the same "
            f"process, one after another.\n\n{body}\n")
    print(text)
    if out:
        with open(out, "w") as fh:
            fh.write(text)
    json_path = os.environ.get(JSON_ENV)
    if json_path:
        with open(json_path, "w") as fh:
            json.dump({"title": title, "command": command, "machine": machine(),
                       "tables": _tables, "data": data or {}}, fh, indent=1)


def command_line() -> str:
    return " ".join(["python", *sys.argv])
