"""End to end on real parts: a real registry, a real Ray Serve app with gRPC ingress, real XGBoost models."""

from __future__ import annotations

import os
import secrets
import signal
import threading
import time
from collections import Counter
from typing import Any

import grpc
import numpy as np
import pytest
import xgboost as xgb
from grpc_health.v1 import health_pb2

from finpredict.api.common.v1 import types_pb2
from finpredict.api.registry.v1 import registry_pb2
from finpredict.api.serving.v1 import model_server_pb2 as pb
from finpredict.common.interceptors import TRACE_ID_KEY
from finpredict.modelio import sha256_hex
from finpredict.testkit.models import TrainedModel, synthetic_records, train_small_model
from finpredict.testkit.monitoring import OtlpTraceReceiver
from finpredict.testkit.names import unique
from finpredict.testkit.process import wait_for
from finpredict.testkit.s3 import S3Server
from finpredict.testkit.serving import Served, to_rows

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def models() -> list[TrainedModel]:
    return [train_small_model(n=300, seed=s, rounds=10 + 5 * s) for s in range(4)]


@pytest.fixture(scope="module")
def registered(served: Served, models: list[TrainedModel]) -> tuple[str, list[int]]:
    name = unique("credit")
    served.registry.create_model(name)
    versions = [served.registry.register(name, m, threshold=0.3 + 0.1 * i) for i, m in enumerate(models[:3])]
    return name, versions


def _expected(trained: TrainedModel, records: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    from finpredict.features import records_to_matrix

    x = records_to_matrix(records, trained.schema)
    dm = xgb.DMatrix(x, feature_names=trained.schema.model_feature_names)
    return trained.booster.predict(dm), trained.booster.predict(dm, output_margin=True)


def test_scores_a_registered_version_and_names_it(
    served: Served, registered: tuple[str, list[int]], models: list[TrainedModel]
) -> None:
    name, versions = registered
    assert served.proc.health() == health_pb2.HealthCheckResponse.SERVING
    records = synthetic_records(models[0].schema, 5, seed=42)
    resp = served.client.predict(name, versions[0], records)
    assert (resp.model.name, resp.model.version) == (name, versions[0])
    assert resp.threshold == pytest.approx(0.3)
    scores, margins = _expected(models[0], records)
    assert [p.score for p in resp.predictions] == pytest.approx(scores.tolist(), abs=1e-6)
    assert [p.margin for p in resp.predictions] == pytest.approx(margins.tolist(), abs=1e-5)
    # without routing metadata the request's model still decides
    resp2 = served.client.predict(name, versions[0], records[:1], route=False)
    assert resp2.predictions[0].score == pytest.approx(float(scores[0]), abs=1e-6)


def test_reason_codes_and_contributions_sum_to_the_margin(
    served: Served, registered: tuple[str, list[int]], models: list[TrainedModel]
) -> None:
    name, versions = registered
    records = synthetic_records(models[1].schema, 20, seed=5)
    resp = served.client.predict(name, versions[1], records, top_k=3, all_contributions=True)
    _, margins = _expected(models[1], records)
    names = models[1].schema.model_feature_names
    for p, margin in zip(resp.predictions, margins, strict=True):
        assert [c.feature for c in p.contributions] == names
        total = sum(c.contribution for c in p.contributions) + p.bias
        assert abs(total - float(margin)) < 1e-5
        assert abs(total - p.margin) < 1e-5
        adverse = sorted((c.contribution for c in p.contributions if c.contribution > 0), reverse=True)[:3]
        assert [r.contribution for r in p.reason_codes] == pytest.approx(adverse)
        for r in p.reason_codes:
            assert r.code == f"R{names.index(r.feature) + 1:02d}"
            assert "increased the estimated default risk" in r.description
    # explain without all_contributions: reason codes only
    lean = served.client.predict(name, versions[1], records[:1], explain=True, top_k=2)
    assert len(lean.predictions[0].contributions) == 0
    assert len(lean.predictions[0].reason_codes) <= 2


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"sector": "mining"}, "rows[0].features[sector]"),
        ({"years_in_business": 1.5}, "rows[0].features[years_in_business]"),
        ({"debt": -1.0}, "rows[0].features[debt]"),
        ({"debt": None}, "rows[0].features[debt]"),
        ({"shoe_size": 42.0}, "rows[0].features[shoe_size]"),
    ],
)
def test_bad_rows_are_invalid_argument_naming_the_field(
    served: Served,
    registered: tuple[str, list[int]],
    models: list[TrainedModel],
    change: dict[str, Any],
    field: str,
) -> None:
    name, versions = registered
    record = {**synthetic_records(models[0].schema, 1, seed=1)[0], **change}
    with pytest.raises(grpc.RpcError) as err:
        served.client.predict(name, versions[0], [record])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (err.value.details() or "").startswith(field), err.value.details()


