"""The gateway end to end on real parts: registry, Ray Serve model server, monitor, gateway.

The tests share one stack (module fixture) and run in any order: each starts from the same
baseline (`production` is v1 and the gateway routes to it, no live rollout, no shadow, the
monitor up), which the autouse fixture below restores whatever ran before. The whole-Ray kill
destroys the stack and has a module (and stack) of its own: test_gateway_ray_loss.py.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2

from finpredict.api.inference import grpc_predict_v2_pb2 as oip
from finpredict.api.inference import grpc_predict_v2_pb2_grpc as oip_grpc
from finpredict.api.registry.v1 import registry_pb2
from finpredict.api.rollout.v1 import rollout_pb2 as rpb
from finpredict.api.scoring.v1 import scoring_pb2 as spb
from finpredict.gateway.cli import rollout_app
from finpredict.testkit.cli import invoke
from finpredict.testkit.gateway import (
    CLIENT,
    CLIENT_TOKEN,
    OPERATOR,
    RECORDS,
    GatewayCounts,
    LogCounts,
    Stack,
    TimedTraffic,
    Traffic,
    applications,
    features_of,
    gateway_counts,
    log_counts,
    median_s,
    production_version,
    reconcile_log,
    report_fault,
    restart_registry,
    start_gateway,
    train,
)
from finpredict.testkit.models import SMALL_SCHEMA
from finpredict.testkit.monitor import authed
from finpredict.testkit.monitoring import OtlpTraceReceiver
from finpredict.testkit.process import ServiceProcess, wait_for
from finpredict.testkit.proxy import DelayProxy
from finpredict.testkit.scrape import metric_value
from finpredict.testkit.triton import TritonInput, triton_infer

# The first test also pays for starting Ray and deploying the Serve app.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
LOOSE_LATENCY = {"max_p99_latency_ms": 5000.0, "max_p99_latency_ratio": 10.0}


@pytest.fixture(autouse=True)
def baseline(stack: Stack) -> None:
    """Restores the module's baseline before each test, so every test runs alone or in any order."""
    if stack.monitor.proc.poll() is not None:
        stack.start_monitor()
    live = (rpb.ROLLOUT_STATE_PROGRESSING, rpb.ROLLOUT_STATE_PAUSED)
    for r in stack.client.rollouts.ListRollouts(
        rpb.ListRolloutsRequest(model=stack.model), metadata=CLIENT, timeout=10
    ).rollouts:
        if r.state in live:
            stack.client.abort(r.id)
    stack.client.rollouts.SetShadow(
        rpb.SetShadowRequest(model=stack.model, version=0), metadata=OPERATOR, timeout=10
    )
    v1 = stack.versions["v1"]
    if production_version(stack) != v1:
        stack.registry.set_alias(stack.model, "production", v1)

    log_before = log_counts(stack.gateway.metrics_port, stack.monitor.metrics_port, stack.model)
    scored = 0

    def routed_to_v1() -> bool:
        nonlocal scored
        results = stack.client.score_batch(stack.model, [uuid.uuid4().hex for _ in range(20)]).results
        scored += len(results)
        return {(r.model.version, r.variant) for r in results} == {(v1, spb.VARIANT_STABLE)}

    wait_for(routed_to_v1, 60, "the gateway to route every request to v1 as stable")
    # the check's own prediction records reach the monitor now, not inside a test's counting window
    reconcile_log(stack.gateway.metrics_port, stack.monitor.metrics_port, stack.model, log_before, scored)


def _binomial_99(p: float, n: int) -> tuple[float, float]:
    half = 2.576 * math.sqrt(p * (1 - p) / n)
    return p - half, p + half


def test_scores_one_application_with_version_variant_and_trace(stack: Stack) -> None:
    app = spb.Application(entity_id="cust-1", features=features_of(RECORDS[0]), request_id="req-1")
    resp = stack.client.scoring.Score(
        spb.ScoreRequest(model=stack.model, application=app, explain=True, top_k=3),
        metadata=CLIENT,
        timeout=30,
    )
    r = resp.result
    assert (r.model.name, r.model.version) == (stack.model, stack.versions["v1"])
    assert r.variant == spb.VARIANT_STABLE
    assert 0.0 <= r.score <= 1.0
    assert r.decision == (spb.DECISION_DECLINE if r.score >= r.threshold else spb.DECISION_APPROVE)
    assert r.request_id == "req-1"
    assert r.entity_id == "cust-1"
    assert len(r.reason_codes) == 3
    assert all(rc.feature for rc in r.reason_codes)
    assert len(resp.trace_id) == 32
    assert int(resp.trace_id, 16) != 0


def test_python_client_scores_through_the_gateway(stack: Stack) -> None:
    from finpredict.client import Application, InvalidRequestError, ScoringClient, Variant

    with ScoringClient(stack.gateway.target, token=CLIENT_TOKEN) as client:
        one = client.score(stack.model, "sdk-1", RECORDS[3], explain=True, top_k=2)
        assert one.version == stack.versions["v1"]
        assert one.variant is Variant.STABLE
        assert len(one.reason_codes) == 2
        assert len(one.trace_id) == 32
        apps = [Application(f"sdk-{i}", RECORDS[i]) for i in range(1200)]
        many = client.score_batch(stack.model, apps, chunk_size=500)
        assert [r.entity_id for r in many] == [a.entity_id for a in apps]
        assert len({r.request_id for r in many}) == len(apps)
        broken = [Application("ok", RECORDS[0]), Application("bad", {**RECORDS[1], "debt": -5.0})]
        with pytest.raises(InvalidRequestError) as err:
            client.score_batch(stack.model, broken)
    assert err.value.index == 1
    assert err.value.feature == "debt"


