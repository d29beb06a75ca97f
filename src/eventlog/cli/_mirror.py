"""``eventlog mirror SRC DST``: copy topics between log directories and Kafka clusters,
resumably, as MirrorMaker 2 does between clusters.

SRC and DST are each a log directory or a ``kafka://host:port,...`` address. Every
record keeps its partition, order, key, value, headers and timestamp (the bytes as
stored: nothing is deserialized). Missing destination topics are created with the
source's partition count and settings; a destination with fewer partitions gets more.

Progress lives in the destination, in the compacted topic ``__eventlog_mirror`` (MM2
keeps its checkpoints in the target cluster too): per source partition one JSON
record ``{"source_next": S, "dest_end": D}`` saying that the source records before
offset S are copied and that the destination partition then ended at D. The mirror
is the only writer of its destination partitions and writes one record per source
record, in order, so on a restart — after Ctrl-C or ``kill -9`` at any instant — a
destination that ends at E > D holds E - D records copied after the checkpoint: the
mirror skips that many source records from S and goes on, with neither a gap nor a
duplicate. A checkpoint is written after the records it covers are acknowledged
(``flush``), at most every ``CHECKPOINT_S`` and at the end.

``--groups`` translates the committed offsets of the source's consumer groups: a
committed source offset C maps to D_end - (records in the source from C to S_end),
the destination offset of the same record, committed to the same group in DST (which
must have no live members there). ``--follow`` keeps copying new records until Ctrl-C.

Only the public API is used: ``Consumer`` (bytes in, assigned partitions, ``seek``) to
read, ``Producer`` (bytes out, explicit partitions, idempotent on Kafka) to write.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from .. import open as open_log
from .._types import TopicPartition
from ..consumer import Consumer
from ..log import Log
from ..producer import Producer
from ._common import CliError

__all__ = ["CHECKPOINT_TOPIC", "Mirror", "register"]

AddParser = Callable[..., argparse.ArgumentParser]

CHECKPOINT_TOPIC = "__eventlog_mirror"
CHECKPOINT_S = 1.0
PROGRESS_S = 0.5
_IDLE_S = 0.2


def register(add: AddParser) -> None:
    mirror = add("mirror", log=False,
                 help="copy topics between log directories and Kafka clusters, resumably",
                 description="Copy topics from SRC to DST (each a log directory or a "
                             "kafka://host:port address), keeping partition, order, key, "
                             "value, headers and timestamp of every record; create missing "
                             "topics with the same partitions and settings. Resumable after "
                             "Ctrl-C or kill -9 without duplicates (progress is kept in "
                             f"DST's {CHECKPOINT_TOPIC} topic).")
    mirror.add_argument("source", metavar="SRC", help="log directory or kafka://host:port")
    mirror.add_argument("dest", metavar="DST", help="log directory or kafka://host:port")
    mirror.add_argument("--topic", action="append", dest="topics", metavar="TOPIC",
                        help="a topic to copy (repeatable; default: every topic)")
    mirror.add_argument("--groups", action="store_true",
                        help="also translate the source's committed group offsets")
    mirror.add_argument("--follow", action="store_true",
                        help="keep copying new records until interrupted (Ctrl-C)")
    mirror.set_defaults(func=run_mirror)


def _open(address: str, *, create: bool) -> Log:
    if not address.startswith("kafka://") and not create:
        import os  # noqa: PLC0415 - only for this check

        if not os.path.isdir(address):
            raise CliError(f"log directory {address} does not exist")
    return open_log(address)


def run_mirror(args: argparse.Namespace) -> int:
    if args.source == args.dest:
        raise CliError("SRC and DST are the same log")
    with _open(args.source, create=False) as source, _open(args.dest, create=True) as dest:
        progress = _Progress(quiet=args.quiet)
        job = Mirror(source, dest, args.source, topics=args.topics, progress=progress.update)
        try:
            job.run(follow=args.follow)
        except KeyboardInterrupt:
            job.stop()
            progress.done(job.copied, interrupted=True)
            return 0 if args.follow else 130
        progress.done(job.copied)
        if args.groups:
            translated = job.translate_groups()
            if not args.quiet:
                for group, offsets in sorted(translated.items()):
                    sys.stderr.write(f"group {group}: {len(offsets)} committed offset(s) "
                                     "translated\n")
        if args.json:
            sys.stdout.write(json.dumps({"copied": job.copied,
                                         "topics": sorted(job.topics)}) + "\n")
    return 0


class _Progress:
    """A one-line progress display on stderr: records copied and records per second."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.live = not quiet and sys.stderr.isatty()  # a redrawn line for people only
        self.start = time.monotonic()
        self.last = 0.0

    def update(self, copied: int) -> None:
        now = time.monotonic()
        if not self.live or now - self.last < PROGRESS_S:
            return
        self.last = now
        rate = copied / max(now - self.start, 1e-9)
        sys.stderr.write(f"\rmirrored {copied:,} records ({rate:,.0f} records/s)")
        sys.stderr.flush()

    def done(self, copied: int, interrupted: bool = False) -> None:
        if self.quiet:
            return
        elapsed = max(time.monotonic() - self.start, 1e-9)
        how = " (interrupted; run again to resume)" if interrupted else ""
        sys.stderr.write(f"{chr(13) if self.live else ''}mirrored {copied:,} records in "
                         f"{elapsed:.1f} s ({copied / elapsed:,.0f} records/s){how}\n")


