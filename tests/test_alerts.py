"""The example alerting rules (docs/alerts/eventlog.rules.yml) against Prometheus' own
``promtool``: the rules load (``check rules``), their unit tests pass (``test rules``
docs/alerts/eventlog.rules.test.yml), they fire on series scraped from a real
``EventLogCollector``, and every metric name they use is one the collector emits.

promtool comes from Debian's ``prometheus`` package (.ci/run extracts it). Without it
these tests skip, unless ``EVENTLOG_REQUIRE_PROMTOOL=1`` (as in CI) makes them fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import eventlog
from eventlog import Consumer, TopicPartition
from eventlog.monitoring import STATUS_VALUES
from eventlog.prometheus import EventLogCollector
from eventlog.testing import ManualClock
from tests.conftest import ROOT

ALERTS = ROOT / "docs" / "alerts"
RULES = ALERTS / "eventlog.rules.yml"
RULES_TEST = ALERTS / "eventlog.rules.test.yml"
SCRAPE_LABELS = {"job": "eventlog", "instance": "app:9400"}  # what a scrape adds
_NAME = re.compile(r"\beventlog_[a-z_]+\b")


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("EVENTLOG_REQUIRE_PROMTOOL") == "1":
            pytest.fail("promtool is not on PATH, and EVENTLOG_REQUIRE_PROMTOOL=1")
        pytest.skip("promtool is not on PATH (Debian package prometheus; .ci/run "
                    "installs it)")
    return path


def run_promtool(*args: str | Path, cwd: Path = ALERTS, input: str | None = None
                 ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *map(str, args)], cwd=cwd, input=input,
                          capture_output=True, text=True, timeout=120)


def scrape(log: eventlog.Log, kafka_names: bool = True) -> str:
    registry = CollectorRegistry()
    registry.register(EventLogCollector(log, kafka_names=kafka_names))
    return generate_latest(registry).decode()


def samples(text: str) -> dict[str, list[dict[str, str]]]:
    """Metric name -> the label sets of its samples, in a scrape's text."""
    found: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found.setdefault(s.name, []).append(dict(s.labels))
    return found


def _busy_log(path: Path, kafka_names: bool = True) -> str:
    """A scrape of a log where every gauge has samples: a topic, a group with commits."""
    with eventlog.open(path) as log:
        log.create_topic("orders", partitions=2)
        for p in (0, 1):
            log.topic("orders").partition(p).append([b"x"] * 10)
        with Consumer(log, group_id="billing", enable_auto_commit=False) as consumer:
            consumer.assign([TopicPartition("orders", 0), TopicPartition("orders", 1)])
            consumer.commit({TopicPartition("orders", 0): 4, TopicPartition("orders", 1): 10})
        return scrape(log, kafka_names)


# -- the rules and their unit test -------------------------------------------------------

def test_rules_pass_promtool_check_rules():
    proc = run_promtool("check", "rules", RULES)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 5 rules found" in proc.stdout


def test_rules_unit_tests_pass_promtool_test_rules():
    proc = run_promtool("test", "rules", RULES_TEST)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_every_metric_the_rules_and_their_tests_use_is_one_the_collector_emits(tmp_path):
    emitted = samples(_busy_log(tmp_path / "log"))
    used = set(_NAME.findall(RULES.read_text()))
    assert used, "the rules use no eventlog metric?"
    assert used <= emitted.keys(), used - emitted.keys()
    # The unit test's series: real names, with exactly the collector's labels.
    series = re.findall(r"series: '([a-z_]+)\{([^}]*)\}'", RULES_TEST.read_text())
    assert series
    for name, labels in series:
        assert name in emitted, name
        names = {item.split("=")[0] for item in labels.split(",")} - SCRAPE_LABELS.keys()
        assert names == set(emitted[name][0]), (name, names)


