"""The background work of an open log: the interval flusher and periodic maintenance.

``Background`` runs up to two daemon threads for one ``Log``:

- the flusher (``fsync="interval"``): every ``fsync_interval_ms`` it fsyncs the
  partitions written since its last round (``StorageContext.dirty``). An fsync that
  fails marks the whole log failed (writes then raise ``LogFailedError``): after a
  failed fsync the kernel may have dropped the dirty pages, so nothing written since
  can be called durable. A partition whose topic was deleted meanwhile (by any
  process) is skipped: that affects only its topic.
- maintenance (``maintenance_interval_ms``): retention of every delete-policy topic,
  then compaction of the compacted partitions dirty enough to clean. Retention and
  compaction also run on each roll (``TopicFiles`` schedules compaction there).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator

from . import _compaction
from ._partition import PartitionLog, StorageContext
from ._topics import TopicFiles, TopicStore
from .errors import ClosedError, InvalidConfigError, LogFailedError, UnknownTopicError

__all__ = ["Background", "compact", "enforce_retention", "partitions"]

_logger = logging.getLogger("eventlog")


def partitions(store: TopicStore, topics: Iterable[str] | None
               ) -> Iterator[tuple[TopicFiles, int, PartitionLog]]:
    """Every partition of ``topics`` (default: all), skipping topics deleted meanwhile."""
    for name in (store.names() if topics is None else list(topics)):
        try:
            files = store.topic(name)
            logs = files.partition_logs()
        except (UnknownTopicError, InvalidConfigError):
            continue  # deleted meanwhile, or its topic.json is damaged (check reports it)
        for i, plog in enumerate(logs):
            yield files, i, plog


def enforce_retention(store: TopicStore, topics: Iterable[str] | None) -> int:
    """Retention of the delete-policy topics; returns the number of segments deleted."""
    return sum(plog.enforce_retention() for files, _, plog in partitions(store, topics)
               if "delete" in files.metadata().config.cleanup_policy)


def compact(store: TopicStore, topics: Iterable[str] | None, *, force: bool) -> int:
    """Compaction of the compacted topics (``force``: however little is dirty);
    returns the number of records removed."""
    now = store.context.clock()
    removed = 0
    for files, _, plog in partitions(store, topics):
        config = files.metadata().config
        if not config.compacted:
            continue
        result = (_compaction.compact(plog, now) if force
                  else _compaction.maybe_compact(plog, config, now))
        if result is not None:
            removed += result.records_removed
    return removed


class Background:
    """The flusher and maintenance threads of one ``Log``; ``stop()`` ends both."""

    def __init__(self, name: str, context: StorageContext, store: TopicStore) -> None:
        self._name = name
        self._context = context
        self._store = store
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _start(self, target: Callable[..., None], label: str, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True,
                                  name=f"eventlog-{label}:{self._name}")
        thread.start()
        self._threads.append(thread)

    def start_flusher(self, interval_ms: int) -> None:
        self._start(self._flush_loop, "flusher", interval_ms / 1000)

    def start_maintenance(self, interval_ms: int) -> None:
        self._start(self._maintenance_loop, "maintenance", interval_ms / 1000)

    def stop(self) -> None:
        """Signal both threads and wait for them (a round in progress finishes)."""
        self._stop.set()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join()
        self._threads.clear()

    def signal_stop(self) -> None:
        """Signal the threads without waiting (for a log dropped as if killed)."""
        self._stop.set()

    def _flush_loop(self, interval_s: float) -> None:
        ctx = self._context
        while not self._stop.wait(interval_s):
            with ctx.dirty_lock:
                dirty = list(ctx.dirty)
                ctx.dirty.clear()
            for plog in dirty:
                try:
                    plog.sync()
                except (ClosedError, UnknownTopicError):
                    continue  # closed, or its topic deleted (by any process): nothing to sync
                except LogFailedError:
                    return  # the log is failed; writers already see it
                except Exception as exc:  # an fsync or I/O error: fail loudly, stop
                    ctx.fail(exc, f"the background fsync of {plog.directory}")
                    return

    def _maintenance_loop(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            try:
                enforce_retention(self._store, None)
                compact(self._store, None, force=False)
            except ClosedError:
                return
            except Exception:  # keep the thread alive; the next round tries again
                _logger.exception("background maintenance failed")
