"""Conversions between the rollout service's messages and the gateway's rollouts, and the checks of
the identifiers its requests carry (every refusal names the field)."""

from __future__ import annotations

import json
import re

from google.protobuf import duration_pb2, timestamp_pb2

from finpredict.api.rollout.v1 import rollout_pb2 as pb
from finpredict.gateway.analysis import Thresholds, VariantWindow
from finpredict.gateway.policies import Experiment
from finpredict.gateway.rollout import Rollout, RolloutError, RolloutState
from finpredict.gateway.state.windows import StepWindow

STATES = {
    RolloutState.PROGRESSING: pb.ROLLOUT_STATE_PROGRESSING,
    RolloutState.PROMOTING: pb.ROLLOUT_STATE_PROGRESSING,
    RolloutState.PAUSED: pb.ROLLOUT_STATE_PAUSED,
    RolloutState.PROMOTED: pb.ROLLOUT_STATE_PROMOTED,
    RolloutState.ROLLED_BACK: pb.ROLLOUT_STATE_ROLLED_BACK,
    RolloutState.ABORTED: pb.ROLLOUT_STATE_ABORTED,
}
MODEL_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")  # the registry's model names
ID_RE = re.compile(r"^[0-9a-f]{8,32}$")  # rollout and experiment ids (12 hex digits)


def check_model(value: str, field: str = "model") -> None:
    if not value:
        raise RolloutError(f"{field}: required")
    if not MODEL_RE.match(value):
        raise RolloutError(f"{field}: not a model name (lower-case letters, digits, '_' and '-', up to 64)")


def check_id(value: str, field: str) -> None:
    if not value:
        raise RolloutError(f"{field}: required")
    if not ID_RE.match(value):
        raise RolloutError(f"{field}: not an id from this gateway (8 to 32 hex digits)")


def ts(t: float) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    if t:
        out.FromNanoseconds(int(t * 1e9))
    return out


def variant_metrics(name: str, version: int, w: VariantWindow) -> pb.VariantMetrics:
    return pb.VariantMetrics(
        variant=name,
        version=version,
        requests=w.requests,
        error_rate=w.error_rate,
        p50_latency_ms=w.latency_ms(0.5),
        p99_latency_ms=w.latency_ms(0.99),
        mean_score=w.mean_score,
        calls=w.calls,
        batch_p99_latency_ms=w.batch_latency_ms(0.99),
    )


def thresholds_from_proto(t: pb.AnalysisThresholds) -> Thresholds:
    """Thresholds with the defaults for every field left at 0; negative values are refused."""
    base = Thresholds()
    values: dict[str, float] = {}
    for name in (
        "max_error_rate_increase",
        "max_p99_latency_ms",
        "max_p99_latency_ratio",
        "max_score_psi",
        "max_score_kl",
        "max_auc_drop",
    ):
        v = float(getattr(t, name))
        if v < 0 or v != v:
            raise RolloutError(f"thresholds.{name}: {v} must be a non-negative number")
        values[name] = v or float(getattr(base, name))
    return Thresholds(**values, min_labeled=base.min_labeled)


def rollout_to_proto(
    r: Rollout, window: tuple[StepWindow, int] | None = None, leader: str = ""
) -> pb.Rollout:
    """``window``: the current window summed over the replicas and how many contributed."""
    out = pb.Rollout(
        id=r.id,
        model=r.model,
        stable_version=r.stable_version,
        candidate_version=r.candidate_version,
        steps=r.steps,
        step_index=min(r.step_index, len(r.steps) - 1),
        weight=r.weight,
        state=STATES[r.state],
        analysis_interval=duration_pb2.Duration(
            seconds=int(r.analysis_interval_s), nanos=int((r.analysis_interval_s % 1) * 1e9)
        ),
        min_requests_per_step=r.min_requests_per_step,
        thresholds=pb.AnalysisThresholds(
            max_error_rate_increase=r.thresholds.max_error_rate_increase,
            max_p99_latency_ms=r.thresholds.max_p99_latency_ms,
            max_p99_latency_ratio=r.thresholds.max_p99_latency_ratio,
            max_score_psi=r.thresholds.max_score_psi,
            max_score_kl=r.thresholds.max_score_kl,
            max_auc_drop=r.thresholds.max_auc_drop,
        ),
        decisions=[
            pb.Decision(
                time=ts(d.time),
                step_index=d.step_index,
                verdict=d.verdict,
                reason=d.reason,
                replicas=d.replicas,
                replica=d.replica,
                metrics=d.metrics,
                statistics=json.dumps(d.statistics) if d.statistics else "",
            )
            for d in r.decisions
        ],
        started_at=ts(r.started_at),
        ended_at=ts(r.ended_at),
        started_by=r.started_by,
        leader=leader,
    )
    if window is not None:
        merged, replicas = window
        out.metrics.append(variant_metrics("stable", r.stable_version, merged.stable))
        out.metrics.append(variant_metrics("canary", r.candidate_version, merged.canary))
        out.window_replicas = replicas
    return out


def experiment_to_proto(exp: Experiment) -> pb.Experiment:
    return pb.Experiment(
        id=exp.id,
        model=exp.model,
        arms=[pb.ExperimentArm(name=a.name, version=a.version, weight=a.weight) for a in exp.arms],
        started_at=ts(exp.started_at),
        stopped_at=ts(exp.stopped_at),
    )
