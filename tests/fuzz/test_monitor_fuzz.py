"""Fuzz every public RPC of the monitor (proto/finpredict/monitor/v1) on a real server.

Same contract as the registry's: the server stays up, answers before the deadline, and refuses
with a clear status and message, never UNKNOWN/INTERNAL. The monitor has a reference profile for
``credit-default`` v1 (so ingest reaches the drift windows) and a harmless retraining command
(so TriggerRetraining really starts one). At the end: still healthy, no traceback in its log, and
the records acknowledged before the fuzzing are all still counted.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2
from hypothesis import strategies as st

from finpredict.api.common.v1 import types_pb2
from finpredict.api.monitor.v1 import monitor_pb2 as pb
from finpredict.api.monitor.v1 import monitor_pb2_grpc
from finpredict.demo import replay as rp
from finpredict.testkit.fuzz import (
    EXAMPLES,
    FuzzTarget,
    call,
    fuzz_rpc,
    fuzz_target,
    messages,
    one_field_off,
    rpc_names,
    timestamps,
)
from finpredict.testkit.process import start_service

SERVICE = pb.DESCRIPTOR.services_by_name["MonitorService"]
ADMIN_TOKEN = "fuzz-monitor-admin-0123456789"
MODEL = "credit-default"
KEPT = "fuzz-kept"  # never named by the hints: its records must still be counted at the end
T0 = int(datetime(2025, 3, 1, tzinfo=UTC).timestamp())
_PROFILE = rp.reference_profile(n_rows=3000)
FEATURES = [n for n in _PROFILE.feature_names if n != "__score__"]
CATEGORIES = sorted({c for n in FEATURES if _PROFILE.is_categorical(n) for c in _PROFILE.categories(n) or []})

MODEL_REFS = st.builds(types_pb2.ModelRef, name=st.just(MODEL), version=st.sampled_from([1, 2]))
TIMES = timestamps(T0, T0 + 10 * 86400)
HINTS: dict[str, st.SearchStrategy[Any]] = {
    "name": st.sampled_from([MODEL, "fuzz-absent"]),
    "model": st.sampled_from([MODEL, "fuzz-absent"]),
    "PredictionRecord.model": MODEL_REFS,
    "GetDriftReportRequest.model": MODEL_REFS,
    "version": st.sampled_from([1, 2]),
    "features.key": st.sampled_from(FEATURES),
    "features.value": st.one_of(
        st.builds(types_pb2.FeatureValue, number=st.floats(-1e6, 1e6)),
        st.builds(types_pb2.FeatureValue, category=st.sampled_from(CATEGORIES)),
    ),
    "score": st.floats(0.0, 1.0),
    "threshold": st.floats(0.0, 1.0),
    "latency_ms": st.floats(0.0, 1000.0),
    "variant": st.sampled_from(["stable", "canary"]),
    "time": TIMES,
    "observed_at": TIMES,
    "prediction_time": TIMES,
    "now": TIMES,
    "start": TIMES,
    "end": TIMES,
    "window": st.sampled_from([1, 2]),
}
RECORD = pb.PredictionRecord(
    request_id="fuzz-base-record",
    entity_id="e1",
    model=types_pb2.ModelRef(name=MODEL, version=1),
    variant="stable",
    features={
        FEATURES[0]: types_pb2.FeatureValue(number=1.5),
        "sector": types_pb2.FeatureValue(category="retail"),
    },
    score=0.2,
    threshold=0.5,
    latency_ms=3.0,
    trace_id="t",
)
RECORD.time.FromSeconds(T0 + 3600)
OUTCOME = pb.Outcome(request_id="fuzz-base-record", defaulted=True)
OUTCOME.observed_at.FromSeconds(T0 + 7200)
VALID: dict[str, Any] = {
    "RecordOutcomes": pb.RecordOutcomesRequest(outcomes=[OUTCOME]),
    "GetDriftReport": pb.GetDriftReportRequest(
        model=types_pb2.ModelRef(name=MODEL, version=1), window=pb.WINDOW_SIZE_HOURLY
    ),
    "ListAlerts": pb.ListAlertsRequest(firing_only=True, model=MODEL),
    "WatchAlerts": pb.WatchAlertsRequest(model=MODEL),
    "TriggerRetraining": pb.TriggerRetrainingRequest(model=MODEL, reason="fuzz"),
    "EvaluateRules": pb.EvaluateRulesRequest(now=RECORD.time),
}
# IngestPredictions (a client stream): batches of any records, or of the valid one with a field off.
RECORDS = st.one_of(messages(pb.PredictionRecord.DESCRIPTOR, HINTS), one_field_off(RECORD, HINTS))
EXTRA: dict[str, st.SearchStrategy[Any]] = {
    "IngestPredictions": st.lists(
        st.builds(lambda rs: pb.IngestPredictionsRequest(records=rs), st.lists(RECORDS, max_size=4)),
        max_size=3,
    )
}


def _kept_records(n: int) -> list[pb.PredictionRecord]:
    out = []
    for i in range(n):
        r = pb.PredictionRecord()
        r.CopyFrom(RECORD)
        r.request_id = f"kept-{i}"
        r.model.name = KEPT
        out.append(r)
    return out


@pytest.fixture(scope="module")
def monitor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzTarget]:
    tmp: Path = tmp_path_factory.mktemp("monitor-fuzz")
    (tmp / "profiles" / MODEL).mkdir(parents=True)
    (tmp / "profiles" / MODEL / "1.bin").write_bytes(_PROFILE.to_bytes())
    proc = start_service(
        "monitor",
        tmp,
        env={
            "FINPREDICT_MONITOR_DATA_DIR": str(tmp / "data"),
            "FINPREDICT_MONITOR_PROFILES_DIR": str(tmp / "profiles"),
            "FINPREDICT_MONITOR_EVALUATE_INTERVAL_S": "0",
            "FINPREDICT_MONITOR_TOKENS": f"{ADMIN_TOKEN}=fuzzer:admin",
            "FINPREDICT_MONITOR_REGISTRY_TARGET": "",  # profiles from the folder only
            # a real, harmless retraining command that receives the request's values as arguments
            "FINPREDICT_MONITOR_RETRAIN_COMMAND": f"{sys.executable} -c pass {{model}} {{reason}}",
            "FINPREDICT_MONITOR_SHUTDOWN_GRACE_S": "2",
        },
    )
    with fuzz_target(proc, ADMIN_TOKEN) as target:
        md = target.metadata
        stub = monitor_pb2_grpc.MonitorServiceStub(target.channel)
        kept = stub.IngestPredictions(
            iter([pb.IngestPredictionsRequest(records=_kept_records(5))]), metadata=md, timeout=10
        )
        assert kept.accepted == 5, kept
        yield target
        # After everything: the records acknowledged before the fuzzing are all still counted.
        report = stub.GetDriftReport(
            pb.GetDriftReportRequest(
                model=types_pb2.ModelRef(name=KEPT, version=1), window=pb.WINDOW_SIZE_DAILY
            ),
            metadata=md,
            timeout=10,
        )
        assert sum(w.count for w in report.windows) == 5


@pytest.mark.parametrize("method_name", rpc_names(SERVICE))
def test_monitor_rpc_refuses_hostile_requests_clearly(monitor: FuzzTarget, method_name: str) -> None:
    examples = max(4, EXAMPLES // 3) if method_name.startswith("Watch") else None
    fuzz_rpc(monitor, SERVICE, method_name, HINTS, VALID.get(method_name), EXTRA.get(method_name), examples)


def test_monitor_messages_over_the_size_limit_are_resource_exhausted(monitor: FuzzTarget) -> None:
    method = SERVICE.methods_by_name["TriggerRetraining"]
    request = pb.TriggerRetrainingRequest(model=MODEL, reason="x" * (17 * 1024 * 1024))
    outcome = call(monitor.channel, SERVICE, method, request, monitor.metadata)
    assert outcome.code == grpc.StatusCode.RESOURCE_EXHAUSTED, outcome
    assert outcome.details
    assert monitor.proc.health() == health_pb2.HealthCheckResponse.SERVING


def _record(**changes: Any) -> pb.PredictionRecord:
    r = pb.PredictionRecord()
    r.CopyFrom(RECORD)
    for key, value in changes.items():
        if key == "time_s":
            r.time.seconds = value
        elif key == "model_name":
            r.model.name = value
        else:
            setattr(r, key, value)
    return r


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"time_s": 10**15, "request_id": "far-future"}, "records[0].time"),
        ({"time_s": -(2**62), "request_id": "far-past"}, "records[0].time"),
        ({"model_name": "../../../etc", "request_id": "escape"}, "records[0].model.name"),
        ({"model_name": "m" * 5000, "request_id": "long-name"}, "records[0].model.name"),
        ({"model_name": "a\x00b", "request_id": "nul-name"}, "records[0].model.name"),
    ],
)
def test_monitor_rejects_bad_records_naming_the_field(
    monitor: FuzzTarget, changes: dict[str, Any], field: str
) -> None:
    """Once UNKNOWN (datetime overflow, a file name too long, a path outside the profiles): now
    the record is rejected, the rest of the batch is not."""
    good = _record(request_id=f"good-{changes['request_id']}")
    stub = monitor_pb2_grpc.MonitorServiceStub(monitor.channel)
    resp = stub.IngestPredictions(
        iter([pb.IngestPredictionsRequest(records=[_record(**changes), good])]),
        metadata=monitor.metadata,
        timeout=10,
    )
    assert (resp.accepted, resp.rejected) == (1, 1), resp
    assert resp.first_rejection.startswith(field), resp.first_rejection


@pytest.mark.parametrize(
    ("method_name", "request_msg", "field"),
    [
        ("EvaluateRules", pb.EvaluateRulesRequest(now=Timestamp(seconds=2**62)), "now"),
        (
            "GetDriftReport",
            pb.GetDriftReportRequest(model=types_pb2.ModelRef(name="x" * 300, version=1), window=1),
            "model.name",
        ),
        (
            "GetDriftReport",
            pb.GetDriftReportRequest(
                model=types_pb2.ModelRef(name=MODEL, version=1), window=1, end=Timestamp(seconds=-(2**40))
            ),
            "end",
        ),
        (
            "RecordOutcomes",
            pb.RecordOutcomesRequest(
                outcomes=[pb.Outcome(request_id="r", observed_at=Timestamp(seconds=2**40))]
            ),
            "outcomes[0].observed_at",
        ),
        ("TriggerRetraining", pb.TriggerRetrainingRequest(model=MODEL, reason="a\x00b"), "reason"),
        ("TriggerRetraining", pb.TriggerRetrainingRequest(model=MODEL, reason="   "), "reason"),
        ("TriggerRetraining", pb.TriggerRetrainingRequest(model=MODEL, reason="a\nforged: b"), "reason"),
        ("TriggerRetraining", pb.TriggerRetrainingRequest(model="--help"), "model"),
    ],
)
def test_monitor_regressions_are_invalid_argument_naming_the_field(
    monitor: FuzzTarget, method_name: str, request_msg: Any, field: str
) -> None:
    method = SERVICE.methods_by_name[method_name]
    outcome = call(monitor.channel, SERVICE, method, request_msg, monitor.metadata)
    assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT, outcome
    assert outcome.details.startswith(field), outcome.details


def test_a_clock_far_ahead_is_refused_at_once_and_does_not_move(monitor: FuzzTarget) -> None:
    """EvaluateRules to the year 8999 once walked every hour in between (hours of CPU under the
    monitor's lock), then silenced every later window: a clock more than the allowed skew ahead
    of the wall clock is now refused at once, naming the field, and the clock stays where it was."""
    import time

    method = SERVICE.methods_by_name["EvaluateRules"]
    far = Timestamp(seconds=int(datetime(8999, 1, 1, tzinfo=UTC).timestamp()))
    started = time.monotonic()
    outcome = call(
        monitor.channel, SERVICE, method, pb.EvaluateRulesRequest(now=far), monitor.metadata, timeout=20
    )
    assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT, outcome
    assert outcome.details.startswith("now:"), outcome.details
    assert time.monotonic() - started < 10
    later = call(monitor.channel, SERVICE, method, VALID["EvaluateRules"], monitor.metadata, timeout=20)
    assert later.code == grpc.StatusCode.OK, later
