"""Issue 21, acceptance 2: an alert-triggered run on unchanged code and params still trains on new
data. The monitor writes the production snapshot of the window ending at the alert's time into
the pipeline's repository before it starts ``dvc repro`` (the project's ``dvc.yaml``, source
``production``); two incidents with new records in between train and register twice, each
version's lineage naming its alert and the snapshot it trained on."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import grpc
import polars as pl
import pytest
import yaml

from finpredict.api.monitor.v1 import monitor_pb2 as pb
from finpredict.api.registry.v1 import registry_pb2, registry_pb2_grpc
from finpredict.demo import replay as rp
from finpredict.monitor.config import DEFAULT_RULES_FILE
from finpredict.pipelines.common import md5_file
from finpredict.testkit.monitor import MODEL, StartMonitor, labelled_stream, stub
from finpredict.testkit.pipeline import make_repo
from finpredict.testkit.process import ServiceProcess, wait_for
from finpredict.testkit.registry import start_registry

TOKEN = "monitor-retrain-production-token-0001"
PER_HOUR = 100
DAY = timedelta(days=1)
SPACING = timedelta(hours=1) / PER_HOUR
SNAPSHOT = "data/production/snapshot.parquet"

pytestmark = pytest.mark.slow


def _day(seed: int, day: int, scenario: str) -> pl.DataFrame:
    return labelled_stream(24 * PER_HOUR, seed, rp.START + day * DAY, SPACING, scenario)


def _retrained(ch: grpc.Channel, version: int, tmp_path: Path) -> tuple[int, dict[str, pb.Alert]]:
    """The version registered by the retraining run of ``version``'s drift incident, and the
    alerts of that incident by trigger (``alert:<id>``)."""

    def done() -> list[pb.Alert] | None:
        alerts = stub(ch).ListAlerts(pb.ListAlertsRequest(), timeout=10).alerts
        ours = [a for a in alerts if a.model.version == version and a.retrained_version > 0]
        return ours if any(a.rule == "feature_psi_3d" for a in ours) else None

    try:
        alerts = wait_for(done, 300, f"the retraining run of the v{version} incident", interval=1.0)
    except TimeoutError:
        logs = sorted((tmp_path / "data" / "retraining").glob("*.log"))
        raise AssertionError(logs[-1].read_text()[-4000:] if logs else "no retraining log") from None
    assert len({a.retrained_version for a in alerts}) == 1, "one run per incident"
    return alerts[0].retrained_version, {f"alert:{a.id}": a for a in alerts}


def _lineage(target: str, version: int) -> registry_pb2.Lineage:
    with grpc.insecure_channel(target) as ch:
        return (
            registry_pb2_grpc.RegistryServiceStub(ch)
            .GetLineage(
                registry_pb2.GetLineageRequest(model=MODEL, version=version),
                metadata=(("authorization", f"Bearer {TOKEN}"),),
                timeout=10,
            )
            .lineage
        )


def test_alert_triggered_runs_train_on_the_new_production_window_each_time(
    tmp_path: Path,
    start_monitor: StartMonitor,
    channel_for: Callable[[ServiceProcess], grpc.Channel],
    profile_bytes: bytes,
) -> None:
    registry = start_registry(tmp_path / "registry", f"{TOKEN}=monitor:admin")
    try:
        auth = {"FINPREDICT_REGISTRY_TARGET": registry.target, "FINPREDICT_REGISTRY_TOKEN": TOKEN}
        repo = make_repo(tmp_path / "pipeline" / "repo", rows=1000, extra_env=auth)
        params = repo.params()
        params["data"]["source"] = "production"  # the code and params of both runs
        params["wandb"]["enabled"] = False  # tracking of these runs is not what is under test
        repo.set_params(params)
        assert repo.git("commit", "-q", "-am", "train on production data").rc == 0
        rules = yaml.safe_load(DEFAULT_RULES_FILE.read_text())
        for rule in rules["rules"]:
            if rule["name"] == "feature_psi_3d":
                rule["consecutive"] = 1
        (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules))
        (tmp_path / "profiles" / MODEL).mkdir(parents=True)
        (tmp_path / "profiles" / MODEL / "2.bin").write_bytes(profile_bytes)
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
                "FINPREDICT_MONITOR_RETRAIN_SNAPSHOT": SNAPSHOT,
                "FINPREDICT_MONITOR_RETRAIN_WINDOW_DAYS": "4",
                "FINPREDICT_MONITOR_LABEL_MATURITY_DAYS": "0.25",
            }
        )
        ch = channel_for(proc)
        # incident 1: version 1 sees a calm day, then a unit change (labels unchanged: the gates hold)
        first = pl.concat([_day(11, 0, "none"), _day(12, 1, "unit_change")])
        assert rp.replay(ch, first, MODEL, 1, label_delay=timedelta(hours=1)).firing("feature_psi_3d")
        version1, alerts1 = _retrained(ch, 1, tmp_path)
        lin1 = _lineage(registry.target, version1)
        md5_1 = md5_file(repo.path / SNAPSHOT)
        # incident 2: new records (version 2, from day 2); nothing else changes
        second = _day(13, 2, "unit_change")
        assert rp.replay(ch, second, MODEL, 2, label_delay=timedelta(hours=1)).firing("feature_psi_3d")
        version2, alerts2 = _retrained(ch, 2, tmp_path)
        lin2 = _lineage(registry.target, version2)
    finally:
        registry.stop()

    assert version2 > version1
    for lin, alerts in ((lin1, alerts1), (lin2, alerts2)):
        assert lin.trigger in alerts  # alert:<id> of the incident's first alert
        data = lin.training_data
        assert data.source == "production"
        assert data.window_end == alerts[lin.trigger].started_at  # the window ends at the alert's time
        assert data.window_end.ToDatetime() - data.window_start.ToDatetime() == 4 * DAY
        assert data.rows > 1000
        assert data.label_coverage == 1.0  # every matured prediction's label arrived (an hour later)
        assert data.excluded_unmatured > 0
        assert data.snapshot_path == SNAPSHOT
    assert lin2.training_data.rows > lin1.training_data.rows
    assert lin1.training_data.snapshot_md5 == md5_1
    assert lin2.training_data.snapshot_md5 == md5_file(repo.path / SNAPSHOT) != md5_1
    assert lin2.data_md5["data/raw/loans.parquet"] != lin1.data_md5["data/raw/loans.parquet"]
