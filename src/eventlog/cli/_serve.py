"""``eventlog serve``: the Kafka wire protocol on a log directory, in the foreground.

Opens (creating, if need be) the log directory, serves it to Kafka clients on
``--host``/``--port`` until SIGTERM or Ctrl-C, then closes every connection and the
log cleanly and exits 0. The line ``listening on HOST:PORT`` goes to stderr once the
port is bound (with ``--port 0`` it says which port was chosen).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType

from ..serve import serve
from ._common import CliError, opened_log, positive_int

AddParser = Callable[..., argparse.ArgumentParser]


def register(add: AddParser) -> None:
    cmd = add("serve", help="serve the log to Kafka clients (Kafka's wire protocol)",
              description="Speak Kafka's wire protocol on the log directory, so that "
                          "unmodified Kafka clients (confluent-kafka, kafka-python, "
                          "aiokafka, kcat) produce, consume and join groups on it. No "
                          "authentication: listen on loopback or a trusted network. "
                          "SIGTERM or Ctrl-C stops it cleanly.")
    cmd.add_argument("--host", default="127.0.0.1",
                     help="address to listen on (default: 127.0.0.1)")
    cmd.add_argument("--port", type=int, default=9092,
                     help="port to listen on; 0 picks a free one (default: 9092)")
    cmd.add_argument("--partitions", type=positive_int, default=1, metavar="N",
                     help="partitions of topics created on first use (default: 1)")
    cmd.add_argument("--no-auto-create", action="store_true",
                     help="do not create topics that clients ask for (Kafka's "
                          "auto.create.topics.enable=false)")
    cmd.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    """``serve``: run until SIGTERM or SIGINT."""
    if not 0 <= args.port <= 65535:
        raise CliError(f"--port must be in [0, 65535], not {args.port}")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with opened_log(args, create=True, read_only=False) as log:
            try:
                server = serve(log, args.host, args.port, num_partitions=args.partitions,
                               auto_create_topics=not args.no_auto_create)
            except OSError as exc:
                raise CliError(f"cannot listen on {args.host}:{args.port}: "
                               f"{exc.strerror or exc}") from exc
            with server:
                if not args.quiet:
                    sys.stderr.write(f"eventlog: serving {log.backend.path} to Kafka clients"
                                     f", listening on {server.bootstrap_servers}\n")
                    sys.stderr.flush()
                while not stop.wait(0.5):
                    pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not args.quiet:
        sys.stderr.write("eventlog: stopped\n")
    return 0
