"""``eventlog produce`` and ``eventlog consume``: records from stdin lines, records to
stdout (``kafka-console-producer``, ``kafka-console-consumer`` and ``kcat``).

Formats. A line is stored according to ``produce --format``: ``text`` stores its bytes
as they are; ``json`` checks it is JSON and stores it as compact JSON; ``msgpack`` (the
default) reads it as JSON and stores the value msgpack-encoded, which is what a
default ``eventlog.Consumer`` in Python reads. Keys have their own ``--key-format``
(``str``, ``bytes``, ``json`` or ``msgpack``: the serializers of ``eventlog.serde``),
whose default, ``msgpack``, is the Python ``Producer``'s default key serializer, so a
key goes where ``producer.send(topic, value, key=k)`` puts it, with either
partitioner. ``consume --value-format`` and ``--key-format`` read them back, each
independently; their default, ``msgpack``, matches ``produce``'s and the library's.

Producing. stdin is read in chunks of what is available: every line of a chunk is
sent, then the producer is flushed before waiting for more input. Piped input thus
forms large batches, and a line typed at a terminal is stored (and its offset
reported) as soon as Enter is pressed.

Consuming in a group commits, as Kafka's console consumer does, but only the offsets
of records that reached stdout (after a flush), so a record is never committed
unseen: at-least-once. Ctrl-C or SIGTERM stops a consumer normally (exit code 0),
after its last commit, which covers every partition it owns: those it printed from at
the offset after the last record printed, the others at the position it started from
(the end, with ``--from-end``), so that the next member of the group starts where
this one stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from types import FrameType, TracebackType
from typing import Any

from .._types import Record, RecordMetadata, TopicPartition
from ..config import FSYNC_MODES
from ..consumer import Consumer, RebalanceListener
from ..errors import EventLogError
from ..log import Log
from ..producer import Producer
from ._common import (
    CliError,
    header_item,
    non_negative_int,
    opened_log,
    point_in_time,
    positive_int,
    seconds,
    usage_error,
)
from ._output import (
    FORMATS,
    Decoder,
    Field,
    compile_template,
    iso_ms,
    render_template,
    show,
    write_json,
)

AddParser = Callable[..., argparse.ArgumentParser]

_SERIALIZERS = {"text": "bytes", "json": "json", "msgpack": "msgpack"}
_KEY_FORMATS = ("msgpack", "str", "bytes", "json")   # eventlog.serde names
_CHUNK_BYTES = 1 << 16
_POLL_RECORDS = 500
_COMMIT_EVERY_S = 1.0


def register(add: AddParser) -> None:
    produce = add("produce", help="write records read from stdin, one per line",
                  description="Write one record per line of stdin to TOPIC and report "
                              "the offsets written.")
    produce.add_argument("topic", metavar="TOPIC")
    produce.add_argument("--format", choices=tuple(_SERIALIZERS), default="msgpack",
                         help="how a line is read and stored: text (its bytes as they "
                              "are), json (JSON, stored as compact JSON) or msgpack (JSON, "
                              "stored msgpack-encoded, as eventlog.Producer does by "
                              "default). Default: msgpack")
    key = produce.add_mutually_exclusive_group()
    key.add_argument("--key-separator", "-K", metavar="SEP",
                     help="the key is the text before the first SEP on each line")
    key.add_argument("--key-field", metavar="FIELD",
                     help="the key is this field of each JSON object (json, msgpack)")
    produce.add_argument("--key-format", choices=_KEY_FORMATS, default="msgpack",
                         help="how keys are stored, whatever --format is: msgpack (as "
                              "eventlog.Producer does by default), str (UTF-8 text, "
                              "Kafka's StringSerializer), bytes (the key's text as it is) "
                              "or json. Default: msgpack")
    produce.add_argument("--header", "-H", type=header_item, action="append", default=[],
                         metavar="NAME=VALUE", help="a header on every record (repeatable)")
    produce.add_argument("--partition", "-p", type=non_negative_int,
                         help="write to this partition (default: by key, or spread)")
    produce.add_argument("--partitioner", choices=("xxhash", "murmur2"), default="xxhash",
                         help="how keys choose partitions; murmur2 is Kafka's (default: "
                              "xxhash)")
    produce.add_argument("--fsync", choices=FSYNC_MODES,
                         help="durability of the written records (default: interval)")
    produce.set_defaults(func=produce_records)

    consume = add("consume", help="print records to stdout",
                  description="Print the records of TOPIC(s): from the start (default), "
                              "the end, an offset or a point in time; alone, or as a "
                              "member of a consumer group that commits what it printed.")
    consume.add_argument("topics", nargs="+", metavar="TOPIC")
    start = consume.add_mutually_exclusive_group()
    start.add_argument("--from-beginning", action="store_true",
                       help="start at the first stored record (the default)")
    start.add_argument("--from-end", action="store_true",
                       help="start after the last record: only new records")
    start.add_argument("--offset", "-o", type=int, metavar="N",
                       help="start at offset N in each partition; a negative N starts "
                            "N records before the end")
    start.add_argument("--from-time", type=point_in_time, metavar="TIME",
                       help="start at the first record at or after TIME: epoch ms, ISO "
                            "8601 (local time without a zone), or now-10min / now-2h / "
                            "now-7d")
    consume.add_argument("--partition", "-p", type=non_negative_int, action="append",
                         metavar="P", help="read only partition P (repeatable)")
    consume.add_argument("--group", "-g", metavar="GROUP",
                         help="consume as a member of GROUP, from its committed offsets, "
                              "and commit what was printed")
    consume.add_argument("--follow", "-f", action="store_true",
                         help="keep waiting for new records, like tail -f (stop with "
                              "Ctrl-C)")
    consume.add_argument("--max", "--max-messages", "-n", type=positive_int,
                         dest="max_records", metavar="N", help="stop after N records")
    consume.add_argument("--timeout", type=seconds, metavar="SECONDS",
                         help="stop when no record arrived for this long")
    consume.add_argument("--format", choices=("value", "json", "template"),
                         help="output: value (the value alone; default), json (JSON "
                              "lines with metadata) or template (see --template)")
    consume.add_argument("--template", "-t", metavar="TEMPLATE",
                         help="print each record as TEMPLATE, with fields {topic} "
                              "{partition} {offset} {timestamp_ms} {timestamp} {key} "
                              "{value} {headers}; {value[id]} looks inside a value; "
                              "\\t and \\n are expanded")
    consume.add_argument("--value-format", choices=FORMATS, default="msgpack",
                         help="how values were stored: msgpack (default), json, str "
                              "(= text) or bytes")
    consume.add_argument("--key-format", choices=FORMATS, default="msgpack",
                         help="how keys were stored, whatever --value-format is: msgpack "
                              "(default, as eventlog.Producer stores them), json, str "
                              "(= text) or bytes")
    consume.set_defaults(func=consume_records)


# -- produce -----------------------------------------------------------------------------

def _stdin_lines(fd: int) -> Iterator[tuple[int, bytes] | None]:
    """``(line number, line)`` for every line of ``fd`` (without ``\\n`` or ``\\r\\n``),
    and ``None`` whenever the lines read so far are exhausted and the next read may
    block. Memory: one chunk plus the longest line."""
    pieces: list[bytes] = []
    lineno = 0
    while True:
        chunk = os.read(fd, _CHUNK_BYTES)
        if not chunk:
            break
        if b"\n" not in chunk:
            pieces.append(chunk)
            continue
        if pieces:
            pieces.append(chunk)
            chunk = b"".join(pieces)
            pieces = []
        lines = chunk.split(b"\n")
        rest = lines.pop()
        if rest:
            pieces.append(rest)
        for line in lines:
            lineno += 1
            yield lineno, line[:-1] if line.endswith(b"\r") else line
        yield None
    if pieces:
        line = b"".join(pieces)
        yield lineno + 1, line[:-1] if line.endswith(b"\r") else line


class _LineParser:
    """Turns a line into ``(key, value)`` for the producer, per ``--format`` and
    ``--key-format``: a key before a separator is text (bytes as they are for
    ``--key-format bytes``), a key field is the JSON value of the field."""

    def __init__(self, fmt: str, separator: str | None, field: str | None,
                 key_format: str = "msgpack") -> None:
        self.format = fmt
        self.separator = separator.encode("utf-8") if separator is not None else None
        self.field = field
        self.key_format = key_format

    def __call__(self, lineno: int, line: bytes) -> tuple[Any, Any] | None:
        """The key and value of a line, or None for a blank line of JSON input."""
        if self.format != "text" and not line.strip():
            return None
        key: Any = None
        if self.separator is not None:
            raw_key, found, line = line.partition(self.separator)
            if not found:
                raise CliError(f"line {lineno}: no key separator "
                               f"{self.separator.decode('utf-8')!r}")
            if self.key_format == "bytes":
                key = raw_key
            else:
                try:
                    key = raw_key.decode("utf-8")
                except UnicodeDecodeError:
                    raise CliError(f"line {lineno}: the key is not UTF-8 text") from None
        if self.format == "text":
            return key, line
        try:
            value = json.loads(line)
        except RecursionError:
            raise CliError(f"line {lineno}: not valid JSON here (nested too deeply); use "
                           f"--format text for raw text") from None
        except ValueError as exc:
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
            where = f" at column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
            raise CliError(f"line {lineno}: not valid JSON ({reason}{where}); use "
                           f"--format text for raw text") from None
        if self.field is not None:
            if not isinstance(value, dict) or self.field not in value:
                raise CliError(f"line {lineno}: no field {self.field!r} for the key "
                               "(--key-field needs a JSON object that has it)")
            key = value[self.field]
            if self.key_format == "bytes" and isinstance(key, str):
                key = key.encode("utf-8")
        return key, value


class _ProduceReport:
    """Offsets written: JSON lines on stdout with ``--json``, a summary on stderr."""

    def __init__(self, topic: str, json_lines: bool, quiet: bool) -> None:
        self.topic = topic
        self.json_lines = json_lines
        self.quiet = quiet
        self.count = 0
        self.ranges: dict[int, list[int]] = {}   # partition -> [first offset, last offset]

    def stored(self, pending: deque[tuple[int, Any]]) -> None:
        """Wait for the ``(line, future)`` pairs in order, report each record and take
        it off ``pending``."""
        out = sys.stdout
        reported = bool(pending)
        while pending:
            lineno, future = pending[0]
            md: RecordMetadata = future.result()
            pending.popleft()
            self.count += 1
            span = self.ranges.setdefault(md.partition, [md.offset, md.offset])
            span[0] = min(span[0], md.offset)
            span[1] = max(span[1], md.offset)
            if self.json_lines:
                write_json({"line": lineno, "topic": md.topic, "partition": md.partition,
                            "offset": md.offset, "timestamp_ms": md.timestamp_ms}, out)
        if self.json_lines and reported:
            out.flush()

    def summary(self) -> None:
        if self.quiet:
            return
        parts = []
        for partition, (first, last) in sorted(self.ranges.items()):
            where = f"offset {first}" if first == last else f"offsets {first}-{last}"
            parts.append(f"partition {partition}: {where}")
        detail = f" ({'; '.join(parts)})" if parts else ""
        plural = "" if self.count == 1 else "s"
        sys.stderr.write(f"produced {self.count} record{plural} to {self.topic}{detail}\n")


def produce_records(args: argparse.Namespace) -> int:
    """``produce``: send every line of stdin, flushing whenever input pauses."""
    if args.key_field is not None and args.format == "text":
        raise usage_error(args, "--key-field needs --format json or msgpack")
    if args.key_separator == "":
        raise usage_error(args, "--key-separator must not be empty")
    parse = _LineParser(args.format, args.key_separator, args.key_field, args.key_format)
    serializer = _SERIALIZERS[args.format]
    options = {"fsync": args.fsync} if args.fsync else {}
    report = _ProduceReport(args.topic, args.json, args.quiet)
    headers = list(args.header) or None
    with opened_log(args, **options) as log:
        topic = log.topic(args.topic)  # fail before reading any input
        if args.partition is not None and args.partition >= topic.num_partitions:
            raise CliError(f"topic {args.topic} has partitions 0..{topic.num_partitions - 1}, "
                           f"not {args.partition}")
        fd = sys.stdin.fileno() if sys.stdin is not None else -1
        if fd >= 0 and os.isatty(fd) and not args.quiet:
            sys.stderr.write(f"type records for {args.topic}, one per line; end with "
                             f"Ctrl-D\n")
        with Producer(log, key_serializer=args.key_format, value_serializer=serializer,
                      partitioner=args.partitioner) as producer:
            pending: deque[tuple[int, Any]] = deque()
            try:
                for item in (_stdin_lines(fd) if fd >= 0 else iter(())):
                    if item is None:
                        producer.flush()
                        report.stored(pending)
                        continue
                    lineno, line = item
                    parsed = parse(lineno, line)
                    if parsed is None:
                        continue
                    key, value = parsed
                    try:
                        future = producer.send(args.topic, value, key=key, headers=headers,
                                               partition=args.partition)
                    except EventLogError as exc:
                        raise CliError(f"line {lineno}: {exc}") from exc
                    pending.append((lineno, future))
                producer.flush()
                report.stored(pending)
            except BaseException:
                # What was sent before the failure is stored: report it, then fail.
                try:
                    producer.flush()
                    report.stored(pending)
                except Exception:  # noqa: S110 - the first error is the one to report
                    pass
                report.summary()
                raise
    report.summary()
    return 0


# -- consume -----------------------------------------------------------------------------

class _StopSignals:
    """Ctrl-C and SIGTERM set ``requested`` instead of interrupting: the consumer then
    commits and exits normally. A second signal acts as usual."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        signal.signal(signum, self._previous[signum])

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class _Output:
    """Writes records in the chosen format and tracks what reached stdout."""

    def __init__(self, args: argparse.Namespace, fmt: str, template: str | None) -> None:
        self.out = sys.stdout
        self.format = fmt
        self.template = template
        value_format = args.value_format
        self.value = Decoder(value_format, "value", sys.stderr)
        self.key = Decoder(args.key_format, "key", sys.stderr)
        self.count = 0
        self.printed: dict[TopicPartition, int] = {}    # next offset, written
        self.delivered: dict[TopicPartition, int] = {}  # next offset, flushed

    def write(self, records: list[Record]) -> None:
        out = self.out
        fmt = self.format
        printed = self.printed
        for r in records:
            where = (r.topic, r.partition, r.offset)
            value = self.value(r.value, *where)
            if fmt == "value":
                out.write(show(value) + "\n")
            else:
                key = self.key(r.key, *where)
                if fmt == "json":
                    write_json({"topic": r.topic, "partition": r.partition,
                                "offset": r.offset, "timestamp_ms": r.timestamp_ms,
                                "timestamp": iso_ms(r.timestamp_ms), "key": key,
                                "value": value, "headers": [list(h) for h in r.headers]},
                               out)
                else:
                    assert self.template is not None
                    fields = {"topic": r.topic, "partition": r.partition, "offset": r.offset,
                              "timestamp_ms": r.timestamp_ms,
                              "timestamp": iso_ms(r.timestamp_ms), "key": Field(key),
                              "value": Field(value), "headers": Field(dict(r.headers))}
                    out.write(render_template(self.template, fields) + "\n")
            printed[TopicPartition(r.topic, r.partition)] = r.offset + 1
        self.count += len(records)
        out.flush()
        self.delivered.update(printed)


