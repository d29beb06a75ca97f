"""Consumer status by LinkedIn Burrow's rules: pure functions over a window of commits.

A partition is judged over the group's last ``window`` commits to it, each a ``Commit``
(offset, time on the log's clock, end offset of the partition at that moment; its lag is
end minus offset), and its lag now. The rules, in this order (``../shared/API.md``)::

    1. STOP   the time since the last commit is longer than the window spans (newest
              minus oldest commit), and the partition has lag now
    2. OK     a commit in the window had lag 0
    3. STALL  the committed offset did not change over the window, and lag did not
              decrease at any step
    4. WARN   the committed offset moved, but lag grew at every step
    5. OK     otherwise

With fewer than two commits a partition is OK without lag, and judged by rule 1 alone
with lag (one commit spans no time: STOP once the clock has moved past it). A partition
without any commit in its history (never committed, or committed only by records without
end offsets) is OK without lag, and with lag STOP when its oldest unconsumed record has
waited longer than the group's window spans (newest minus oldest commit over all its
partitions' windows) — the group kept committing elsewhere for a whole window while this
data waited — and OK while the group has no commit to judge by. The group is ERR if any
partition is STALL or STOP, else WARN if any is WARN, else OK.

Everything here is pure (no I/O, no clock), so each rule is tested on its own
(tests/test_status.py); ``_group_admin.GroupAdmin.status`` gathers the inputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import pairwise

from ._offsets import Commit

__all__ = ["DEFAULT_WINDOW", "ERR", "OK", "STALL", "STOP", "WARN", "group_span_ms",
           "group_status", "had_zero_lag", "is_falling_behind", "is_stalled", "is_stopped",
           "partition_status", "uncommitted_status"]

OK, WARN, STALL, STOP, ERR = "OK", "WARN", "STALL", "STOP", "ERR"
DEFAULT_WINDOW = 10   # commits a partition is judged over, by default


def is_stopped(commits: Sequence[Commit], lag: int, now_ms: int) -> bool:
    """Rule 1: no commit for longer than the window spans, with lag now."""
    span = commits[-1].timestamp_ms - commits[0].timestamp_ms
    return lag > 0 and now_ms - commits[-1].timestamp_ms > span


def had_zero_lag(commits: Sequence[Commit]) -> bool:
    """Rule 2: some commit of the window caught up."""
    return any(c.lag == 0 for c in commits)


def is_stalled(commits: Sequence[Commit]) -> bool:
    """Rule 3: the same offset committed over the window, lag never falling."""
    first = commits[0].offset
    return all(c.offset == first for c in commits) and \
        all(b.lag >= a.lag for a, b in pairwise(commits))


def is_falling_behind(commits: Sequence[Commit]) -> bool:
    """Rule 4: moving, but lag grew at every step of the window."""
    first = commits[0].offset
    return any(c.offset != first for c in commits) and \
        all(b.lag > a.lag for a, b in pairwise(commits))


def partition_status(commits: Sequence[Commit], lag: int, now_ms: int) -> str:
    """The status of a partition from its window of ``commits`` (oldest first, at least
    one) and its lag now, at ``now_ms``. Cost: O(len(commits))."""
    if not commits:
        raise ValueError("partition_status needs at least one commit")
    if len(commits) < 2:
        return OK if lag == 0 or not is_stopped(commits, lag, now_ms) else STOP
    if is_stopped(commits, lag, now_ms):
        return STOP
    if had_zero_lag(commits):
        return OK
    if is_stalled(commits):
        return STALL
    if is_falling_behind(commits):
        return WARN
    return OK


def group_span_ms(windows: Iterable[Sequence[Commit]]) -> int | None:
    """Newest minus oldest commit time over the windows of a group's partitions; None
    without any commit."""
    times = [c.timestamp_ms for window in windows for c in window]
    return max(times) - min(times) if times else None


def uncommitted_status(lag: int, lag_ms: int, span_ms: int | None) -> str:
    """The status of a partition without commits in its history: STOP when it has lag
    and its oldest unconsumed record (``lag_ms`` old) waited longer than the group's
    window spans (``span_ms``, from ``group_span_ms``); OK otherwise, and OK while the
    group has no commit at all (``span_ms`` None)."""
    return STOP if lag > 0 and span_ms is not None and lag_ms > span_ms else OK


def group_status(statuses: Iterable[str]) -> str:
    """ERR if any partition is STALL or STOP, else WARN if any is WARN, else OK."""
    seen = set(statuses)
    if seen & {STALL, STOP}:
        return ERR
    return WARN if WARN in seen else OK
