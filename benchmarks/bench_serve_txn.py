"""confluent-kafka's transactional producer through ``eventlog serve``, side by side
with a real Kafka broker.

    python benchmarks/bench_serve_txn.py [--transactions 200] [--records 10] [--repeat 3]
                                         [--no-kafka]

- commit: ``--transactions`` transactions of ``--records`` 100-byte records each to one
  partition (begin, produce, commit); transactions/s. Each commit is a round of
  EndTxn: on eventlog, the decision and the completed state fsynced, a marker appended;
- read_committed: a consumer with ``isolation.level=read_committed`` reads them all
  back from offset 0 (the markers skipped); records/s.

Each repeat runs every target in turn; the figures are medians over the repeats. The
targets are those of bench_serve.py: ``eventlog serve`` in a process of its own, and
an Apache Kafka node (tests/kafka_broker.py; skipped with ``--no-kafka`` or where no
Java/Maven is available, and the report says so).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from contextlib import ExitStack

from _harness import command_line, report, table
from bench_serve import create, eventlog_process_target, kafka_target
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

VALUE = b"v" * 100


def commit(bootstrap: str, topic: str, transactions: int, records: int) -> float:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1,
                  "transactional.id": f"bench-{uuid.uuid4().hex[:8]}"})
    p.init_transactions(30)
    start = time.perf_counter()
    for _ in range(transactions):
        p.begin_transaction()
        for _ in range(records):
            p.produce(topic, value=VALUE)
        p.commit_transaction(30)
    return time.perf_counter() - start


def read_committed(bootstrap: str, topic: str, n: int) -> float:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"b-{uuid.uuid4()}",
                  "isolation.level": "read_committed", "enable.auto.commit": False,
                  "enable.partition.eof": True})
    c.assign([TopicPartition(topic, 0, 0)])
    got = 0
    start = time.perf_counter()
    deadline = time.monotonic() + 120
    try:
        while got < n and time.monotonic() < deadline:
            for m in c.consume(num_messages=10_000, timeout=0.05):
                if m.error() is None:
                    got += 1
                elif m.error().code() != KafkaError._PARTITION_EOF:
                    raise RuntimeError(m.error())
        if got < n:
            raise RuntimeError(f"read {got} of {n} committed records")
        return time.perf_counter() - start
    finally:
        c.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transactions", type=int, default=200)
    parser.add_argument("--records", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-kafka", action="store_true")
    parser.add_argument("--out")
    args = parser.parse_args()
    notes = []
    with ExitStack() as stack:
        targets = {"eventlog serve": stack.enter_context(eventlog_process_target())}
        if args.no_kafka:
            notes.append("Kafka broker: not measured (--no-kafka)")
        else:
            try:
                targets["Apache Kafka"] = stack.enter_context(kafka_target())
            except RuntimeError as exc:
                notes.append(f"Kafka broker: not measured ({exc})")
        commit_s: dict[str, list[float]] = {name: [] for name in targets}
        read_s: dict[str, list[float]] = {name: [] for name in targets}
        n = args.transactions * args.records
        for _ in range(args.repeat):
            for name, bootstrap in targets.items():
                topic = create(bootstrap)
                commit_s[name].append(commit(bootstrap, topic, args.transactions,
                                             args.records))
                read_s[name].append(read_committed(bootstrap, topic, n))
    results = {name: {"transactions_per_s": args.transactions / statistics.median(
                          commit_s[name]),
                      "read_committed_rps": n / statistics.median(read_s[name])}
               for name in targets}
    rows = [(name, f"{r['transactions_per_s']:,.0f}", f"{r['read_committed_rps']:,.0f}")
            for name, r in results.items()]
    body = table(rows, ("target", f"transactions/s ({args.records} records each)",
                        "read_committed records/s"))
    if notes:
        body += "\n\n" + "\n".join(f"- {note}" for note in notes)
    report(f"Kafka transactions through eventlog serve ({args.transactions} transactions "
           f"of {args.records} records)", command_line(), body, args.out, data=results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
