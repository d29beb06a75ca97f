"""``eventlog groups``: list, describe, lag, status, reset-offsets and delete consumer
groups (``kafka-consumer-groups``, and Burrow's status check).

``reset-offsets`` is a dry run unless ``--execute`` is given, as in Kafka: it prints
the offsets it would set and changes nothing. Like ``delete``, it is refused (exit
code 1) while the group has live members, since they would overwrite the new offsets
with their next commit.

``status`` exits with the group's status, as a monitoring check (Nagios, cron, CI)
expects: 0 OK, 1 WARN, 2 ERR; every failure, a malformed command line included, exits
``EXIT_UNKNOWN`` (3, Nagios's UNKNOWN) so that it never reads as a status.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from .._types import TopicPartition
from ..errors import UnknownGroupError, UnknownTopicError
from ..log import GroupDescription, Log
from ..monitoring import HISTORY_MAX, STATUS_VALUES, GroupStatus
from ._common import opened_log, point_in_time
from ._output import table, write_json

AddParser = Callable[..., argparse.ArgumentParser]

EXIT_UNKNOWN = 3   # groups status: no status could be given (docs/cli.md)


def register(add: AddParser) -> None:
    groups = add("groups", help="list, describe, lag, reset-offsets and delete consumer "
                                "groups",
                 description="Administer the consumer groups of a log directory.",
                 common=False)
    sub = groups.add_subparsers(dest="groups_command", required=True, metavar="ACTION",
                                title="actions", parser_class=type(groups))

    listing = add("list", help="list groups with state, members and lag",
                  description="List the consumer groups: state, live members, committed "
                              "partitions, total lag.", sub=sub)
    listing.set_defaults(func=list_groups)

    describe = add("describe", help="members, assignment, offsets and lag of groups",
                   description="Show a group's members (alive or not, with their "
                               "partitions) and, per partition, the committed offset, the "
                               "end offset, the lag and the owner.", sub=sub)
    describe.add_argument("groups", nargs="+", metavar="GROUP")
    describe.set_defaults(func=describe_groups)

    lag = add("lag", help="lag per partition (end offset - committed offset)",
              description="Show the lag of groups per partition: the end offset minus the "
                          "committed offset. Without GROUP, every group.", sub=sub)
    lag.add_argument("groups", nargs="*", metavar="GROUP")
    lag.set_defaults(func=lag_groups)

    status = add("status", help="the group's status by Burrow's rules (exit 0 OK, 1 WARN, "
                                "2 ERR)",
                 description="Judge each partition of a group over its last commits, by "
                             "LinkedIn Burrow's rules (OK, WARN, STALL, STOP), and the "
                             "group as OK, WARN or ERR. Exits 0 for OK, 1 for WARN, 2 for "
                             "ERR, and 3 when no status can be given (unknown group, "
                             "malformed command line, any error).", sub=sub)
    status.add_argument("group", metavar="GROUP")
    status.add_argument("--window", type=int, default=10, metavar="N",
                        help=f"judge each partition over its last N commits (2..{HISTORY_MAX}; "
                             "default 10)")
    status.set_defaults(func=group_status, error_exit=EXIT_UNKNOWN)

    reset = add("reset-offsets", help="set a group's committed offsets (dry run unless "
                                      "--execute)",
                description="Set the committed offsets of a group that has no live "
                            "member. Prints the new offsets; changes them only with "
                            "--execute. Offsets are clamped to each partition's range.",
                sub=sub)
    reset.add_argument("group", metavar="GROUP")
    reset.add_argument("--topic", "-t", action="append", default=[], metavar="TOPIC",
                       help="reset every partition of TOPIC (repeatable; default: the "
                            "partitions the group has committed)")
    target = reset.add_mutually_exclusive_group(required=True)
    target.add_argument("--to-earliest", action="store_true",
                        help="to the first stored offset")
    target.add_argument("--to-latest", action="store_true", help="to the end offset")
    target.add_argument("--to-offset", type=int, metavar="N", help="to offset N")
    target.add_argument("--to-datetime", type=point_in_time, metavar="TIME",
                        help="to the first record at or after TIME (as consume "
                             "--from-time)")
    target.add_argument("--shift-by", type=int, metavar="N",
                        help="by N from the committed offset (negative: back)")
    mode = reset.add_mutually_exclusive_group()
    mode.add_argument("--execute", action="store_true", help="change the offsets")
    mode.add_argument("--dry-run", action="store_true",
                      help="only show the new offsets (the default)")
    reset.set_defaults(func=reset_offsets)

    delete = add("delete", help="delete groups and their committed offsets",
                 description="Delete consumer groups that have no live member.", sub=sub)
    delete.add_argument("groups", nargs="+", metavar="GROUP")
    delete.set_defaults(func=delete_groups)


def _end_offset(log: Log, tp: TopicPartition) -> int | None:
    try:
        return log.topic(tp.topic).partition(tp.partition).end_offset
    except (UnknownTopicError, IndexError):
        return None


def _tp(tp: TopicPartition) -> str:
    return f"{tp.topic}[{tp.partition}]"


def _partition_rows(log: Log, desc: GroupDescription) -> list[dict[str, Any]]:
    """Every partition of the group's topics (``desc.lag``'s), and any other it owns or
    committed, with the lag by the one rule of ``Log.group_lag``."""
    owners = {tp: m.member_id for m in desc.members if m.alive for tp in m.assignment}
    statuses = desc.status.partitions
    rows = []
    for tp in sorted(set(desc.offsets) | set(owners) | set(statuses) | set(desc.lag)):
        judged = statuses.get(tp)
        rows.append({"topic": tp.topic, "partition": tp.partition,
                     "committed": desc.offsets.get(tp), "end_offset": _end_offset(log, tp),
                     "lag": desc.lag.get(tp),
                     "status": judged.status if judged is not None else None,
                     "lag_ms": judged.lag_ms if judged is not None else None,
                     "member": owners.get(tp)})
    return rows


def _group_dict(log: Log, desc: GroupDescription) -> dict[str, Any]:
    return {"group_id": desc.group_id, "state": desc.state, "generation": desc.generation,
            "strategy": desc.strategy, "status": desc.status.status,
            "members": [{"member_id": m.member_id, "instance_id": m.instance_id,
                         "client": m.client, "client_id": m.client_id,
                         "topics": m.topics, "alive": m.alive,
                         "assignment": [{"topic": tp.topic, "partition": tp.partition}
                                        for tp in m.assignment]}
                        for m in desc.members],
            "partitions": _partition_rows(log, desc)}


def list_groups(args: argparse.Namespace) -> int:
    """``groups list``: one row per group."""
    rows = []
    with opened_log(args) as log:
        for group in log.groups():
            desc = log.describe_group(group)
            rows.append({"group_id": group, "state": desc.state,
                         "members": sum(m.alive for m in desc.members),
                         "partitions": len(desc.offsets), "lag": sum(desc.lag.values())})
    if args.json:
        write_json(rows, sys.stdout)
    elif rows:
        table(["GROUP", "STATE", "MEMBERS", "PARTITIONS", "LAG"],
              [list(r.values()) for r in rows], sys.stdout)
    elif not args.quiet:
        sys.stderr.write("no consumer groups\n")
    return 0


def describe_groups(args: argparse.Namespace) -> int:
    """``groups describe``: members, then partitions with offsets, lag and owner."""
    with opened_log(args) as log:
        docs = [_group_dict(log, log.describe_group(group)) for group in args.groups]
    if args.json:
        write_json(docs, sys.stdout)
        return 0
    out = sys.stdout
    for i, doc in enumerate(docs):
        if i:
            out.write("\n")
        live = sum(m["alive"] for m in doc["members"])
        out.write(f"group {doc['group_id']}: {doc['state']}, generation "
                  f"{doc['generation']}, strategy {doc['strategy'] or '-'}, {live} live "
                  f"member{'s' if live != 1 else ''}, status {doc['status']}\n")
        if doc["members"]:
            out.write("\n")
            table(["MEMBER", "INSTANCE", "CLIENT-ID", "CLIENT", "ALIVE", "PARTITIONS"],
                  [[m["member_id"], m["instance_id"], m["client_id"], m["client"],
                    "yes" if m["alive"] else "no",
                    ", ".join(_tp(TopicPartition(a["topic"], a["partition"]))
                              for a in m["assignment"]) or "-"]
                   for m in doc["members"]], out)
        if doc["partitions"]:
            out.write("\n")
            table(["TOPIC", "PARTITION", "COMMITTED", "END", "LAG", "STATUS", "LAG_MS",
                   "MEMBER"], [list(r.values()) for r in doc["partitions"]], out)
    return 0


def lag_groups(args: argparse.Namespace) -> int:
    """``groups lag``: committed offset, end offset and lag of every partition of the
    groups' topics (a partition never committed shows no offset and its lag from the
    start, as ``Log.group_lag`` counts it)."""
    rows: list[dict[str, Any]] = []
    with opened_log(args) as log:
        for group in args.groups or log.groups():
            offsets = log.group_offsets(group)
            for tp, lag in sorted(log.group_lag(group).items()):
                rows.append({"group_id": group, "topic": tp.topic,
                             "partition": tp.partition, "committed": offsets.get(tp),
                             "end_offset": _end_offset(log, tp), "lag": lag})
    if args.json:
        write_json(rows, sys.stdout)
        return 0
    if not rows:
        if not args.quiet:
            sys.stderr.write("no committed offsets\n")
        return 0
    table(["GROUP", "TOPIC", "PARTITION", "COMMITTED", "END", "LAG"],
          [list(r.values()) for r in rows], sys.stdout)
    totals: dict[str, int] = {}
    for r in rows:
        totals[r["group_id"]] = totals.get(r["group_id"], 0) + (r["lag"] or 0)
    sys.stdout.write("\n")
    for group, total in totals.items():
        sys.stdout.write(f"group {group}: total lag {total}\n")
    return 0


def group_status(args: argparse.Namespace) -> int:
    """``groups status``: the group's status, one row per partition; the exit code is
    the status (``error_exit`` makes every failure ``EXIT_UNKNOWN``)."""
    with opened_log(args) as log:
        status = log.group_status(args.group, window=args.window)
    if args.json:
        write_json(status.to_dict(), sys.stdout)
    else:
        _write_status(status)
    return STATUS_VALUES[status.status]


def _write_status(status: GroupStatus) -> None:
    out = sys.stdout
    counts: dict[str, int] = {}
    for ps in status.partitions.values():
        counts[ps.status] = counts.get(ps.status, 0) + 1
    summary = ", ".join(f"{n} {name}" for name, n in sorted(
        counts.items(), key=lambda item: -STATUS_VALUES[item[0]]))
    out.write(f"group {status.group_id}: {status.status} ({summary or 'no partitions'}; "
              f"window {status.window} commits)\n")
    if status.partitions:
        out.write("\n")
        table(["TOPIC", "PARTITION", "STATUS", "LAG", "LAG_MS", "COMMITTED", "END",
               "COMMITS"],
              [[ps.topic, ps.partition, ps.status, ps.lag, ps.lag_ms, ps.committed,
                ps.end_offset, ps.commits]
               for _, ps in sorted(status.partitions.items())], out)


def reset_offsets(args: argparse.Namespace) -> int:
    """``groups reset-offsets``: a dry run unless ``--execute``."""
    execute = bool(args.execute)
    with opened_log(args) as log:
        try:
            current = log.group_offsets(args.group)
        except UnknownGroupError:
            if not args.topic:
                raise
            current = {}  # offsets for a new group, as Kafka allows
        new = log.reset_group_offsets(
            args.group, args.topic or None, to_earliest=args.to_earliest,
            to_latest=args.to_latest, to_offset=args.to_offset,
            to_timestamp_ms=args.to_datetime, shift_by=args.shift_by,
            dry_run=not execute)
    rows = [{"topic": tp.topic, "partition": tp.partition, "current": current.get(tp),
             "new": offset} for tp, offset in sorted(new.items())]
    if args.json:
        write_json({"group_id": args.group, "executed": execute, "offsets": rows},
                   sys.stdout)
    elif rows:
        table(["TOPIC", "PARTITION", "CURRENT", "NEW"], [list(r.values()) for r in rows],
              sys.stdout)
    if not args.quiet:
        if not rows:
            sys.stderr.write(f"group {args.group} has no offsets to reset (name the "
                             "topics with --topic)\n")
        elif execute:
            sys.stderr.write(f"offsets of group {args.group} changed\n")
        else:
            sys.stderr.write("dry run: nothing changed; add --execute to change the "
                             "offsets\n")
    return 0


def delete_groups(args: argparse.Namespace) -> int:
    """``groups delete``: every named group (all must exist)."""
    with opened_log(args) as log:
        known = set(log.groups())
        for group in args.groups:
            if group not in known:
                raise UnknownGroupError(f"consumer group {group!r} does not exist in "
                                        f"{log.path}")
        for group in args.groups:
            log.delete_group(group)
    if args.json:
        write_json({"deleted": list(args.groups)}, sys.stdout)
    elif not args.quiet:
        for group in args.groups:
            sys.stdout.write(f"deleted group {group}\n")
    return 0
