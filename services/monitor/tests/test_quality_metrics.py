"""The model-quality gauges and ingest counters on the monitor's /metrics (what Prometheus
scrapes and the alert rules and dashboards in infra/ read) equal the monitor's drift report."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable
from datetime import timedelta

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from finpredict.api.common.v1 import types_pb2
from finpredict.api.monitor.v1 import monitor_pb2 as pb
from finpredict.demo import replay as rp
from finpredict.testkit.monitor import MODEL, StartMonitor, stub
from finpredict.testkit.process import ServiceProcess

PER_HOUR = 30
LABEL_DELAY = timedelta(hours=30)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _scrape(proc: ServiceProcess) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{proc.metrics_port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _get(samples: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in samples, f"{name}{labels} is not exported"
    return samples[key]


def test_quality_gauges_equal_the_drift_report_and_ingest_is_counted(
    start_monitor: StartMonitor, channel_for: Callable[[ServiceProcess], grpc.Channel]
) -> None:
    proc = start_monitor()
    ch = channel_for(proc)
    # two days, a recession from the second, labels 30 h late (all of them delivered at the end)
    sc = rp.Scenario(days=2, per_hour=PER_HOUR, drift="recession", shift_day=1, seed=13)
    result = rp.replay(ch, rp.generate(sc), MODEL, 1, label_delay=LABEL_DELAY)
    total = 2 * 24 * PER_HOUR
    assert (result.accepted, result.outcomes_matched) == (total, total)
    ref = types_pb2.ModelRef(name=MODEL, version=1)
    s = stub(ch)
    daily = s.GetDriftReport(pb.GetDriftReportRequest(model=ref, window=pb.WINDOW_SIZE_DAILY), timeout=30)
    hourly = s.GetDriftReport(pb.GetDriftReportRequest(model=ref, window=pb.WINDOW_SIZE_HOURLY), timeout=30)
    day = daily.windows[-1]  # the latest closed day (the recession), also the latest labelled one
    assert day.start.ToDatetime(tzinfo=rp.START.tzinfo) == rp.START + timedelta(days=1)
    samples = _scrape(proc)
    mv = {"model": MODEL, "version": "1"}

    # drift: one PSI series per feature of the daily window, the score's KL per window size
    psi = {
        dict(labels)["feature"]: value
        for (name, labels), value in samples.items()
        if name == "finpredict_monitor_feature_psi" and dict(labels).get("window") == "daily"
    }
    assert psi == pytest.approx({f.feature: f.psi for f in day.features}, rel=1e-9, abs=1e-12)
    assert len(psi) == 45
    assert max(psi.values()) > 0.0
    assert _get(samples, "finpredict_monitor_score_kl", **mv, window="daily") == pytest.approx(day.score_kl)
    assert _get(samples, "finpredict_monitor_score_kl", **mv, window="hourly") == pytest.approx(
        hourly.windows[-1].score_kl
    )
    assert _get(samples, "finpredict_monitor_window_predictions", **mv, window="daily") == 24 * PER_HOUR

    # quality from the delayed labels
    assert _get(samples, "finpredict_monitor_accuracy_ratio", **mv, window="daily") == pytest.approx(
        day.accuracy
    )
    assert _get(samples, "finpredict_monitor_auc_ratio", **mv, window="daily") == pytest.approx(day.auc)
    assert _get(samples, "finpredict_monitor_window_labeled", **mv, window="daily") == 24 * PER_HOUR
    delay = _get(samples, "finpredict_monitor_label_delay_seconds", **mv)
    assert delay == pytest.approx(LABEL_DELAY.total_seconds())
    assert delay == pytest.approx(day.label_delay_hours * 3600)

    # ingest: everything received was stored; a bad record is received and rejected
    assert _get(samples, "finpredict_monitor_records_received_total") == total
    assert _get(samples, "finpredict_monitor_records_ingested_total", **mv) == total
    bad = rp.to_records(rp.generate(rp.Scenario(days=1, per_hour=1, seed=3)).head(1), MODEL, 1)[0]
    bad.score = 2.0
    s.IngestPredictions(iter([pb.IngestPredictionsRequest(records=[bad])]), timeout=30)
    after = _scrape(proc)
    assert _get(after, "finpredict_monitor_records_received_total") == total + 1
    assert _get(after, "finpredict_monitor_records_rejected_total", field="score") == 1

    # labels are bounded: model, version, window, feature, field, rule, state, result, trigger, and
    # the fixed enumerations kind (expired / review cases), verdict (feedback) and source (profiles)
    allowed = {
        "model",
        "version",
        "window",
        "feature",
        "field",
        "rule",
        "state",
        "result",
        "trigger",
        "kind",
        "verdict",
        "source",
    }
    for name, labels in after:
        if name.startswith("finpredict_monitor_"):
            assert {k for k, _ in labels} <= allowed, (name, labels)
