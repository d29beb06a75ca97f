"""Consumer throughput, produce-to-consume latency, and the CPU use of an idle consumer.

    python benchmarks/bench_consumer.py [--records 200000] [--repeat 5] [--latency 2000]

- poll() throughput: ~100-byte msgpack dicts read back as Python objects by a Consumer
  with default settings in a group, against the tight raw read loop over the same
  records in a length-prefixed file (read it, walk the length prefixes, msgpack.unpackb
  each record from a memoryview slice), in the same run, interleaved;
- latency: a producer sends one record at a time carrying the CLOCK_MONOTONIC time; a
  consumer blocked in poll() measures when it gets it. Once with both in one process
  (two threads, send().result()), once across processes (send() then flush(), the
  defaults), beside two floors in alternating rounds between the same two processes:
  the machine's (an os.pipe) and the design's (``BareLog``: a bare mmap log written
  and read in Python, woken by the same futex); and the cost of one record's send() + flush() and
  poll() in one process;
- idle CPU: a consumer process blocked in poll() on an empty topic for 3 s.
"""

from __future__ import annotations

import argparse
import itertools
import mmap
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

import msgpack
from _harness import Result, command_line, freeze_inputs, measure, report, sample_records, table

import eventlog

_LEN = struct.Struct("<I")
_GROUPS = itertools.count()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def raw_read(path: str, n: int):
    """The tight raw loop: read the file, walk the length prefixes, ``unpackb`` each
    record from a memoryview slice (no per-record copy) and hand it on (here: drop it,
    as a poll loop drops each batch of records once handled)."""
    def run(_: str) -> None:
        with open(path, "rb") as fh:
            data = fh.read()
        view = memoryview(data)
        pos, end, count = 0, len(data), 0
        unpack, unpackb = _LEN.unpack_from, msgpack.unpackb
        while pos < end:
            (size,) = unpack(data, pos)
            pos += 4
            unpackb(view[pos:pos + size])
            pos += size
            count += 1
        assert count == n
    return run


def consumer_poll(log_path: str, n: int):
    """``Consumer.poll()`` as a new user writes it: default settings, in a group (a new
    one each run, so that each reads from the start)."""
    def run(_: str):
        with eventlog.open(log_path) as log:
            consumer = eventlog.Consumer(log, "t", group_id=f"bench-{next(_GROUPS)}")
            start = time.perf_counter()
            got = 0
            while got < n:
                got += len(consumer.poll(timeout=1))
            yield start
            consumer.close()
    return run


def percentiles(samples: list[float]) -> tuple[str, ...]:
    s = sorted(samples)

    def pick(q: float) -> str:
        return f"{s[min(len(s) - 1, int(q * len(s)))] * 1e6:.0f}"

    return (pick(0.5), pick(0.9), pick(0.99), f"{s[-1] * 1e6:.0f}")


def _raw(samples: list[float]) -> tuple[float, float, float, float]:
    """p50, p90, p99 and max of ``samples`` (seconds), as numbers."""
    s = sorted(samples)
    return (s[min(len(s) - 1, int(0.5 * len(s)))], s[min(len(s) - 1, int(0.9 * len(s)))],
            s[min(len(s) - 1, int(0.99 * len(s)))], s[-1])


def latency_in_process(path: str, count: int) -> list[float]:
    samples: list[float] = []
    with eventlog.open(path, fsync="never") as log:
        log.create_topic("lat")
        consumer = eventlog.Consumer(log, "lat")
        ready = threading.Event()

        def consume() -> None:
            ready.set()
            while len(samples) < count:
                for record in consumer.poll(timeout=1):
                    samples.append(time.monotonic_ns() / 1e9 - record.value)

        thread = threading.Thread(target=consume)
        thread.start()
        ready.wait()
        with eventlog.Producer(log, linger_ms=0) as producer:
            for _ in range(count):
                producer.send("lat", time.monotonic_ns() / 1e9).result()
                time.sleep(0.0005)
        thread.join()
        consumer.close()
    return samples


