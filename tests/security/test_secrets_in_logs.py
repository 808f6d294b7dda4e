"""No secret ever reaches a log.

The registry and the monitor start with planted secrets: bearer tokens, a W&B API key in the
environment, the PagerDuty routing key as the password of the Alertmanager URL (how a proxy in
front of Alertmanager would take it), a database password, and a malformed token variable. The
test drives calls that succeed, calls with near-miss tokens and the wrong roles, an alert that
fires (so the monitor posts to Alertmanager, fails, and starts a retraining run that inherits
the environment), and start-ups that fail on configuration; DEBUG logging is on. Then it reads
every file the run wrote (service logs, retraining logs, state, databases) looking for any of
the secrets.
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

import grpc
import pytest

from finpredict.api.common.v1 import types_pb2
from finpredict.api.monitor.v1 import monitor_pb2 as mpb
from finpredict.api.monitor.v1 import monitor_pb2_grpc
from finpredict.api.registry.v1 import registry_pb2 as rpb
from finpredict.api.registry.v1 import registry_pb2_grpc
from finpredict.common.auth import bearer_metadata
from finpredict.common.net import free_port
from finpredict.demo import replay as rp
from finpredict.testkit.evaluation import PASSING_GATES, lineage
from finpredict.testkit.process import ServiceExitedError, start_service, wait_for
from finpredict.testkit.scrape import metric_value
from finpredict.testkit.security import call_code, files_under

SECRETS = {
    name: f"{name}-{secrets.token_hex(12)}"
    for name in (
        "registry-admin",
        "registry-reader",
        "monitor-admin",
        "monitor-writer",
        "wandb",
        "pagerduty",
        "dbpw",
    )
}
RULES = """rules:
  - name: score_kl_fast
    kind: score_kl
    window: hourly
    threshold: 0.1
    consecutive: 1
    min_samples: 5
    severity: critical
    retrain: true
