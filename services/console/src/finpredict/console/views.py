"""What the pages show, computed from the services' answers (pure functions, no I/O).

Each page's template renders one of these view objects; a later API (a registry promotion
policy, the statistics behind each rollout decision, score histograms) adds a field here and a
block in the template, named in :data:`EXTENSION_POINTS` until then.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from google.protobuf.json_format import MessageToDict
from google.protobuf.timestamp_pb2 import Timestamp

from finpredict.api.common.v1 import types_pb2
from finpredict.api.monitor.v1 import monitor_pb2 as mpb
from finpredict.api.registry.v1 import registry_pb2 as rpb
from finpredict.api.rollout.v1 import rollout_pb2 as ropb
from finpredict.features import FeatureSchema

# What the pages would show but no API serves yet: the block stays on the page, saying so.
EXTENSION_POINTS = {
    "experiments": "The gateway's RolloutService starts and stops experiments and shadows but has no read "
    "RPC for them yet; their traffic shows in the monitor's approval rate per variant.",
    "score_histograms": "The monitor serves each window's score divergence from the reference (KL, "
    "Jensen-Shannon) and approval rate, not the score histogram itself.",
}
PROFILE_MAGIC = b"DRIFTPRF"
PROFILE_SCORE_COLUMN = "__score__"
TERMINAL_STATES = frozenset(
    {ropb.ROLLOUT_STATE_PROMOTED, ropb.ROLLOUT_STATE_ROLLED_BACK, ropb.ROLLOUT_STATE_ABORTED}
)
LIVE_STATES = frozenset({ropb.ROLLOUT_STATE_PROGRESSING, ropb.ROLLOUT_STATE_PAUSED})
ACTIONS_BY_STATE = {
    ropb.ROLLOUT_STATE_PROGRESSING: ("pause", "promote", "abort"),
    ropb.ROLLOUT_STATE_PAUSED: ("resume", "promote", "abort"),
}
COMPARATORS = {
    types_pb2.COMPARATOR_GREATER_OR_EQUAL: ">=",
    types_pb2.COMPARATOR_LESS_OR_EQUAL: "<=",
}


# ----- formatting ------------------------------------------------------------------------------


def when(ts: Timestamp) -> str:
    """A timestamp as ``YYYY-MM-DD HH:MM:SS UTC``; empty when unset."""
    if ts.seconds == 0 and ts.nanos == 0:
        return ""
    return datetime.fromtimestamp(ts.seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def day(ts: Timestamp) -> str:
    return datetime.fromtimestamp(ts.seconds, UTC).strftime("%Y-%m-%d")


def number(value: float, digits: int = 4) -> str:
    """A float for a table cell: ``n/a`` for NaN (a statistic without enough data)."""
    if math.isnan(value):
        return "n/a"
    return f"{value:.{digits}f}"


def enum_label(name: str, prefix: str) -> str:
    """``ROLLOUT_STATE_ROLLED_BACK`` -> ``rolled back``."""
    return name.removeprefix(prefix).replace("_", " ").lower()


def rollout_state(state: int) -> str:
    return enum_label(ropb.RolloutState.Name(state), "ROLLOUT_STATE_")  # type: ignore[arg-type]


# ----- models overview -------------------------------------------------------------------------


@dataclass
class ModelRow:
    name: str
    description: str
    production: int | None
    latest: int
    aliases: dict[str, int]
    rollout: ropb.Rollout | None
    firing_alerts: int
    traffic: int | None  # predictions the monitor logged today (UTC) for the production version

    @property
    def rollout_live(self) -> bool:
        return self.rollout is not None and self.rollout.state in LIVE_STATES


def model_row(
    model: rpb.Model, rollout: ropb.Rollout | None, alerts: Sequence[mpb.Alert], traffic: int | None
) -> ModelRow:
    return ModelRow(
        name=model.name,
        description=model.description,
        production=model.aliases.get("production"),
        latest=model.latest_version,
        aliases=dict(sorted(model.aliases.items())),
        rollout=rollout,
        firing_alerts=sum(1 for a in alerts if a.state == mpb.ALERT_STATE_FIRING),
        traffic=traffic,
    )


def traffic_today(windows: Iterable[mpb.WindowStats], now: datetime) -> int:
    """Predictions in today's daily window (UTC) of a version's report."""
    today = now.astimezone(UTC).strftime("%Y-%m-%d")
    return sum(w.count for w in windows if day(w.start) == today)


# ----- a version ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class GateRow:
    name: str
    value: float
    threshold: float
    comparator: str
    passed: bool


def gate_rows(v: rpb.ModelVersion) -> list[GateRow]:
    return [
        GateRow(g.name, g.value, g.threshold, COMPARATORS.get(g.comparator, "?"), g.passed)
        for g in sorted(v.gate_results, key=lambda g: g.name)
    ]


@dataclass(frozen=True)
class PolicyGateRow:
    name: str
    rule: str  # ">= 0.82"
    value: float | None  # the version's newest result (None: not recorded)
    passed: bool


@dataclass
class PolicyView:
    """A version against its model's promotion policy (what ``production`` needs)."""

    gates: list[PolicyGateRow]
    lineage: list[tuple[str, bool]]  # requirement, present
    promotable: bool
    problems: list[str]
    is_default: bool
    updated: str  # "2026-03-02 09:14:00 UTC by alice" (empty for the default)