PRODUCER = """
import mmap, os, struct, sys, time, eventlog, msgpack
from eventlog import _notify
path, data_fd, ctl_fd, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
stamp, now, packb = struct.Struct("<q").pack, time.monotonic_ns, msgpack.packb
head, length = struct.Struct("<Q"), struct.Struct("<I")
fd = os.open(sys.argv[5], os.O_RDWR)
mm = mmap.mmap(fd, os.fstat(fd).st_size)
counter, waiters = _notify.Word(mm, 16), _notify.Word(mm, 20)
tail = 64
with eventlog.open(path, fsync="never") as log, eventlog.Producer(log) as producer:
    while True:
        what = os.read(ctl_fd, 1)  # the consumer says which round comes next
        if what == b"p":           # the floor: 8 bytes through a pipe
            for _ in range(count):
                time.sleep(0.0005)
                os.write(data_fd, stamp(now()))
        elif what == b"m":         # the design's floor: a bare mmap log, woken by futex
            for _ in range(count):
                time.sleep(0.0005)
                value = packb(now())
                length.pack_into(mm, tail, len(value))
                mm[tail + 4:tail + 4 + len(value)] = value
                tail += 4 + len(value)
                head.pack_into(mm, 0, tail)
                counter.bump()
                _notify.wake(counter, waiters)
        elif what == b"e":         # one record, sent alone and flushed
            for _ in range(count):
                time.sleep(0.0005)
                producer.send("lat", now())
                producer.flush()
        else:
            break
"""


class BareLog:
    """The least a log of this design does for one record, written in Python as the
    design floor of the latency benchmark: a length-prefixed msgpack value appended
    to a shared memory map, an 8-byte head published after it, and the reader woken
    through the notify word and futex of ``eventlog._notify``, the very mechanism a
    partition uses. No lock, checksum, batch header, index, offsets or group: what is
    left is Python reaching the kernel and back on both sides, cold, as eventlog does.
    This side reads; the producer script writes (mode ``m``)."""

    SIZE = 16 << 20
    _HEAD = struct.Struct("<Q")

    def __init__(self, path: str) -> None:
        from eventlog import _notify
        with open(path, "wb") as fh:
            fh.truncate(self.SIZE)
        self.path = path
        self._fd = os.open(path, os.O_RDWR)
        self._mm = mmap.mmap(self._fd, self.SIZE)
        self._notify = _notify
        self._counter, self._waiters = _notify.Word(self._mm, 16), _notify.Word(self._mm, 20)
        self._pos = 64

    def read(self, count: int) -> list[float]:
        """Block until ``count`` values (``monotonic_ns`` stamps) arrive; return how
        long each took to arrive, in seconds."""
        mm, length, unpackb, now = self._mm, _LEN, msgpack.unpackb, time.monotonic_ns
        view = memoryview(mm)
        values: list[float] = []
        while len(values) < count:
            seen = self._counter.load()
            end = self._HEAD.unpack_from(mm, 0)[0]
            if end == self._pos:
                self._notify.wait([self._counter], [self._waiters], [seen], 5.0)
                continue
            pos = self._pos
            while pos < end:
                (size,) = length.unpack_from(mm, pos)
                values.append((now() - unpackb(view[pos + 4:pos + 4 + size])) / 1e9)
                pos += 4 + size
            self._pos = pos
        view.release()
        return values

    def close(self) -> None:
        self._counter.release()
        self._waiters.release()
        self._mm.close()
        os.close(self._fd)