"""
T0 = 1_740_787_200  # 2025-03-01T00:00:00Z


def _near_misses(token: str) -> list[tuple[tuple[str, str], ...]]:
    return [
        bearer_metadata(token[:-1]),
        bearer_metadata(token + "x"),
        bearer_metadata(token.upper()),
        (("authorization", f"Basic {token}"),),
        (("authorization", token),),
        (("authorization", f"Bearer  {token} extra"),),
    ]


def _drive_registry(root: Path) -> None:
    tokens = f"{SECRETS['registry-admin']}=alice:admin,{SECRETS['registry-reader']}=bob:reader"
    env = {
        "FINPREDICT_REGISTRY_DATA_DIR": str(root / "registry-data"),
        "FINPREDICT_REGISTRY_TOKENS": tokens,
        "FINPREDICT_REGISTRY_LOG_LEVEL": "DEBUG",
        "WANDB_API_KEY": SECRETS["wandb"],
    }
    proc = start_service("registry", root / "registry", env=env)
    try:
        admin, reader = (
            bearer_metadata(SECRETS["registry-admin"]),
            bearer_metadata(SECRETS["registry-reader"]),
        )
        with grpc.insecure_channel(proc.target) as channel:
            stub = registry_pb2_grpc.RegistryServiceStub(channel)
            stub.CreateModel(rpb.CreateModelRequest(name="secrets"), metadata=admin, timeout=10)
            head = rpb.VersionHeader(
                model="secrets",
                artifact_format="xgboost-ubj",
                gate_results=PASSING_GATES,
                lineage=lineage(),
                reference_profile=b"profile",
            )
            stub.RegisterVersion(
                iter([rpb.RegisterVersionRequest(header=head), rpb.RegisterVersionRequest(chunk=b"w")]),
                metadata=admin,
                timeout=10,
            )
            stub.SetAlias(
                rpb.SetAliasRequest(model="secrets", alias="production", version=1),
                metadata=admin,
                timeout=10,
            )
            for md in _near_misses(SECRETS["registry-admin"]):
                assert (
                    call_code(stub.ListModels, rpb.ListModelsRequest(), md) == grpc.StatusCode.UNAUTHENTICATED
                )
            denied = rpb.SetAliasRequest(model="secrets", alias="staging", version=1)
            assert call_code(stub.SetAlias, denied, reader) == grpc.StatusCode.PERMISSION_DENIED
            bad = rpb.GetVersionRequest(model="secrets", alias=SECRETS["registry-admin"])  # a secret as input
            assert call_code(stub.GetVersion, bad, admin) == grpc.StatusCode.NOT_FOUND
    finally:
        assert proc.stop(timeout=20) == 0, proc.logs()[-4000:]


def _drive_monitor(root: Path) -> None:
    profiles = root / "monitor-profiles" / "credit-default"
    profiles.mkdir(parents=True)
    (profiles / "1.bin").write_bytes(rp.reference_profile(n_rows=1000).to_bytes())
    (root / "rules.yaml").write_text(RULES)
    tokens = f"{SECRETS['monitor-admin']}=ops:admin,{SECRETS['monitor-writer']}=gateway:writer"
    env = {
        "FINPREDICT_MONITOR_DATA_DIR": str(root / "monitor-data"),
        "FINPREDICT_MONITOR_PROFILES_DIR": str(root / "monitor-profiles"),
        "FINPREDICT_MONITOR_RULES_FILE": str(root / "rules.yaml"),
        "FINPREDICT_MONITOR_EVALUATE_INTERVAL_S": "0",
        "FINPREDICT_MONITOR_TOKENS": tokens,
        "FINPREDICT_MONITOR_ALERTMANAGER_URL": f"http://finpredict:{SECRETS['pagerduty']}@127.0.0.1:{free_port()}",
        "FINPREDICT_MONITOR_ALERT_RESEND_S": "0.2",
        # the retraining run inherits the environment (the W&B key included) and prints its size
        "FINPREDICT_MONITOR_RETRAIN_COMMAND": f"{sys.executable} -c 'import os; print(len(os.environ))'",
        "FINPREDICT_MONITOR_LOG_LEVEL": "DEBUG",
        "WANDB_API_KEY": SECRETS["wandb"],
    }
    proc = start_service("monitor", root / "monitor", env=env)
    try:
        writer, admin = bearer_metadata(SECRETS["monitor-writer"]), bearer_metadata(SECRETS["monitor-admin"])
        with grpc.insecure_channel(proc.target) as channel:
            stub = monitor_pb2_grpc.MonitorServiceStub(channel)
            records = []
            for i in range(20):  # every score at the top: the score KL rule fires
                r = mpb.PredictionRecord(
                    request_id=f"s{i}",
                    model=types_pb2.ModelRef(name="credit-default", version=1),
                    score=0.99,
                    threshold=0.5,
                )
                r.time.FromSeconds(T0 + 60 * i)
                records.append(r)
            resp = stub.IngestPredictions(
                iter([mpb.IngestPredictionsRequest(records=records)]), metadata=writer, timeout=10
            )
            assert resp.accepted == 20, resp
            evaluate = mpb.EvaluateRulesRequest()
            evaluate.now.FromSeconds(T0 + 7200)
            assert stub.EvaluateRules(evaluate, metadata=admin, timeout=10).changed
            for md in _near_misses(SECRETS["monitor-admin"]):
                assert (
                    call_code(stub.ListAlerts, mpb.ListAlertsRequest(), md) == grpc.StatusCode.UNAUTHENTICATED
                )
            assert call_code(stub.EvaluateRules, evaluate, writer) == grpc.StatusCode.PERMISSION_DENIED
            wait_for(
                lambda: (
                    metric_value(proc, "finpredict_monitor_alertmanager_posts_total", result="error") >= 2
                ),
                30,
                "failed posts to the unreachable Alertmanager",
            )
            wait_for(lambda: "retraining finished" in proc.logs(), 30, "the retraining run to finish")
    finally:
        assert proc.stop(timeout=20) == 0, proc.logs()[-4000:]


def _failed_starts(root: Path) -> None:
    url = f"postgresql+psycopg://finpredict:{SECRETS['dbpw']}@127.0.0.1:{free_port()}/registry"
    with pytest.raises(ServiceExitedError):
        start_service(
            "registry",
            root / "registry-nodb",
            env={"FINPREDICT_REGISTRY_DATA_DIR": str(root / "nodb"), "FINPREDICT_REGISTRY_DATABASE_URL": url},
            timeout=60,
        )
    for service in ("registry", "monitor"):  # a token variable that does not parse
        prefix = f"FINPREDICT_{service.upper()}_"
        with pytest.raises(ServiceExitedError):
            start_service(
                service,
                root / f"{service}-badtokens",
                env={
                    f"{prefix}DATA_DIR": str(root / f"{service}-bad"),
                    f"{prefix}TOKENS": SECRETS["registry-admin"],
                },
            )


def test_no_secret_reaches_any_log(tmp_path: Path) -> None:
    run_dir = tmp_path
    _drive_registry(run_dir)
    _drive_monitor(run_dir)
    _failed_starts(run_dir)
    written = files_under(run_dir)
    logs = [p for p in written if p.suffix == ".log"]
    assert len(logs) >= 6, logs  # two services, a retraining run, three failed start-ups
    assert "unauthenticated call" in (run_dir / "registry" / "registry.log").read_text()
    assert "alertmanager post failed" in (run_dir / "monitor" / "monitor.log").read_text()
    leaks = [
        f"{path.relative_to(run_dir)}: {name}"
        for path in written
        for name, value in SECRETS.items()
        if value.encode() in path.read_bytes()
    ]
    assert not leaks, leaks
