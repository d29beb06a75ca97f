"""Disk usage: the space a log's files take, the file system around them, and how soon
that file system fills at the rate the log grows.

- ``allocated_bytes(path)``: the blocks the files under ``path`` take, as ``du``
  counts them (``st_blocks * 512``): a segment's preallocated space is included, a
  sparse hole is not. This is what the log costs the file system, and it is larger
  than the bytes of stored batches (``PartitionMetrics.size_bytes``).
- ``file_system_usage(path)``: ``os.statvfs`` of the file system holding ``path``.
  Free bytes are ``f_bavail`` (what a process without root's reserve can still
  write, which is what the log can use), and the share used is
  ``used / (used + free)``, the ``Use%`` of ``df``: 1.0 when the log can write no more,
  even though root's reserved blocks remain.
- ``write_rate(samples)``: bytes per second, the least-squares slope of
  ``(seconds, bytes)`` samples; the estimate Prometheus' ``deriv()`` and
  ``predict_linear()`` make, so ``eventlog disk`` and the alerting rule in
  docs/alerts/eventlog.rules.yml judge a trend the same way. A burst inside the
  sample moves it less than a two-point difference would.
- ``sample(read, seconds)``: ``read()`` every ``SAMPLE_INTERVAL_S`` over ``seconds``.
- ``time_to_full_s(free_bytes, rate)``: how long the free space lasts at ``rate``.

None of these hold state or locks; all are thread-safe.

>>> write_rate([(0.0, 100), (1.0, 300), (2.0, 500)])
200.0
>>> time_to_full_s(1000, 200.0), time_to_full_s(1000, 0.0), time_to_full_s(0, 0.0)
(5.0, None, 0.0)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["SAMPLE_INTERVAL_S", "FileSystemUsage", "allocated_bytes", "file_system_usage",
           "sample", "time_to_full_s", "write_rate"]

# Seconds between two samples of ``sample``: a few samples a second make the slope
# robust against one append burst without costing the log noticeable I/O.
SAMPLE_INTERVAL_S = 0.25


def allocated_bytes(path: str) -> int:
    """The space the files under ``path`` take on disk (allocated blocks, as ``du``).
    Files removed during the walk (a segment deleted by retention) are skipped.
    Cost: one ``stat`` per file."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:
                continue
    return total


@dataclass(frozen=True)
class FileSystemUsage:
    free_bytes: int     # what an unprivileged writer can still use (f_bavail)
    total_bytes: int    # the file system's size (f_blocks)
    used_ratio: float   # used / (used + free), as df's Use%; 0.0 .. 1.0


def file_system_usage(path: str) -> FileSystemUsage:
    """Free and total bytes and the share used of the file system holding ``path``.
    Cost: one ``statvfs``."""
    st = os.statvfs(path)
    free = st.f_bavail * st.f_frsize
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    ratio = used / (used + free) if used + free > 0 else 0.0
    return FileSystemUsage(free, st.f_blocks * st.f_frsize, ratio)


def write_rate(samples: Sequence[tuple[float, int]]) -> float | None:
    """Bytes per second: the least-squares slope of ``(seconds, bytes)`` samples, or
    None with fewer than two samples at distinct times. Negative when the bytes fell
    (retention, compaction). Cost: O(len(samples))."""
    if len(samples) < 2:
        return None
    mean_t = sum(t for t, _ in samples) / len(samples)
    mean_b = sum(b for _, b in samples) / len(samples)
    spread = sum((t - mean_t) ** 2 for t, _ in samples)
    if spread <= 0:
        return None
    return sum((t - mean_t) * (b - mean_b) for t, b in samples) / spread


def sample(read: Callable[[], int], seconds: float, *,
           clock: Callable[[], float] = time.monotonic,
           sleep: Callable[[float], None] = time.sleep) -> list[tuple[float, int]]:
    """``(time, read())`` at the start, every ``SAMPLE_INTERVAL_S`` and at the end of
    ``seconds``: at least two samples when ``seconds > 0``, one otherwise. The time of a
    sample is taken when ``read()`` returns, so a slow ``read`` only spaces the
    samples out. Blocks for ``seconds``."""
    value = read()
    samples = [(clock(), value)]
    end = samples[0][0] + seconds
    while samples[-1][0] < end:
        sleep(max(0.0, min(SAMPLE_INTERVAL_S, end - clock())))
        value = read()
        samples.append((clock(), value))
    return samples


def time_to_full_s(free_bytes: int, rate: float | None) -> float | None:
    """Seconds until ``free_bytes`` are used up at ``rate`` bytes per second: 0.0 when
    nothing is free, None when the log does not grow (it never fills at this rate)."""
    if free_bytes <= 0:
        return 0.0
    if rate is None or rate <= 0:
        return None
    return free_bytes / rate