def latency_cross_process(path: str, count: int, rounds: int = 10
                          ) -> tuple[list[float], list[float], list[float]]:
    """Produce-to-consume latency between two processes, and two floors between the
    same two processes in the same run: the machine's, an 8-byte ``os.write`` to a
    pipe that the consumer process is blocked reading; and the design's, a record
    through a ``BareLog``. Rounds of the three alternate (``rounds`` each, ``count``
    samples per round, 0.5 ms apart), so that a slower moment of the machine hits all
    alike. The producer takes the defaults (``send()`` then ``flush()``), the consumer
    too, in a group. Returns (pipe, bare log, eventlog) in seconds.
    """
    pipe: list[float] = []
    bare_samples: list[float] = []
    samples: list[float] = []
    per_round = max(1, count // rounds)
    unstamp = struct.Struct("<q").unpack
    bare = BareLog(path + ".bare")
    with eventlog.open(path, fsync="never") as log:
        log.create_topic("lat")
        with eventlog.Consumer(log, "lat", group_id="latency") as consumer:
            consumer.poll(timeout=0)
            data_r, data_w = os.pipe()
            ctl_r, ctl_w = os.pipe()
            env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))
            proc = subprocess.Popen([sys.executable, "-c", PRODUCER, path, str(data_w),
                                     str(ctl_r), str(per_round), bare.path],
                                    env=env, pass_fds=(data_w, ctl_r))
            os.close(data_w)
            os.close(ctl_r)
            try:
                for _ in range(rounds):
                    os.write(ctl_w, b"p")
                    for _ in range(per_round):
                        (sent,) = unstamp(os.read(data_r, 8))
                        pipe.append((time.monotonic_ns() - sent) / 1e9)
                    os.write(ctl_w, b"m")
                    bare_samples += bare.read(per_round)
                    os.write(ctl_w, b"e")
                    got = 0
                    while got < per_round:
                        for record in consumer.poll(timeout=5):
                            samples.append((time.monotonic_ns() - record.value) / 1e9)
                            got += 1
                os.write(ctl_w, b"q")
            finally:
                os.close(ctl_w)
                os.close(data_r)
                proc.wait()
                bare.close()
    return pipe, bare_samples, samples


def one_record_costs(path: str, count: int) -> tuple[float, float]:
    """In one process, no waiting: the median time of ``send()`` + ``flush()`` of one
    record, and of the ``poll(timeout=0)`` that returns it (default producer; default
    consumer in a group). Seconds."""
    sends: list[float] = []
    polls: list[float] = []
    clock = time.perf_counter
    with eventlog.open(path, fsync="never") as log:
        log.create_topic("one")
        with eventlog.Consumer(log, "one", group_id="one") as consumer, \
                eventlog.Producer(log) as producer:
            consumer.poll(timeout=0)
            for i in range(count):
                t0 = clock()
                producer.send("one", i)
                producer.flush()
                t1 = clock()
                got = consumer.poll(timeout=0)
                t2 = clock()
                assert len(got) == 1
                sends.append(t1 - t0)
                polls.append(t2 - t1)
    return statistics.median(sends), statistics.median(polls)


IDLE = """
import resource, sys, time, eventlog
with eventlog.open(sys.argv[1]) as log:
    c = eventlog.Consumer(log, "idle", group_id="idle")
    c.poll(timeout=0.2)
    r0 = resource.getrusage(resource.RUSAGE_SELF); t0 = time.monotonic()
    c.poll(timeout=float(sys.argv[2]))
    r1 = resource.getrusage(resource.RUSAGE_SELF); t1 = time.monotonic()
    cpu = r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime
    print(cpu / (t1 - t0))
    c.close()
"""