class _Committer(RebalanceListener):
    """Commits the delivered offsets of a group consumer: every second, at the end, and
    for partitions about to move to another member."""

    def __init__(self, output: _Output) -> None:
        self.output = output
        self.consumer: Consumer | None = None
        self.committed: dict[TopicPartition, int] = {}
        self.next_commit = time.monotonic() + _COMMIT_EVERY_S

    def commit(self, partitions: set[TopicPartition] | None = None) -> None:
        consumer = self.consumer
        if consumer is None:
            return
        self.next_commit = time.monotonic() + _COMMIT_EVERY_S
        owned = consumer.assignment() if partitions is None else partitions
        offsets = {tp: offset for tp, offset in self.output.delivered.items()
                   if tp in owned and self.committed.get(tp) != offset}
        if offsets:
            consumer.commit(offsets)
            self.committed.update(offsets)

    def commit_positions(self) -> None:
        """At a normal end, when every record polled has reached stdout: commit the
        position of every partition owned, also of those nothing was printed from (at
        the position it started from), so the next member of the group resumes there
        rather than at the group's older offset, or at the start."""
        consumer = self.consumer
        if consumer is None:
            return
        for tp in consumer.assignment():
            consumer.position(tp)  # resolve it, for a partition no poll has read yet
        consumer.commit()

    def maybe_commit(self) -> None:
        if time.monotonic() >= self.next_commit:
            self.commit()

    def _forget(self, partitions: set[TopicPartition]) -> None:
        for tp in partitions:
            self.output.printed.pop(tp, None)
            self.output.delivered.pop(tp, None)
            self.committed.pop(tp, None)

    def on_revoked(self, partitions: set[TopicPartition]) -> None:
        self.commit(partitions)
        self._forget(partitions)

    def on_lost(self, partitions: set[TopicPartition]) -> None:
        self._forget(partitions)