def test_bad_model_ref_and_top_k_are_invalid_argument(
    served: Served, registered: tuple[str, list[int]]
) -> None:
    name, versions = registered
    rec = synthetic_records(train_small_model(n=50).schema, 1)[0]
    for kwargs, field in [
        ({"version": 0}, "model.version"),
        ({"top_k": 99}, "top_k"),
    ]:
        version = kwargs.pop("version", versions[0])
        with pytest.raises(grpc.RpcError) as err:
            served.client.predict(name, int(version), [rec], route=False, **kwargs)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (err.value.details() or "").startswith(field), err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        served.client.predict(name, 999, [rec])
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_corrupted_artifact_is_refused_and_the_previous_version_keeps_serving(
    served: Served, registered: tuple[str, list[int]], models: list[TrainedModel]
) -> None:
    name, versions = registered
    bad = served.registry.register(name, models[3], corrupt=True)
    records = synthetic_records(models[0].schema, 3, seed=9)
    before = served.client.predict(name, versions[0], records)
    with pytest.raises(grpc.RpcError) as err:
        served.client.load(name, bad)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = err.value.details() or ""
    assert f"refused {name}:{bad}" in details, details
    assert "sha256 of the model file is" in details, details
    with pytest.raises(grpc.RpcError) as err2:
        served.client.predict(name, bad, records)
    assert err2.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    after = served.client.predict(name, versions[0], records)
    assert (after.model.version, [p.score for p in after.predictions]) == (
        versions[0],
        [p.score for p in before.predictions],
    )
    assert (name, bad) not in served.client.loaded()


