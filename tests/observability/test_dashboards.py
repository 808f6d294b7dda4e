"""The Grafana dashboards and the Prometheus rules read only series that exist.

Every dashboard query (panel targets and template variables) and every rule expression is valid
PromQL (promtool's parser), and every metric name in it is either a recording rule of
infra/prometheus/rules or a name that a running finpredict service really exports on /metrics
(read from the services started here, never listed by hand). The model-quality dashboard and
alerts are then checked end to end: a real monitor fed a replay, scraped by a real Prometheus
with the project's rules, answers every panel and fires exactly the alerts its drift report
calls for.
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from finpredict.api.common.v1 import types_pb2
from finpredict.api.monitor.v1 import monitor_pb2 as mpb
from finpredict.api.monitor.v1 import monitor_pb2_grpc as mpb_grpc
from finpredict.testkit.monitor import authed, monitor_env
from finpredict.testkit.monitoring import Daemon, start_prometheus
from finpredict.testkit.process import ServiceProcess, start_service, wait_for

INFRA = Path(__file__).resolve().parents[2] / "infra"
DASHBOARDS = sorted((INFRA / "grafana" / "dashboards").glob("*.json"))
RULE_FILES = sorted((INFRA / "prometheus" / "rules").glob("*.yml"))
# Series Prometheus itself makes (scrape health, alert state).
BUILTIN = {"up", "ALERTS", "ALERTS_FOR_STATE", "scrape_duration_seconds", "scrape_samples_scraped"}
_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "offset", "bool", "inf", "nan", "atan2",
}  # fmt: skip


# ----- reading the queries -----------------------------------------------------------------------


def _dashboard_queries() -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable of every dashboard."""
    out = []
    for path in DASHBOARDS:
        doc = json.loads(path.read_text())
        for panel in doc["panels"]:
            for t in panel.get("targets", []):
                out.append((f"{path.name}: panel {panel['title']!r} {t['refId']}", t["expr"]))
        for var in doc.get("templating", {}).get("list", []):
            if var.get("type") != "query":
                continue
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\)\s*", query)
            assert m, (
                f"{path.name}: variable {var['name']}: only label_values(<selector>, <label>) is checked"
            )
            out.append((f"{path.name}: variable {var['name']}", m.group(1)))
    return out


def _rule_queries() -> list[tuple[str, str]]:
    out = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                out.append((f"{path.name}: {rule.get('record') or rule.get('alert')}", rule["expr"]))
    return out


def _recorded() -> set[str]:
    return {
        rule["record"]
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "record" in rule
    }


def concrete(expr: str) -> str:
    """``expr`` with Grafana's variables replaced (all values of a multi-value variable)."""
    expr = re.sub(r"\$__(rate_)?interval|\$__range", "5m", expr)
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (not functions, keywords, labels or values)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # strings: label values
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for m in re.finditer(r"(?<![\w.:])([a-zA-Z_:][\w:]*)(\s*\()?", text):
        if m.group(2) is None and m.group(1) not in _KEYWORDS:
            names.add(m.group(1))
    return names


def test_metric_names_are_read_from_promql() -> None:
    expr = (
        'sum by (model, le) (rate(finpredict_x_bucket{model=~"$model",a="b c"}[5m])) / ignoring (le) '
        "group_left max without (v) (finpredict:y:p99_5m offset 15m) > 1e-3 and on (model) up == bool 1"
    )
    assert metric_names(concrete(expr)) == {"finpredict_x_bucket", "finpredict:y:p99_5m", "up"}