def _output_format(args: argparse.Namespace) -> tuple[str, str | None]:
    fmt = args.format
    if args.json:
        if fmt not in (None, "json"):
            raise usage_error(args, f"--json conflicts with --format {fmt}")
        fmt = "json"
    if args.template is not None:
        if fmt not in (None, "template"):
            raise usage_error(args, f"--template conflicts with --format {fmt}")
        return "template", compile_template(args.template)
    if fmt == "template":
        raise usage_error(args, "--format template needs --template")
    return fmt or "value", None


def _assign(log: Log, consumer: Consumer, args: argparse.Namespace) -> None:
    """Standalone: assign the partitions and move to the starting positions."""
    tps = []
    for name in args.topics:
        count = log.topic(name).num_partitions
        for p in args.partition or range(count):
            if p >= count:
                raise CliError(f"topic {name} has partitions 0..{count - 1}, not {p}")
            tps.append(TopicPartition(name, p))
    consumer.assign(tps)
    begin = consumer.beginning_offsets(tps)
    end = consumer.end_offsets(tps)
    found = consumer.offsets_for_times({tp: args.from_time for tp in tps}) \
        if args.from_time is not None else {}
    for tp in tps:
        if args.from_end:
            position = end[tp]
        elif args.offset is not None:
            position = args.offset if args.offset >= 0 else end[tp] + args.offset
        elif args.from_time is not None:
            at = found[tp]
            position = end[tp] if at is None else at
        else:
            position = begin[tp]
        consumer.seek(tp, min(max(position, begin[tp]), end[tp]))