def idle_cpu(path: str, seconds: float) -> float:
    with eventlog.open(path) as log:
        log.create_topic("idle", partitions=8)
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))
    out = subprocess.run([sys.executable, "-c", IDLE, path, str(seconds)], env=env,
                         capture_output=True, text=True, check=True).stdout
    return float(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--latency", type=int, default=2000, help="latency samples")
    parser.add_argument("--out")
    args = parser.parse_args()
    n = args.records
    records = sample_records(n)
    size = sum(map(len, records)) / n
    tmp = tempfile.mkdtemp(prefix="eventlog-bench-consumer-")
    raw_path = os.path.join(tmp, "raw.log")
    with open(raw_path, "wb") as fh:
        for rec in records:
            fh.write(_LEN.pack(len(rec)) + rec)
    log_path = os.path.join(tmp, "log")
    with eventlog.open(log_path, fsync="never") as log:
        log.create_topic("t")
        with eventlog.Producer(log, value_serializer="bytes") as producer:
            producer.send_batch("t", records)
    del records
    freeze_inputs()
    raw = Result("raw read loop", n)
    polled = Result("Consumer.poll()", n)
    for _ in range(args.repeat):
        measure(raw, raw_read(raw_path, n), 1)
        measure(polled, consumer_poll(log_path, n), 1)
    in_proc = latency_in_process(os.path.join(tmp, "lat1"), args.latency)
    pipe, bare, cross = latency_cross_process(os.path.join(tmp, "lat2"), args.latency)
    send_s, poll_s = one_record_costs(os.path.join(tmp, "one"), args.latency)
    idle = idle_cpu(os.path.join(tmp, "idle"), 3.0)
    body = (
        f"{n} msgpack dicts of {size:.0f} bytes, deserialized to dicts.\n\n"
        + table([(raw.name, f"{raw.rate / 1e6:.2f}", "1.00x"),
                 (polled.name, f"{polled.rate / 1e6:.2f}", f"{polled.rate / raw.rate:.2f}x")],
                ("read", "M records/s", "vs raw read loop"))
        + f"\n\nProduce-to-consume latency, {args.latency} records sent one at a time, "
          "0.5 ms apart (fsync=\"never\"), microseconds. Across processes the producer "
          "calls send() then flush() with its defaults and the consumer polls in a group; "
          "two floors are measured between the same two processes, their rounds "
          "alternating with eventlog's: the machine's (an os.pipe) and the design's (a "
          "bare mmap log in Python woken by the same futex, no lock, checksum, index "
          "or group; BareLog):\n\n"
        + table([("same process (two threads, send().result())", *percentiles(in_proc)),
                 ("across processes", *percentiles(cross)),
                 ("bare mmap log + futex, same processes (the design's floor)",
                  *percentiles(bare)),
                 ("os.pipe between the same processes (the floor)", *percentiles(pipe))],
                ("producer and consumer", "p50", "p90", "p99", "max"))
        + "\n\nAcross processes against the floor: p50 "
          f"{_raw(cross)[0] / _raw(pipe)[0]:.1f}x, p99 {_raw(cross)[2] / _raw(pipe)[2]:.1f}x; "
          f"the design's floor against it: p50 {_raw(bare)[0] / _raw(pipe)[0]:.1f}x, p99 "
          f"{_raw(bare)[2] / _raw(pipe)[2]:.1f}x.\n"
        + f"\n\nOne record in one process, no waiting (medians of {args.latency}): "
          f"send() + flush() {send_s * 1e6:.1f} us, the poll() that returns it "
          f"{poll_s * 1e6:.1f} us.\n"
        + f"\n\nIdle consumer (8 partitions, blocked in poll for 3 s): "
          f"{idle * 100:.2f}% of one core.\n")
    data = {"latency_us": {"cross_p50": _raw(cross)[0] * 1e6, "pipe_p50": _raw(pipe)[0] * 1e6,
                           "cross_p99": _raw(cross)[2] * 1e6, "pipe_p99": _raw(pipe)[2] * 1e6,
                           "bare_p50": _raw(bare)[0] * 1e6, "bare_p99": _raw(bare)[2] * 1e6},
            "one_record_us": {"send_flush": send_s * 1e6, "poll": poll_s * 1e6},
            "poll_vs_raw": polled.rate / raw.rate}
    report("Consumer: throughput, latency, idle CPU", command_line(), body, args.out,
           data)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
