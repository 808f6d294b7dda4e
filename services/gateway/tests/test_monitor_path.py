"""The gateway's paths to the monitor, with a real registry, monitor and gateway (no Ray: the model
server is the in-process stand-in): outcomes from the SDK and the CLI reach the monitor and move
its accuracy, once; bad, unauthorised and undeliverable outcomes are refused clearly; the
prediction log accounts for every record scored through a killed connection and a shutdown; an
analyst's override from the SDK is the next snapshot's label, and the review queue lists a refused
request and a score in the review band."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import polars as pl
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from typer.testing import CliRunner

from finpredict.api.common.v1 import types_pb2
from finpredict.api.monitor.v1 import monitor_pb2 as mpb
from finpredict.api.monitor.v1 import monitor_pb2_grpc as mpb_grpc
from finpredict.api.rollout.v1 import rollout_pb2 as rpb
from finpredict.api.rollout.v1 import rollout_pb2_grpc as rpb_grpc
from finpredict.api.scoring.v1 import scoring_pb2 as spb
from finpredict.api.scoring.v1 import scoring_pb2_grpc as spb_grpc
from finpredict.client import (
    Application,
    AsyncScoringClient,
    Decision,
    Feedback,
    FeedbackSummary,
    InvalidRequestError,
    Outcome,
    OutcomeSummary,
    PermissionDeniedError,
    RetryPolicy,
    ScoreResult,
    ScoringClient,
    UnavailableError,
    Verdict,
)
from finpredict.common.auth import bearer_metadata
from finpredict.common.net import free_port
from finpredict.gateway.cli import feedback_app, outcomes_app
from finpredict.monitor.cli import app as drift_app
from finpredict.monitor.review_cli import app as review_app
from finpredict.testkit.cli import (
    ADMIN_TOKEN,
    GATEWAY_TOKENS,
    READER_TOKEN,
    REGISTRY_ADMIN,
    REGISTRY_CONTROLLER,
    REGISTRY_TOKENS,
    WRITER_TOKEN,
    FakeModelServer,
    RegistryAdmin,
    fake_model_server,
    invoke,
)
from finpredict.testkit.models import TrainedModel, train_small_model
from finpredict.testkit.names import unique
from finpredict.testkit.process import ServiceProcess, start_service, wait_for
from finpredict.testkit.proxy import DelayProxy
from finpredict.testkit.registry import start_registry
from finpredict.testkit.scrape import metric_value

# The monitor's tokens: the gateway's (writer: the prediction log and outcomes) and an operator's.
MONITOR_WRITER = "path-monitor-gateway-0123456789"
MONITOR_READER = "path-monitor-ops-0123456789"
MONITOR_TOKENS = f"{MONITOR_WRITER}=gateway:writer,{MONITOR_READER}=ops:reader"
FAST = RetryPolicy(max_attempts=3, initial_backoff_s=0.01, max_backoff_s=0.05)
OUTCOME_WAIT_S = 0.5  # how long the monitor keeps an outcome waiting for its prediction
ORPHANED = "finpredict_monitor_outcomes_total"


@dataclass
class MonitorPath:
    registry: ServiceProcess
    admin: RegistryAdmin
    model_server: str
    monitor: ServiceProcess
    gateway: ServiceProcess
    tmp: Path
    trained: TrainedModel
    fake: FakeModelServer

    def model(self) -> str:
        """A fresh model with v1 in production (each test counts its own records and outcomes)."""
        name = unique("path")
        self.admin.create_model(name)
        self.admin.set_production(name, self.admin.register(name, self.trained))
        return name

    def start_gateway(self, monitor_target: str, **extra: str) -> ServiceProcess:
        """Another gateway of the same registry and model server, logging to ``monitor_target``."""
        work = self.tmp / unique("gateway")
        return start_gateway(work, self.registry.target, self.model_server, monitor_target, **extra)


def start_gateway(
    work: Path, registry_target: str, model_server: str, monitor_target: str, **extra: str
) -> ServiceProcess:
    return start_service(
        "gateway",
        work,
        env={
            "FINPREDICT_GATEWAY_TOKENS": GATEWAY_TOKENS,
            "FINPREDICT_GATEWAY_DATA_DIR": str(work / "data"),
            "FINPREDICT_GATEWAY_REGISTRY_TARGET": registry_target,
            "FINPREDICT_GATEWAY_REGISTRY_TOKEN": REGISTRY_CONTROLLER,
            "FINPREDICT_GATEWAY_MODEL_SERVER_TARGET": model_server,
            "FINPREDICT_GATEWAY_MONITOR_TARGET": monitor_target,
            "FINPREDICT_GATEWAY_MONITOR_TOKEN": MONITOR_WRITER,
            "FINPREDICT_GATEWAY_LOG_FLUSH_S": "0.05",
            "FINPREDICT_GATEWAY_CONTROLLER_TICK_S": "3600",
            "FINPREDICT_GATEWAY_LOG_FORMAT": "text",
            "FINPREDICT_GATEWAY_SHUTDOWN_GRACE_S": "1",
            **extra,
        },
    )


@pytest.fixture(scope="module")
def path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MonitorPath]:
    tmp = tmp_path_factory.mktemp("monitor-path")
    registry = start_registry(tmp / "registry", REGISTRY_TOKENS)
    admin = RegistryAdmin(registry.target)
    try:
        monitor = start_service(
            "monitor",
            tmp / "monitor",
            env={
                "FINPREDICT_MONITOR_DATA_DIR": str(tmp / "monitor" / "data"),
                "FINPREDICT_MONITOR_PROFILES_DIR": str(tmp / "monitor" / "profiles"),
                "FINPREDICT_MONITOR_TOKENS": MONITOR_TOKENS,
                "FINPREDICT_MONITOR_REGISTRY_TARGET": registry.target,
                "FINPREDICT_MONITOR_REGISTRY_TOKEN": REGISTRY_ADMIN,
                "FINPREDICT_MONITOR_OUTCOME_WAIT_S": str(OUTCOME_WAIT_S),
                "FINPREDICT_MONITOR_EVALUATE_INTERVAL_S": "0",
                "FINPREDICT_MONITOR_LOG_FORMAT": "text",
            },
        )
        try:
            with fake_model_server() as (model_server, fake):
                work = tmp / "gateway"
                gateway = start_gateway(work, registry.target, model_server, monitor.target)
                try:
                    yield MonitorPath(
                        registry, admin, model_server, monitor, gateway, tmp, train_small_model(), fake
                    )
                finally:
                    gateway.stop()
        finally:
            monitor.stop()
    finally:
        admin.close()
        registry.stop()


# ----- helpers -------------------------------------------------------------------------------------


def applications(n: int, offset: int = 0) -> list[Application]:
    """``n`` valid applications whose stand-in scores spread over [0, 1) (both decisions)."""
    return [
        Application(
            entity_id=f"biz-{offset + i}",
            features={
                "annual_revenue": 100_000.0,
                "debt": float((offset + i) % 10) * 25_000.0,
                "owner_income": None,
                "years_in_business": 4,
                "late_payments_12m": 1,
                "sector": "retail",
            },
        )
        for i in range(n)
    ]


def score(target: str, model: str, n: int, offset: int = 0) -> list[ScoreResult]:
    with ScoringClient(target, token=READER_TOKEN) as client:
        return client.score_batch(model, applications(n, offset))


def labels(results: Sequence[ScoreResult], wrong: int = 0) -> list[Outcome]:
    """The outcome of every result: the model was right, except for the last ``wrong`` ones."""
    right = len(results) - wrong
    return [
        Outcome(
            r.request_id, defaulted=(r.decision is Decision.DECLINE) == (i < right), entity_id=r.entity_id
        )
        for i, r in enumerate(results)
    ]


@dataclass(frozen=True)
class Accuracy:
    count: int  # predictions logged
    labeled: int
    accuracy: float


def accuracy(path: MonitorPath, model: str) -> Accuracy:
    """What the monitor's drift report says of v1 of ``model``, over all of its daily windows."""
    with grpc.insecure_channel(path.monitor.target) as channel:
        windows = (
            mpb_grpc.MonitorServiceStub(channel)
            .GetDriftReport(
                mpb.GetDriftReportRequest(
                    model=types_pb2.ModelRef(name=model, version=1), window=mpb.WINDOW_SIZE_DAILY
                ),
                metadata=bearer_metadata(MONITOR_READER),
                timeout=10,
            )
            .windows
        )
    labeled = sum(w.labeled for w in windows)
    right = sum(w.accuracy * w.labeled for w in windows if w.labeled)
    return Accuracy(sum(w.count for w in windows), labeled, right / labeled if labeled else math.nan)