class Mirror:
    """One mirror run from ``source`` into ``dest`` (see the module docstring).
    ``source_id`` names the source in the checkpoints (its path or address), so one
    destination may hold copies of several sources."""

    def __init__(self, source: Log, dest: Log, source_id: str,
                 topics: Iterable[str] | None = None,
                 progress: Callable[[int], None] | None = None) -> None:
        self.source, self.dest, self.source_id = source, dest, source_id
        names = list(topics) if topics else [t for t in source.topics()
                                              if not t.startswith("__")]
        for name in names:
            source.topic(name)  # UnknownTopicError before anything is written
        self.topics = names
        self.copied = 0
        self._progress = progress or (lambda n: None)
        self._reader: Consumer | None = None
        self._writer: Producer | None = None
        self._checkpoints: Producer | None = None
        self._next: dict[TopicPartition, int] = {}     # source offset to copy next
        self._dest_end: dict[TopicPartition, int] = {}  # destination end after that
        self._skip: dict[TopicPartition, int] = {}      # records already in dest
        self._last_futures: dict[TopicPartition, tuple[int, Any]] = {}
        self._saved: dict[TopicPartition, tuple[int, int]] = {}

    # -- set-up ------------------------------------------------------------------------

    def _key(self, tp: TopicPartition) -> str:
        return f"{self.source_id}|{tp.topic}|{tp.partition}"

    def _prepare_topics(self) -> list[TopicPartition]:
        tps = []
        for name in self.topics:
            topic = self.source.topic(name)
            count = topic.num_partitions
            if name not in self.dest:
                self.dest.create_topic(name, partitions=count, **topic.config.to_dict())
            else:
                have = self.dest.topic(name).num_partitions
                if have < count:
                    self.dest.topic(name).add_partitions(count - have)
            tps += [TopicPartition(name, i) for i in range(count)]
        if CHECKPOINT_TOPIC not in self.dest:
            self.dest.create_topic(CHECKPOINT_TOPIC, partitions=1, cleanup_policy="compact")
        return tps

    def _read_checkpoints(self) -> dict[str, dict[str, int]]:
        found: dict[str, dict[str, int]] = {}
        tp = TopicPartition(CHECKPOINT_TOPIC, 0)
        with Consumer(self.dest, key_deserializer="str", value_deserializer="json") as c:
            c.assign([tp])
            end = c.end_offsets([tp])[tp]
            while c.position(tp) < end:
                for record in c.poll(timeout=1.0):
                    found[record.key] = record.value
        return found

    def _resume_points(self, tps: list[TopicPartition]) -> None:
        saved = self._read_checkpoints()
        for tp in tps:
            dest_end = self.dest.topic(tp.topic).partition(tp.partition).end_offset
            point = saved.get(self._key(tp))
            if point is None:
                start = self.source.topic(tp.topic).partition(tp.partition).start_offset
                self._next[tp], self._dest_end[tp], self._skip[tp] = start, dest_end, 0
            else:
                self._next[tp] = int(point["source_next"])
                self._dest_end[tp] = int(point["dest_end"])
                self._skip[tp] = dest_end - self._dest_end[tp]
                if self._skip[tp] < 0:
                    raise CliError(f"{tp.topic}[{tp.partition}] in the destination ends at "
                                   f"{dest_end}, before the mirror's checkpoint "
                                   f"({self._dest_end[tp]}): it was truncated or recreated; "
                                   "delete the topic there to copy it again")

    # -- copying -------------------------------------------------------------------------

    def run(self, follow: bool = False) -> None:
        """Copy until every partition reaches the source's end offsets as of the start
        (with ``follow``, until ``stop`` or Ctrl-C)."""
        tps = self._prepare_topics()
        if not tps:
            return
        self._resume_points(tps)
        self._writer = Producer(self.dest, key_serializer="bytes", value_serializer="bytes",
                                **_writer_options(self.dest))
        self._checkpoints = Producer(self.dest, key_serializer="str", value_serializer="json")
        try:
            # a checkpoint for every partition before the first record, so that a crash
            # at any later instant finds one
            self._write_checkpoints(force=True)
            self._reader = reader = Consumer(self.source, key_deserializer="bytes",
                                             value_deserializer="bytes",
                                             max_poll_records=2000)
            reader.assign(tps)
            for tp in tps:
                reader.seek(tp, self._next[tp])
            ends = reader.end_offsets(tps)
            last_checkpoint = time.monotonic()
            while True:
                records = reader.poll(timeout=_IDLE_S)
                for record in records:
                    self._copy(record)
                self._progress(self.copied)
                if time.monotonic() - last_checkpoint >= CHECKPOINT_S:
                    self._checkpoint()
                    last_checkpoint = time.monotonic()
                if not follow and not records and all(
                        reader.position(tp) >= ends[tp] for tp in tps):
                    break
        except KeyboardInterrupt:
            raise  # the caller stops the job: the last checkpoint is still written
        except BaseException:
            self._close_clients()
            raise
        self.stop()

    def _copy(self, record: Any) -> None:
        tp = TopicPartition(record.topic, record.partition)
        self._next[tp] = record.offset + 1
        if self._skip[tp] > 0:  # copied before the last checkpoint was written
            self._skip[tp] -= 1
            self._dest_end[tp] += 1
            return
        assert self._writer is not None
        future = self._writer.send(record.topic, record.value, key=record.key,
                                   headers=record.headers or None,
                                   partition=record.partition,
                                   timestamp_ms=record.timestamp_ms)
        self._last_futures[tp] = (record.offset + 1, future)
        self.copied += 1

    def _checkpoint(self) -> None:
        assert self._writer is not None
        self._writer.flush()
        for tp, (source_next, future) in self._last_futures.items():
            self._next[tp] = max(self._next[tp], source_next)
            self._dest_end[tp] = future.result().offset + 1
        self._last_futures.clear()
        self._write_checkpoints()

    def _write_checkpoints(self, force: bool = False) -> None:
        assert self._checkpoints is not None
        for tp, source_next in self._next.items():
            point = (source_next, self._dest_end[tp])
            if force or self._saved.get(tp) != point:
                self._checkpoints.send(CHECKPOINT_TOPIC, {"source_next": point[0],
                                                          "dest_end": point[1]},
                                       key=self._key(tp), partition=0)
                self._saved[tp] = point
        self._checkpoints.flush()

    def stop(self) -> None:
        """Flush what was sent, write the last checkpoint, close the clients."""
        try:
            if self._writer is not None and self._checkpoints is not None:
                self._checkpoint()
        finally:
            self._close_clients()

    def _close_clients(self) -> None:
        for client in (self._reader, self._writer, self._checkpoints):
            if client is not None:
                client.close()
        self._reader = self._writer = self._checkpoints = None

    # -- groups ------------------------------------------------------------------------

    def translate_groups(self) -> dict[str, dict[TopicPartition, int]]:
        """Commit each source group's offsets of the mirrored topics to the same group
        in the destination, translated to the destination's offsets of the same
        records. Call after ``run`` (which leaves the copy caught up)."""
        out: dict[str, dict[TopicPartition, int]] = {}
        names = set(self.topics)
        for group in self.source.groups():
            committed = {tp: off for tp, off in self.source.group_offsets(group).items()
                         if tp.topic in names and tp in self._next}
            if not committed:
                continue
            translated = {tp: self._translate(tp, off) for tp, off in committed.items()}
            with Consumer(self.dest, group_id=group, enable_auto_commit=False) as c:
                c.assign(list(translated))
                c.commit(translated)
            out[group] = translated
        return out

    def _translate(self, tp: TopicPartition, committed: int) -> int:
        # D_end minus the records from `committed` to the copy's end, counted in the source
        source_next, dest_end = self._next[tp], self._dest_end[tp]
        if committed >= source_next:
            return dest_end
        behind = 0
        with Consumer(self.source, key_deserializer="bytes", value_deserializer="bytes",
                      max_poll_records=5000) as c:
            c.assign([tp])
            start = c.beginning_offsets([tp])[tp]
            c.seek(tp, max(committed, start))
            while c.position(tp) < source_next:
                records = c.poll(timeout=1.0)
                behind += sum(1 for r in records if r.offset < source_next)
                if not records and c.position(tp) >= c.end_offsets([tp])[tp]:
                    break
        return max(0, dest_end - behind)


def _writer_options(dest: Log) -> dict[str, Any]:
    # On Kafka: idempotent, so a retried batch is never written twice and order holds
    if dest.path.startswith("kafka://"):
        return {"enable_idempotence": True, "acks": "all", "linger_ms": 20,
                "batch_bytes": 1 << 20}
    return {"linger_ms": 20}