LINEAGE_PRESENT = {
    "git_commit": lambda v: bool(v.lineage.git_commit),
    "data_md5": lambda v: bool(v.lineage.data_md5),
    "dvc_lock_sha256": lambda v: bool(v.lineage.dvc_lock_sha256),
    "reference_profile": lambda v: bool(v.reference_profile),
}


def policy_view(resp: rpb.GetPolicyResponse, v: rpb.ModelVersion) -> PolicyView:
    """The policy's gates with the version's results, its lineage requirements with whether the
    version meets them, and the registry's own verdict (its check is authoritative)."""
    results = {g.name: g for g in v.gate_results}
    gates = []
    for g in resp.policy.gates:
        rule = f"{COMPARATORS.get(g.comparator, '?')} {g.threshold:g}"
        got = results.get(g.name)
        value = got.value if got is not None else None
        if value is None:
            passed = False
        elif g.comparator == types_pb2.COMPARATOR_LESS_OR_EQUAL:
            passed = value <= g.threshold
        else:
            passed = value >= g.threshold
        gates.append(PolicyGateRow(g.name, rule, value, passed))
    lineage = []
    for req in resp.policy.required_lineage:
        name = enum_label(rpb.LineageRequirement.Name(req), "LINEAGE_REQUIREMENT_").replace(" ", "_")  # type: ignore[arg-type]
        present = LINEAGE_PRESENT.get(name)
        lineage.append((name, bool(present(v)) if present else False))
    updated = ""
    if not resp.policy.is_default:
        updated = f"{when(resp.policy.updated_at)} by {resp.policy.updated_by}"
    return PolicyView(
        gates=gates,
        lineage=lineage,
        promotable=resp.check.promotable,
        problems=list(resp.check.problems),
        is_default=resp.policy.is_default,
        updated=updated,
    )


def decision_figures(d: ropb.Decision) -> str:
    """The figures an analysis decision was based on, ``name=value`` sorted by name."""
    return ", ".join(f"{k}={v:.4g}" for k, v in sorted(d.metrics.items()))


def lineage_rows(lin: rpb.Lineage) -> list[tuple[str, str]]:
    """The lineage's scalar facts, labelled (parents as ``model@version``)."""
    parents = ", ".join(f"{p.name}@{p.version}" for p in lin.parents)
    return [
        ("Git commit", lin.git_commit),
        ("dvc.lock sha256", lin.dvc_lock_sha256),
        ("W&B run path", lin.wandb_run_path),
        ("W&B run id", lin.wandb_run_id),
        ("W&B registry link", lin.wandb_link_status),
        ("Trigger", lin.trigger),
        ("Parents", parents),
    ]


def params_json(lin: rpb.Lineage) -> str:
    """The training params, pretty-printed (empty when there are none)."""
    params = MessageToDict(lin.params) if lin.HasField("params") else {}
    return json.dumps(params, indent=2, sort_keys=True) if params else ""


