"""Produce and consume throughput: eventlog against peers, on the same records.

    python benchmarks/bench_peers.py [--records 200000] [--slow-records 5000]
                                     [--repeat 5] [--out FILE]

Every workload starts from the same ~100-byte Python dicts (``_harness.sample_dicts``)
and encodes them with msgpack, so each side pays for serialization; reads decode them
back to dicts. Timings cover the write or read loop only: opening, creating tables or
topics, and the final close (which fsyncs, for eventlog and lmdb) are outside them. No
workload fsyncs inside the loop, except persist-queue, whose settings are its defaults.

Writers, in batches of ``BATCH`` (1000) records where the peer batches:

- raw loop (packb) / (Packer): ``msgpack.packb`` (or a reused ``Packer``) + 4-byte
  length + ``write`` to a buffered file: the floor for Python (bench_producer.py);
- eventlog ``send()`` + ``flush()`` and ``send_batch()``, ``fsync="never"``;
- sqlite3: WAL, ``synchronous=NORMAL``, one table ``(id INTEGER PRIMARY KEY, value
  BLOB)``; ``execute`` per record or ``executemany`` of 1000 rows, one transaction per
  1000 rows;
- lmdb: ``sync=False, metasync=False`` (no fsync per commit); 8-byte big-endian offset
  keys, ``put(append=True)`` per record or ``Cursor.putmulti``, one write transaction
  per 1000 records;
- diskcache ``Deque``: ``append`` per record (one SQLite transaction each, its defaults:
  WAL, ``synchronous=NORMAL``), or 1000 appends inside ``Deque.transact()``;
- persist-queue ``SQLiteQueue`` with its msgpack serializer: ``auto_commit=True`` (its
  default: a commit per ``put``, SQLite's default ``synchronous=FULL``, so an fsync of
  the WAL per record), or ``auto_commit=False`` with ``task_done()`` every 1000 puts.

diskcache and persist-queue run on ``--slow-records`` records (they are 100x slower);
rates are per second either way.

Readers, each over a store written once before the timed runs:

- raw read loop: read the file, walk the length prefixes, ``msgpack.unpackb`` each
  (bench_consumer.py);
- eventlog ``Consumer.poll()`` with ``max_poll_records=10_000``;
- sqlite3 ``SELECT value FROM log ORDER BY id``; lmdb: a cursor over the database;
  diskcache: iterating the ``Deque``; persist-queue: ``get()`` until empty (a queue
  consumes destructively, so each run refills it first, outside the timing).
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sqlite3
import struct
import tempfile
import time
from collections.abc import Callable

import msgpack
from _harness import (
    Result,
    command_line,
    freeze_inputs,
    interleave,
    report,
    sample_dicts,
    table,
)
from bench_consumer import consumer_poll, raw_read
from bench_producer import producer_bulk, producer_send, raw_loop

import eventlog

BATCH = 1000
_KEY = struct.Struct(">Q")  # big-endian, so lmdb's byte order is offset order
_LEN = struct.Struct("<I")
PEERS = {"sqlite3": "sqlite3", "lmdb": "lmdb", "diskcache": "diskcache",
         "persist-queue": "persistqueue"}
INSTALL = "pip install 'eventlog[bench]'"


def load_peers() -> tuple[dict[str, object], dict[str, str]]:
    """The peer modules that import, and why the others do not."""
    found, missing = {}, {}
    for name, module in PEERS.items():
        try:
            found[name] = importlib.import_module(module)
        except ImportError as exc:
            missing[name] = f"not installed ({exc}); `{INSTALL}` installs it"
    return found, missing


def chunks(items: list, size: int = BATCH):
    for i in range(0, len(items), size):
        yield items[i:i + size]


# -- sqlite3 -----------------------------------------------------------------------

def sqlite_connect(path: str) -> sqlite3.Connection:
    con = sqlite3.connect(path, isolation_level=None)  # transactions made explicit
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    con.execute("CREATE TABLE IF NOT EXISTS log (id INTEGER PRIMARY KEY, value BLOB)")
    return con


def sqlite_write(dicts, many: bool):
    def run(tmp: str):
        con = sqlite_connect(os.path.join(tmp, "log.db"))
        packb, execute = msgpack.packb, con.execute
        sql = "INSERT INTO log (value) VALUES (?)"
        start = time.perf_counter()
        for chunk in chunks(dicts):
            execute("BEGIN")
            if many:
                con.executemany(sql, [(packb(d),) for d in chunk])
            else:
                for d in chunk:
                    execute(sql, (packb(d),))
            execute("COMMIT")
        yield start
        con.close()
    return run


def sqlite_read(path: str, n: int):
    def run(_: str) -> None:
        con = sqlite3.connect(path)
        unpackb = msgpack.unpackb
        out = [unpackb(v) for (v,) in con.execute("SELECT value FROM log ORDER BY id")]
        con.close()
        assert len(out) == n
    return run


# -- lmdb --------------------------------------------------------------------------

def lmdb_env(lmdb, path: str, n: int):
    # map_size is a limit on the file, not an allocation.
    return lmdb.open(path, map_size=max(1 << 30, n * 1024), sync=False, metasync=False)


def lmdb_write(lmdb, dicts, multi: bool):
    def run(tmp: str):
        env = lmdb_env(lmdb, os.path.join(tmp, "lmdb"), len(dicts))
        packb, key = msgpack.packb, _KEY.pack
        offset = 0
        start = time.perf_counter()
        for chunk in chunks(dicts):
            with env.begin(write=True) as txn:
                if multi:
                    txn.cursor().putmulti(
                        [(key(offset + i), packb(d)) for i, d in enumerate(chunk)],
                        append=True)
                else:
                    put = txn.put
                    for i, d in enumerate(chunk):
                        put(key(offset + i), packb(d), append=True)
            offset += len(chunk)
        yield start
        env.sync(True)
        env.close()
    return run


def lmdb_read(lmdb, path: str, n: int):
    def run(_: str) -> None:
        env = lmdb.open(path, readonly=True, lock=False)
        unpackb = msgpack.unpackb
        with env.begin() as txn:
            out = [unpackb(v) for v in txn.cursor().iternext(keys=False, values=True)]
        env.close()
        assert len(out) == n
    return run


# -- diskcache ---------------------------------------------------------------------

def diskcache_write(diskcache, dicts, transact: bool):
    def run(tmp: str):
        deque = diskcache.Deque(directory=os.path.join(tmp, "deque"))
        append, packb = deque.append, msgpack.packb
        start = time.perf_counter()
        if transact:
            for chunk in chunks(dicts):
                with deque.transact():
                    for d in chunk:
                        append(packb(d))
        else:
            for d in dicts:
                append(packb(d))
        yield start
        deque.cache.close()
    return run


def diskcache_read(diskcache, path: str, n: int):
    def run(_: str) -> None:
        deque = diskcache.Deque(directory=path)
        unpackb = msgpack.unpackb
        out = [unpackb(v) for v in deque]
        deque.cache.close()
        assert len(out) == n
    return run


# -- persist-queue -----------------------------------------------------------------

def pq_open(persistqueue, path: str, auto_commit: bool):
    from persistqueue.serializers import msgpack as pq_msgpack

    return persistqueue.SQLiteQueue(path, auto_commit=auto_commit, serializer=pq_msgpack)


def pq_write(persistqueue, dicts, auto_commit: bool):
    def run(tmp: str):
        queue = pq_open(persistqueue, os.path.join(tmp, "queue"), auto_commit)
        put = queue.put
        start = time.perf_counter()
        if auto_commit:
            for d in dicts:
                put(d)
        else:
            for chunk in chunks(dicts):
                for d in chunk:
                    put(d)
                queue.task_done()
        yield start
        queue.close()
    return run


def pq_read(persistqueue, dicts):
    def run(tmp: str):
        queue = pq_open(persistqueue, os.path.join(tmp, "queue"), True)
        for d in dicts:
            queue.put(d)
        get = queue.get
        start = time.perf_counter()
        out = [get(block=False) for _ in range(len(dicts))]
        yield start
        queue.close()
        assert out[-1]["id"] == dicts[-1]["id"]
    return run


# -- the run -----------------------------------------------------------------------

def eventlog_store(path: str, dicts) -> None:
    with eventlog.open(path, fsync="never") as log:
        log.create_topic("t")
        with eventlog.Producer(log) as producer:
            producer.send_batch("t", dicts)


def raw_store(path: str, dicts) -> None:
    with open(path, "wb") as fh:
        for d in dicts:
            b = msgpack.packb(d)
            fh.write(_LEN.pack(len(b)) + b)


def build_read_stores(tmp: str, dicts, slow, peers) -> list[tuple[str, int, Callable]]:
    """Write each store once; return (name, records, reader) for the timed reads."""
    n = len(dicts)
    raw_store(os.path.join(tmp, "raw.log"), dicts)
    eventlog_store(os.path.join(tmp, "log"), dicts)
    out = [("raw read loop", n, raw_read(os.path.join(tmp, "raw.log"), n)),
           ("eventlog Consumer.poll()", n, consumer_poll(os.path.join(tmp, "log"), n))]
    if "sqlite3" in peers:
        con = sqlite_connect(os.path.join(tmp, "log.db"))
        con.execute("BEGIN")
        con.executemany("INSERT INTO log (value) VALUES (?)",
                        [(msgpack.packb(d),) for d in dicts])
        con.execute("COMMIT")
        con.close()
        out.append(("sqlite3 SELECT", n, sqlite_read(os.path.join(tmp, "log.db"), n)))
    if "lmdb" in peers:
        lmdb = peers["lmdb"]
        for _ in lmdb_write(lmdb, dicts, True)(tmp):
            pass
        out.append(("lmdb cursor", n, lmdb_read(lmdb, os.path.join(tmp, "lmdb"), n)))
    if "diskcache" in peers:
        diskcache = peers["diskcache"]
        for _ in diskcache_write(diskcache, slow, True)(tmp):
            pass
        out.append(("diskcache Deque iteration", len(slow),
                    diskcache_read(diskcache, os.path.join(tmp, "deque"), len(slow))))
    if "persist-queue" in peers:
        out.append(("persist-queue get()", len(slow), pq_read(peers["persist-queue"], slow)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--slow-records", type=int, default=5_000,
                        help="records for diskcache and persist-queue")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out")
    args = parser.parse_args()
    n, repeat = args.records, args.repeat
    dicts = sample_dicts(n)
    slow = dicts[:min(args.slow_records, n)]
    size = sum(len(msgpack.packb(d)) for d in dicts) / n
    peers, missing = load_peers()
    freeze_inputs()

    # Writers: (name, records, run). The eventlog workloads and raw loops are
    # bench_producer.py's, so that the two scripts measure the same thing.
    writers: list[tuple[str, int, Callable]] = [
        ("raw loop (packb)", n, raw_loop(dicts, False)),
        ("raw loop (Packer)", n, raw_loop(dicts, True)),
        ("eventlog send() + flush()", n, producer_send(dicts)),
        ("eventlog send_batch()", n, producer_bulk(dicts)),
    ]
    if "sqlite3" in peers:
        writers += [("sqlite3, execute per record", n, sqlite_write(dicts, False)),
                    ("sqlite3, executemany", n, sqlite_write(dicts, True))]
    if "lmdb" in peers:
        writers += [("lmdb, put per record", n, lmdb_write(peers["lmdb"], dicts, False)),
                    ("lmdb, putmulti", n, lmdb_write(peers["lmdb"], dicts, True))]
    if "diskcache" in peers:
        dc = peers["diskcache"]
        writers += [("diskcache Deque.append", len(slow), diskcache_write(dc, slow, False)),
                    ("diskcache Deque.append in transact()", len(slow),
                     diskcache_write(dc, slow, True))]
    if "persist-queue" in peers:
        pq = peers["persist-queue"]
        writers += [("persist-queue put, auto_commit", len(slow), pq_write(pq, slow, True)),
                    ("persist-queue put, task_done per 1000", len(slow),
                     pq_write(pq, slow, False))]
    produce = {name: Result(name, count) for name, count, _ in writers}
    interleave(produce, [(name, run) for name, _, run in writers], repeat)

    tmp = tempfile.mkdtemp(prefix="eventlog-bench-peers-")
    try:
        readers = build_read_stores(tmp, dicts, slow, peers)
        consume = {name: Result(name, count) for name, count, _ in readers}
        interleave(consume, [(name, run) for name, _, run in readers], repeat)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    send, bulk = produce["eventlog send() + flush()"], produce["eventlog send_batch()"]

    def produce_row(r: Result) -> tuple[str, ...]:
        return (r.name, f"{r.unit_count:,}", f"{r.rate:,.0f}",
                f"{send.rate / r.rate:.2f}x", f"{bulk.rate / r.rate:.2f}x")

    poll = consume["eventlog Consumer.poll()"]

    def consume_row(r: Result) -> tuple[str, ...]:
        return (r.name, f"{r.unit_count:,}", f"{r.rate:,.0f}", f"{poll.rate / r.rate:.2f}x")

    missing_text = "".join(f"\n- **{name}: {why}** — left out of this run."
                           for name, why in missing.items())
    body = (
        f"{n} msgpack dicts of {size:.0f} bytes (diskcache and persist-queue: the first "
        f"{len(slow)}), encoded by every writer and decoded by every reader. Batches of "
        f"{BATCH} where the peer batches; fsync=\"never\" for eventlog, the settings in "
        "benchmarks/bench_peers.py for each peer (sqlite3: WAL, synchronous=NORMAL; lmdb: "
        "sync=False; diskcache: its defaults; persist-queue: SQLiteQueue defaults, an fsync "
        "per commit). Ratios > 1 mean eventlog is faster."
        + ("\n\nPeers not measured:" + missing_text if missing else "")
        + "\n\n### Produce\n\n" + table(
            [produce_row(r) for r in produce.values()],
            ("writer", "records", "records/s", "send() + flush() vs it",
             "send_batch() vs it"))
        + "\n\n### Consume\n\n" + table(
            [consume_row(r) for r in consume.values()],
            ("reader", "records", "records/s", "Consumer.poll() vs it")))
    data = {
        "record_bytes": size,
        "produce": {r.name: {"records": r.unit_count, "rate": r.rate, "seconds": r.seconds}
                    for r in produce.values()},
        "consume": {r.name: {"records": r.unit_count, "rate": r.rate, "seconds": r.seconds}
                    for r in consume.values()},
        "missing": missing,
    }
    report("Produce and consume against peers", command_line(), body, args.out, data)


if __name__ == "__main__":
    main()
