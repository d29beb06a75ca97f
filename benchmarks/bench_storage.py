"""Partition-layer append and read throughput against a raw file loop.

    python benchmarks/bench_storage.py [--records 200000] [--repeat 5] [--out FILE]

Both sides handle the same pre-encoded ~100-byte msgpack records:

- raw append: a buffered file, one 4-byte length prefix + record per write;
- raw read: read the file, walk the length prefixes, slice out each record;
- eventlog append: ``Partition.append`` of 1000-record batches (fsync="never"), and
  one record per call;
- eventlog read: ``Partition.read`` loops returning ``Record`` tuples.
"""

from __future__ import annotations

import argparse
import os
import shutil
import struct
import tempfile
import time

from _harness import Result, command_line, freeze_inputs, measure, report, sample_records, table

import eventlog

_LEN = struct.Struct("<I")


def raw_append(records: list[bytes]):
    def run(tmp: str) -> None:
        with open(os.path.join(tmp, "raw.log"), "wb") as fh:
            write, pack = fh.write, _LEN.pack
            for rec in records:
                write(pack(len(rec)))
                write(rec)
    return run


def raw_read(records: list[bytes], tmp_holder: dict[str, str]):
    def run(_: str) -> None:
        with open(tmp_holder["raw"], "rb") as fh:
            data = fh.read()
        out, pos, end, unpack = [], 0, len(data), _LEN.unpack_from
        append = out.append
        while pos < end:
            (n,) = unpack(data, pos)
            pos += 4
            append(data[pos:pos + n])
            pos += n
        assert len(out) == len(records)
    return run


def eventlog_append(records: list[bytes], batch: int):
    """Times the append loop only: open/create before, close (fsync) after."""
    def run(tmp: str):
        with eventlog.open(tmp, fsync="never") as log:
            p = log.create_topic("t").partition(0)
            append = p.append
            start = time.perf_counter()
            for i in range(0, len(records), batch):
                append(records[i:i + batch])
            yield start
    return run


def _drain(gen) -> None:
    for _ in gen:
        pass


def eventlog_read(records: list[bytes], tmp_holder: dict[str, str]):
    """Times the read loop only (open before, close after)."""
    def run(_: str):
        with eventlog.open(tmp_holder["log"]) as log:
            p = log.topic("t").partition(0)
            start = time.perf_counter()
            offset, end, n = 0, p.end_offset, 0
            while offset < end:
                got = p.read(offset, max_records=10_000, max_bytes=4 << 20)
                n += len(got)
                offset = got[-1].offset + 1
            yield start
        assert n == len(records)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out")
    args = parser.parse_args()
    records = sample_records(args.records)
    n = len(records)
    size = sum(map(len, records)) / n
    freeze_inputs()

    results = {
        "raw append": measure(Result("raw append", n), raw_append(records), args.repeat),
        "eventlog append, 1000/batch": measure(
            Result("eventlog append", n), eventlog_append(records, 1000), args.repeat),
        "eventlog append, 1/call": measure(
            Result("eventlog append 1", n // 10), eventlog_append(records[: n // 10], 1),
            args.repeat),
    }
    # Reads run over files prepared once, outside the timing.
    tmp = tempfile.mkdtemp(prefix="eventlog-bench-read-")
    try:
        raw_append(records)(tmp)
        os.mkdir(os.path.join(tmp, "log"))
        _drain(eventlog_append(records, 1000)(os.path.join(tmp, "log")))
        holder = {"raw": os.path.join(tmp, "raw.log"), "log": os.path.join(tmp, "log")}
        results["raw read"] = measure(Result("raw read", n), raw_read(records, holder),
                                      args.repeat)
        results["eventlog read"] = measure(Result("eventlog read", n),
                                           eventlog_read(records, holder), args.repeat)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def row(name: str, baseline: str) -> tuple[str, ...]:
        r = results[name]
        return (name, f"{r.rate / 1e6:.2f}", f"{r.rate * size / 2**20:.0f}",
                f"{r.rate / results[baseline].rate:.2f}x")

    body = (f"{n} records of {size:.0f} bytes (msgpack-encoded dicts). eventlog timings "
            "cover the append or read loop; opening, creating the topic and the clean "
            "close (which fsyncs) are outside them.\n\n" + table(
        [row("raw append", "raw append"), row("eventlog append, 1000/batch", "raw append"),
         row("eventlog append, 1/call", "raw append"), row("raw read", "raw read"),
         row("eventlog read", "raw read")],
        ("operation", "M records/s", "MiB/s", "vs raw loop")))
    report("Storage layer: append and read", command_line(), body, args.out)


if __name__ == "__main__":
    main()
