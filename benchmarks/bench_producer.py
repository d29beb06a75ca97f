"""Producer throughput: send() + flush() and the bulk path, against raw append loops.

    python benchmarks/bench_producer.py [--records 200000] [--repeat 5] [--out FILE]

Workloads (all in one run, medians of --repeat runs, fsync="never"):

- ~100-byte msgpack dicts through ``send()`` then ``flush()``, and through ``send_batch``;
- pre-encoded 100-byte ``bytes`` values through ``send_batch`` (value_serializer="bytes").

Baselines, measured in the same run, writing length-prefixed records to a buffered file:

- raw loop (packb): ``msgpack.packb(d)`` + 4-byte length + ``write`` per record, the
  loop a Python programmer would write;
- raw loop (Packer): the same with one reused ``msgpack.Packer`` (about twice as fast
  at packing: a tuned loop);
- raw loop (bytes): pre-encoded bytes, length + ``write`` per record.
"""

from __future__ import annotations

import argparse
import os
import struct
import time

import msgpack
from _harness import Result, command_line, freeze_inputs, measure, report, sample_dicts, table

import eventlog

_LEN = struct.Struct("<I")


def raw_loop(dicts, packer: bool):
    def run(tmp: str) -> None:
        pack = msgpack.Packer(autoreset=True).pack if packer else msgpack.packb
        with open(os.path.join(tmp, "raw.log"), "wb") as fh:
            write, plen = fh.write, _LEN.pack
            for d in dicts:
                b = pack(d)
                write(plen(len(b)))
                write(b)
    return run


def raw_bytes(values):
    def run(tmp: str) -> None:
        with open(os.path.join(tmp, "raw.log"), "wb") as fh:
            write, plen = fh.write, _LEN.pack
            for b in values:
                write(plen(len(b)))
                write(b)
    return run


def producer_send(dicts):
    def run(tmp: str):
        with eventlog.open(tmp, fsync="never") as log:
            log.create_topic("t")
            producer = eventlog.Producer(log)
            send = producer.send
            start = time.perf_counter()
            for d in dicts:
                send("t", d)
            producer.flush()
            yield start
            producer.close()
    return run


def producer_bulk(values, serializer: str | None = None):
    def run(tmp: str):
        with eventlog.open(tmp, fsync="never") as log:
            log.create_topic("t")
            producer = eventlog.Producer(log, value_serializer=serializer)
            start = time.perf_counter()
            producer.send_batch("t", values)
            yield start
            producer.close()
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out")
    args = parser.parse_args()
    n, repeat = args.records, args.repeat
    dicts = sample_dicts(n)
    values = [os.urandom(100) for _ in range(n)]
    size = sum(len(msgpack.packb(d)) for d in dicts) / n
    freeze_inputs()
    # Interleave the runs (repeat the whole set) so that drift in machine speed hits
    # every workload alike.
    results = {name: Result(name, n) for name in (
        "raw loop (packb)", "raw loop (Packer)", "send() + flush()", "send_batch()",
        "raw loop (bytes)", "send_batch(), bytes")}
    for _ in range(repeat):
        measure(results["raw loop (packb)"], raw_loop(dicts, False), 1)
        measure(results["raw loop (Packer)"], raw_loop(dicts, True), 1)
        measure(results["send() + flush()"], producer_send(dicts), 1)
        measure(results["send_batch()"], producer_bulk(dicts), 1)
        measure(results["raw loop (bytes)"], raw_bytes(values), 1)
        measure(results["send_batch(), bytes"], producer_bulk(values, "bytes"), 1)

    def row(name: str) -> tuple[str, ...]:
        r = results[name]
        if "bytes" in name:
            vs = f"{r.rate / results['raw loop (bytes)'].rate:.2f}x"
            return (name, f"{r.rate / 1e6:.2f}", vs, "")
        return (name, f"{r.rate / 1e6:.2f}",
                f"{r.rate / results['raw loop (packb)'].rate:.2f}x",
                f"{r.rate / results['raw loop (Packer)'].rate:.2f}x")

    body = (f"{n} records per run: msgpack dicts of {size:.0f} bytes, and 100-byte bytes "
            "values. Timings cover sending (and the flush) only; opening the log, creating "
            "the topic and closing are outside them. Ratios > 1 mean faster than the "
            "baseline.\n\n" + table(
                [row(name) for name in results],
                ("workload", "M records/s", "vs raw loop (packb) / (bytes)",
                 "vs raw loop (Packer)")))
    report("Producer throughput", command_line(), body, args.out,
           {"rates": {name: r.rate for name, r in results.items()}})


if __name__ == "__main__":
    main()
