"""Prometheus exporter for a log (needs the optional ``prometheus_client`` package:
``pip install 'eventlog[prometheus]'``).

Each scrape takes a ``Log.metrics()`` snapshot and exposes it as gauges, labelled by
topic, partition and group, so that alerts can fire on growing consumer lag:

    eventlog_partition_start_offset{topic, partition}
    eventlog_partition_end_offset{topic, partition}
    eventlog_partition_size_bytes{topic, partition}
    eventlog_partition_segments{topic, partition}
    eventlog_group_committed_offset{group, topic, partition}
    eventlog_group_lag{group, topic, partition}
    eventlog_group_max_lag{group}
    eventlog_group_members{group}
    eventlog_disk_bytes

>>> import eventlog, tempfile
>>> from prometheus_client import CollectorRegistry, generate_latest
>>> from eventlog.prometheus import EventLogCollector
>>> with eventlog.open(tempfile.mkdtemp()) as log:
...     _ = log.create_topic("orders")
...     registry = CollectorRegistry()
...     registry.register(EventLogCollector(log))
...     b"eventlog_partition_end_offset" in generate_latest(registry)
True
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

try:
    from prometheus_client import REGISTRY, start_http_server
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.registry import Collector, CollectorRegistry
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError("eventlog.prometheus needs the prometheus_client package: "
                      "pip install 'eventlog[prometheus]'") from exc

from .log import Log

__all__ = ["EventLogCollector", "start_exporter"]


class EventLogCollector(Collector):
    """A Prometheus collector: one ``Log.metrics()`` snapshot per scrape."""

    def __init__(self, log: Log) -> None:
        self._log = log

    def collect(self) -> Iterator[GaugeMetricFamily]:
        m = self._log.metrics()
        part_labels = ["topic", "partition"]
        gauges: dict[str, Any] = {
            name: GaugeMetricFamily(f"eventlog_partition_{name}", doc, labels=part_labels)
            for name, doc in (
                ("start_offset", "First offset still stored (log start offset)"),
                ("end_offset", "Next offset to be written (high watermark)"),
                ("size_bytes", "Bytes of record batches stored"),
                ("segments", "Segment files"))}
        for p in m.partitions:
            labels = [p.topic, str(p.partition)]
            for name in ("start_offset", "end_offset", "size_bytes", "segments"):
                gauges[name].add_metric(labels, getattr(p, name))
        yield from gauges.values()
        committed = GaugeMetricFamily("eventlog_group_committed_offset",
                                      "Committed offset of a consumer group",
                                      labels=["group", *part_labels])
        lag = GaugeMetricFamily("eventlog_group_lag",
                                "End offset minus committed offset",
                                labels=["group", *part_labels])
        max_lag = GaugeMetricFamily("eventlog_group_max_lag",
                                    "Largest lag over the group's partitions",
                                    labels=["group"])
        members = GaugeMetricFamily("eventlog_group_members", "Live members of the group",
                                    labels=["group"])
        for g in m.groups:
            for tp, offset in g.offsets.items():
                committed.add_metric([g.group_id, tp.topic, str(tp.partition)], offset)
            for tp, value in g.lag.items():
                lag.add_metric([g.group_id, tp.topic, str(tp.partition)], value)
            max_lag.add_metric([g.group_id], g.max_lag)
            members.add_metric([g.group_id], g.members)
        yield from (committed, lag, max_lag, members)
        disk = GaugeMetricFamily("eventlog_disk_bytes", "Disk space of the log directory")
        disk.add_metric([], m.disk_bytes)
        yield disk


def start_exporter(log: Log, port: int, addr: str = "127.0.0.1",
                   registry: CollectorRegistry = REGISTRY) -> EventLogCollector:
    """Register a collector for ``log`` and serve ``/metrics`` on ``addr:port`` from a
    background thread (prometheus_client's HTTP server). Returns the collector."""
    collector = EventLogCollector(log)
    registry.register(collector)
    start_http_server(port, addr=addr, registry=registry)
    return collector
