"""The retraining trigger: a firing drift incident starts exactly one background run with
``FINPREDICT_TRIGGER=alert:<id>``; the version the run registered is recorded on the alerts.

The command here is a stand-in for the training pipeline (a small script that records how it was
started and prints the register stage's result line); the end-to-end run through the real
pipeline and registry is not covered by this test.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
import yaml

from finpredict.api.monitor.v1 import monitor_pb2 as pb
from finpredict.demo import replay as rp
from finpredict.monitor.config import DEFAULT_RULES_FILE
from finpredict.testkit.monitor import MODEL, StartMonitor, stub
from finpredict.testkit.process import ServiceProcess, wait_for

STAND_IN = """
import json, os, sys
with open(sys.argv[1], "a") as fh:
    fh.write(json.dumps({"trigger": os.environ["FINPREDICT_TRIGGER"], "model": sys.argv[2]}) + "\\n")
print("[register] " + sys.argv[2] + " version 7 registered (gates passed: True)")
"""


def _runs(proc: ServiceProcess) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{proc.metrics_port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("finpredict_monitor_retraining_runs_total{"):
            out[line.split('trigger="', 1)[1].split('"', 1)[0]] = float(line.rsplit(" ", 1)[1])
    return out


def test_a_drift_incident_starts_exactly_one_retraining_run(
    tmp_path: Path, start_monitor: StartMonitor, channel_for: Callable[[ServiceProcess], grpc.Channel]
) -> None:
    rules = yaml.safe_load(DEFAULT_RULES_FILE.read_text())
    for rule in rules["rules"]:
        if rule["name"] == "feature_psi_3d":
            rule["consecutive"] = 1
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules))
    script = tmp_path / "train_stand_in.py"
    script.write_text(STAND_IN)
    calls = tmp_path / "calls.jsonl"
    proc = start_monitor(
        env={
            "FINPREDICT_MONITOR_RULES_FILE": str(tmp_path / "rules.yaml"),
            "FINPREDICT_MONITOR_RETRAIN_COMMAND": f"{sys.executable} {script} {calls} {{model}}",
        }
    )
    ch = channel_for(proc)
    sc = rp.Scenario(days=2, per_hour=200, drift="new_segment", shift_day=1, seed=81)
    result = rp.replay(ch, rp.generate(sc), MODEL, 1)
    psi = result.firing("feature_psi_3d")
    assert len(psi) > 3, "several features fire together: one incident"
    assert _runs(proc) == {"alert": 1.0}

    def recorded() -> list[pb.Alert] | None:
        alerts = stub(ch).ListAlerts(pb.ListAlertsRequest(firing_only=True), timeout=10).alerts
        psi_now = [a for a in alerts if a.rule == "feature_psi_3d"]
        return psi_now if psi_now and all(a.retrained_version == 7 for a in psi_now) else None

    alerts = wait_for(recorded, 60, "the retrained version recorded on the alerts")
    (call,) = [json.loads(line) for line in calls.read_text().splitlines()]
    assert call["model"] == MODEL
    assert call["trigger"] in {f"alert:{a.id}" for a in alerts}
    # rules without retrain (the score KL rule) start nothing; re-evaluation starts nothing
    assert all(a.retrained_version == 0 for a in result.firing("score_kl_1h"))
    stub(ch).EvaluateRules(pb.EvaluateRulesRequest(now=result.changes[-1].started_at), timeout=10)
    assert _runs(proc) == {"alert": 1.0}
    # an admin can start one by hand
    job = stub(ch).TriggerRetraining(pb.TriggerRetrainingRequest(model=MODEL, reason="drill"), timeout=10)
    assert job.job_id.startswith("retrain-")
    assert _runs(proc) == {"alert": 1.0, "manual": 1.0}
    wait_for(lambda: len(calls.read_text().splitlines()) == 2, 60, "the manual run")
    assert json.loads(calls.read_text().splitlines()[1])["trigger"] == "manual:drill"


def test_retraining_disabled_is_failed_precondition(
    start_monitor: StartMonitor, channel_for: Callable[[ServiceProcess], grpc.Channel]
) -> None:
    s = stub(channel_for(start_monitor()))
    with pytest.raises(grpc.RpcError) as err:
        s.TriggerRetraining(pb.TriggerRetrainingRequest(model=MODEL), timeout=10)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "FINPREDICT_MONITOR_RETRAIN_COMMAND" in (err.value.details() or "")
