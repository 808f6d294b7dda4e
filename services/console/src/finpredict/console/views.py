"""What the pages show, computed from the services' answers (pure functions, no I/O).

Each page's template renders one of these view objects; a later API (a registry promotion
policy, the statistics behind each rollout decision, score histograms) adds a field here and a
block in the template; what no API serves yet is named in :data:`EXTENSION_POINTS`.
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
from finpredict.metrics import approved

# What the pages would show but no API serves yet: the block stays on the page, saying so.
EXTENSION_POINTS = {
    "shadows": "The gateway's RolloutService mirrors traffic to a shadow version but has no read RPC for "
    "shadows yet; their scores show in the monitor's logs of that version.",
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
        ("max p99 latency per application (ms)", number(t.max_p99_latency_ms, 1)),
        ("max p99 latency ratio to stable", number(t.max_p99_latency_ratio, 2)),
        ("max score PSI", number(t.max_score_psi)),
        ("max score KL", number(t.max_score_kl)),
        ("max AUC drop", number(t.max_auc_drop)),
    ]


# ----- experiments -------------------------------------------------------------------------------

# The per-arm figures of GetExperiment's statistics, in column order: (key, label); "expected.*"
# are the label-free expectations (no interval).
ARM_FIGURES = (
    ("error_rate", "Error rate"),
    ("approval_rate", "Approval rate"),
    ("default_rate", "Default rate (approved, labels)"),
    ("auc", "AUC (labels)"),
    ("expected.default_rate", "Expected default rate"),
    ("expected.auc", "Expected AUC"),
)


def _finite(value: object) -> float | None:
    """A JSON figure as a float (None for null, a non-number or a non-finite value)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


@dataclass(frozen=True)
class Figure:
    """One figure of the statistics: its estimate and, when it has one, its confidence interval."""

    estimate: float | None
    lower: float | None = None
    upper: float | None = None

    @property
    def text(self) -> str:
        if self.estimate is None:
            return "n/a"
        if self.lower is None and self.upper is None:
            return _fmt(self.estimate)
        return f"{_fmt(self.estimate)} [{_fmt(self.lower)}, {_fmt(self.upper)}]"


def _figure(value: object) -> Figure:
    if isinstance(value, dict):
        return Figure(
            _finite(value.get("estimate")), _finite(value.get("lower")), _finite(value.get("upper"))
        )
    return Figure(_finite(value))


@dataclass
class ArmView:
    name: str
    version: int
    weight: float
    requests: int | None = None
    figures: dict[str, Figure] = field(default_factory=dict)  # ARM_FIGURES key -> figure


@dataclass(frozen=True)
class EffectRow:
    arm: str  # the treatment arm (its effect over the control)
    metric: str
    effect: Figure
    significant: bool  # the interval excludes zero (the sequential test rejects)


@dataclass(frozen=True)
class Verdict:
    arm: str
    recommendation: str
    reason: str


@dataclass
class ExperimentView:
    """An experiment and what ``GetExperiment``'s statistics say about it (every part optional: a
    figure the record lacks shows as ``n/a``, a record that cannot be read as a problem)."""

    id: str
    model: str
    running: bool
    started: str
    stopped: str
    replicas: int
    control: str
    arms: list[ArmView]
    effects: list[EffectRow] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    srm: str = ""
    problem: str = ""


