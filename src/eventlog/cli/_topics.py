"""``eventlog topics``: create, list, describe, alter and delete topics
(what ``kafka-topics`` does for a cluster).

Settings are given as ``--config name=value`` with the library's names or Kafka's
dotted ones, converted to each setting's type here and range-checked by the library
(``InvalidConfigError``, exit code 1), so a bad value never creates or changes anything.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ..config import TopicConfig
from ..errors import TopicExistsError, UnknownTopicError
from ..log import Log
from ..monitoring import TopicDescription
from ..topic import validate_topic_name
from ._common import (
    CliError,
    key_value,
    opened_log,
    parse_setting,
    positive_int,
    setting_kinds,
    setting_name,
    usage_error,
)
from ._output import human_bytes, human_ms, show_setting, table, write_json

AddParser = Callable[..., argparse.ArgumentParser]

_CONFIG_HELP = ("a topic setting, NAME=VALUE (repeatable): " + ", ".join(sorted(
    setting_kinds())) + "; Kafka's dotted names work too. Sizes take KiB/MiB/GiB, "
    "durations ms/s/min/h/d; none (or -1) means no limit")


def register(add: AddParser) -> None:
    """Add ``topics`` and its subcommands; ``add(name, help=...)`` makes a subparser
    that has the common options."""
    topics = add("topics", help="create, list, describe, alter and delete topics",
                 description="Manage the topics of a log directory.", common=False)
    sub = topics.add_subparsers(dest="topics_command", required=True, metavar="ACTION",
                                title="actions", parser_class=type(topics))

    def action(name: str, help: str, description: str) -> argparse.ArgumentParser:
        return add(name, help=help, description=description, sub=sub)

    create = action("create", "create a topic (and the log directory if needed)",
                    "Create a topic. Creates the log directory if it does not exist.")
    create.add_argument("name", metavar="TOPIC")
    create.add_argument("--partitions", "-p", type=positive_int, default=1, metavar="N",
                        help="number of partitions (default: 1)")
    create.add_argument("--config", "-c", type=key_value, action="append", default=[],
                        metavar="NAME=VALUE", help=_CONFIG_HELP)
    create.add_argument("--if-not-exists", action="store_true",
                        help="succeed without changes when the topic exists")
    create.set_defaults(func=create_topic)

    listing = action("list", "list topics with partitions, records and size",
                     "List the topics of a log directory.")
    listing.set_defaults(func=list_topics)

    describe = action("describe", "show settings and partitions of topics",
                      "Show the settings and the partitions (offsets, size, segments) of "
                      "topics: the given ones, or all.")
    describe.add_argument("names", nargs="*", metavar="TOPIC")
    describe.set_defaults(func=describe_topics)

    alter = action("alter", "change settings or add partitions",
                   "Change a topic's settings, or raise its partition count (partitions "
                   "are never removed).")
    alter.add_argument("name", metavar="TOPIC")
    alter.add_argument("--config", "-c", type=key_value, action="append", default=[],
                       metavar="NAME=VALUE", help=_CONFIG_HELP)
    alter.add_argument("--delete-config", action="append", default=[], metavar="NAME",
                       help="reset a setting to its default (repeatable)")
    alter.add_argument("--partitions", "-p", type=positive_int, metavar="N",
                       help="the new total number of partitions (at least the current one)")
    alter.set_defaults(func=alter_topic)

    delete = action("delete", "delete topics and their records",
                    "Delete topics and all their records. There is no undo.")
    delete.add_argument("names", nargs="+", metavar="TOPIC")
    delete.add_argument("--if-exists", action="store_true",
                        help="succeed when a topic does not exist")
    delete.set_defaults(func=delete_topics)


def _settings(items: Sequence[tuple[str, str]]) -> dict[str, Any]:
    return dict(parse_setting(name, text) for name, text in items)


def create_topic(args: argparse.Namespace) -> int:
    """``topics create``: the topic, with its settings checked before anything is
    created."""
    config = _settings(args.config)
    with opened_log(args, create=True) as log:
        try:
            log.create_topic(args.name, args.partitions, **config)
            created = True
        except TopicExistsError:
            if not args.if_not_exists:
                raise
            created = False
        description = log.describe_topic(args.name)
    if args.json:
        write_json({**description.to_dict(), "created": created}, sys.stdout)
    elif not args.quiet:
        if created:
            sys.stdout.write(f"created topic {args.name} with {args.partitions} "
                             f"partition{'s' if args.partitions != 1 else ''}\n")
        else:
            sys.stdout.write(f"topic {args.name} exists already; nothing changed\n")
    return 0


def _summary(description: TopicDescription) -> dict[str, Any]:
    return {"name": description.name, "partitions": len(description.partitions),
            "records": sum(p.records for p in description.partitions),
            "size_bytes": description.size_bytes,
            "cleanup_policy": description.config.cleanup_policy,
            "retention_ms": description.config.retention_ms}


def list_topics(args: argparse.Namespace) -> int:
    """``topics list``: one row per topic."""
    with opened_log(args, read_only=True) as log:
        rows = [_summary(log.describe_topic(name)) for name in log.topics()]
    if args.json:
        write_json(rows, sys.stdout)
        return 0
    if not rows:
        if not args.quiet:
            sys.stderr.write("no topics\n")
        return 0
    table(["TOPIC", "PARTITIONS", "RECORDS", "SIZE", "CLEANUP", "RETENTION"],
          [[r["name"], r["partitions"], r["records"], human_bytes(r["size_bytes"]),
            r["cleanup_policy"], human_ms(r["retention_ms"])
            if r["retention_ms"] is not None else "forever"] for r in rows], sys.stdout)
    return 0


def _describe(log: Log, names: Sequence[str]) -> list[TopicDescription]:
    return [log.describe_topic(name) for name in (names or log.topics())]


def _print_description(description: TopicDescription) -> None:
    out = sys.stdout
    parts = description.partitions
    records = sum(p.records for p in parts)
    out.write(f"topic {description.name}: {len(parts)} partition"
              f"{'s' if len(parts) != 1 else ''}, {records} records, "
              f"{human_bytes(description.size_bytes)}\n")
    defaults = TopicConfig()
    config = description.config.to_dict()
    width = max(map(len, config))
    for name, value in config.items():
        marker = "" if value == getattr(defaults, name) else "  (set)"
        out.write(f"  {name.ljust(width)}  {show_setting(name, value)}{marker}\n")
    out.write("\n")
    table(["PARTITION", "START", "END", "RECORDS", "SIZE", "SEGMENTS"],
          [[p.partition, p.start_offset, p.end_offset, p.records, human_bytes(p.size_bytes),
            p.segments] for p in parts], out)


def describe_topics(args: argparse.Namespace) -> int:
    """``topics describe``: settings (those that differ from the default are marked) and
    a table of partitions per topic."""
    with opened_log(args, read_only=True) as log:
        descriptions = _describe(log, args.names)
    if args.json:
        write_json([d.to_dict() for d in descriptions], sys.stdout)
        return 0
    for i, description in enumerate(descriptions):
        if i:
            sys.stdout.write("\n")
        _print_description(description)
    return 0


def alter_topic(args: argparse.Namespace) -> int:
    """``topics alter``: new settings, reset settings, more partitions."""
    config = _settings(args.config)
    defaults = TopicConfig()
    for name in args.delete_config:
        key = setting_name(name)
        config[key] = getattr(defaults, key)
    if not config and args.partitions is None:
        raise usage_error(args, "nothing to change: give --config, --delete-config or "
                                "--partitions")
    with opened_log(args) as log:
        topic = log.topic(args.name)
        current = topic.num_partitions
        if args.partitions is not None and args.partitions < current:
            raise CliError(f"topic {args.name} has {current} partitions; the count can "
                           f"only grow (asked for {args.partitions})")
        if config:
            log.alter_topic(args.name, **config)
        if args.partitions is not None and args.partitions > current:
            topic.add_partitions(args.partitions - current)
        description = log.describe_topic(args.name)
    if args.json:
        write_json(description.to_dict(), sys.stdout)
    elif not args.quiet:
        changes = [f"{k}={show_setting(k, v)}" for k, v in config.items()]
        if args.partitions is not None and args.partitions != current:
            changes.append(f"partitions {current} -> {args.partitions}")
        sys.stdout.write(f"altered topic {args.name}: "
                         f"{', '.join(changes) or 'nothing changed'}\n")
    return 0


def delete_topics(args: argparse.Namespace) -> int:
    """``topics delete``: every named topic, or none if one of them is unknown (unless
    ``--if-exists``)."""
    for name in args.names:
        validate_topic_name(name)
    deleted = []
    with opened_log(args) as log:
        missing = [name for name in args.names if name not in log]
        if missing and not args.if_exists:
            log.topic(missing[0])  # the library's error: invalid name or unknown topic
            raise UnknownTopicError(f"topic {missing[0]!r} does not exist in {log.path}")
        for name in args.names:
            if name in missing:
                continue
            try:
                log.delete_topic(name)
            except UnknownTopicError:  # deleted meanwhile by another process
                if not args.if_exists:
                    raise
                continue
            deleted.append(name)
    if args.json:
        write_json({"deleted": deleted}, sys.stdout)
    elif not args.quiet:
        for name in deleted:
            sys.stdout.write(f"deleted topic {name}\n")
    return 0