def _bad(**override: object) -> spb.ScoreBatchRequest:
    good = dict(RECORDS[1])
    good["owner_income"] = 1000.0
    rec = {**good, **{k: v for k, v in override.items() if not k.startswith("_")}}
    feats = features_of({k: v for k, v in rec.items() if v != "_drop"})
    return spb.ScoreBatchRequest(
        model="",  # replaced below
        applications=[
            spb.Application(entity_id="e1", features=features_of(RECORDS[0])),
            spb.Application(entity_id="e2", features=feats),
        ],
    )


BAD_REQUESTS = [
    ("unknown feature", _bad(shoe_size=42.0), 'applications[1].features["shoe_size"]'),
    ("missing feature", _bad(debt="_drop"), 'applications[1].features["debt"]'),
    ("wrong type", _bad(sector=3.0), 'applications[1].features["sector"]'),
    ("string for a number", _bad(debt="lots"), 'applications[1].features["debt"]'),
    (
        "NaN where not allowed",
        _bad(annual_revenue=float("nan")),
        'applications[1].features["annual_revenue"]',
    ),
    ("infinite", _bad(debt=float("inf")), 'applications[1].features["debt"]'),
    ("out of range", _bad(years_in_business=1000.0), 'applications[1].features["years_in_business"]'),
    ("not an integer", _bad(late_payments_12m=1.5), 'applications[1].features["late_payments_12m"]'),
    ("unknown category", _bad(sector="mining"), 'applications[1].features["sector"]'),
]


