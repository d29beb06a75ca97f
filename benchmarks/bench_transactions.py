"""Transactions: producer throughput at 1, 10 and 100 records per transaction against a
plain and an idempotent producer, and the cost of read_committed on a topic that never
saw a transaction.

    python benchmarks/bench_transactions.py [--records 20000] [--repeat 5] [--fsync never]

- produce: ~100-byte msgpack dicts, each run in a fresh log; a plain producer (send,
  then flush), an idempotent one, and a transactional one committing every 1, 10 and
  100 records. A transaction costs two fsynced state writes and a marker per
  partition, whatever ``--fsync`` says for the records (docs/transactions.md);
- state writes: transactions of one record with the state in two slots, one fdatasync
  a step (what eventlog does), against the same with every state write made through a
  temp file, fsync, rename and directory fsync (the alternative it replaced), runs
  interleaved;
- consume: the same records read back by a consumer with ``read_uncommitted`` and with
  ``read_committed``, runs interleaved, on a topic without transactions: the two must
  be within noise. Then the same with every record written in transactions of 100, for
  the cost of deciding visibility from the markers.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

from _harness import (
    Result,
    command_line,
    freeze_inputs,
    interleave,
    measure,
    report,
    sample_dicts,
    table,
)

import eventlog
from eventlog import _fileutil, _txn_state


def _rename_write(self: _txn_state.TransactionStore, state: _txn_state.TxnState
                  ) -> tuple[int, int]:
    """A state write through temp file + fsync + rename + directory fsync."""
    body = state.to_body()
    path = self.path(state.transactional_id)
    _fileutil.makedirs(self.directory)
    try:
        _, _, newest = self._load(path)
    except FileNotFoundError:
        newest = None
    seq = newest[1] + 1 if newest else 1
    _fileutil.atomic_write(path, _txn_state._pack_slot(seq, body).ljust(8192, b"\0"))
    return (os.stat(path).st_ino, seq)


def state_writes(count: int, write):
    def run(tmp: str) -> None:
        real = _txn_state.TransactionStore.write
        _txn_state.TransactionStore.write = write
        try:
            produce(list(range(count)), "never", "transactional", 1)(tmp)
        finally:
            _txn_state.TransactionStore.write = real
    return run


def produce(values: list[object], fsync: str, mode: str, per_txn: int = 0):
    def run(tmp: str) -> None:
        with eventlog.open(os.path.join(tmp, "log"), fsync=fsync) as log:
            log.create_topic("t")
            if mode == "transactional":
                with eventlog.Producer(log, transactional_id="bench") as p:
                    p.init_transactions()
                    for start in range(0, len(values), per_txn):
                        p.begin_transaction()
                        for v in values[start:start + per_txn]:
                            p.send("t", v)
                        p.commit_transaction()
            else:
                with eventlog.Producer(log, enable_idempotence=mode == "idempotent") as p:
                    for v in values:
                        p.send("t", v)
                    p.flush()
    return run


def fill(path: str, values: list[object], per_txn: int) -> None:
    with eventlog.open(path, fsync="never") as log:
        log.create_topic("t")
        if per_txn:
            with eventlog.Producer(log, transactional_id="fill") as p:
                p.init_transactions()
                for start in range(0, len(values), per_txn):
                    with p.transaction():
                        for v in values[start:start + per_txn]:
                            p.send("t", v)
        else:
            with eventlog.Producer(log) as p:
                for v in values:
                    p.send("t", v)


def consume(path: str, n: int, isolation: str):
    def run(_: str):
        with eventlog.open(path) as log:
            consumer = eventlog.Consumer(log, "t", max_poll_records=10_000,
                                         isolation_level=isolation)
            start = time.perf_counter()
            got = 0
            while got < n:
                got += len(consumer.poll(timeout=1))
            yield start
            consumer.close()
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--fsync", default="never", choices=["never", "interval", "always"])
    parser.add_argument("--out")
    args = parser.parse_args()
    n = args.records
    values = sample_dicts(n)
    freeze_inputs()

    rows = []
    plain = measure(Result("plain", n), produce(values, args.fsync, "plain"), args.repeat)
    idem = measure(Result("idempotent", n), produce(values, args.fsync, "idempotent"),
                   args.repeat)
    rows.append(("plain send + flush", f"{plain.rate:,.0f}", "1.00"))
    rows.append(("idempotent", f"{idem.rate:,.0f}", f"{idem.rate / plain.rate:.2f}"))
    data: dict[str, float] = {"plain": plain.rate, "idempotent": idem.rate}
    for per_txn in (1, 10, 100):
        count = min(n, 2_000) if per_txn == 1 else n   # a transaction costs fsyncs
        result = measure(Result(f"txn-{per_txn}", count),
                         produce(values[:count], args.fsync, "transactional", per_txn),
                         max(1, args.repeat if per_txn > 1 else min(args.repeat, 3)))
        rows.append((f"transactions of {per_txn}", f"{result.rate:,.0f}",
                     f"{result.rate / plain.rate:.3f}"))
        data[f"txn-{per_txn}"] = result.rate
    body = table(rows, ("producer", "records/s", "vs plain"))

    count = min(n, 300)
    writes = {name: Result(name, count) for name in ("two-slot", "rename")}
    interleave(writes, [("two-slot", state_writes(count, _txn_state.TransactionStore.write)),
                        ("rename", state_writes(count, _rename_write))], args.repeat)
    slot_ms = writes["two-slot"].median / count * 1e3
    rename_ms = writes["rename"].median / count * 1e3
    body += "\n\n" + table([("two slots, one fdatasync a step", f"{slot_ms:.2f}"),
                             ("temp file + fsync + rename + dir fsync", f"{rename_ms:.2f}")],
                            ("transaction state writes", "ms per transaction of 1"))
    data.update({"state_two_slot_ms": slot_ms, "state_rename_ms": rename_ms})

    tmp = tempfile.mkdtemp(prefix="eventlog-bench-txn-")
    plain_path, txn_path = os.path.join(tmp, "plain"), os.path.join(tmp, "txn")
    fill(plain_path, values, 0)
    fill(txn_path, values, 100)
    results = {name: Result(name, n) for name in ("ru", "rc", "ru-txn", "rc-txn")}
    interleave(results, [("ru", consume(plain_path, n, "read_uncommitted")),
                         ("rc", consume(plain_path, n, "read_committed")),
                         ("ru-txn", consume(txn_path, n, "read_uncommitted")),
                         ("rc-txn", consume(txn_path, n, "read_committed"))],
               args.repeat)
    ru, rc = results["ru"], results["rc"]
    rut, rct = results["ru-txn"], results["rc-txn"]
    spread = (max(ru.seconds) - min(ru.seconds)) / ru.median
    consume_rows = [
        ("no transactions", f"{ru.rate:,.0f}", f"{rc.rate:,.0f}",
         f"{rc.rate / ru.rate:.3f}", f"±{spread * 100:.0f}%"),
        ("transactions of 100", f"{rut.rate:,.0f}", f"{rct.rate:,.0f}",
         f"{rct.rate / rut.rate:.3f}", ""),
    ]
    body += "\n\n" + table(consume_rows, ("topic", "read_uncommitted records/s",
                                          "read_committed records/s", "ratio",
                                          "read_uncommitted spread (max-min)/median"))
    data.update({"ru": ru.rate, "rc": rc.rate, "ru_txn": rut.rate, "rc_txn": rct.rate})
    shutil.rmtree(tmp, ignore_errors=True)
    report("Transactions", command_line(), body, args.out, data)


if __name__ == "__main__":
    main()