def experiment_view(resp: ropb.GetExperimentResponse) -> ExperimentView:
    e = resp.experiment
    arms = [ArmView(a.name, a.version, a.weight) for a in e.arms]
    view = ExperimentView(
        id=e.id,
        model=e.model,
        running=not when(e.stopped_at),
        started=when(e.started_at),
        stopped=when(e.stopped_at),
        replicas=resp.replicas,
        control=arms[0].name if arms else "",
        arms=arms,
    )
    try:
        doc = json.loads(resp.statistics) if resp.statistics else {}
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        view.problem = "the gateway's statistics are not a JSON object"
        return view
    view.control = str(doc.get("control", view.control))
    by_name = {a.name: a for a in arms}
    comparisons = doc.get("comparisons")
    for i, c in enumerate(comparisons if isinstance(comparisons, list) else []):
        if not isinstance(c, dict):
            continue
        summaries = [s for s in c.get("arms") or [] if isinstance(s, dict)]
        for s in summaries:
            arm = by_name.get(str(s.get("arm", "")))
            if arm is None or arm.requests is not None:
                continue  # the control appears in every comparison: the first is enough
            requests = s.get("requests")
            arm.requests = requests if isinstance(requests, int) else None
            expected = s.get("expected")
            expected = expected if isinstance(expected, dict) else {}
            for key, _ in ARM_FIGURES:
                value = (
                    expected.get(key.removeprefix("expected.")) if key.startswith("expected.") else s.get(key)
                )
                arm.figures[key] = _figure(value)
        treatment = str(summaries[-1].get("arm", "")) if len(summaries) > 1 else ""
        if not treatment and i + 1 < len(arms):
            treatment = arms[i + 1].name
        for eff in c.get("effects") or []:
            if isinstance(eff, dict):
                view.effects.append(
                    EffectRow(treatment, str(eff.get("metric", "?")), _figure(eff), bool(eff.get("reject")))
                )
        if "recommendation" in c:
            view.verdicts.append(Verdict(treatment, str(c["recommendation"]), str(c.get("reason", ""))))
        srm = c.get("srm")
        if isinstance(srm, dict) and not view.srm:
            p = _finite(srm.get("p_value"))
            state = "mismatch" if srm.get("mismatch") else "consistent with the weights"
            view.srm = f"{state} (chi2 p {_fmt(p, 3)})" if p is not None else state
    return view


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
    scores: ScoreChart | None = None


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
            scores=score_chart(w.score_histogram, SCORE_CHART[0] / 4, SCORE_CHART[1] / 4)
            if w.HasField("score_histogram")
            else None,
        )
        for w in windows
    ]


SCORE_CHART = (480.0, 120.0)  # width, height of the range's score histogram (a day's is a quarter)


@dataclass(frozen=True)
class Bar:
    """One bin of a score histogram as drawn: its bar, the reference's share as a tick, a tooltip."""

    x: float
    y: float
    width: float
    height: float
    reference_y: float
    title: str


@dataclass
class ScoreChart:
    """A score histogram (the window's shares per reference bin, the reference's as ticks)."""

    counts: list[int]  # per bin, then missing (as the monitor sent them)
    bars: list[Bar]
    width: float
    height: float
    missing: int


def score_chart(h: mpb.ScoreHistogram, width: float, height: float) -> ScoreChart | None:
    """The SVG geometry of ``h`` (None when it has no scores); bins are drawn equally wide (they
    are the reference's quantiles), each labelled with its range in the tooltip."""
    counts = list(h.counts)
    bins = counts[:-1] if len(counts) == len(h.edges) + 2 else counts
    total = sum(bins)
    if not bins or total <= 0:
        return None
    reference = list(h.reference_proportions)[: len(bins)]
    reference += [0.0] * (len(bins) - len(reference))
    ref_total = sum(reference) or 1.0
    shares = [c / total for c in bins]
    ref_shares = [r / ref_total for r in reference]
    top = max(max(shares), max(ref_shares)) or 1.0
    step = width / len(bins)
    edges = [f"{e:.3g}" for e in h.edges]
    bars = []
    for i, (share, ref) in enumerate(zip(shares, ref_shares, strict=True)):
        lo = edges[i - 1] if 0 < i <= len(edges) else "-inf"
        hi = edges[i] if i < len(edges) else "+inf"
        bar_h = share / top * (height - 2)
        bars.append(
            Bar(
                x=round(i * step + 1, 2),
                y=round(height - bar_h, 2),
                width=round(step - 2, 2),
                height=round(bar_h, 2),
                reference_y=round(height - ref / top * (height - 2), 2),
                title=f"[{lo}, {hi}): {bins[i]} ({share:.1%}), reference {ref:.1%}",
            )
        )
    return ScoreChart(counts, bars, width, height, missing=counts[-1] if len(counts) > len(bins) else 0)


def summed_histogram(windows: Sequence[mpb.WindowStats]) -> mpb.ScoreHistogram | None:
    """The score histogram of a whole range: the windows' counts summed (windows on other bins,
    from another reference profile, are left out); None when no window has one."""
    out: mpb.ScoreHistogram | None = None
    for w in windows:
        if not w.HasField("score_histogram"):
            continue
        h = w.score_histogram
        if out is None:
            out = mpb.ScoreHistogram()
            out.CopyFrom(h)
        elif list(h.edges) == list(out.edges) and len(h.counts) == len(out.counts):
            out.counts[:] = [a + b for a, b in zip(out.counts, h.counts, strict=True)]
    return out


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
    """Logged predictions as decisions (:func:`finpredict.metrics.approved`: approved below the
    version's threshold, declined at or above it)."""
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
            decision="approve" if approved(r.score, r.threshold) else "decline",
            reason_codes=list(r.reason_codes),
            features=sorted((k, _feature_text(v)) for k, v in r.features.items()),
        )
        for r in records
    ]
