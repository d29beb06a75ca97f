"""Prometheus exporter for a log (needs the optional ``prometheus_client`` package:
``pip install 'eventlog[prometheus]'``).

Each scrape takes a ``Log.metrics()`` snapshot, groups' status included, and exposes
it as gauges, labelled by topic, partition and group, for the alerting
rules of docs/alerts/eventlog.rules.yml (docs/monitoring.md describes each one):

    eventlog_partition_start_offset{topic, partition}
    eventlog_partition_end_offset{topic, partition}
    eventlog_partition_size_bytes{topic, partition}
    eventlog_partition_segments{topic, partition}
    eventlog_partition_disk_bytes{topic, partition}
    eventlog_topic_size_bytes{topic}
    eventlog_topic_disk_bytes{topic}
    eventlog_group_committed_offset{group, topic, partition}
    eventlog_group_lag{group, topic, partition}
    eventlog_group_lag_seconds{group, topic, partition}
    eventlog_group_partition_status{group, topic, partition}
    eventlog_group_status{group}
    eventlog_group_max_lag{group}
    eventlog_group_members{group}
    eventlog_disk_bytes
    eventlog_fs_free_bytes
    eventlog_fs_total_bytes
    eventlog_fs_used_ratio

A status is its number in ``monitoring.STATUS_VALUES`` (higher is worse): a partition
is 0 OK, 1 WARN, 2 STALL, 3 STOP; a group is 0 OK, 1 WARN, 2 ERR. Following
Prometheus' conventions (``promtool check metrics``), a duration is in seconds
(``lag_seconds`` is ``PartitionStatus.lag_ms / 1000``) and a share is a ratio from 0
to 1.

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

try:
    from prometheus_client import REGISTRY, start_http_server
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.registry import Collector, CollectorRegistry
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError("eventlog.prometheus needs the prometheus_client package: "
                      "pip install 'eventlog[prometheus]'") from exc

from .log import Log
from .monitoring import STATUS_VALUES, LogMetrics

__all__ = ["EventLogCollector", "start_exporter"]


class EventLogCollector(Collector):
    """A Prometheus collector: one ``Log.metrics()`` snapshot per scrape (its groups'
    status included, by Burrow's rules over the default window). Cost: that of
    ``metrics()``, a ``stat`` of every file of the log and a read of every group's
    offsets; thread-safe as ``Log`` is."""

    def __init__(self, log: Log) -> None:
        self._log = log

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The metric families of one ``Log.metrics()`` snapshot (prometheus_client
        calls this at every scrape)."""
        m = self._log.metrics()
        yield from self._partitions(m)
        yield from self._groups(m)
        yield from self._disk(m)

    @staticmethod
    def _partitions(m: LogMetrics) -> Iterator[GaugeMetricFamily]:
        part_labels = ["topic", "partition"]
        gauges = {
            name: GaugeMetricFamily(f"eventlog_partition_{name}", doc, labels=part_labels)
            for name, doc in (
                ("start_offset", "First offset still stored (log start offset)"),
                ("end_offset", "Next offset to be written (high watermark)"),
                ("size_bytes", "Bytes of record batches stored"),
                ("segments", "Segment files"),
                ("disk_bytes", "Space the partition's files take on disk"))}
        for p in m.partitions:
            labels = [p.topic, str(p.partition)]
            for name, gauge in gauges.items():
                gauge.add_metric(labels, getattr(p, name))
        yield from gauges.values()
        size = GaugeMetricFamily("eventlog_topic_size_bytes",
                                 "Bytes of record batches stored in the topic",
                                 labels=["topic"])
        disk = GaugeMetricFamily("eventlog_topic_disk_bytes",
                                 "Space the topic's partitions take on disk",
                                 labels=["topic"])
        for t in m.topics:
            size.add_metric([t.topic], t.size_bytes)
            disk.add_metric([t.topic], t.disk_bytes)
        yield from (size, disk)

    @staticmethod
    def _groups(m: LogMetrics) -> Iterator[GaugeMetricFamily]:
        tp_labels = ["group", "topic", "partition"]
        committed = GaugeMetricFamily("eventlog_group_committed_offset",
                                      "Committed offset of a consumer group",
                                      labels=tp_labels)
        lag = GaugeMetricFamily("eventlog_group_lag",
                                "End offset minus committed offset", labels=tp_labels)
        max_lag = GaugeMetricFamily("eventlog_group_max_lag",
                                    "Largest lag over the group's partitions",
                                    labels=["group"])
        members = GaugeMetricFamily("eventlog_group_members", "Live members of the group",
                                    labels=["group"])
        status = GaugeMetricFamily("eventlog_group_status",
                                   "Group status by Burrow's rules: 0 OK, 1 WARN, 2 ERR",
                                   labels=["group"])
        partition_status = GaugeMetricFamily(
            "eventlog_group_partition_status",
            "Partition status by Burrow's rules: 0 OK, 1 WARN, 2 STALL, 3 STOP",
            labels=tp_labels)
        lag_seconds = GaugeMetricFamily("eventlog_group_lag_seconds",
                                        "Age of the oldest record the group has not "
                                        "consumed (0 without lag)", labels=tp_labels)
        for g in m.groups:
            for tp, offset in g.offsets.items():
                committed.add_metric([g.group_id, tp.topic, str(tp.partition)], offset)
            for tp, value in g.lag.items():
                lag.add_metric([g.group_id, tp.topic, str(tp.partition)], value)
            max_lag.add_metric([g.group_id], g.max_lag)
            members.add_metric([g.group_id], g.members)
            status.add_metric([g.group_id], STATUS_VALUES[g.status.status])
            for tp, ps in g.status.partitions.items():
                labels = [g.group_id, tp.topic, str(tp.partition)]
                partition_status.add_metric(labels, STATUS_VALUES[ps.status])
                lag_seconds.add_metric(labels, ps.lag_ms / 1000)
        yield from (committed, lag, max_lag, members, status, partition_status,
                    lag_seconds)

    @staticmethod
    def _disk(m: LogMetrics) -> Iterator[GaugeMetricFamily]:
        for name, doc, value in (
                ("eventlog_disk_bytes", "Disk space of the log directory", m.disk_bytes),
                ("eventlog_fs_free_bytes", "Bytes the log can still write on its file "
                                           "system", m.fs_free_bytes),
                ("eventlog_fs_total_bytes", "Size of the log's file system",
                 m.fs_total_bytes),
                ("eventlog_fs_used_ratio", "Share of the log's file system used "
                                           "(df's Use%), 0 to 1", m.fs_used_ratio)):
            gauge = GaugeMetricFamily(name, doc)
            gauge.add_metric([], value)
            yield gauge


def start_exporter(log: Log, port: int, addr: str = "127.0.0.1",
                   registry: CollectorRegistry = REGISTRY) -> EventLogCollector:
    """Register a collector for ``log`` and serve ``/metrics`` on ``addr:port`` from a
    background thread (prometheus_client's HTTP server). Returns the collector."""
    collector = EventLogCollector(log)
    registry.register(collector)
    start_http_server(port, addr=addr, registry=registry)
    return collector