def test_a_model_stored_in_s3_loads_and_a_changed_object_is_refused_data_loss(
    served: Served, models: list[TrainedModel], s3: S3Server, artifacts_bucket: str
) -> None:
    name = unique("s3model")
    served.registry.create_model(name)
    version = served.registry.register(name, models[1])
    mv = served.registry.stub.GetVersion(
        registry_pb2.GetVersionRequest(model=name, version=version), metadata=served.registry.md, timeout=30
    ).version
    assert mv.artifact.uri.startswith(f"s3://{artifacts_bucket}/")
    key = mv.artifact.uri.removeprefix(f"s3://{artifacts_bucket}/")
    stored = s3.client().get_object(Bucket=artifacts_bucket, Key=key)["Body"].read()
    damaged = bytearray(stored)
    damaged[len(damaged) // 2] ^= 0xFF
    s3.client().put_object(Bucket=artifacts_bucket, Key=key, Body=bytes(damaged))
    with pytest.raises(grpc.RpcError) as err:
        served.client.load(name, version)
    assert err.value.code() == grpc.StatusCode.DATA_LOSS
    assert "corrupted" in (err.value.details() or ""), err.value.details()
    assert (name, version) not in served.client.loaded()

    s3.client().put_object(Bucket=artifacts_bucket, Key=key, Body=stored)  # repaired
    served.client.load(name, version)
    records = synthetic_records(models[1].schema, 5, seed=3)
    resp = served.client.predict(name, version, records)
    expected, _ = _expected(models[1], records)
    assert [p.score for p in resp.predictions] == pytest.approx(expected.tolist(), abs=1e-6)


def test_two_versions_at_once_and_a_third_loaded_under_traffic(
    served: Served, registered: tuple[str, list[int]], models: list[TrainedModel]
) -> None:
    name, versions = registered
    v1, v2, v3 = versions
    records = synthetic_records(models[0].schema, 4, seed=3)
    served.client.load(name, v1)
    served.client.load(name, v2)
    stop = threading.Event()
    outcomes: Counter[str] = Counter()
    errors: list[str] = []
    lock = threading.Lock()

    def traffic(version: int) -> None:
        while not stop.is_set():
            try:
                resp = served.client.predict(name, version, records, timeout=30)
                ok = resp.model.version == version and len(resp.predictions) == 4
                with lock:
                    outcomes[f"v{version}" if ok else "wrong"] += 1
            except grpc.RpcError as exc:
                with lock:
                    errors.append(f"v{version}: {exc.code()} {exc.details()}")

    threads = [threading.Thread(target=traffic, args=(v,)) for v in (v1, v1, v2, v2)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: outcomes[f"v{v1}"] >= 20 and outcomes[f"v{v2}"] >= 20, 60, "traffic on v1 and v2")
        load = served.client.load(name, v3)
        assert (load.model.version, load.artifact_sha256) == (v3, sha256_hex(models[2].raw))
        resp = served.client.predict(name, v3, records)
        assert resp.model.version == v3
        scores, _ = _expected(models[2], records)
        assert [p.score for p in resp.predictions] == pytest.approx(scores.tolist(), abs=1e-6)
        seen = dict(outcomes)
        wait_for(
            lambda: outcomes[f"v{v1}"] >= seen[f"v{v1}"] + 10 and outcomes[f"v{v2}"] >= seen[f"v{v2}"] + 10,
            60,
            "traffic after loading v3",
        )
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert errors == [], errors[:5]
    assert outcomes["wrong"] == 0


def test_alias_move_preloads_the_new_target_on_every_replica(
    served: Served, models: list[TrainedModel]
) -> None:
    name = unique("aliased")
    served.registry.create_model(name)
    v = served.registry.register(name, models[0])
    served.registry.set_alias(name, "canary", v)

    def everywhere() -> bool:
        # ListLoadedModels answers from one replica per call; ask until each replica answered
        answers = [(name, v) in served.client.loaded() for _ in range(8)]
        return all(answers)

    wait_for(everywhere, 60, "the canary target preloaded on every replica", interval=0.5)


def test_a_traced_predict_continues_the_callers_trace_in_the_replica_and_the_registry(
    served: Served, models: list[TrainedModel], otlp: OtlpTraceReceiver
) -> None:
    # A version no replica has loaded yet: the traced call itself makes the replica fetch it.
    name = unique("traced")
    served.registry.create_model(name)
    version = served.registry.register(name, models[2])
    trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    records = synthetic_records(models[2].schema, 3, seed=21)
    resp, call = served.client.stub.Predict.with_call(
        pb.PredictRequest(model=types_pb2.ModelRef(name=name, version=version), rows=to_rows(records)),
        metadata=[
            ("application", "model-server"),
            ("multiplexed_model_id", f"{name}:{version}"),
            ("traceparent", f"00-{trace_id}-{caller_span}-01"),
        ],
        timeout=120,
    )
    assert len(resp.predictions) == 3
    assert dict(call.trailing_metadata() or ()).get(TRACE_ID_KEY) == trace_id

    wanted = {
        ("finpredict-model-server", "ModelServer/Predict"),
        ("finpredict-model-server", "ModelServer/LoadVersion"),
        ("finpredict-registry", "finpredict.registry.v1.RegistryService/GetVersion"),
        ("finpredict-registry", "finpredict.registry.v1.RegistryService/DownloadArtifact"),
    }

    def spans() -> dict[tuple[str, str], dict[str, Any]] | None:
        found = {(s["service"], s["name"]): s for s in otlp.spans_of(trace_id)}
        return found if wanted <= found.keys() else None

    try:
        found = wait_for(spans, 30, f"replica and registry spans of trace {trace_id} at the OTLP receiver")
    except TimeoutError as exc:
        seen = sorted({(s["service"], s["name"]) for s in otlp.spans_of(trace_id)})
        services = sorted({s["service"] for s in otlp.spans})
        raise AssertionError(f"{exc}: this trace has {seen}; services that sent spans: {services}") from None
    predict = found[("finpredict-model-server", "ModelServer/Predict")]
    load = found[("finpredict-model-server", "ModelServer/LoadVersion")]
    assert predict["parent_span_id"] == caller_span, "the replica continues the caller's span"
    assert predict["attributes"]["finpredict.model"] == name
    assert predict["attributes"]["finpredict.model_version"] == version
    assert predict["attributes"]["finpredict.rows"] == 3
    assert predict["attributes"]["finpredict.batch_size"] >= 1
    assert predict["attributes"]["rpc.grpc.status_code"] == 0
    assert predict["attributes"]["finpredict.replica"]
    assert load["parent_span_id"] == predict["span_id"]
    assert load["attributes"]["finpredict.model_version"] == version
    # the registry's server spans are children of the replica's load span (traceparent on the wire)
    for rpc in ("GetVersion", "DownloadArtifact"):
        span = found[("finpredict-registry", f"finpredict.registry.v1.RegistryService/{rpc}")]
        assert span["parent_span_id"] == load["span_id"], rpc
        assert span["attributes"]["rpc.grpc.status_code"] == 0


def test_killing_a_replica_under_load_fails_only_its_in_flight_requests(
    served: Served, registered: tuple[str, list[int]], models: list[TrainedModel]
) -> None:
    name, versions = registered
    records = synthetic_records(models[0].schema, 2, seed=11)

    def replicas(without: int = 0) -> list[int] | None:
        pids = served.ray.replica_pids()
        return pids if len(pids) == 2 and without not in pids else None

    before = wait_for(replicas, 60, "two replicas")
    log: list[tuple[float, float, str]] = []  # (start, end, outcome)
    lock = threading.Lock()
    stop = threading.Event()

    def traffic(version: int) -> None:
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                resp = served.client.predict(name, version, records, timeout=60)
                outcome = "ok" if resp.model.version == version else "wrong"
            except grpc.RpcError as exc:
                outcome = f"{exc.code().name}: {exc.details()}"
            with lock:
                log.append((t0, time.monotonic(), outcome))

    threads = [threading.Thread(target=traffic, args=(v,)) for v in (versions[0], versions[0], versions[1])]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: sum(o == "ok" for _, _, o in log) >= 30, 60, "steady load")
        victim = before[0]
        t_kill = time.monotonic()
        os.kill(victim, signal.SIGKILL)  # a replica of our own Ray cluster, by pid
        after = wait_for(
            lambda: replicas(without=victim),
            180,
            "Ray to replace the killed replica",
            interval=0.5,
        )
        t_replaced = time.monotonic()
        wait_for(
            lambda: sum(o == "ok" for s, _, o in log if s > t_replaced) >= 30,
            120,
            "load served after replacement",
        )
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=90)
    # the server's health follows the app: it reports SERVING again once Serve has healed
    wait_for(
        lambda: served.proc.health() == health_pb2.HealthCheckResponse.SERVING,
        120,
        "the model server to report SERVING after the replacement",
        interval=0.5,
    )
    failed = [(s, e, o) for s, e, o in log if o != "ok"]
    in_flight = [(s, e, o) for s, e, o in log if s <= t_kill <= e]
    print(
        f"replicas {before} -> {after}; {len(log)} requests, {len(failed)} failed, "
        f"{len(in_flight)} in flight at the kill; replaced after {t_replaced - t_kill:.1f}s"
    )
    # every failed request was already in flight when the replica died ...
    assert all(s <= t_kill for s, _, _ in failed), failed
    # ... and there are no more of them than requests in flight at that moment (on any replica)
    assert len(failed) <= len(in_flight), (failed, len(in_flight))
    assert len(in_flight) <= len(threads)
