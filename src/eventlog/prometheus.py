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
    eventlog_group_total_lag{group}
    eventlog_group_max_lag_seconds{group}
    eventlog_group_members{group}
    eventlog_disk_bytes
    eventlog_fs_free_bytes
    eventlog_fs_total_bytes
    eventlog_fs_used_ratio

and, for dashboards and alerts written for Kafka, the same numbers under the names of
kafka-exporter (danielqsj/kafka_exporter; ``kafka_names=False`` leaves them out):

    kafka_topic_partitions{topic}
    kafka_topic_partition_current_offset{topic, partition}      (the end offset)
    kafka_topic_partition_oldest_offset{topic, partition}       (the start offset)
    kafka_consumergroup_current_offset{consumergroup, topic, partition}
    kafka_consumergroup_current_offset_sum{consumergroup, topic}
    kafka_consumergroup_lag{consumergroup, topic, partition}
    kafka_consumergroup_lag_sum{consumergroup, topic}
    kafka_consumergroup_members{consumergroup}

Lag is ``Log.group_lag``'s everywhere: every partition of the group's topics, a
partition never committed counting from its start offset (kafka-exporter reports -1
or nothing there; eventlog knows better). Producers and consumers of this process
added with ``add_client`` export their counters, labelled by the name given:

    eventlog_producer_records_sent_total{client}     and bytes, batches, errors,
    eventlog_producer_records_pending{client}        duplicates
    eventlog_consumer_records_consumed_total{client}
    eventlog_consumer_offset_resets_total{client}
    eventlog_consumer_assigned_partitions{client}
    eventlog_consumer_records_lag_max{client}

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

import threading
from collections.abc import Iterator

try:
    from prometheus_client import REGISTRY, start_http_server
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.registry import Collector, CollectorRegistry
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError("eventlog.prometheus needs the prometheus_client package: "
                      "pip install 'eventlog[prometheus]'") from exc

from .consumer import Consumer
from .errors import ClosedError
from .log import Log
from .monitoring import STATUS_VALUES, LogMetrics
from .producer import Producer

__all__ = ["EventLogCollector", "start_exporter"]


# Producer.metrics() counters, exported as eventlog_producer_<name>_total.
_PRODUCER_COUNTERS = (("records_sent", "Records appended"),
                      ("bytes_sent", "Bytes of records appended"),
                      ("batches_sent", "Batches appended"),
                      ("errors", "Records that failed"),
                      ("duplicates", "Duplicate records skipped (idempotence)"))


