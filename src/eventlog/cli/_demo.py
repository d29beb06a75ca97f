"""``eventlog demo``: a small pipeline in a local directory, in real processes.

The command itself is the coordinator. It creates topic ``orders`` in ``./demo-log``,
starts two worker processes that join consumer group ``workers``, waits until they
share the partitions, then starts one producer process that sends orders keyed by
customer. While the workers process (each order takes them a little time, so lag
builds up) and commit, the coordinator reports the group's lag until it drains to
zero, then stops the workers with SIGTERM; they commit and say what they did.

The children are ``python -m eventlog demo --role producer|worker`` (hidden options),
started with ``subprocess`` so each opens the log directory itself: a ``Log`` is never
shared across ``fork``. Every line is stamped with the seconds since the start and
the process that printed it.

A fresh run is the default, so every run behaves the same: the directory is removed
first, but only when it holds nothing but the demo's own topic and group (a log
directory with other topics, or a directory that is no log, is refused). ``--keep``
adds orders to an earlier run instead.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from types import FrameType

from .. import open as open_log
from .._types import TopicPartition
from ..consumer import Consumer, RebalanceListener
from ..errors import UnknownGroupError
from ..log import MARKER_FILE, Log
from ..producer import Producer
from ._common import CliError, positive_int

AddParser = Callable[..., argparse.ArgumentParser]

TOPIC = "orders"
GROUP = "workers"
_WORK_S = 0.0015          # what processing one order costs a worker
_ORDERS_PER_S = 2000      # the producer's pace
_REPORT_EVERY_S = 0.25
_START_TIMEOUT_S = 30.0


def register(add: AddParser) -> None:
    demo = add("demo", help="run a small pipeline: a producer process and a consumer "
                            "group of two worker processes",
               description="Build a small pipeline in a local directory and show what "
                           "happens: one process produces orders, a consumer group of two "
                           "worker processes consumes them, and the lag is reported as "
                           "it drains.", common=False)
    demo.add_argument("--dir", default="demo-log", metavar="DIR",
                      help="the log directory (default: ./demo-log)")
    demo.add_argument("--orders", type=positive_int, metavar="N", default=2000,
                      help="orders to produce (default: 2000)")
    demo.add_argument("--workers", type=positive_int, metavar="N", default=2,
                      help="worker processes in the group (default: 2)")
    demo.add_argument("--partitions", type=positive_int, metavar="N", default=4,
                      help="partitions of topic orders when it is created (default: 4)")
    demo.add_argument("--keep", action="store_true",
                      help="keep the data of earlier runs (default: start afresh)")
    demo.add_argument("--role", choices=("producer", "worker"), help=argparse.SUPPRESS)
    demo.add_argument("--name", default="", help=argparse.SUPPRESS)
    demo.add_argument("--t0", type=float, default=0.0, help=argparse.SUPPRESS)
    demo.add_argument("--first-id", type=int, default=0, help=argparse.SUPPRESS)
    demo.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    """``demo``: the coordinator, or one of its children (``--role``)."""
    if args.role == "producer":
        return _producer(args)
    if args.role == "worker":
        return _worker(args)
    return _coordinator(args)


def _say(t0: float, who: str, text: str) -> None:
    # One write per line, newline included: the processes share one stdout, and
    # print() writes the text and its newline apart, so two lines could interleave.
    sys.stdout.write(f"{time.time() - t0:6.2f}s  {who:<9} {text}\n")
    sys.stdout.flush()


def _tps(partitions: set[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(partitions))


# -- the coordinator ---------------------------------------------------------------------

def _prepare(path: str, keep: bool) -> str:
    """Make ``path`` ready; returns how it was found. Refuses anything that is not a
    demo log directory."""
    if not os.path.exists(path):
        return "new"
    if not os.path.isdir(path):
        raise CliError(f"{path} exists and is not a directory; choose another --dir")
    if not os.listdir(path):
        return "new"
    if not os.path.exists(os.path.join(path, MARKER_FILE)):
        raise CliError(f"{path} is not empty and is not an eventlog log directory; the demo "
                       "leaves it alone (choose another --dir)")
    with open_log(path) as log:
        foreign = [t for t in log.topics() if t != TOPIC] + \
            [f"group {g}" for g in log.groups() if g != GROUP]
    if foreign:
        raise CliError(f"{path} holds data the demo did not create ({', '.join(foreign)}); "
                       "the demo leaves it alone (choose another --dir)")
    if keep:
        return "kept"
    shutil.rmtree(path)
    return "reset"


def _child(args: argparse.Namespace, role: str, *extra: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    # The children must import this very eventlog, installed or not.
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
        __file__))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH"))
                                        if p)
    command = [sys.executable, "-m", "eventlog", "demo", "--role", role, "--dir", args.dir,
               "--t0", repr(args.t0), *extra]
    return subprocess.Popen(command, stdin=subprocess.DEVNULL, env=env)


def _lag(log: Log) -> dict[int, int]:
    try:
        committed = log.group_offsets(GROUP)
    except UnknownGroupError:
        committed = {}
    return {p.id: max(0, p.end_offset - committed.get(TopicPartition(TOPIC, p.id),
                                                      p.start_offset))
            for p in log.topic(TOPIC).partitions}


def _check_alive(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    for name, proc in procs.items():
        code = proc.poll()
        if code is not None and code != 0:
            raise CliError(f"the demo's {name} process failed (exit code {code})")


def _wait_for_group(log: Log, workers: dict[str, subprocess.Popen[bytes]],
                    partitions: int) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    wanted = {TopicPartition(TOPIC, p) for p in range(partitions)}
    while time.monotonic() < deadline:
        _check_alive(workers)
        try:
            desc = log.describe_group(GROUP)
        except UnknownGroupError:
            desc = None
        if desc is not None:
            live = [m for m in desc.members if m.alive]
            assigned = {tp for m in live for tp in m.assignment}
            if len(live) == len(workers) and assigned == wanted:
                return
        time.sleep(0.05)
    raise CliError(f"the workers did not join group {GROUP} within {_START_TIMEOUT_S:.0f} s")


def _coordinator(args: argparse.Namespace) -> int:
    args.t0 = time.time()
    path = args.dir

    def say(text: str) -> None:
        _say(args.t0, "demo", text)

    found = _prepare(path, args.keep)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        with open_log(path) as log:
            say(f"log directory {os.path.abspath(path)} "
                f"({'kept from an earlier run' if found == 'kept' else 'fresh'})")
            if TOPIC not in log:
                log.create_topic(TOPIC, partitions=args.partitions)
            partitions = log.topic(TOPIC).num_partitions
            first_id = sum(p.end_offset for p in log.topic(TOPIC).partitions)
            say(f"topic {TOPIC} has {partitions} partitions; starting {args.workers} "
                f"worker processes in consumer group {GROUP}")
            workers = {f"worker-{i}": _child(args, "worker", "--name", f"worker-{i}")
                       for i in range(1, args.workers + 1)}
            procs.update(workers)
            _wait_for_group(log, workers, partitions)
            say(f"the workers share the {partitions} partitions; starting a producer "
                f"process for {args.orders} orders")
            started = time.monotonic()
            procs["producer"] = _child(args, "producer", "--orders", str(args.orders),
                                       "--first-id", str(first_id))
            expected = first_id + args.orders
            reported: tuple[int, ...] | None = None
            deadline = started + _START_TIMEOUT_S + args.orders * _WORK_S * 4
            while True:
                _check_alive(procs)
                lag = _lag(log)
                total = sum(lag.values())
                produced = sum(p.end_offset for p in log.topic(TOPIC).partitions)
                shown = (produced, *lag.values())
                if shown != reported:
                    reported = shown
                    detail = ", ".join(f"[{p}] {n}" for p, n in lag.items())
                    say(f"{produced - first_id} produced, lag {total} ({detail})")
                if procs["producer"].poll() == 0 and produced >= expected and total == 0:
                    break
                if time.monotonic() > deadline:
                    raise CliError("the demo did not finish in time")
                time.sleep(_REPORT_EVERY_S)
            say(f"all {args.orders} orders processed in {time.monotonic() - started:.2f} s; "
                "stopping the workers")
            for name in workers:
                procs[name].send_signal(signal.SIGTERM)
            for name in workers:
                if procs[name].wait(timeout=_START_TIMEOUT_S) != 0:
                    raise CliError(f"the demo's {name} process failed")
            committed = sum(log.group_offsets(GROUP).values())
        if committed != expected:
            raise CliError(f"group {GROUP} committed {committed} offsets, not {expected}")
        say(f"done: {args.orders} orders produced, processed and committed by group "
            f"{GROUP}; lag 0")
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    print(f"\nlook around:\n"
          f"  eventlog --log {path} topics describe {TOPIC}\n"
          f"  eventlog --log {path} groups describe {GROUP}\n"
          f"  eventlog --log {path} consume {TOPIC} --max 5 --format json\n"
          f"  eventlog --log {path} verify", flush=True)
    return 0


# -- the children ------------------------------------------------------------------------

def _producer(args: argparse.Namespace) -> int:
    name = "producer"
    started = time.monotonic()
    quarter = max(1, args.orders // 4)
    with open_log(args.dir) as log, Producer(log) as producer:
        for i in range(args.orders):
            order_id = args.first_id + i
            customer = f"customer-{order_id * 7 % 97:02d}"
            order = {"order_id": order_id, "customer": customer,
                     "amount": round(5 + order_id * 7919 % 9000 / 100, 2)}
            producer.send(TOPIC, order, key=customer)
            if (i + 1) % 50 == 0:
                ahead = (i + 1) / _ORDERS_PER_S - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
            if (i + 1) % quarter == 0 and i + 1 < args.orders:
                producer.flush()
                _say(args.t0, name, f"sent {i + 1} orders")
    _say(args.t0, name, f"sent {args.orders} orders, keyed by customer (so each "
                        "customer's orders stay in order), and exited")
    return 0


class _Announce(RebalanceListener):
    """Says which partitions a worker gets and gives up, and commits before giving up."""

    def __init__(self, t0: float, name: str, stopping: list[int]) -> None:
        self.t0 = t0
        self.name = name
        self.stopping = stopping   # once stopping, the moves as workers leave are noise
        self.consumer: Consumer | None = None

    def on_assigned(self, partitions: set[TopicPartition]) -> None:
        if not self.stopping:
            _say(self.t0, self.name, f"assigned {_tps(partitions)}")

    def on_revoked(self, partitions: set[TopicPartition]) -> None:
        if self.consumer is not None:
            self.consumer.commit({tp: self.consumer.position(tp) for tp in partitions})
        if not self.stopping:
            _say(self.t0, self.name, f"gave up {_tps(partitions)} (rebalance)")


def _worker(args: argparse.Namespace) -> int:
    name = args.name
    stopping: list[int] = []

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    processed = 0
    amount = 0.0
    listener = _Announce(args.t0, name, stopping)
    _say(args.t0, name, f"started (pid {os.getpid()}), joining group {GROUP}")
    with open_log(args.dir) as log, Consumer(
            log, TOPIC, group_id=GROUP, enable_auto_commit=False, listener=listener,
            heartbeat_interval_ms=100) as consumer:
        listener.consumer = consumer
        while not stopping:
            records = consumer.poll(timeout=0.1, max_records=50)
            if not records:
                continue
            time.sleep(_WORK_S * len(records))  # the work an order takes
            processed += len(records)
            amount += sum(r.value["amount"] for r in records)
            consumer.commit()
    _say(args.t0, name, f"stopped after processing {processed} orders "
                        f"(total amount {amount:.2f})")
    return 0