@dataclass(frozen=True)
class ProfileFeature:
    name: str
    kind: str
    buckets: int
    missing_share: float


@dataclass
class ProfileSummary:
    size_bytes: int
    sha256: str
    verified: bool | None  # against the sha256 recorded at registration (None: none recorded)
    rows: int | None = None
    bins: int | None = None
    binning: str = ""
    features: list[ProfileFeature] = field(default_factory=list)
    problem: str = ""


def profile_summary(data: bytes, recorded_sha256: str) -> ProfileSummary | None:
    """What a drift_core reference profile (``b"DRIFTPRF"`` + JSON) holds; None without one."""
    if not data:
        return None
    digest = hashlib.sha256(data).hexdigest()
    out = ProfileSummary(len(data), digest, (digest == recorded_sha256) if recorded_sha256 else None)
    if not data.startswith(PROFILE_MAGIC):
        out.problem = "not a drift_core profile (no DRIFTPRF header)"
        return out
    try:
        doc = json.loads(data[len(PROFILE_MAGIC) :])
        out.rows = int(doc["n_rows"])
        out.bins = int(doc["n_bins"])
        out.binning = str(doc.get("binning", "")).lower()
        for f in doc["features"]:
            counts = [float(c) for c in f.get("reference_counts", [])]
            total = sum(counts)
            kind = f.get("kind", {})
            out.features.append(
                ProfileFeature(
                    name=str(f["name"]),
                    kind=(next(iter(kind), "?") if isinstance(kind, dict) else str(kind)).lower(),
                    buckets=len(counts),
                    missing_share=counts[-1] / total if total else 0.0,
                )
            )
    except (ValueError, KeyError, TypeError) as exc:
        out.problem = f"unreadable profile document ({type(exc).__name__})"
    return out


@dataclass(frozen=True)
class AliasMove:
    time: str
    actor: str
    action: str
    alias: str
    move: str  # "v1 -> v2"
    reason: str


def alias_history(entries: Iterable[rpb.AuditEntry], version: int | None = None) -> list[AliasMove]:
    """Audit rows (every alias move, a version's register and delete), newest first; with
    ``version``, only the rows that concern it."""
    rows = []
    for e in entries:
        if version is not None and version not in (e.version, e.from_version, e.to_version):
            continue
        move = ""
        if e.action.startswith("alias."):
            move = f"{_v(e.from_version)} -> {_v(e.to_version)}"
        rows.append(AliasMove(when(e.time), e.actor, e.action, e.alias, move, e.reason))
    rows.reverse()
    return rows


def _v(version: int) -> str:
    return f"v{version}" if version else "none"


def reason_catalogue(manifest_json: str) -> list[tuple[str, str, str]]:
    """The reason codes a version can give, from its artifact manifest's feature schema (empty when
    the manifest has none)."""
    try:
        manifest = json.loads(manifest_json) if manifest_json else {}
        schema = manifest.get("feature_schema")
        return FeatureSchema.from_dict(schema).reason_catalogue() if schema else []
    except (ValueError, TypeError, AttributeError):
        return []


# ----- rollouts ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepCell:
    weight: float
    state: str  # "done", "current", "next"


def step_cells(r: ropb.Rollout) -> list[StepCell]:
    cells = []
    for i, w in enumerate(r.steps):
        state = "done" if i < r.step_index else "current" if i == r.step_index else "next"
        cells.append(StepCell(w, state))
    return cells


def actions(r: ropb.Rollout) -> tuple[str, ...]:
    """The admin actions a rollout in its state accepts."""
    return ACTIONS_BY_STATE.get(r.state, ())


def thresholds(r: ropb.Rollout) -> list[tuple[str, str]]:
    t = r.thresholds
    return [
        ("max error-rate increase", number(t.max_error_rate_increase)),
        ("max p99 latency (ms)", number(t.max_p99_latency_ms, 1)),
        ("max p99 latency ratio", number(t.max_p99_latency_ratio, 2)),
        ("max score PSI", number(t.max_score_psi)),
        ("max score KL", number(t.max_score_kl)),
        ("max AUC drop", number(t.max_auc_drop)),
    ]