@pytest.mark.parametrize(("case", "request_message", "field"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_refuses_bad_requests_naming_the_field(
    stack: Stack, case: str, request_message: spb.ScoreBatchRequest, field: str
) -> None:
    request_message.model = stack.model
    with pytest.raises(grpc.RpcError) as err:
        stack.client.scoring.ScoreBatch(request_message, metadata=CLIENT, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, case
    assert field in err.value.details(), err.value.details()


@pytest.mark.parametrize(
    ("request_message", "field"),
    [
        (lambda m: spb.ScoreBatchRequest(model=m), "applications: empty batch"),
        (
            lambda m: spb.ScoreBatchRequest(
                model=m, applications=applications([f"e{i}" for i in range(1001)])
            ),
            "applications: 1001 items exceed the batch limit",
        ),
        (lambda m: spb.ScoreBatchRequest(model="", applications=applications(["e"])), "model: required"),
        (
            lambda m: spb.ScoreBatchRequest(model=m, applications=applications([""])),
            "applications[0].entity_id",
        ),
        (
            lambda m: spb.ScoreBatchRequest(
                model=m, applications=applications(["e"]), explain=True, top_k=-1
            ),
            "top_k",
        ),
        (lambda m: spb.ScoreRequest(model=m), "application: required"),
    ],
    ids=["empty batch", "oversized batch", "no model", "no entity id", "negative top_k", "no application"],
)
def test_refuses_bad_envelopes_naming_the_field(stack: Stack, request_message: object, field: str) -> None:
    message = request_message(stack.model)  # type: ignore[operator]
    call = (
        stack.client.scoring.Score
        if isinstance(message, spb.ScoreRequest)
        else stack.client.scoring.ScoreBatch
    )
    with pytest.raises(grpc.RpcError) as err:
        call(message, metadata=CLIENT, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in err.value.details(), err.value.details()


def test_unknown_model_is_not_invented(stack: Stack) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stack.client.score_batch("no-such-model", ["e1"])
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no-such-model" in err.value.details()


def test_open_inference_protocol_routes_like_the_scoring_api(stack: Stack) -> None:
    stub = oip_grpc.GRPCInferenceServiceStub(stack.client.channel)
    assert stub.ServerLive(oip.ServerLiveRequest(), timeout=10).live  # open, like health
    meta = stub.ModelMetadata(oip.ModelMetadataRequest(name=stack.model), metadata=CLIENT, timeout=10)
    names = [t.name for t in meta.inputs]
    assert names == [*(f.name for f in SMALL_SCHEMA.features), "entity_id"]
    kinds = {t.name: t.datatype for t in meta.inputs}
    assert kinds["sector"] == "BYTES"
    assert kinds["debt"] == "FP64"
    assert stub.ModelReady(oip.ModelReadyRequest(name=stack.model), metadata=CLIENT, timeout=10).ready

    rows, ids = RECORDS[10:13], ["oip-a", "oip-b", "oip-c"]
    inputs = []
    for spec in SMALL_SCHEMA.features:
        values = [r[spec.name] for r in rows]
        if spec.kind == "categorical":
            contents = oip.InferTensorContents(bytes_contents=[v.encode() for v in values])
            inputs.append(
                oip.ModelInferRequest.InferInputTensor(
                    name=spec.name, datatype="BYTES", shape=[3], contents=contents
                )
            )
        else:
            contents = oip.InferTensorContents(fp64_contents=[math.nan if v is None else v for v in values])
            inputs.append(
                oip.ModelInferRequest.InferInputTensor(
                    name=spec.name, datatype="FP64", shape=[3, 1], contents=contents
                )
            )
    inputs.append(
        oip.ModelInferRequest.InferInputTensor(
            name="entity_id",
            datatype="BYTES",
            shape=[3],
            contents=oip.InferTensorContents(bytes_contents=[i.encode() for i in ids]),
        )
    )
    resp = stub.ModelInfer(
        oip.ModelInferRequest(model_name=stack.model, id="r1", inputs=inputs), metadata=CLIENT, timeout=30
    )
    outputs = {o.name: o for o in resp.outputs}
    assert resp.model_version == str(stack.versions["v1"])
    expected = stack.client.scoring.ScoreBatch(
        spb.ScoreBatchRequest(
            model=stack.model,
            applications=[
                spb.Application(entity_id=i, features=features_of(r)) for i, r in zip(ids, rows, strict=True)
            ],
        ),
        metadata=CLIENT,
        timeout=30,
    )
    assert list(outputs["score"].contents.fp64_contents) == pytest.approx([r.score for r in expected.results])
    assert list(outputs["variant"].contents.bytes_contents) == [b"stable"] * 3

    bad = oip.ModelInferRequest(
        model_name=stack.model,
        inputs=[oip.ModelInferRequest.InferInputTensor(name="debt", datatype="INT8", shape=[1])],
    )
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(bad, metadata=CLIENT, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert 'inputs[0] ("debt").datatype' in err.value.details()


def test_standard_inference_client_gets_the_real_scores_as_numpy_arrays(stack: Stack) -> None:
    """``tritonclient.grpc.InferenceServerClient(...).infer(...)`` (raw inputs, raw outputs)."""
    rows, ids = RECORDS[20:24], ["tc-a", "tc-b", "tc-c", "tc-d"]
    kinds = {"categorical": "BYTES", "integer": "INT64", "numeric": "FP64"}
    inputs = [
        TritonInput(f.name, kinds[f.kind], [math.nan if r[f.name] is None else r[f.name] for r in rows])
        for f in SMALL_SCHEMA.features
    ]
    result = triton_infer(
        stack.gateway.target, CLIENT_TOKEN, stack.model, [*inputs, TritonInput("entity_id", "BYTES", ids)]
    )
    assert not result.error_message, result
    expected = stack.client.scoring.ScoreBatch(
        spb.ScoreBatchRequest(
            model=stack.model,
            applications=[
                spb.Application(entity_id=i, features=features_of(r)) for i, r in zip(ids, rows, strict=True)
            ],
        ),
        metadata=CLIENT,
        timeout=30,
    ).results
    scores = result.outputs["score"]
    assert (scores.dtype, scores.shape) == ("float64", [4])
    assert scores.values == pytest.approx([r.score for r in expected])
    assert result.outputs["decision"].values == [
        "decline" if r.decision == spb.DECISION_DECLINE else "approve" for r in expected
    ]
    versions = result.outputs["model_version"]
    assert (versions.dtype, versions.values) == ("int64", [stack.versions["v1"]] * 4)
    assert result.outputs["variant"].values == ["stable"] * 4
    assert (result.raw_output_contents, result.typed_outputs) == (4, 0)


def test_rollout_changes_need_the_admin_role(stack: Stack) -> None:
    req = rpb.StartRolloutRequest(model=stack.model, candidate_version=stack.versions["v2"])
    with pytest.raises(grpc.RpcError) as err:
        stack.client.rollouts.StartRollout(req, metadata=CLIENT, timeout=10)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as err:
        stack.client.rollouts.StartRollout(req, timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as err:
        stack.client.scoring.Score(spb.ScoreRequest(model=stack.model), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("weight", [1.0, 5.0, 25.0])
def test_traffic_shares_follow_the_weights_and_customers_stay_put(stack: Stack, weight: float) -> None:
    candidate = stack.versions["v2"]
    rollout = stack.client.start_rollout(
        stack.model, candidate, [weight, 100.0], interval_s=3600, min_requests=10
    )
    try:
        ids = [uuid.uuid4().hex for _ in range(6000)]
        first: dict[str, int] = {}
        for start in range(0, len(ids), 500):
            resp = stack.client.score_batch(stack.model, ids[start : start + 500])
            for r in resp.results:
                first[r.entity_id] = r.model.version
                assert r.variant == (
                    spb.VARIANT_CANARY if r.model.version == candidate else spb.VARIANT_STABLE
                )
        share = sum(v == candidate for v in first.values()) / len(ids)
        lo, hi = _binomial_99(weight / 100, len(ids))
        assert lo <= share <= hi, (weight, share)
        again = stack.client.score_batch(stack.model, ids[:1000], offset=7)
        assert all(first[r.entity_id] == r.model.version for r in again.results)
        live = stack.client.rollout(rollout.id)
        canary = next(m for m in live.metrics if m.variant == "canary")
        assert canary.requests == sum(v == candidate for v in first.values()) + sum(
            r.model.version == candidate for r in again.results
        )
    finally:
        stack.client.abort(rollout.id)
    assert stack.client.rollout(rollout.id).state == rpb.ROLLOUT_STATE_ABORTED


def test_shadow_mirrors_without_changing_responses(stack: Stack) -> None:
    shadow = stack.versions["bad"]
    before = metric_value(stack.gateway.metrics_port, "finpredict_gateway_shadow_total", outcome="ok")
    stack.client.rollouts.SetShadow(
        rpb.SetShadowRequest(model=stack.model, version=shadow), metadata=OPERATOR, timeout=10
    )
    try:
        resp = stack.client.score_batch(stack.model, [uuid.uuid4().hex for _ in range(300)])
        assert {r.model.version for r in resp.results} == {stack.versions["v1"]}
        assert {r.variant for r in resp.results} == {spb.VARIANT_STABLE}
        wait_for(
            lambda: (
                metric_value(stack.gateway.metrics_port, "finpredict_gateway_shadow_total", outcome="ok")
                >= before + 300
            ),
            30,
            "shadow calls",
        )
    finally:
        stack.client.rollouts.SetShadow(
            rpb.SetShadowRequest(model=stack.model, version=0), metadata=OPERATOR, timeout=10
        )


def test_experiment_arms_split_traffic_with_per_arm_labels(stack: Stack) -> None:
    arms = [
        rpb.ExperimentArm(name="control", version=stack.versions["v1"], weight=70),
        rpb.ExperimentArm(name="treatment", version=stack.versions["v2"], weight=30),
    ]
    exp = stack.client.rollouts.StartExperiment(
        rpb.StartExperimentRequest(model=stack.model, arms=arms), metadata=OPERATOR, timeout=10
    ).experiment
    try:
        ids = [uuid.uuid4().hex for _ in range(5000)]
        seen: dict[str, int] = {}
        for start in range(0, len(ids), 500):
            for r in stack.client.score_batch(stack.model, ids[start : start + 500]).results:
                assert r.variant == spb.VARIANT_EXPERIMENT
                assert (r.arm, r.model.version) in {
                    ("control", stack.versions["v1"]),
                    ("treatment", stack.versions["v2"]),
                }
                seen[r.arm] = seen.get(r.arm, 0) + 1
        lo, hi = _binomial_99(0.3, len(ids))
        assert lo <= seen["treatment"] / len(ids) <= hi
    finally:
        stack.client.rollouts.StopExperiment(
            rpb.StopExperimentRequest(experiment_id=exp.id), metadata=OPERATOR, timeout=10
        )


def test_experiment_shows_per_arm_default_rates_from_delayed_labels_covering_the_truth(stack: Stack) -> None:
    """An A/B experiment between two real versions on a simulated population whose applicants
    default with a known probability per arm: the outcomes, reported through the gateway by
    request id, reach the experiment's statistics (GetExperiment and ``finpredict rollout
    experiment status``) as per-arm default rates with always-valid intervals that cover the true
    rates and the true difference, and the recommendation follows."""
    truth = {"control": 0.05, "treatment": 0.25}  # P(default) of an applicant the arm served
    arms = [
        rpb.ExperimentArm(name="control", version=stack.versions["v1"], weight=50),
        rpb.ExperimentArm(name="treatment", version=stack.versions["v2"], weight=50),
    ]
    exp = stack.client.rollouts.StartExperiment(
        rpb.StartExperimentRequest(model=stack.model, arms=arms), metadata=OPERATOR, timeout=10
    ).experiment
    try:
        before = log_counts(stack.gateway.metrics_port, stack.monitor.metrics_port, stack.model)
        results: list[spb.Score] = []
        for start in range(0, 2000, 500):
            ids = [uuid.uuid4().hex for _ in range(500)]
            results.extend(stack.client.score_batch(stack.model, ids, offset=start).results)
        # every prediction is with the monitor before its outcome (a waiting one is matched later,
        # outside the gateway's analysis)
        reconcile_log(
            stack.gateway.metrics_port, stack.monitor.metrics_port, stack.model, before, len(results)
        )
        rng = random.Random(20261205)
        outcomes = [
            spb.Outcome(request_id=r.request_id, defaulted=rng.random() < truth[r.arm]) for r in results
        ]
        matched = 0
        for start in range(0, len(outcomes), 1000):
            matched += stack.client.scoring.RecordOutcomes(
                spb.RecordOutcomesRequest(outcomes=outcomes[start : start + 1000]),
                metadata=OPERATOR,
                timeout=30,
            ).matched
        assert matched == len(outcomes)

        got = stack.client.rollouts.GetExperiment(
            rpb.GetExperimentRequest(experiment_id=exp.id), metadata=CLIENT, timeout=10
        )
        (comparison,) = json.loads(got.statistics)["comparisons"]
        by_arm = {a["arm"]: a for a in comparison["arms"]}
        for arm, p in truth.items():
            served = [r for r in results if r.arm == arm]
            approved = [r for r in served if r.decision == spb.DECISION_APPROVE]
            rate = by_arm[arm]["default_rate"]
            assert by_arm[arm]["requests"] == len(served)
            assert rate["n"] == len(approved) >= 200  # enough labels for the effect's test
            assert rate["lower"] <= p <= rate["upper"], (arm, rate)
        effect = next(e for e in comparison["effects"] if e["metric"] == "default_rate")
        assert effect["lower"] <= truth["treatment"] - truth["control"] <= effect["upper"], effect
        assert effect["lower"] > 0  # the treatment's defaults are visibly higher ...
        assert comparison["recommendation"] == "stop_a_better"  # ... so the control wins
        assert not comparison["srm"]["mismatch"]

        shown = invoke(
            rollout_app, ["experiment", "status", "--id", exp.id], stack.gateway.target, CLIENT_TOKEN
        )
        assert shown.exit_code == 0, shown.output
        assert "default rate" in shown.output, shown.output
        assert "stop_a_better" in shown.output, shown.output
    finally:
        stack.client.rollouts.StopExperiment(
            rpb.StopExperimentRequest(experiment_id=exp.id), metadata=OPERATOR, timeout=10
        )


def test_one_request_is_traced_across_gateway_replica_and_registry(
    stack: Stack, traces: OtlpTraceReceiver
) -> None:
    """The trace id returned to the client is on the gateway's span, the replica's Predict span, the
    registry lookup made for that request, and on a latency bucket's exemplar in /metrics."""

    def traced_score() -> tuple[str, set[tuple[str, str]]] | None:
        # A `production` lookup happens once the alias cache (1 s) has expired: score until a
        # request's trace shows it, then check every hop of that request.
        app = spb.Application(entity_id=uuid.uuid4().hex, features=features_of(RECORDS[5]))
        request = spb.ScoreRequest(model=stack.model, application=app)
        resp = stack.client.scoring.Score(request, metadata=CLIENT, timeout=30)
        trace_id = resp.trace_id
        try:
            hops = wait_for(
                lambda: {(s["service"], s["name"]) for s in traces.spans_of(trace_id)} or None, 5, "spans"
            )
        except TimeoutError:
            return None
        if not any(service == "finpredict-registry" for service, _ in hops):
            return None
        return trace_id, hops

    trace_id, hops = wait_for(traced_score, 60, "a request traced through the registry lookup")
    names = {name for _, name in hops}

    def every_hop() -> list[dict[str, Any]] | None:
        # each service exports its spans in batches after the response: wait for all of them
        spans = traces.spans_of(trace_id)
        have = {(s["service"], s["name"].rsplit("/", 1)[-1]) for s in spans}
        want = {("finpredict-gateway", "Score"), ("finpredict-model-server", "Predict")}
        return spans if want <= have else None

    spans = wait_for(every_hop, 30, "the gateway's Score span and the replica's Predict span")
    services = {s["service"] for s in spans}
    assert {"finpredict-gateway", "finpredict-registry", "finpredict-model-server"} <= services, spans
    assert "finpredict.registry.v1.RegistryService/GetVersion" in {s["name"] for s in spans} | names, spans
    gateway_span = next(
        s for s in spans if s["service"] == "finpredict-gateway" and s["name"].endswith("/Score")
    )
    assert gateway_span["attributes"]["finpredict.model"] == stack.model
    assert gateway_span["attributes"]["finpredict.variant"] == "stable"
    replica = next(s for s in spans if s["name"] == "ModelServer/Predict")
    assert replica["parent_span_id"]  # continues the gateway's call, not a new trace
    req = urllib.request.Request(
        f"http://127.0.0.1:{stack.gateway.metrics_port}/metrics",
        headers={"Accept": "application/openmetrics-text; version=1.0.0"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        exposition = resp.read().decode()
    exemplars = [
        line for line in exposition.splitlines()
        if line.startswith("finpredict_grpc_server_handling_seconds_bucket")
        and 'ScoringService/Score"' in line and trace_id in line
    ]  # fmt: skip
    assert exemplars, "the request's trace id is not an exemplar of the gateway's Score latency"


def test_bad_candidate_is_rolled_back_at_the_first_analysis_with_enough_traffic(stack: Stack) -> None:
    rollout = stack.client.start_rollout(
        stack.model,
        stack.versions["bad"],
        [5.0, 25.0, 100.0],
        interval_s=1.0,
        min_requests=300,
        **LOOSE_LATENCY,
    )
    with Traffic(stack.gateway.target, stack.model) as traffic:
        done = wait_for(
            lambda: (r := stack.client.rollout(rollout.id)).state != rpb.ROLLOUT_STATE_PROGRESSING and r,
            120,
            "the bad candidate to be rolled back",
        )
    assert done.state == rpb.ROLLOUT_STATE_ROLLED_BACK, done
    verdicts = [d.verdict for d in done.decisions]
    assert verdicts[0] == "start", verdicts
    assert verdicts[-1] == "rollback", verdicts
    assert set(verdicts[1:-1]) <= {"wait"}  # it never passed a step
    reason = done.decisions[-1].reason
    assert "score distribution drifted" in reason, reason
    assert "PSI" in reason or "KL" in reason, reason
    assert not traffic.errors, traffic.errors
    got = stack.registry.stub.GetVersion(
        registry_pb2.GetVersionRequest(model=stack.model, alias="production"),
        metadata=stack.registry.md,
        timeout=10,
    )
    assert got.version.version == stack.versions["v1"]  # aliases untouched by a rollback
    after = stack.client.score_batch(stack.model, [uuid.uuid4().hex for _ in range(500)])
    assert {r.model.version for r in after.results} == {stack.versions["v1"]}
    assert (
        metric_value(
            stack.gateway.metrics_port, "finpredict_gateway_rollout_decisions_total", verdict="rollback"
        )
        >= 1
    )


def test_miscalibrated_candidate_is_rolled_back_by_the_label_free_estimate(stack: Stack) -> None:
    """A candidate whose scores sit near 0.5 (its own training profile agrees, so neither skew nor
    consistency objects) claims, if its scores were calibrated, an expected AUC far below stable's:
    the label-free estimate rolls it back as soon as it has its rows, long before the window has
    the requests for its other checks."""
    rollout = stack.client.start_rollout(
        stack.model,
        stack.versions["flat"],
        [50.0, 100.0],
        interval_s=1.0,
        min_requests=20_000,
        **LOOSE_LATENCY,
    )
    with Traffic(stack.gateway.target, stack.model) as traffic:
        done = wait_for(
            lambda: (r := stack.client.rollout(rollout.id)).state != rpb.ROLLOUT_STATE_PROGRESSING and r,
            120,
            "the miscalibrated candidate to be rolled back",
        )
    assert done.state == rpb.ROLLOUT_STATE_ROLLED_BACK, done
    last = done.decisions[-1]
    assert last.verdict == "rollback"
    assert "label-free estimate: expected AUC" in last.reason, last.reason
    statistics = json.loads(last.statistics)
    assert "estimate" in statistics["checks"], statistics["checks"]
    expected = statistics["expected"]
    assert expected["canary"]["auc"] < expected["stable"]["auc"] - 0.05, expected
    assert not traffic.errors, traffic.errors


def test_good_candidate_is_promoted_and_survives_a_gateway_kill(stack: Stack) -> None:
    rollout = stack.client.start_rollout(
        stack.model,
        stack.versions["v2"],
        [1.0, 5.0, 25.0, 100.0],
        interval_s=1.5,
        min_requests=300,
        **LOOSE_LATENCY,
    )
    with Traffic(stack.gateway.target, stack.model) as traffic:
        at = wait_for(
            lambda: (r := stack.client.rollout(rollout.id)).step_index >= 1 and r,
            120,
            "the rollout to reach step 5%",
        )
        assert at.state == rpb.ROLLOUT_STATE_PROGRESSING, at
        os.kill(stack.gateway.proc.pid, signal.SIGKILL)
        stack.gateway.proc.wait(timeout=30)
        stack.restart_gateway()
        resumed = stack.client.rollout(rollout.id)
        assert resumed.id == rollout.id
        assert resumed.step_index >= at.step_index
        assert resumed.state in (rpb.ROLLOUT_STATE_PROGRESSING, rpb.ROLLOUT_STATE_PROMOTED)
        done = wait_for(
            lambda: (r := stack.client.rollout(rollout.id)).state != rpb.ROLLOUT_STATE_PROGRESSING and r,
            180,
            "the rollout to finish",
        )
    assert done.state == rpb.ROLLOUT_STATE_PROMOTED, done.decisions
    advances = [d.step_index for d in done.decisions if d.verdict == "advance"]
    assert advances == [0, 1, 2], done.decisions
    assert set(traffic.errors) <= {"UNAVAILABLE"}, traffic.errors
    got = stack.registry.stub.GetVersion(
        registry_pb2.GetVersionRequest(model=stack.model, alias="production"),
        metadata=stack.registry.md,
        timeout=10,
    )
    assert got.version.version == stack.versions["v2"]
    audit = stack.registry.stub.ListAuditLog(
        registry_pb2.ListAuditLogRequest(model=stack.model), metadata=stack.registry.md, timeout=10
    )
    moves = [e for e in audit.entries if e.alias == "production" and e.to_version == stack.versions["v2"]]
    assert moves
    assert moves[0].actor == "rollout-controller"
    assert rollout.id in moves[0].reason
    resp = stack.client.score_batch(stack.model, [uuid.uuid4().hex for _ in range(200)])
    assert {(r.model.version, r.variant) for r in resp.results} == {
        (stack.versions["v2"], spb.VARIANT_STABLE)
    }


def test_scoring_goes_on_without_the_monitor_and_drops_are_counted(stack: Stack) -> None:
    port = stack.gateway.metrics_port
    stack.monitor.stop(timeout=30)
    dropped_before = metric_value(port, "finpredict_gateway_prediction_log_dropped_total")
    for _ in range(8):  # 4,000 records for a 2,000-record buffer
        resp = stack.client.score_batch(stack.model, [uuid.uuid4().hex for _ in range(500)])
        assert len(resp.results) == 500
    assert (
        metric_value(port, "finpredict_gateway_prediction_log_dropped_total", reason="buffer_full")
        > dropped_before
    )
    sent_before = metric_value(port, "finpredict_gateway_prediction_log_sent_total")
    stack.start_monitor()
    stack.client.score_batch(stack.model, [uuid.uuid4().hex for _ in range(100)])
    wait_for(
        lambda: metric_value(port, "finpredict_gateway_prediction_log_sent_total") >= sent_before + 2000,
        60,
        "the prediction log to resume",
    )


def test_prediction_records_reach_the_monitor(stack: Stack) -> None:
    from finpredict.api.monitor.v1 import monitor_pb2, monitor_pb2_grpc

    port = stack.gateway.metrics_port
    sent_before = metric_value(port, "finpredict_gateway_prediction_log_sent_total")
    resp = stack.client.score_batch(stack.model, [f"log-{uuid.uuid4().hex}" for _ in range(50)])
    wait_for(
        lambda: metric_value(port, "finpredict_gateway_prediction_log_sent_total") >= sent_before + 50,
        30,
        "the records to be sent",
    )
    channel = authed(grpc.insecure_channel(stack.monitor.target))  # the monitor needs a token
    try:
        stub = monitor_pb2_grpc.MonitorServiceStub(channel)
        observed = Timestamp()
        observed.GetCurrentTime()
        outcomes = [
            monitor_pb2.Outcome(
                request_id=r.request_id, entity_id=r.entity_id, defaulted=False, observed_at=observed
            )
            for r in resp.results
        ]
        got = stub.RecordOutcomes(monitor_pb2.RecordOutcomesRequest(outcomes=outcomes), timeout=10)
    finally:
        channel.close()
    assert (got.matched, got.unmatched) == (50, 0)


# ----- faults under load -------------------------------------------------------------------------
# Each test keeps ScoreBatch traffic going from two client threads (TimedTraffic: every call has a
# deadline and is recorded), injects one fault, and checks what the clients saw, what the gateway
# counted, what recovered by itself and how fast (printed: `pytest -rP` shows the figures). The
# gateway kill is test_good_candidate_is_promoted_and_survives_a_gateway_kill above; the whole-Ray
# kill is destructive and has its own module and stack (test_gateway_ray_loss.py).


@pytest.fixture(scope="module")
def spare_processes() -> Iterator[list[ServiceProcess]]:
    """Processes a fault test started in place of the stack's own (stopped before the stack's teardown)."""
    procs: list[ServiceProcess] = []
    yield procs
    for proc in reversed(procs):
        proc.stop(timeout=30)


def _accounts(
    gateway: ServiceProcess,
    stack: Stack,
    traffic: TimedTraffic,
    counts_before: GatewayCounts,
    log_before: LogCounts,
) -> tuple[GatewayCounts, LogCounts]:
    """What the gateway counted since ``counts_before``, once its ScoreBatch counts match what the
    clients saw and its prediction log has settled (deltas)."""
    seen = traffic.codes
    counted = wait_for(
        lambda: (
            (d := gateway_counts(gateway.metrics_port, stack.model) - counts_before).handled == seen and d
        ),
        30,
        f"the gateway's ScoreBatch counts to match the clients' {dict(seen)}",
    )
    log = reconcile_log(
        gateway.metrics_port, stack.monitor.metrics_port, stack.model, log_before, traffic.ok_results
    )
    return counted, log


def _assert_accounts(
    traffic: TimedTraffic, counted: GatewayCounts, log: LogCounts, log_before: LogCounts
) -> None:
    """Every application of an OK call was counted as scored and became a prediction record that
    the monitor acknowledged (or a counted drop); every failed call counted as a backend error."""
    assert counted.scored_ok == traffic.ok_results
    failed = sum(n for code, n in traffic.codes.items() if code != "OK")
    assert counted.scored_error == failed * traffic.batch
    # the records buffered before the traffic were sent (or dropped) too
    assert log.sent + log.dropped == traffic.ok_results + log_before.buffered, (log, log_before)
    assert log.ingested == log.sent, log  # the monitor acknowledged exactly what the gateway sent
    assert log.duplicates == 0, log


def test_replica_killed_under_load_is_replaced_and_traffic_recovers(stack: Stack) -> None:
    """kill -9 of one of the two model-server replicas: its in-flight calls fail at the Serve
    proxy with UNAVAILABLE, which the gateway retries on the other replica; Serve starts a new
    replica by itself. The clients see at most UNAVAILABLE for a short window."""
    gw = stack.gateway
    replicas = stack.ray.replica_pids()
    assert len(replicas) == 2, replicas
    before = gateway_counts(gw.metrics_port, stack.model)
    log_before = log_counts(gw.metrics_port, stack.monitor.metrics_port, stack.model)
    with TimedTraffic(gw.target, stack.model) as traffic:
        traffic.wait_ok(time.monotonic(), 5, 60, "traffic before the fault")
        victim = replicas[0]
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        new = wait_for(
            lambda: (now := stack.ray.replica_pids()) and len(now) == 2 and victim not in now and now,
            120,
            "Serve to start a new replica",
        )
        replaced_s = time.monotonic() - killed_at
        traffic.wait_ok(time.monotonic(), 10, 60, "traffic after the new replica started")
    counted, log = _accounts(gw, stack, traffic, before, log_before)
    recovery_s = traffic.recovery_s(killed_at)
    report_fault(
        "replica kill -9",
        client_codes=dict(traffic.codes),
        retries=counted.retries,
        scored_error=counted.scored_error,
        handled=dict(counted.handled),
        client_outage_s=round(recovery_s, 2),
        replica_replaced_s=round(replaced_s, 2),
        records_sent=log.sent,
        records_dropped=log.dropped,
    )
    _assert_accounts(traffic, counted, log, log_before)
    assert set(new) - set(replicas), (replicas, new)
    assert set(traffic.errors) <= {"UNAVAILABLE"}, [(r.code, r.details) for r in traffic.errors_after(0)]
    assert recovery_s < 30, recovery_s
    assert counted.circuits_open == 0


def test_slow_backend_times_out_opens_the_circuit_and_recovers(stack: Stack) -> None:
    """A second gateway reaches the Serve ingress through a proxy that can delay every answer.
    With the delay (1 s) beyond its backend deadline (0.5 s) its clients get DEADLINE_EXCEEDED,
    the circuit opens after 5 failures in a row (finpredict_gateway_circuit_open), and calls
    fail fast with UNAVAILABLE; once the delay is gone the circuit closes after its cooldown
    (1 s) and scoring recovers."""
    version = str(production_version(stack))
    deadline_s, delay_s, cooldown_s = 0.5, 1.0, 1.0
    with DelayProxy(stack.serve_port) as proxy:
        gw = start_gateway(
            stack.tmp / "gw-slow-backend",
            stack.registry.target,
            proxy.port,
            stack.monitor.target,
            FINPREDICT_GATEWAY_BACKEND_TIMEOUT_S=str(deadline_s),
            FINPREDICT_GATEWAY_BREAKER_FAILURES="5",
            FINPREDICT_GATEWAY_BREAKER_COOLDOWN_S=str(cooldown_s),
        )
        try:

            def circuit() -> float:
                return metric_value(
                    gw.metrics_port, "finpredict_gateway_circuit_open", model=stack.model, version=version
                )

            before = gateway_counts(gw.metrics_port, stack.model)
            log_before = log_counts(gw.metrics_port, stack.monitor.metrics_port, stack.model)
            with TimedTraffic(gw.target, stack.model) as traffic:
                traffic.wait_ok(time.monotonic(), 5, 60, "traffic through the proxy")
                slowed_at = time.monotonic()
                proxy.response_delay_s = delay_s
                wait_for(lambda: circuit() == 1, 30, "the circuit to open")
                opened_s = time.monotonic() - slowed_at
                wait_for(
                    lambda: sum("circuit" in r.details for r in traffic.errors_after(slowed_at)) >= 5,
                    30,
                    "calls to fail fast while the circuit is open",
                )
                healed_at = time.monotonic()
                proxy.response_delay_s = 0.0
                first_ok = traffic.wait_ok(healed_at, 5, 60, "scoring to recover")
                wait_for(lambda: circuit() == 0, 30, "the circuit to close")
            counted, log = _accounts(gw, stack, traffic, before, log_before)
        finally:
            stopped = gw.stop(timeout=30)
    assert stopped == 0, gw.logs()[-3000:]
    errors = traffic.errors_after(slowed_at)
    timed_out = [r.ended - r.started for r in errors if r.code == "DEADLINE_EXCEEDED"]
    fast = [r.ended - r.started for r in errors if r.code == "UNAVAILABLE" and "circuit" in r.details]
    report_fault(
        "backend delay",
        client_codes=dict(traffic.codes),
        circuit_opened_after_s=round(opened_s, 2),
        deadline_exceeded_median_s=median_s(timed_out),
        fail_fast_median_s=median_s(fast),
        recovered_after_delay_removed_s=round(first_ok - healed_at, 2),
        retries=counted.retries,
        handled=dict(counted.handled),
    )
    _assert_accounts(traffic, counted, log, log_before)
    assert set(traffic.errors) <= {"DEADLINE_EXCEEDED", "UNAVAILABLE"}, traffic.errors
    assert timed_out, traffic.errors
    # the gateway's deadline answered them, not the client's (10 s)
    assert median_s(timed_out) < deadline_s + 1.0, timed_out
    # an open circuit answers without waiting for the backend
    assert median_s(fast) < deadline_s, fast
    assert first_ok - healed_at < cooldown_s + 30


def test_registry_killed_under_load_scoring_goes_on_and_admin_calls_fail_cleanly(
    stack: Stack, spare_processes: list[ServiceProcess]
) -> None:
    """kill -9 of the registry: scoring goes on with the gateway's cached `production` (and the
    replicas' loaded models); admin calls that need the registry (a version the gateway has not
    seen) fail with UNAVAILABLE and change nothing. The registry restarted on the same port and
    data dir has every write it acknowledged, and the gateway's admin calls work again."""
    gw, registry = stack.gateway, stack.registry
    fresh = registry.register(stack.model, train(seed=3, rounds=21), threshold=0.5)  # unknown to the gateway
    acked: list[str] = []
    writer_errors: Counter[str] = Counter()
    stop = threading.Event()

    def write() -> None:  # the registry's clients keep writing through the kill
        while not stop.is_set():
            name = f"ack-{uuid.uuid4().hex[:12]}"
            try:
                registry.stub.CreateModel(
                    registry_pb2.CreateModelRequest(name=name), metadata=registry.md, timeout=5
                )
                acked.append(name)
            except grpc.RpcError as exc:
                writer_errors[exc.code().name] += 1  # type: ignore[attr-defined]
            stop.wait(0.05)

    def admin_calls() -> dict[str, tuple[grpc.StatusCode, str]]:
        calls = {
            "SetShadow": lambda: stack.client.rollouts.SetShadow(
                rpb.SetShadowRequest(model=stack.model, version=fresh), metadata=OPERATOR, timeout=10
            ),
            "StartRollout": lambda: stack.client.start_rollout(stack.model, fresh, [50.0], 3600, 10),
            "StartExperiment": lambda: stack.client.rollouts.StartExperiment(
                rpb.StartExperimentRequest(
                    model=stack.model,
                    arms=[
                        rpb.ExperimentArm(name="a", version=stable_version, weight=50),
                        rpb.ExperimentArm(name="b", version=fresh, weight=50),
                    ],
                ),
                metadata=OPERATOR,
                timeout=10,
            ),
        }
        out = {}
        for name, call in calls.items():
            try:
                call()
                out[name] = (grpc.StatusCode.OK, "")
            except grpc.RpcError as exc:
                out[name] = (exc.code(), exc.details() or "")  # type: ignore[attr-defined]
        return out

    stable_version = production_version(stack)
    writer = threading.Thread(target=write, daemon=True)
    before = gateway_counts(gw.metrics_port, stack.model)
    log_before = log_counts(gw.metrics_port, stack.monitor.metrics_port, stack.model)
    rollouts_before = len(
        stack.client.rollouts.ListRollouts(rpb.ListRolloutsRequest(), metadata=CLIENT, timeout=10).rollouts
    )
    with TimedTraffic(gw.target, stack.model) as traffic:
        writer.start()
        try:
            traffic.wait_ok(time.monotonic(), 5, 60, "traffic before the fault")
            wait_for(lambda: len(acked) >= 3, 30, "registry writes before the fault")
            killed_at = time.monotonic()
            os.kill(registry.proc.proc.pid, signal.SIGKILL)
            registry.proc.proc.wait(timeout=30)
            # past the alias TTL (1 s) every call consults the registry and falls back on the cache
            traffic.wait_ok(killed_at + 1.5, 10, 60, "scoring without the registry")
            refused = admin_calls()
            restart_at = time.monotonic()
            registry.proc = restart_registry(registry.proc)
            spare_processes.append(registry.proc)
            restarted_s = time.monotonic() - restart_at
            acked_before_restart = len(acked)
            # the gateway reads the registry again (a version it has not cached, as admin calls do)
            oip_stub = oip_grpc.GRPCInferenceServiceStub(stack.client.channel)
            wait_for(
                lambda: oip_stub.ModelMetadata(
                    oip.ModelMetadataRequest(name=stack.model, version=str(fresh)),
                    metadata=CLIENT,
                    timeout=10,
                ),
                60,
                "the gateway to reach the restarted registry",
            )
            gateway_back_s = time.monotonic() - restart_at
            wait_for(lambda: len(acked) >= acked_before_restart + 3, 60, "registry writes after the restart")
            traffic.wait_ok(time.monotonic(), 5, 60, "traffic after the restart")
        finally:
            stop.set()
            writer.join(timeout=30)
    counted, log = _accounts(gw, stack, traffic, before, log_before)
    # the admin calls refused while the registry was down work now (after the traffic: a shadow
    # would add records to the prediction log checked above)
    shadow = stack.client.rollouts.SetShadow(
        rpb.SetShadowRequest(model=stack.model, version=fresh, percent=10), metadata=OPERATOR, timeout=10
    )
    stack.client.rollouts.SetShadow(
        rpb.SetShadowRequest(model=stack.model, version=0), metadata=OPERATOR, timeout=10
    )
    report_fault(
        "registry kill -9",
        retries=counted.retries,
        client_codes=dict(traffic.codes),
        admin_calls_while_down={k: v[0].name for k, v in refused.items()},
        registry_writes_acked=len(acked),
        registry_writes_refused=dict(writer_errors),
        registry_restart_s=round(restarted_s, 2),
        gateway_reads_registry_after_restart_s=round(gateway_back_s, 2),
        records_sent=log.sent,
    )
    _assert_accounts(traffic, counted, log, log_before)
    assert not traffic.errors, traffic.errors  # scoring never noticed
    assert {k: v[0] for k, v in refused.items()} == dict.fromkeys(refused, grpc.StatusCode.UNAVAILABLE), (
        refused
    )
    assert all("registry" in details for _, details in refused.values()), refused
    after = stack.client.rollouts.ListRollouts(
        rpb.ListRolloutsRequest(), metadata=CLIENT, timeout=10
    ).rollouts
    assert len(after) == rollouts_before  # the refused StartRollout left nothing behind
    assert (shadow.version, shadow.percent) == (fresh, 10)
    assert set(writer_errors) <= {"UNAVAILABLE"}, writer_errors
    for name in acked:  # no acknowledged write lost
        got = registry.stub.GetModel(
            registry_pb2.GetModelRequest(name=name), metadata=registry.md, timeout=10
        )
        assert got.model.name == name
    assert gw.health() == health_pb2.HealthCheckResponse.SERVING
