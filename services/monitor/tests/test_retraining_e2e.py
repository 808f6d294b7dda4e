"""Acceptance 4, end to end: a firing drift alert starts the real training pipeline (the project's
``dvc.yaml`` in a throw-away git + DVC repository, W&B offline) exactly once; it registers a new
version in a real registry whose lineage names the alert, and the monitor records that version
on the alert."""

from __future__ import annotations

import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
import yaml

from finpredict.api.monitor.v1 import monitor_pb2 as pb
from finpredict.api.registry.v1 import registry_pb2, registry_pb2_grpc
from finpredict.demo import replay as rp
from finpredict.monitor.config import DEFAULT_RULES_FILE
from finpredict.testkit.monitor import MODEL, StartMonitor, stub
from finpredict.testkit.pipeline import make_repo  # the pipeline's own test repository builder
from finpredict.testkit.process import ServiceProcess, start_service, wait_for

TOKEN = "monitor-retrain-token-0001"
ROWS = 5000

pytestmark = pytest.mark.slow


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[ServiceProcess]:
    d = tmp_path / "registry"
    svc = start_service(
        "registry",
        d,
        env={
            "FINPREDICT_REGISTRY_DATA_DIR": str(d / "data"),
            "FINPREDICT_REGISTRY_TOKENS": f"{TOKEN}=monitor:admin",
        },
    )
    yield svc
    svc.stop()


def _runs(proc: ServiceProcess) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{proc.metrics_port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("finpredict_monitor_retraining_runs_total{")
    )


def test_drift_alert_retrains_and_registers_a_version_naming_the_alert(
    tmp_path: Path,
    registry: ServiceProcess,
    start_monitor: StartMonitor,
    channel_for: Callable[[ServiceProcess], grpc.Channel],
) -> None:
    auth = {"FINPREDICT_REGISTRY_TARGET": registry.target, "FINPREDICT_REGISTRY_TOKEN": TOKEN}
    repo = make_repo(tmp_path / "pipeline" / "repo", rows=ROWS, extra_env=auth)
    rules = yaml.safe_load(DEFAULT_RULES_FILE.read_text())
    for rule in rules["rules"]:
        if rule["name"] == "feature_psi_3d":
            rule["consecutive"] = 1
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules))
    proc = start_monitor(
        env={
            **{
                k: v
                for k, v in repo.env.items()
                if k.startswith(("WANDB_", "DVC_", "FINPREDICT_REGISTRY", "GIT_"))
            },
            "PATH": repo.env["PATH"],
            "FINPREDICT_MONITOR_RULES_FILE": str(tmp_path / "rules.yaml"),
            "FINPREDICT_MONITOR_RETRAIN_COMMAND": f"{sys.executable} -m dvc repro",
            "FINPREDICT_MONITOR_RETRAIN_WORKDIR": str(repo.path),
        }
    )
    ch = channel_for(proc)
    sc = rp.Scenario(days=2, per_hour=200, drift="new_segment", shift_day=1, seed=91)
    result = rp.replay(ch, rp.generate(sc), MODEL, 1)
    assert result.firing("feature_psi_3d")
    assert _runs(proc) == 1

    def retrained() -> list[pb.Alert] | None:
        alerts = stub(ch).ListAlerts(pb.ListAlertsRequest(firing_only=True), timeout=10).alerts
        psi = [a for a in alerts if a.rule == "feature_psi_3d"]
        return psi if psi and all(a.retrained_version > 0 for a in psi) else None

    try:
        alerts = wait_for(retrained, 420, "the retraining run to register a version", interval=1.0)
    except TimeoutError:
        logs = sorted((tmp_path / "data" / "retraining").glob("*.log"))
        raise AssertionError(logs[-1].read_text()[-4000:] if logs else "no retraining log") from None
    version = alerts[0].retrained_version
    assert {a.retrained_version for a in alerts} == {version}
    assert _runs(proc) == 1, "one run for the whole incident"
    with grpc.insecure_channel(registry.target) as rch:
        lineage = registry_pb2_grpc.RegistryServiceStub(rch).GetLineage(
            registry_pb2.GetLineageRequest(model=MODEL, version=version),
            metadata=(("authorization", f"Bearer {TOKEN}"),),
            timeout=10,
        )
    assert lineage.lineage.trigger in {f"alert:{a.id}" for a in alerts}