# ----- drift and quality -------------------------------------------------------------------------

# PSI bands (the usual reading: < 0.1 stable, < 0.25 moderate shift, above: major shift)
PSI_BANDS = ((0.1, "psi-low"), (0.25, "psi-mid"))


def psi_class(psi: float) -> str:
    if math.isnan(psi):
        return "psi-na"
    for bound, css in PSI_BANDS:
        if psi < bound:
            return css
    return "psi-high"


@dataclass
class Heatmap:
    days: list[str]
    features: list[str]
    cells: dict[str, list[float | None]]  # feature -> PSI per day (None: no window that day)


def heatmap(windows: Sequence[mpb.WindowStats]) -> Heatmap:
    """Per-feature PSI per window, features in the order the monitor reports them."""
    days = [day(w.start) for w in windows]
    features: dict[str, None] = {}
    for w in windows:
        features.update(dict.fromkeys(f.feature for f in w.features))
    cells: dict[str, list[float | None]] = {name: [None] * len(windows) for name in features}
    for i, w in enumerate(windows):
        for f in w.features:
            cells[f.feature][i] = f.psi
    return Heatmap(days, list(features), cells)


@dataclass(frozen=True)
class QualityRow:
    day: str
    count: int
    labeled: int
    auc: str
    accuracy: str
    ece: str
    label_delay_hours: str
    approval_rate: str
    score_kl: str
    score_js: str
    by_variant: str


def quality_rows(windows: Sequence[mpb.WindowStats]) -> list[QualityRow]:
    return [
        QualityRow(
            day=day(w.start),
            count=w.count,
            labeled=w.labeled,
            auc=number(w.auc),
            accuracy=number(w.accuracy),
            ece=number(w.ece),
            label_delay_hours=number(w.label_delay_hours, 1),
            approval_rate=number(w.approval_rate),
            score_kl=number(w.score_kl),
            score_js=number(w.score_js),
            by_variant=", ".join(f"{k}: {v:.3f}" for k, v in sorted(w.approval_rate_by_variant.items())),
        )
        for w in windows
    ]


@dataclass(frozen=True)
class AlertRow:
    id: str
    rule: str
    severity: str
    state: str
    version: int
    features: str
    value: str
    threshold: str
    summary: str
    started: str
    resolved: str
    retrained_version: int


def alert_rows(alerts: Iterable[mpb.Alert]) -> list[AlertRow]:
    return [
        AlertRow(
            id=a.id,
            rule=a.rule,
            severity=a.severity,
            state=enum_label(mpb.AlertState.Name(a.state), "ALERT_STATE_"),  # type: ignore[arg-type]
            version=a.model.version,
            features=", ".join(a.features),
            value=number(a.value),
            threshold=number(a.threshold),
            summary=a.summary,
            started=when(a.started_at),
            resolved=when(a.resolved_at),
            retrained_version=a.retrained_version,
        )
        for a in alerts
    ]


# ----- decisions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecisionRow:
    request_id: str
    entity_id: str
    time: str
    model: str
    version: int
    variant: str
    score: float
    threshold: float
    decision: str
    reason_codes: list[types_pb2.ReasonCode]
    features: list[tuple[str, str]]


def _feature_text(v: types_pb2.FeatureValue) -> str:
    kind = v.WhichOneof("kind")
    if kind == "number":
        return f"{v.number:g}"
    return v.category if kind == "category" else "missing"


def decision_rows(records: Iterable[mpb.PredictionRecord]) -> list[DecisionRow]:
    """Logged predictions as decisions: declined at or above the version's threshold."""
    return [
        DecisionRow(
            request_id=r.request_id,
            entity_id=r.entity_id,
            time=when(r.time),
            model=r.model.name,
            version=r.model.version,
            variant=r.variant,
            score=r.score,
            threshold=r.threshold,
            decision="decline" if r.score >= r.threshold else "approve",
            reason_codes=list(r.reason_codes),
            features=sorted((k, _feature_text(v)) for k, v in r.features.items()),
        )
        for r in records
    ]