class EventLogCollector(Collector):
    """A Prometheus collector: one ``Log.metrics()`` snapshot per scrape (its groups'
    status included, by Burrow's rules over the default window), under eventlog's
    names and, with ``kafka_names`` (the default), kafka-exporter's too; and the
    counters of the clients given to ``add_client``. Cost: that of ``metrics()``, a
    ``stat`` of every file of the log and a read of every group's offsets, and a head
    read per partition of each consumer added; thread-safe as ``Log`` is."""

    def __init__(self, log: Log, *, kafka_names: bool = True) -> None:
        self._log = log
        self._kafka_names = kafka_names
        self._clients: dict[str, Producer | Consumer] = {}
        self._lock = threading.Lock()

    def add_client(self, client: Producer | Consumer, name: str) -> None:
        """Export the counters of ``client`` (a ``Producer`` or ``Consumer`` of this
        process) labelled ``client=name``, until ``remove_client`` (a consumer also
        until it is closed; a closed producer keeps its last counts). A name already
        in use is taken over by the new client. Scrapes read a consumer's counters
        from the scrape's thread: they are plain numbers, safe to read while it
        polls."""
        if not isinstance(client, (Producer, Consumer)):
            raise TypeError(f"add_client needs a Producer or a Consumer, not "
                            f"{type(client).__name__}")
        with self._lock:
            self._clients[str(name)] = client

    def remove_client(self, name: str) -> None:
        """Stop exporting the client named ``name`` (no error if there is none)."""
        with self._lock:
            self._clients.pop(name, None)

    def collect(self) -> Iterator[Metric]:
        """The metric families of one ``Log.metrics()`` snapshot and of the clients
        added (prometheus_client calls this at every scrape)."""
        m = self._log.metrics()
        yield from self._partitions(m)
        yield from self._groups(m)
        yield from self._disk(m)
        if self._kafka_names:
            yield from self._kafka(m)
        yield from self._client_metrics()

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
        lag_sum = GaugeMetricFamily("eventlog_group_total_lag",
                                    "Records the group has left to read, all partitions "
                                    "of its topics", labels=["group"])
        max_lag_seconds = GaugeMetricFamily("eventlog_group_max_lag_seconds",
                                            "Age of the oldest record the group has not "
                                            "consumed, over its partitions",
                                            labels=["group"])
        for g in m.groups:
            for tp, offset in g.offsets.items():
                committed.add_metric([g.group_id, tp.topic, str(tp.partition)], offset)
            for tp, value in g.lag.items():
                lag.add_metric([g.group_id, tp.topic, str(tp.partition)], value)
            max_lag.add_metric([g.group_id], g.max_lag)
            lag_sum.add_metric([g.group_id], sum(g.lag.values()))
            max_lag_seconds.add_metric([g.group_id], max(
                (ps.lag_ms for ps in g.status.partitions.values()), default=0) / 1000)
            members.add_metric([g.group_id], g.members)
            status.add_metric([g.group_id], STATUS_VALUES[g.status.status])
            for tp, ps in g.status.partitions.items():
                labels = [g.group_id, tp.topic, str(tp.partition)]
                partition_status.add_metric(labels, STATUS_VALUES[ps.status])
                lag_seconds.add_metric(labels, ps.lag_ms / 1000)
        yield from (committed, lag, max_lag, members, status, partition_status,
                    lag_seconds, lag_sum, max_lag_seconds)

    @staticmethod
    def _kafka(m: LogMetrics) -> Iterator[GaugeMetricFamily]:
        """kafka-exporter's names for the same numbers."""
        tp_labels = ["topic", "partition"]
        partitions = GaugeMetricFamily("kafka_topic_partitions",
                                       "Number of partitions of the topic",
                                       labels=["topic"])
        current = GaugeMetricFamily("kafka_topic_partition_current_offset",
                                    "End offset of the partition (next offset to write)",
                                    labels=tp_labels)
        oldest = GaugeMetricFamily("kafka_topic_partition_oldest_offset",
                                   "Start offset of the partition (oldest stored)",
                                   labels=tp_labels)
        for t in m.topics:
            partitions.add_metric([t.topic], t.partitions)
        for p in m.partitions:
            labels = [p.topic, str(p.partition)]
            current.add_metric(labels, p.end_offset)
            oldest.add_metric(labels, p.start_offset)
        yield from (partitions, current, oldest)
        group_tp = ["consumergroup", "topic", "partition"]
        group_topic = ["consumergroup", "topic"]
        offset = GaugeMetricFamily("kafka_consumergroup_current_offset",
                                   "Committed offset of the group", labels=group_tp)
        offset_sum = GaugeMetricFamily("kafka_consumergroup_current_offset_sum",
                                       "Committed offsets of the group summed over the "
                                       "topic's partitions", labels=group_topic)
        lag = GaugeMetricFamily("kafka_consumergroup_lag",
                                "Records the group has left to read on the partition",
                                labels=group_tp)
        lag_sum = GaugeMetricFamily("kafka_consumergroup_lag_sum",
                                    "Records the group has left to read on the topic",
                                    labels=group_topic)
        members = GaugeMetricFamily("kafka_consumergroup_members",
                                    "Live members of the group", labels=["consumergroup"])
        for g in m.groups:
            offsets: dict[str, int] = {}
            for tp, value in sorted(g.offsets.items()):
                offset.add_metric([g.group_id, tp.topic, str(tp.partition)], value)
                offsets[tp.topic] = offsets.get(tp.topic, 0) + value
            lags: dict[str, int] = {}
            for tp, value in sorted(g.lag.items()):
                lag.add_metric([g.group_id, tp.topic, str(tp.partition)], value)
                lags[tp.topic] = lags.get(tp.topic, 0) + value
            for topic, total in offsets.items():
                offset_sum.add_metric([g.group_id, topic], total)
            for topic, total in lags.items():
                lag_sum.add_metric([g.group_id, topic], total)
            members.add_metric([g.group_id], g.members)
        yield from (offset, offset_sum, lag, lag_sum, members)

    def _client_metrics(self) -> Iterator[Metric]:
        """The counters of the clients added, dropping those closed since."""
        with self._lock:
            clients = sorted(self._clients.items())
        produced = {name: CounterMetricFamily(f"eventlog_producer_{name}", doc,
                                              labels=["client"])
                    for name, doc in _PRODUCER_COUNTERS}
        pending = GaugeMetricFamily("eventlog_producer_records_pending",
                                    "Records sent, not appended yet", labels=["client"])
        consumed = CounterMetricFamily("eventlog_consumer_records_consumed",
                                       "Records returned by poll", labels=["client"])
        resets = CounterMetricFamily("eventlog_consumer_offset_resets",
                                     "Committed offsets or positions out of range, moved "
                                     "by auto_offset_reset", labels=["client"])
        assigned = GaugeMetricFamily("eventlog_consumer_assigned_partitions",
                                     "Partitions assigned to the consumer",
                                     labels=["client"])
        lag_max = GaugeMetricFamily("eventlog_consumer_records_lag_max",
                                    "Largest lag (end offset minus position) over the "
                                    "consumer's partitions", labels=["client"])
        for name, client in clients:
            if isinstance(client, Producer):
                pm = client.metrics()
                for key, family in produced.items():
                    family.add_metric([name], pm[key])
                pending.add_metric([name], pm["records_pending"])
                continue
            try:
                cm = client.metrics()
            except ClosedError:
                self.remove_client(name)
                continue
            consumed.add_metric([name], cm["records_consumed"])
            resets.add_metric([name], cm["offset_resets"])
            assigned.add_metric([name], cm["assigned_partitions"])
            lag_max.add_metric([name], cm["records_lag_max"])
        yield from produced.values()
        yield from (pending, consumed, resets, assigned, lag_max)

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
                   registry: CollectorRegistry = REGISTRY, *, kafka_names: bool = True
                   ) -> EventLogCollector:
    """Register a collector for ``log`` and serve ``/metrics`` on ``addr:port`` from a
    background thread (prometheus_client's HTTP server). Returns the collector (give
    it producers and consumers with ``add_client``)."""
    collector = EventLogCollector(log, kafka_names=kafka_names)
    registry.register(collector)
    start_http_server(port, addr=addr, registry=registry)
    return collector