def test_scrape_passes_promtool_check_metrics(tmp_path):
    """eventlog's own names pass the lint; kafka-exporter's names are kept as Kafka
    dashboards spell them, so the only findings of a full scrape are their ``_sum``
    suffixes."""
    own = _busy_log(tmp_path / "own", kafka_names=False)
    assert "kafka_" not in own
    proc = run_promtool("check", "metrics", input=own, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = run_promtool("check", "metrics", input=_busy_log(tmp_path / "log"),
                        cwd=tmp_path)
    findings = set((proc.stdout + proc.stderr).splitlines())
    assert findings == {f'{name} non-histogram and non-summary metrics should not have '
                        '"_sum" suffix' for name in ("kafka_consumergroup_lag_sum",
                                                     "kafka_consumergroup_current_offset_sum")}


# -- the rules on series from a real exporter --------------------------------------------

def _go_duration(seconds: float) -> str:
    """Prometheus' ``humanizeDuration`` for whole seconds from 1 s to a day."""
    whole = int(seconds)
    assert whole == seconds and 1 <= whole < 86_400, seconds
    h, m, s = whole // 3600, whole // 60 % 60, whole % 60
    return f"{h}h {m}m {s}s" if h else f"{m}m {s}s" if m else f"{s}s"


def _series(scrapes: list[str]) -> list[dict[str, str]]:
    """promtool input series from scrapes taken a minute apart ('_' where a series is
    absent from a scrape)."""
    values: dict[str, dict[int, float]] = {}
    for i, text in enumerate(scrapes):
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                labels = {**s.labels, **SCRAPE_LABELS}
                key = s.name + "{" + ",".join(f'{k}="{v}"' for k, v in
                                              sorted(labels.items())) + "}"
                values.setdefault(key, {})[i] = s.value
    return [{"series": key,
             "values": " ".join(repr(by_scrape[i]) if i in by_scrape else "_"
                                for i in range(len(scrapes)))}
            for key, by_scrape in values.items()]


def _value(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and labels.items() <= s.labels.items():
                return float(s.value)
    raise KeyError((name, labels))


def test_alerts_fire_on_series_scraped_from_a_real_exporter(tmp_path):
    # A minute per step on the log's clock, a scrape after each. Group billing keeps
    # up on both partitions, then stops committing partition 0 after minute 4 (STOP
    # from minute 9: 5 minutes without a commit, longer than its window's 4); group
    # search commits every minute but falls further behind each time (WARN).
    clock = ManualClock()
    tp0, tp1 = TopicPartition("orders", 0), TopicPartition("orders", 1)
    scrapes = []
    with eventlog.open(tmp_path / "log", clock=clock) as log:
        log.create_topic("orders", partitions=2)
        with Consumer(log, group_id="billing", enable_auto_commit=False) as billing, \
                Consumer(log, group_id="search", enable_auto_commit=False) as search:
            billing.assign([tp0, tp1])
            search.assign([tp0, tp1])
            for minute in range(22):
                if minute:
                    clock.advance(60_000)
                for p in (0, 1):
                    log.topic("orders").partition(p).append([b"x"] * 10)
                end = 10 * (minute + 1)
                billing.commit({tp0: end, tp1: end} if minute <= 4 else {tp1: end})
                search.commit({tp0: 5 * minute, tp1: 5 * minute})
                scrapes.append(scrape(log))
    last = scrapes[-1]
    status = "eventlog_group_partition_status"
    assert _value(last, status, group="billing", partition="0") == STATUS_VALUES["STOP"]
    assert _value(last, status, group="billing", partition="1") == STATUS_VALUES["OK"]
    assert _value(last, "eventlog_group_status", group="billing") == STATUS_VALUES["ERR"]
    assert _value(last, "eventlog_group_status", group="search") == STATUS_VALUES["WARN"]
    assert _value(scrapes[8], status, group="billing", partition="0") == 0
    assert _value(scrapes[9], status, group="billing", partition="0") == 3

    at = f"{len(scrapes) - 1}m"
    age = _value(last, "eventlog_group_lag_seconds", group="billing", partition="0")
    behind = _value(last, "eventlog_group_max_lag", group="search")
    where = {**SCRAPE_LABELS, "group": "billing", "topic": "orders", "partition": "0"}
    test = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [{
            "name": "scraped from EventLogCollector",
            "interval": "1m",
            "input_series": _series(scrapes),
            "alert_rule_test": [
                {"eval_time": "12m", "alertname": "EventlogConsumerStopped",
                 "exp_alerts": []},
                {"eval_time": at, "alertname": "EventlogConsumerStopped",
                 "exp_alerts": [{
                     "exp_labels": {**where, "severity": "critical"},
                     "exp_annotations": {
                         "summary": "Consumer group billing stopped on orders[0]",
                         "description": "No commit for longer than the group's window "
                                        "of commits while records wait; the oldest "
                                        "unconsumed record is "
                                        f"{_go_duration(age)} old."}}]},
                {"eval_time": at, "alertname": "EventlogConsumerStalled",
                 "exp_alerts": []},
                {"eval_time": at, "alertname": "EventlogConsumerLagGrowing",
                 "exp_alerts": [{
                     "exp_labels": {**SCRAPE_LABELS, "group": "search",
                                    "severity": "warning"},
                     "exp_annotations": {
                         "summary": "Consumer group search falls behind",
                         "description": "Lag grew at every commit of the group's "
                                        f"window; {int(behind)} records behind on its "
                                        "worst partition."}}]},
            ]}],
    }
    path = tmp_path / "scraped.test.yml"
    path.write_text(json.dumps(test, indent=1))  # JSON is YAML
    proc = run_promtool("test", "rules", path, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_metric_the_collector_emits_is_documented(tmp_path):
    emitted = samples(_busy_log(tmp_path / "log"))
    page = (ROOT / "docs" / "monitoring.md").read_text()
    module = eventlog.prometheus.__doc__ or ""
    for name in emitted:
        assert f"`{name}`" in page, f"{name} not in monitoring.md"
        assert name in module, f"{name} not in eventlog.prometheus's docstring"