# ----- valid PromQL ------------------------------------------------------------------------------


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    queries = _dashboard_queries()
    assert len(queries) >= len(DASHBOARDS)
    rules = [
        {"record": f"dashboard:query_{i}:check", "expr": concrete(e)} for i, (_, e) in enumerate(queries)
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        bad = re.findall(r"dashboard:query_(\d+):check", result.stdout + result.stderr)
        where = [queries[int(i)][0] for i in bad]
        pytest.fail(f"invalid PromQL in {where or 'a dashboard'}:\n{result.stdout}{result.stderr}")


# ----- the names exist ---------------------------------------------------------------------------


def exported_names(proc: ServiceProcess) -> set[str]:
    """The metric names ``proc`` exports on /metrics (declared families included, even before
    their first sample), as PromQL sees them: histograms as _bucket, _count and _sum."""
    with urllib.request.urlopen(f"http://127.0.0.1:{proc.metrics_port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.add(name)
            if kind in ("histogram", "summary"):
                names.update({f"{name}_count", f"{name}_sum"})
            if kind == "histogram":
                names.add(f"{name}_bucket")
    return names


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """What every finpredict service with a /metrics endpoint of its own exports, by service.

    The model server's control process exports only the shared gRPC metrics (its replicas report
    through Ray), so it is not started here: dashboards do not read Ray's metrics."""
    tmp = tmp_path_factory.mktemp("exporters")
    envs = {
        "registry": {
            "FINPREDICT_REGISTRY_DATA_DIR": str(tmp / "registry-data"),
            "FINPREDICT_REGISTRY_TOKENS": "dash-admin-token-0123456789=alice:admin",
        },
        "monitor": monitor_env(tmp / "monitor"),
        "gateway": {},
    }
    out: dict[str, set[str]] = {}
    for name, env in envs.items():
        proc = start_service(name, tmp / name, env=env)
        try:
            out[name] = exported_names(proc)
        finally:
            assert proc.stop() == 0, proc.logs()
    return out


@pytest.mark.parametrize(
    ("kind", "queries"),
    [("dashboard", _dashboard_queries()), ("rule", _rule_queries())],
    ids=["dashboards", "rules"],
)
def test_every_query_reads_recording_rules_or_exported_metrics(
    kind: str, queries: list[tuple[str, str]], exported: dict[str, set[str]]
) -> None:
    known = _recorded() | BUILTIN | set().union(*exported.values())
    missing = {
        where: sorted(names) for where, expr in queries if (names := metric_names(concrete(expr)) - known)
    }
    assert missing == {}, f"{kind} queries read metrics no service exports and no rule records: {missing}"
    # a metric of a service is read under that service's prefix (no copy-paste across services)
    for where, expr in queries:
        for name in metric_names(concrete(expr)):
            m = re.match(r"finpredict_(gateway|registry|monitor|model_server)_", name)
            if m and not name.startswith("finpredict_grpc_"):
                service = m.group(1).replace("_", "-")
                if service in exported:
                    assert name in exported[service], f"{where}: {name} is not exported by the {service}"


# ----- the model-quality dashboard and alerts on a real monitor --------------------------------

MODEL = "credit-default"
PER_HOUR = 40
# The monitor's own rules with small samples, so that its alerts fire on this short replay too
# (an accuracy rule also makes the monitor publish the accuracy gauges as soon as labels arrive).
MONITOR_RULES = {
    "rules": [
        {"name": "feature_psi_1d", "kind": "feature_psi", "window": "daily", "threshold": 0.25,
         "consecutive": 1, "min_samples": 100, "severity": "warning", "retrain": False},
        {"name": "score_kl_1h", "kind": "score_kl", "window": "hourly", "threshold": 0.1,
         "consecutive": 1, "min_samples": 20, "severity": "critical", "retrain": False},
        {"name": "accuracy_1d", "kind": "accuracy", "window": "daily", "threshold": 0.8,
         "consecutive": 1, "min_samples": 500, "severity": "critical", "retrain": False},
    ]
}  # fmt: skip
QUALITY_ALERTS = {
    "FinpredictFeatureDrift",
    "FinpredictScoreDrift",
    "FinpredictAccuracyDrop",
    "FinpredictLabelDelayHigh",
    "FinpredictMonitorIngestDropping",
}


def _quality_rules() -> dict[str, str]:
    """The project's recording rules and model-quality alerts, evaluated every second, with no
    `for` (the conditions are static gauges here; promtool's tests cover the durations)."""
    recording = yaml.safe_load((INFRA / "prometheus" / "rules" / "recording.yml").read_text())
    for group in recording["groups"]:
        group["interval"] = "1s"
    alerts = yaml.safe_load((INFRA / "prometheus" / "rules" / "alerts.yml").read_text())
    rules = [r for g in alerts["groups"] for r in g["rules"] if r.get("alert") in QUALITY_ALERTS]
    assert {r["alert"] for r in rules} == QUALITY_ALERTS
    for rule in rules:
        rule["for"] = "0s"
    alerts["groups"] = [{"name": "quality", "interval": "1s", "rules": rules}]
    return {"recording.yml": yaml.safe_dump(recording), "alerts.yml": yaml.safe_dump(alerts)}


@pytest.fixture(scope="module")
def quality_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A monitor that replayed two days (a recession from the second, labels 30 h late), and a
    Prometheus scraping it with the project's rules."""
    from finpredict.demo import replay as rp

    work = tmp_path_factory.mktemp("quality")
    (work / "profiles" / MODEL).mkdir(parents=True)
    (work / "profiles" / MODEL / "1.bin").write_bytes(bytes(rp.reference_profile().to_bytes()))
    (work / "rules.yaml").write_text(yaml.safe_dump(MONITOR_RULES))
    monitor = start_service(
        "monitor", work, env=monitor_env(work, FINPREDICT_MONITOR_RULES_FILE=str(work / "rules.yaml"))
    )
    prometheus: Daemon | None = None
    try:
        with grpc.insecure_channel(monitor.target) as plain:
            ch = authed(plain)
            sc = rp.Scenario(days=2, per_hour=PER_HOUR, drift="recession", shift_day=1, seed=29)
            result = rp.replay(ch, rp.generate(sc), MODEL, 1, label_delay=timedelta(hours=30))
            assert result.accepted == result.outcomes_matched == 2 * 24 * PER_HOUR
            ref = types_pb2.ModelRef(name=MODEL, version=1)
            daily = mpb_grpc.MonitorServiceStub(ch).GetDriftReport(
                mpb.GetDriftReportRequest(model=ref, window=mpb.WINDOW_SIZE_DAILY), timeout=30
            )
            config = {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": ["recording.yml", "alerts.yml"],
                "scrape_configs": [
                    {
                        "job_name": "finpredict-monitor",
                        "static_configs": [{"targets": [f"127.0.0.1:{monitor.metrics_port}"]}],
                    }
                ],
            }
            prometheus = start_prometheus(work / "prometheus", config, _quality_rules())
            # a first scrape before the bad batch, so that its rejections are an increase
            wait_for(
                lambda: _query(prometheus, "finpredict_monitor_records_received_total"), 30, "a first scrape"
            )
            # a batch with a quarter of its records refused (scores outside [0, 1])
            batch = rp.to_records(rp.generate(rp.Scenario(days=1, per_hour=40, seed=3)), MODEL, 1)[:100]
            for i, rec in enumerate(batch):
                rec.request_id = f"late-batch-{i}"
                if i % 4 == 0:
                    rec.score = 1.5
            resp = mpb_grpc.MonitorServiceStub(ch).IngestPredictions(
                iter([mpb.IngestPredictionsRequest(records=batch)]), timeout=30
            )
            assert resp.rejected == 25
        yield {"monitor": monitor, "prometheus": prometheus, "day": daily.windows[-1]}
    finally:
        if prometheus is not None:
            prometheus.stop()
        assert monitor.stop() == 0, monitor.logs()


def _query(prometheus: Daemon, expr: str) -> list[dict[str, Any]]:
    body = prometheus.get_json("/api/v1/query", query=expr)
    assert body["status"] == "success", body
    return body["data"]["result"]  # type: ignore[no-any-return]


def test_every_model_quality_panel_shows_data_from_a_real_monitor(quality_stack: dict[str, Any]) -> None:
    prometheus = quality_stack["prometheus"]
    doc = json.loads((INFRA / "grafana" / "dashboards" / "finpredict-model-quality.json").read_text())
    assert doc["panels"]
    for panel in doc["panels"]:
        exprs = [concrete(t["expr"]) for t in panel["targets"]]
        wait_for(
            lambda exprs=exprs: any(_query(prometheus, e) for e in exprs),
            30,
            f"data for panel {panel['title']!r}: {exprs}",
        )
    # the heatmap has one row per feature of the profile
    rows = _query(prometheus, concrete(doc["panels"][0]["targets"][0]["expr"]))
    assert len(rows) == 45


def test_model_quality_alerts_fire_as_the_drift_report_says(quality_stack: dict[str, Any]) -> None:
    prometheus, day = quality_stack["prometheus"], quality_stack["day"]
    mv = {"model": MODEL, "version": "1"}
    expected: set[tuple[str, frozenset[tuple[str, str]]]] = {
        ("FinpredictFeatureDrift", frozenset({**mv, "feature": f.feature}.items()))
        for f in day.features
        if f.psi > 0.2
    }
    assert expected, "the recession day drifts no feature above 0.2: the replay does not test the rule"
    if day.score_kl > 0.1 and day.count >= 500:
        expected.add(("FinpredictScoreDrift", frozenset(mv.items())))
    if day.accuracy < 0.8 and day.labeled >= 500:
        expected.add(("FinpredictAccuracyDrop", frozenset(mv.items())))
    assert day.label_delay_hours == pytest.approx(30)  # under the 3-day threshold: must not fire
    expected.add(("FinpredictMonitorIngestDropping", frozenset()))  # 25 of the 100 since the 1st scrape

    def firing() -> set[tuple[str, frozenset[tuple[str, str]]]]:
        out = set()
        for series in _query(prometheus, 'ALERTS{alertstate="firing"}'):
            labels = dict(series["metric"])
            name = labels.pop("alertname")
            for key in ("__name__", "alertstate", "severity", "team"):
                labels.pop(key, None)
            out.add((name, frozenset(labels.items())))
        return out

    try:
        wait_for(lambda: expected <= firing(), 60, "the alerts the drift report calls for")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}: expected {sorted(expected)}, firing {sorted(firing())}") from None
    assert firing() == expected
