"""The ``eventlog`` command (also ``python -m eventlog``)."""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Sequence

import msgpack

from . import __version__
from . import open as open_log


def _demo(args: argparse.Namespace) -> int:
    """Write orders into a local log directory and read them back."""
    path = args.dir
    if args.fresh:
        shutil.rmtree(path, ignore_errors=True)
    out = sys.stdout
    with open_log(path) as log:
        topic = log.topic("orders") if "orders" in log else log.create_topic(
            "orders", partitions=3, segment_bytes=1 << 20)
        start = time.perf_counter()
        per_partition: dict[int, list[bytes]] = {p.id: [] for p in topic.partitions}
        for i in range(args.orders):
            order = {"id": i, "customer": f"c{i % 50}", "amount": round(5 + (i % 97) * 1.5, 2)}
            per_partition[i % 3].append(msgpack.packb(order))
        first = {pid: topic.partition(pid).append(batch)
                 for pid, batch in per_partition.items() if batch}
        wrote = time.perf_counter() - start
        out.write(f"wrote {args.orders} orders to {path} in {wrote * 1000:.1f} ms\n")
        total = 0.0
        count = 0
        for part in topic.partitions:
            records = part.read(first.get(part.id, part.start_offset), max_records=args.orders)
            amounts = [msgpack.unpackb(r.value)["amount"] for r in records]
            total += sum(amounts)
            count += len(amounts)
            out.write(f"  partition {part.id}: offsets {part.start_offset}..{part.end_offset}, "
                      f"read {len(records)} records\n")
        out.write(f"read back {count} orders, total amount {total:.2f}\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eventlog", description="An embeddable event log.")
    parser.add_argument("--version", action="version", version=f"eventlog {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="write and read back orders in a local log directory")
    demo.add_argument("--dir", default="demo-log", help="log directory (default: demo-log)")
    demo.add_argument("--orders", type=int, default=3000, help="orders to write")
    demo.add_argument("--fresh", action="store_true", help="delete the directory first")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result