def consume_records(args: argparse.Namespace) -> int:
    """``consume``: poll and print until caught up (or forever with ``--follow``), ``--max``
    records, ``--timeout`` without records, or a stop signal."""
    fmt, template = _output_format(args)
    if args.group is not None:
        for option, given in (("--offset", args.offset is not None),
                              ("--from-time", args.from_time is not None),
                              ("--partition", bool(args.partition))):
            if given:
                raise usage_error(args, f"{option} cannot be used with --group (a group "
                                        "starts from its committed offsets; move them with "
                                        "'eventlog groups reset-offsets')")
    output = _Output(args, fmt, template)
    committer = _Committer(output)
    # Alone it only reads (read_only: a read-only mount, beside writers); a group member
    # writes its membership and commits.
    with opened_log(args, read_only=args.group is None) as log:
        for name in args.topics:
            log.topic(name)  # unknown or invalid topic: fail now
        consumer = Consumer(log, group_id=args.group, enable_auto_commit=False,
                            auto_offset_reset="latest" if args.from_end else "earliest",
                            key_deserializer="bytes", value_deserializer="bytes")
        with consumer, _StopSignals() as stop:
            if args.group is not None:
                committer.consumer = consumer
                consumer.subscribe(args.topics, listener=committer)
                for tp in consumer.assignment():
                    consumer.position(tp)  # "--from-end" means the end as of now
            else:
                _assign(log, consumer, args)
            _consume_loop(consumer, args, output, committer, stop)
    if not args.quiet:
        group = f" as group {args.group}" if args.group is not None else ""
        plural = "" if output.count == 1 else "s"
        sys.stderr.write(f"consumed {output.count} record{plural}{group}\n")
    return 0


def _consume_loop(consumer: Consumer, args: argparse.Namespace, output: _Output,
                  committer: _Committer, stop: _StopSignals) -> None:
    try:
        _poll_until_done(consumer, args, output, committer, stop)
    except BaseException:
        try:
            committer.commit()  # what reached stdout before the failure
        except Exception:  # noqa: S110 - the first error is the one to report
            pass
        raise
    committer.commit_positions()


def _poll_until_done(consumer: Consumer, args: argparse.Namespace, output: _Output,
                     committer: _Committer, stop: _StopSignals) -> None:
    limit = args.max_records
    idle_s = args.timeout
    slice_s = 0.2 if args.follow else 0.05
    last_record = time.monotonic()
    while not stop.requested:
        want = _POLL_RECORDS if limit is None else min(_POLL_RECORDS, limit - output.count)
        records = consumer.poll(timeout=slice_s, max_records=want)
        now = time.monotonic()
        if records:
            output.write(records)
            last_record = now
            if limit is not None and output.count >= limit:
                return
        else:
            caught_up = not args.follow and all(v == 0 for v in consumer.lag().values())
            if caught_up or (idle_s is not None and now - last_record >= idle_s):
                return
        committer.maybe_commit()
