"""``eventlog disk``: the space a log takes, the free space around it, and whether it
runs out soon (``df`` and ``du`` for a log directory, with a forecast).

The figures are ``Log.metrics()``'s: per topic the bytes of stored batches and the
space its files take, the log directory's space, and the file system's free and total
bytes and share used. The write rate is measured, not configured: the bytes stored in
all partitions (``Log.describe_topic``, the published state, so appends by every
process count) are read every ``_disk.SAMPLE_INTERVAL_S`` for ``--sample`` seconds,
and the rate is the least-squares slope of those samples, the estimate Prometheus'
``predict_linear`` makes. It is the log's net growth: retention and compaction during
the sample count against it, and other writers to the same file system are not seen
(the alerting rule on ``eventlog_fs_free_bytes`` sees them). Exit code 1 when the free
space, at that rate, lasts less than ``--within``.

Only the arithmetic (``_disk.sample``, ``write_rate``, ``time_to_full_s``) comes from
below the public API; the figures all come through it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from .. import _disk
from ..errors import InvalidConfigError, UnknownTopicError
from ..log import Log
from ..monitoring import LogMetrics
from ._common import opened_log, parse_int_with_unit, seconds
from ._output import human_bytes, table, write_json

AddParser = Callable[..., argparse.ArgumentParser]

EXIT_FILLING = 1  # free space runs out within --within at the measured rate (docs/cli.md)
DEFAULT_WITHIN = "24h"
DEFAULT_SAMPLE_S = 3.0


def register(add: AddParser) -> None:
    disk = add("disk", help="disk space of the log and of its file system, and a forecast",
               description="Show the bytes each topic stores and takes on disk, the log "
                           "directory's space, and the free space and share used of its "
                           "file system. Measures the log's write rate over --sample "
                           "seconds and exits with code 1 when, at that rate, the free "
                           "space runs out within --within.")
    disk.add_argument("--within", type=_duration_ms, default=_duration_ms(DEFAULT_WITHIN),
                      metavar="DURATION",
                      help="warn when the free space would run out within DURATION "
                           f"(ms, s, min, h, d; default: {DEFAULT_WITHIN})")
    disk.add_argument("--sample", type=seconds, default=DEFAULT_SAMPLE_S, metavar="SECONDS",
                      help="measure the write rate over SECONDS (default: "
                           f"{DEFAULT_SAMPLE_S:g}; 0: no measurement, no forecast)")
    disk.set_defaults(func=show_disk)


def _duration_ms(text: str) -> int:
    try:
        value = parse_int_with_unit("within_ms", text)
    except InvalidConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).replace("within_ms", "a duration")
                                         ) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a duration > 0, not {text!r}")
    return value


def _stored_bytes(log: Log) -> int:
    total = 0
    for name in log.topics():
        try:
            total += log.describe_topic(name).size_bytes
        except UnknownTopicError:
            continue  # deleted while sampling: its bytes are gone, as the rate says
    return total


def _human_s(value: float) -> str:
    """``5400.0`` -> ``1.5 h``."""
    for unit, size in (("d", 86_400.0), ("h", 3_600.0), ("min", 60.0)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value:.1f} s"


def show_disk(args: argparse.Namespace) -> int:
    """``disk``: the figures, the measured write rate, and the forecast."""
    with opened_log(args) as log:
        path = log.path
        samples = _disk.sample(lambda: _stored_bytes(log), args.sample) \
            if args.sample > 0 else []
        m = log.metrics()
    rate = _disk.write_rate(samples)
    elapsed = samples[-1][0] - samples[0][0] if samples else 0.0
    lasts = _disk.time_to_full_s(m.fs_free_bytes, rate)
    within_s = args.within / 1000
    filling = lasts is not None and lasts <= within_s
    stored = sum(t.size_bytes for t in m.topics)
    if args.json:
        doc: dict[str, Any] = {
            "topics": [asdict(t) for t in m.topics],
            "partitions": [{"topic": p.topic, "partition": p.partition,
                            "size_bytes": p.size_bytes, "disk_bytes": p.disk_bytes}
                           for p in m.partitions],
            "stored_bytes": stored, "disk_bytes": m.disk_bytes,
            "fs_free_bytes": m.fs_free_bytes, "fs_total_bytes": m.fs_total_bytes,
            "fs_used_ratio": m.fs_used_ratio, "sample_s": elapsed,
            "samples": len(samples), "write_rate_bytes_per_s": rate,
            "time_to_full_s": lasts, "within_s": within_s, "filling": filling}
        write_json(doc, sys.stdout)
    else:
        _print(m, stored, rate, elapsed, lasts)
    if lasts is None or lasts > within_s:
        return 0
    why = "no free space is left" if lasts == 0 else \
        f"free space runs out in {_human_s(lasts)} at {human_bytes(int(rate or 0))}/s"
    sys.stderr.write(f"eventlog: warning: {why} on the file system of {path} "
                     f"(within {_human_s(within_s)})\n")
    return EXIT_FILLING


def _print(m: LogMetrics, stored: int, rate: float | None, elapsed: float,
           lasts: float | None) -> None:
    topics = m.topics
    rows: list[list[Any]] = [[t.topic, t.partitions, human_bytes(t.size_bytes),
                              human_bytes(t.disk_bytes)] for t in topics]
    rows.append(["total", sum(t.partitions for t in topics), human_bytes(stored),
                 human_bytes(sum(t.disk_bytes for t in topics))])
    out = sys.stdout
    table(["TOPIC", "PARTITIONS", "STORED", "ON DISK"], rows, out)
    out.write(f"\nlog directory: {human_bytes(m.disk_bytes)} on disk\n"
              f"file system:   {human_bytes(m.fs_free_bytes)} free of "
              f"{human_bytes(m.fs_total_bytes)} ({m.fs_used_ratio:.1%} used)\n")
    if rate is None:
        out.write("write rate:    not measured (--sample 0)\n")
        return
    forecast = f"the free space lasts {_human_s(lasts)} at this rate" \
        if lasts is not None else "the log is not growing"
    out.write(f"write rate:    {human_bytes(int(rate))}/s over {elapsed:.1f} s; "
              f"{forecast}\n")
