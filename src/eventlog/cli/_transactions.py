"""``eventlog transactions``: list, describe and abort transactional ids
(``kafka-transactions.sh``).

``abort`` ends a hung transaction now, whatever its age, exactly as a timeout would:
abort markers in every partition it touched (``read_committed`` consumers held at its
first offset move on) and its producer fenced. A transaction being committed is
completed instead (its decision was written). The reading actions open the log
read-only.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from .._txn_admin import TransactionDescription
from ._common import opened_log
from ._output import iso_ms, table, write_json

AddParser = Callable[..., argparse.ArgumentParser]


def register(add: AddParser) -> None:
    txns = add("transactions", help="list, describe and abort transactional ids",
               description="Inspect the transactional ids of a log directory and abort "
                           "hung transactions.", common=False)
    sub = txns.add_subparsers(dest="transactions_command", required=True, metavar="ACTION",
                              title="actions", parser_class=type(txns))
    listing = add("list", help="every transactional id with its state",
                  description="List the transactional ids: producer id, epoch, state, "
                              "partitions of the open transaction, and whether it timed "
                              "out.", sub=sub)
    listing.set_defaults(func=list_transactions)
    describe = add("describe", help="the state of one transactional id",
                   description="Show a transactional id's producer id and epoch, its "
                               "state, the partitions its open transaction touched, when "
                               "it began and its timeout.", sub=sub)
    describe.add_argument("transactional_id", metavar="ID")
    describe.set_defaults(func=describe_transaction)
    abort = add("abort", help="abort a hung transaction now (fences its producer)",
                description="Abort the open transaction of ID now: abort markers in "
                            "every partition it touched, and its producer fenced.",
                sub=sub)
    abort.add_argument("transactional_id", metavar="ID")
    abort.set_defaults(func=abort_transaction)


def _doc(d: TransactionDescription) -> dict[str, Any]:
    return {"transactional_id": d.transactional_id, "producer_id": d.producer_id,
            "producer_epoch": d.producer_epoch, "state": d.state,
            "partitions": [[tp.topic, tp.partition] for tp in d.partitions],
            "start_ms": d.start_ms, "timeout_ms": d.timeout_ms, "updated_ms": d.updated_ms,
            "timed_out": d.timed_out}


def _show(docs: list[dict[str, Any]], args: argparse.Namespace) -> None:
    if args.json:
        write_json(docs, sys.stdout)
        return
    table(["TRANSACTIONAL_ID", "PRODUCER_ID", "EPOCH", "STATE", "PARTITIONS", "STARTED",
           "TIMEOUT_MS", "TIMED_OUT"],
          [[d["transactional_id"], d["producer_id"], d["producer_epoch"], d["state"],
            ",".join(f"{t}[{p}]" for t, p in d["partitions"]) or "-",
            iso_ms(d["start_ms"]) if d["start_ms"] >= 0 else "-", d["timeout_ms"],
            "yes" if d["timed_out"] else "no"] for d in docs], sys.stdout)


def list_transactions(args: argparse.Namespace) -> int:
    """``transactions list``."""
    with opened_log(args, read_only=True) as log:
        docs = [_doc(d) for d in log.transactions()]
    if docs or args.json:
        _show(docs, args)
    elif not args.quiet:
        sys.stderr.write("no transactional ids\n")
    return 0


def describe_transaction(args: argparse.Namespace) -> int:
    """``transactions describe ID``."""
    with opened_log(args, read_only=True) as log:
        doc = _doc(log.describe_transaction(args.transactional_id))
    _show([doc], args)
    return 0


def abort_transaction(args: argparse.Namespace) -> int:
    """``transactions abort ID``."""
    with opened_log(args, read_only=False) as log:
        doc = _doc(log.abort_transaction(args.transactional_id))
    _show([doc], args)
    if not args.quiet:
        sys.stderr.write(f"transactional id {args.transactional_id!r}: no transaction "
                         "open now\n")
    return 0