def logged(path: MonitorPath, model: str, n: int) -> Accuracy:
    """Waits until the monitor has logged ``n`` predictions of ``model`` (the prediction log)."""

    def done() -> Accuracy | None:
        got = accuracy(path, model)
        return got if got.count >= n else None

    return wait_for(done, 30, f"{n} predictions of {model} logged")


def record(
    kind: str,
    target: str,
    outcomes: Sequence[Outcome],
    token: str = WRITER_TOKEN,
    retry: RetryPolicy | None = None,
    chunk_size: int = 7,
) -> OutcomeSummary:
    """``record_outcomes`` of the blocking (``sync``) or the asyncio (``aio``) client, in several
    calls of ``chunk_size`` (concurrent ones for ``aio``)."""
    if kind == "sync":
        with ScoringClient(target, token=token, retry=retry) as client:
            return client.record_outcomes(outcomes, chunk_size=chunk_size)

    async def run() -> OutcomeSummary:
        async with AsyncScoringClient(target, token=token, retry=retry) as client:
            return await client.record_outcomes(outcomes, chunk_size=chunk_size)

    return asyncio.run(run())


def stamp(t: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(t)
    return ts


def record_raw(target: str, request: spb.RecordOutcomesRequest, token: str | None = WRITER_TOKEN) -> None:
    with grpc.insecure_channel(target) as channel:
        metadata = bearer_metadata(token) if token else ()
        spb_grpc.ScoringServiceStub(channel).RecordOutcomes(request, metadata=metadata, timeout=10)


# ----- outcomes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sync", "aio"])
def test_sdk_outcomes_move_the_monitors_accuracy_once(path: MonitorPath, kind: str) -> None:
    model = path.model()
    results = score(path.gateway.target, model, 40)
    assert {r.decision for r in results} == {Decision.APPROVE, Decision.DECLINE}
    before = logged(path, model, 40)
    assert (before.count, before.labeled) == (40, 0)

    got = record(kind, path.gateway.target, labels(results, wrong=10))
    assert got == OutcomeSummary(matched=40, unmatched=0, duplicates=0)
    after = accuracy(path, model)
    assert (after.labeled, after.accuracy) == (40, pytest.approx(0.75))

    # a replay (here with a changed label) and an outcome of a request the monitor never logged;
    # outcomes other tests left waiting are orphaned first, so the count below is this test's own
    wait_for(
        lambda: metric_value(path.monitor, "finpredict_monitor_outcomes_waiting") == 0,
        OUTCOME_WAIT_S + 10,
        "no outcome waiting for its prediction",
    )
    orphaned = metric_value(path.monitor, ORPHANED, result="orphaned")
    orphan = Outcome("never-scored-" + model, defaulted=True)
    replay = [*labels(results[:10], wrong=10), orphan]
    assert record(kind, path.gateway.target, replay) == OutcomeSummary(matched=0, unmatched=1, duplicates=10)
    assert accuracy(path, model) == after  # counted once: the first outcome of a request wins
    # the one with no prediction waits for it, then is counted as orphaned (and stays known)
    wait_for(
        lambda: metric_value(path.monitor, ORPHANED, result="orphaned") == orphaned + 1,
        OUTCOME_WAIT_S + 10,
        "the outcome to be orphaned",
    )
    assert record(kind, path.gateway.target, [orphan]) == OutcomeSummary(matched=0, unmatched=0, duplicates=1)
    assert metric_value(path.monitor, ORPHANED, result="orphaned") == orphaned + 1


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_cli_outcomes_move_the_monitors_accuracy_once(path: MonitorPath, tmp_path: Path, suffix: str) -> None:
    model = path.model()
    results = score(path.gateway.target, model, 20)
    logged(path, model, 20)
    outcomes = labels(results, wrong=5)
    frame = pl.DataFrame(
        {
            "request_id": [o.request_id for o in outcomes],
            "defaulted": [int(o.defaulted) for o in outcomes],
            "observed_at": [datetime.now(UTC).isoformat()] * len(outcomes),
            "entity_id": [o.entity_id for o in outcomes],
        }
    )
    file = tmp_path / f"outcomes{suffix}"
    frame.write_csv(file) if suffix == ".csv" else frame.write_parquet(file)

    first = invoke(outcomes_app, ["record", str(file)], path.gateway.target, WRITER_TOKEN)
    assert first.exit_code == 0, first.output
    assert (
        f"recorded 20 outcomes from {file}: 20 matched, 0 waiting for their prediction, 0 duplicates"
        in " ".join(first.output.split())
    )
    after = accuracy(path, model)
    assert (after.labeled, after.accuracy) == (20, pytest.approx(0.75))

    again = invoke(outcomes_app, ["record", str(file), "--json"], path.gateway.target, WRITER_TOKEN)
    assert again.exit_code == 0, again.output
    summary = json.loads(again.output)
    assert summary == {"file": str(file), "outcomes": 20, "matched": 0, "unmatched": 0, "duplicates": 20}
    assert accuracy(path, model) == after


def test_recording_outcomes_needs_the_writer_role(path: MonitorPath) -> None:
    request = spb.RecordOutcomesRequest(outcomes=[spb.Outcome(request_id="r", defaulted=True)])
    for token, code in (
        (None, grpc.StatusCode.UNAUTHENTICATED),
        (READER_TOKEN, grpc.StatusCode.PERMISSION_DENIED),
    ):
        with pytest.raises(grpc.RpcError) as refused:
            record_raw(path.gateway.target, request, token)
        assert refused.value.code() == code
    with pytest.raises(PermissionDeniedError):
        record("sync", path.gateway.target, [Outcome("r", defaulted=True)], token=READER_TOKEN)
    result = invoke(outcomes_app, ["record", str(_csv(path.tmp, "r,1"))], path.gateway.target, READER_TOKEN)
    assert result.exit_code == 1, result.output
    assert "PERMISSION_DENIED" in result.output
    assert "writer role" in result.output


def _csv(tmp: Path, *rows: str) -> Path:
    file = tmp / f"{unique('outcomes')}.csv"
    file.write_text("\n".join(["request_id,defaulted", *rows]) + "\n")
    return file


FUTURE = datetime.now(UTC) + timedelta(days=365 * 74)  # the year 2100, give or take


@pytest.mark.parametrize(
    ("outcomes", "message"),
    [
        ([], "outcomes: empty batch"),
        ([spb.Outcome(request_id="r")] * 1001, "outcomes: 1001 items exceed the batch limit of 1000"),
        ([spb.Outcome(request_id="r"), spb.Outcome(defaulted=True)], "outcomes[1].request_id: required"),
        ([spb.Outcome(request_id="r" * 257)], "outcomes[0].request_id: longer than 256 characters"),
        ([spb.Outcome(request_id="r", entity_id="e" * 257)], "outcomes[0].entity_id: longer than 256"),
        ([spb.Outcome(request_id="r", observed_at=stamp(FUTURE))], "outcomes[0].observed_at: "),
        ([spb.Outcome(request_id="r", observed_at=Timestamp(seconds=-5))], "not a time after 1970"),
    ],
)
def test_bad_outcomes_are_refused_naming_the_field(
    path: MonitorPath, outcomes: list[spb.Outcome], message: str
) -> None:
    recorded = metric_value(path.monitor, "finpredict_monitor_outcomes_total")
    with pytest.raises(grpc.RpcError) as refused:
        record_raw(path.gateway.target, spb.RecordOutcomesRequest(outcomes=outcomes))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (refused.value.details() or "")
    assert metric_value(path.monitor, "finpredict_monitor_outcomes_total") == recorded  # nothing sent on


def test_a_future_outcome_is_named_by_index_and_by_file_line(path: MonitorPath) -> None:
    late = Outcome("r2", defaulted=False, observed_at=FUTURE)
    with pytest.raises(InvalidRequestError) as refused:
        record("sync", path.gateway.target, [Outcome("r0", True), Outcome("r1", True), late], chunk_size=2)
    assert (refused.value.index, refused.value.field) == (2, "outcomes[2].observed_at")
    assert "in the future" in refused.value.message

    file = path.tmp / f"{unique('future')}.csv"
    file.write_text("request_id,defaulted,observed_at\nr0,1,\nr1,0,2100-01-01T00:00:00Z\n")
    result = invoke(outcomes_app, ["record", str(file)], path.gateway.target, WRITER_TOKEN)
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert "INVALID_ARGUMENT: outcomes[1].observed_at" in text
    assert f"outcomes[1] is {file}, line 3 (request 'r1')" in text
    assert "Traceback" not in result.output


def test_outcomes_are_unavailable_while_the_monitor_is_away(path: MonitorPath) -> None:
    """Never a silent drop: the client is told, retries (same outcomes), and is told again."""
    gateway = path.start_gateway(f"127.0.0.1:{free_port()}")  # nothing listens there
    try:
        failed = metric_value(gateway, "finpredict_gateway_outcomes_total", result="failed")
        with pytest.raises(UnavailableError) as refused:
            record("sync", gateway.target, [Outcome("r", defaulted=True)], retry=FAST)
        assert refused.value.attempts == FAST.max_attempts
        assert "monitor unavailable" in refused.value.message
        assert metric_value(gateway, "finpredict_gateway_outcomes_total", result="failed") == failed + 3

        result = invoke(outcomes_app, ["record", str(_csv(path.tmp, "r,1"))], gateway.target, WRITER_TOKEN)
        assert result.exit_code == 1, result.output
        assert "UNAVAILABLE" in result.output
        assert "cannot reach its monitor" in " ".join(result.output.split())
    finally:
        gateway.stop()


# ----- the prediction log --------------------------------------------------------------------------


def _closing_counts(gateway: ServiceProcess) -> tuple[int, int]:
    """``sent`` and ``dropped`` from the prediction log's closing line (JSON logs)."""
    for line in gateway.logs().splitlines():
        if line.startswith("{") and (doc := json.loads(line)).get("event", "").startswith(
            "prediction log closed"
        ):
            return int(doc["sent"]), int(doc["dropped"])
    raise AssertionError(f"no closing line in the gateway's log:\n{gateway.logs()[-3000:]}")


def test_every_scored_record_is_sent_or_counted_through_a_killed_connection_and_a_shutdown(
    path: MonitorPath,
) -> None:
    model = path.model()
    ingested = "finpredict_monitor_records_ingested_total"
    proxy = DelayProxy(path.monitor.port).start()
    proxy_up = True
    gateway: ServiceProcess | None = None
    try:
        gateway = path.start_gateway(
            proxy.target, FINPREDICT_GATEWAY_LOG_BATCH_RECORDS="50", FINPREDICT_GATEWAY_LOG_FORMAT="json"
        )
        score(gateway.target, model, 100)
        sent = "finpredict_gateway_prediction_log_sent_total"
        wait_for(lambda: metric_value(gateway, sent) == 100, 30, "100 records sent")
        # The monitor's acknowledgements are held: the next batch is stored but in flight when the
        # connection dies, and the rest waits in the buffer.
        proxy.response_delay_s = 60
        score(gateway.target, model, 100, offset=100)
        wait_for(lambda: metric_value(path.monitor, ingested, model=model) == 150, 30, "a batch in flight")
        proxy.stop()  # the gateway's monitor connection is gone, mid-batch
        proxy_up = False
        score(gateway.target, model, 30, offset=200)
        assert metric_value(gateway, sent) == 100
    finally:
        if gateway is not None:
            gateway.stop()
        if proxy_up:
            proxy.stop()
    sent_at_close, dropped_at_close = _closing_counts(gateway)
    assert (sent_at_close, sent_at_close + dropped_at_close) == (100, 230)
    # the batch in flight was stored but never acknowledged: counted as dropped, not as sent
    assert metric_value(path.monitor, ingested, model=model) == 150


# ----- attributes the model does not use ------------------------------------------------------------


def test_attributes_are_logged_with_the_prediction_and_never_scored(path: MonitorPath) -> None:
    """An application's attributes (the protected attribute for fairness monitoring and the
    fairness gate of retraining) reach the monitor's log with the prediction, as categories beside
    the features; the score is the one without them; a name that is a feature is refused."""
    model = path.model()
    plain = score(path.gateway.target, model, 4)
    apps = [
        Application(a.entity_id, a.features, attributes={"protected_group": "AB"[i % 2]})
        for i, a in enumerate(applications(4))
    ]
    with ScoringClient(path.gateway.target, token=READER_TOKEN) as client:
        tagged = client.score_batch(model, apps)
        with pytest.raises(InvalidRequestError, match=r'attributes\["debt"\]: a feature of the model'):
            client.score_batch(model, [Application("biz-x", apps[0].features, attributes={"debt": "1"})])
    assert [r.score for r in tagged] == [r.score for r in plain]  # the model never saw them
    logged(path, model, 8)
    with grpc.insecure_channel(path.monitor.target) as channel:
        stub = mpb_grpc.MonitorServiceStub(channel)
        records = [
            stub.LookupPredictions(
                mpb.LookupPredictionsRequest(request_id=r.request_id),
                metadata=bearer_metadata(MONITOR_READER),
                timeout=10,
            ).records[0]
            for r in tagged
        ]
    assert [r.features["protected_group"].category for r in records] == ["A", "B", "A", "B"]
    assert all("debt" in r.features for r in records)


# ----- analyst feedback and the review queue --------------------------------------------------------


def _review_queue(path: MonitorPath, model: str, *args: str) -> dict[str, dict[str, object]]:
    """``finpredict review list --json`` of ``model``: the cases by request id."""
    got = CliRunner().invoke(
        review_app,
        [
            "list",
            "--model",
            model,
            "--json",
            "--target",
            path.monitor.target,
            "--token",
            MONITOR_READER,
            *args,
        ],
    )
    assert got.exit_code == 0, got.output
    return {c["request_id"]: c for c in map(json.loads, got.output.splitlines())}


def test_an_sdk_override_is_the_next_snapshots_label_and_the_review_queue_lists_edge_cases(
    path: MonitorPath, tmp_path: Path
) -> None:
    model = path.model()
    results = score(path.gateway.target, model, 10)
    # the stand-in scores debt / (debt + revenue + 1): biz-4's 100 000 of debt is a hair under 0.5
    in_band = [r.request_id for r in results if abs(r.score - r.threshold) <= 0.05]  # the default band
    assert [r.entity_id for r in results if r.request_id in in_band] == ["biz-4"]
    refused_id = "refused-" + model
    bad = {**applications(1)[0].features, "debt": "lots"}
    with (
        ScoringClient(path.gateway.target, token=READER_TOKEN, retry=FAST) as client,
        pytest.raises(InvalidRequestError) as refused,
    ):
        client.score(model, "biz-bad", bad, request_id=refused_id)
    assert refused.value.field == 'application.features["debt"]'
    logged(path, model, 10)
    outcomes = labels(results)
    assert record("sync", path.gateway.target, outcomes).matched == 10

    # an analyst overrides one decision with a corrected label and confirms another (sync), and a
    # retry of the same call (asyncio) is recognised as duplicates
    corrected = not outcomes[0].defaulted
    feedback = [
        Feedback(results[0].request_id, Verdict.OVERRIDDEN, corrected_label=corrected, reason="fraud ring"),
        Feedback(results[1].request_id, "confirmed"),
    ]
    with ScoringClient(path.gateway.target, token=WRITER_TOKEN, retry=FAST) as client:
        assert client.record_feedback(feedback) == FeedbackSummary(recorded=2, duplicates=0, unknown=0)

    async def retry() -> FeedbackSummary:
        async with AsyncScoringClient(path.gateway.target, token=WRITER_TOKEN, retry=FAST) as client:
            return await client.record_feedback(feedback)

    assert asyncio.run(retry()) == FeedbackSummary(recorded=0, duplicates=2, unknown=0)
    # the gateway refuses what the SDK does not check, naming the item in the caller's whole list
    too_long = [feedback[1], Feedback(results[1].request_id, "disputed", reason="x" * 2001)]
    with (
        ScoringClient(path.gateway.target, token=WRITER_TOKEN, retry=FAST) as client,
        pytest.raises(InvalidRequestError) as bad_feedback,
    ):
        client.record_feedback(too_long, chunk_size=1)
    assert (bad_feedback.value.field, bad_feedback.value.index) == ("feedback[1].reason", 1)
    # and another disputes a third from the command line
    disputed = ["record", "--request-id", results[2].request_id, "--verdict", "disputed", "--reason", "odd"]
    got = invoke(feedback_app, disputed, path.gateway.target, WRITER_TOKEN)
    assert got.exit_code == 0, got.output
    assert f"recorded disputed for {results[2].request_id}" in " ".join(got.output.split())

    # the next production snapshot carries the corrected label, flagged, beside the outcome
    snapshot = tmp_path / "snapshot.parquet"
    now = datetime.now(UTC).replace(microsecond=0, tzinfo=None)
    args = [
        "export",
        "--from",
        (now - timedelta(days=1)).isoformat(),
        "--to",
        (now + timedelta(hours=1)).isoformat(),
    ]
    args += ["--maturity-days", "0", "--model", model, "--out", str(snapshot)]
    args += ["--data-dir", str(path.tmp / "monitor" / "data")]
    exported = CliRunner().invoke(drift_app, args)
    assert exported.exit_code == 0, exported.output
    stats = json.loads(exported.output)
    assert (stats["rows"], stats["feedback_labels"]) == (10, 1)
    rows = {r["request_id"]: r for r in pl.read_parquet(snapshot).iter_rows(named=True)}
    assert refused_id not in rows  # never scored: not a prediction
    overridden = rows[results[0].request_id]
    assert (overridden["feedback_label"], overridden["label_overridden"]) == (corrected, True)
    assert overridden["defaulted"] is outcomes[0].defaulted
    assert [r["request_id"] for r in rows.values() if r["label_overridden"]] == [results[0].request_id]

    # the review queue: the refused request (it reaches the monitor down the prediction log) and the
    # score in the review band, nothing else of this model
    def queued() -> dict[str, dict[str, object]] | None:
        cases = _review_queue(path, model)
        return cases if refused_id in cases else None

    cases = wait_for(queued, 30, "the refused request in the review queue")
    assert set(cases) == {refused_id, *in_band}
    assert cases[refused_id]["kind"] == "refused"
    assert cases[refused_id]["score"] is None
    assert 'application.features["debt"]: expected a number' in str(cases[refused_id]["detail"])
    assert cases[in_band[0]]["kind"] == "review_band"
    assert set(_review_queue(path, model, "--kind", "refused")) == {refused_id}

    # a canary that fails is answered by stable: each such request is a case too
    candidate = path.admin.register(model, path.trained)
    path.fake.failing.add((model, candidate))
    start = rpb.StartRolloutRequest(
        model=model, candidate_version=candidate, steps=[50, 100], min_requests_per_step=1000
    )
    with grpc.insecure_channel(path.gateway.target) as channel:
        rpb_grpc.RolloutServiceStub(channel).StartRollout(
            start, metadata=bearer_metadata(ADMIN_TOKEN), timeout=30
        )
    later = {r.request_id for r in score(path.gateway.target, model, 20, offset=10)}
    fallbacks = metric_value(path.gateway, "finpredict_gateway_canary_fallbacks_total", model=model)
    assert fallbacks > 0

    def fallen_back() -> dict[str, dict[str, object]] | None:
        found = _review_queue(path, model, "--kind", "canary_fallback")
        return found if len(found) == fallbacks else None

    fell = wait_for(fallen_back, 30, f"{fallbacks} canary fallbacks in the review queue")
    assert set(fell) <= later
    assert {str(c["detail"]) for c in fell.values()} == {
        f"canary v{candidate} failed (INTERNAL); answered by stable v1"
    }
    assert {(c["version"], c["variant"]) for c in fell.values()} == {(1, "stable")}

    out = tmp_path / "review.csv"
    got = CliRunner().invoke(
        review_app,
        [
            "export",
            "--model",
            model,
            "--out",
            str(out),
            "--target",
            path.monitor.target,
            "--token",
            MONITOR_READER,
        ],
    )
    assert got.exit_code == 0, got.output
    assert set(pl.read_csv(out)["request_id"]) >= {refused_id, *in_band, *fell}
