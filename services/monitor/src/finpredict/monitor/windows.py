"""Streaming windows: one drift_core ``Window`` per model version and event-time hour.

A daily window is the merge of its 24 hourly ones. Each hour also keeps its record count, the
labels matched to its predictions and its approval counts per variant, so the statistics of any
hourly or daily window (:func:`window_stats`) come from the cells alone, never from the logs.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

import numpy as np
import polars as pl

import drift_core
from finpredict.metrics import accuracy, approved, auc_roc, expected_calibration_error
from finpredict.monitor import metrics as m
from finpredict.monitor.drift_input import SCORE_COLUMN, drift_matrix
from finpredict.monitor.profiles import Reference

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
NAN = float("nan")

VersionKey = tuple[str, int]


def floor_hour(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def floor_day(t: datetime) -> datetime:
    return floor_hour(t).replace(hour=0)


@dataclass
class Labels:
    """The outcomes matched to one hour's predictions, column by column (a few bytes each)."""

    scores: array[float] = field(default_factory=lambda: array("d"))
    thresholds: array[float] = field(default_factory=lambda: array("d"))
    delays_h: array[float] = field(default_factory=lambda: array("d"))
    defaulted: bytearray = field(default_factory=bytearray)

    def __len__(self) -> int:
        return len(self.defaulted)

    def add(self, score: float, threshold: float, defaulted: bool, delay_hours: float) -> None:
        self.scores.append(score)
        self.thresholds.append(threshold)
        self.delays_h.append(delay_hours)
        self.defaulted.append(1 if defaulted else 0)


@dataclass
class HourCell:
    """One hour of one version: its drift window, labels and approval counts."""

    window: drift_core.Window | None
    count: int = 0
    labels: Labels = field(default_factory=Labels)
    approved: dict[str, list[int]] = field(default_factory=dict)  # variant -> [approved, total]


ProfileStatus = Literal["ready", "pending", "missing"]


@dataclass
class VersionState:
    """One model version: its reference (once known), its hourly cells and how far they were evaluated.

    ``status``: ``ready`` (a reference profile), ``pending`` (being fetched: its windows wait, its
    records are kept and folded when it arrives) or ``missing`` (none to be had, ``reason`` says why:
    records are stored and counted, drift rules skip it).
    """

    model: str
    version: int
    profile: drift_core.Profile | None
    status: ProfileStatus = "missing"
    reason: str = ""
    hours: dict[datetime, HourCell] = field(default_factory=dict)
    max_event: datetime | None = None
    evaluated_until: datetime | None = None  # start of the first hour not yet evaluated
    evaluated_any: bool = False
    categorical: frozenset[str] = frozenset()
    numeric: frozenset[str] = frozenset()

    def use(self, ref: Reference) -> None:
        self.profile, self.status, self.reason = ref.profile, "ready", ""
        self.numeric, self.categorical = ref.numeric, ref.categorical

    def reference(self) -> Reference | None:
        if self.profile is None:
            return None
        return Reference(self.profile, self.numeric, self.categorical)

    @property
    def records(self) -> int:
        return sum(c.count for c in self.hours.values())


@dataclass
class FeatureStats:
    """Drift of one feature against the reference: PSI, KL(window || reference), JS, missing shares."""

    name: str
    psi: float
    kl: float
    js: float
    missing: float
    reference_missing: float


@dataclass(frozen=True)
class ScoreHistogram:
    """A window's scores on the reference profile's score bins: ``edges`` are the interior edges,
    ``counts`` and ``reference`` (the reference's shares) have ``len(edges) + 1`` bins then missing."""

    edges: list[float]
    counts: list[int]
    reference: list[float]


@dataclass
class WindowStats:
    start: datetime
    size: str  # "hourly" | "daily"
    count: int
    features: list[FeatureStats]
    score_kl: float
    score_js: float
    labeled: int
    auc: float
    accuracy: float
    ece: float
    label_delay_hours: float
    approval_rate: float
    approval_rate_by_variant: dict[str, float]
    score_histogram: ScoreHistogram | None = None  # None without a score profile or rows


def _merged(
    state: VersionState, start: datetime, size: timedelta
) -> tuple[drift_core.Window | None, list[HourCell]]:
    cells = [c for h, c in state.hours.items() if start <= h < start + size]
    window: drift_core.Window | None = None
    if state.profile is not None:
        window = state.profile.window()
        for c in cells:
            if c.window is not None:
                window.merge(c.window)
    return window, cells


def window_stats(state: VersionState, start: datetime, size: str) -> WindowStats:
    """Drift, label and approval statistics of the ``size`` window of ``state`` starting at ``start``."""
    window, cells = _merged(state, start, HOUR if size == "hourly" else DAY)
    count = sum(c.count for c in cells)
    features: list[FeatureStats] = []
    score_kl = score_js = NAN
    histogram: ScoreHistogram | None = None
    profile = state.profile
    if window is not None and profile is not None and window.n_rows > 0:
        report = window.report()
        for fd in report.features:
            if fd.name == SCORE_COLUMN:
                continue
            features.append(
                FeatureStats(
                    fd.name, fd.psi, fd.kl, fd.js, fd.missing_share_current, fd.missing_share_reference
                )
            )
        if SCORE_COLUMN in profile.feature_names:
            ref = profile.reference_proportions(SCORE_COLUMN)
            cur = window.proportions(SCORE_COLUMN)
            score_kl = float(drift_core.kl(ref, cur))
            score_js = float(drift_core.js(ref, cur))
            edges = profile.edges(SCORE_COLUMN)
            histogram = ScoreHistogram(
                [float(e) for e in edges] if edges is not None else [],
                [int(c) for c in window.counts(SCORE_COLUMN)],
                [float(r) for r in ref],
            )
    scores = np.concatenate(
        [np.frombuffer(c.labels.scores, dtype=np.float64) for c in cells] or [np.empty(0)]
    )
    thresholds = np.concatenate(
        [np.frombuffer(c.labels.thresholds, dtype=np.float64) for c in cells] or [np.empty(0)]
    )
    truth = np.concatenate(
        [np.frombuffer(c.labels.defaulted, dtype=np.uint8) for c in cells] or [np.empty(0, np.uint8)]
    ).astype(np.bool_)
    delays = np.concatenate(
        [np.frombuffer(c.labels.delays_h, dtype=np.float64) for c in cells] or [np.empty(0)]
    )
    by_variant: dict[str, list[int]] = {}
    for c in cells:
        for variant, (a, t) in c.approved.items():
            acc = by_variant.setdefault(variant, [0, 0])
            acc[0] += a
            acc[1] += t
    n_approved = sum(a for a, _ in by_variant.values())
    return WindowStats(
        start=start,
        size=size,
        count=count,
        features=features,
        score_kl=score_kl,
        score_js=score_js,
        labeled=int(truth.size),
        auc=auc_roc(truth, scores),
        accuracy=accuracy(truth, scores, thresholds),
        ece=expected_calibration_error(truth, scores),
        label_delay_hours=float(np.median(delays)) if delays.size else NAN,
        approval_rate=n_approved / count if count else NAN,
        approval_rate_by_variant={k: a / t for k, (a, t) in by_variant.items() if t},
        score_histogram=histogram,
    )


class Windows:
    """The hourly cells of every model version seen (in records or in saved state).

    ``lookup(key)`` gives a version's reference on first sight (the disk cache), or None: the
    version is then ``pending`` when ``fetching`` (a fetch is wanted, see :attr:`wanted`), else
    ``missing``.
    """

    def __init__(self, lookup: Callable[[VersionKey], Reference | None], fetching: bool) -> None:
        self.lookup = lookup
        self.fetching = fetching
        self.versions: dict[VersionKey, VersionState] = {}
        self.wanted: set[VersionKey] = set()  # versions whose profile is to be fetched

    def version(self, key: VersionKey) -> VersionState:
        """The state of ``key``, created (with its reference profile, if any) on first use."""
        state = self.versions.get(key)
        if state is None:
            state = VersionState(key[0], key[1], None)
            ref = self.lookup(key)
            if ref is not None:
                state.use(ref)
            elif self.fetching:
                state.status = "pending"
                self.wanted.add(key)
            else:
                state.reason = "no_registry"
            self.versions[key] = state
            m.PROFILES_PENDING.set(sum(v.status == "pending" for v in self.versions.values()))
        return state

    def arrived(
        self, key: VersionKey, ref: Reference, frames: Callable[[], list[tuple[datetime, pl.DataFrame]]]
    ) -> None:
        """The reference of a pending version arrived: its cells get drift windows, built from its
        stored records (``frames``: each hour's records)."""
        state = self.version(key)
        state.use(ref)
        for hour, frame in frames():
            cell = state.hours.get(hour)
            if cell is not None and cell.window is None:
                cell.window = ref.profile.window()
                cell.window.add(drift_matrix(ref.profile, frame))
        m.PROFILES_PENDING.set(sum(v.status == "pending" for v in self.versions.values()))

    def unavailable(self, key: VersionKey, reason: str) -> None:
        """A pending version will get no reference: its records so far are counted as unprofiled."""
        state = self.version(key)
        state.status, state.reason = "missing", reason
        m.RECORDS_UNPROFILED.labels(key[0], str(key[1]), reason).inc(state.records)
        m.PROFILES_PENDING.set(sum(v.status == "pending" for v in self.versions.values()))

    def prune(self, horizon: datetime) -> int:
        """Drops the cells of hours that ended before ``horizon`` (and versions left with none);
        returns how many cells went."""
        gone = 0
        for key, state in list(self.versions.items()):
            old = [h for h in state.hours if h + HOUR <= horizon]
            for h in old:
                del state.hours[h]
            gone += len(old)
            if old and not state.hours and state.status != "pending":
                del self.versions[key]
        return gone

    def add(self, key: VersionKey, hour: datetime, part: pl.DataFrame, live: bool) -> None:
        """Adds the stored records ``part`` of one version and hour to its cell; ``live`` for a
        batch being ingested now (counted in the ingest metrics), not one replayed at recovery."""
        model, version = key
        state = self.version(key)
        cell = state.hours.get(hour)
        if cell is None:
            cell = HourCell(state.profile.window() if state.profile is not None else None)
            state.hours[hour] = cell
        if cell.window is not None and state.profile is not None:
            cell.window.add(drift_matrix(state.profile, part))
        elif live and state.status == "missing":
            m.RECORDS_UNPROFILED.labels(model, str(version), state.reason).inc(part.height)
        cell.count += part.height
        ok = pl.Series("a", approved(part["score"].to_numpy(), part["threshold"].to_numpy()))
        decisions = part.select("variant", ok).group_by("variant").agg(pl.col("a").sum(), pl.len().alias("n"))
        for variant, a, n in decisions.iter_rows():
            counts = cell.approved.setdefault(variant or "", [0, 0])
            counts[0] += int(a)
            counts[1] += int(n)
        last = part["time"].max()
        assert isinstance(last, datetime)
        if state.max_event is None or last > state.max_event:
            state.max_event = last
        if state.evaluated_until is None or (not state.evaluated_any and hour < state.evaluated_until):
            state.evaluated_until = hour
        elif live and hour < state.evaluated_until:
            m.RECORDS_LATE.labels(model, str(version)).inc(part.height)
        if live:
            m.RECORDS_INGESTED.labels(model, str(version)).inc(part.height)

    def report(
        self, model: str, version: int, size: str, start: datetime | None, end: datetime | None
    ) -> list[WindowStats]:
        """Every ``size`` window of a version with records, from ``start`` to before ``end``."""
        state = self.versions.get((model, version))
        if state is None:
            return []
        starts = sorted({h if size == "hourly" else floor_day(h) for h in state.hours})
        return [
            window_stats(state, s, size)
            for s in starts
            if (start is None or s >= start) and (end is None or s < end)
        ]

    def publish(self, key: VersionKey, state: VersionState) -> None:
        """Gauges of the latest closed windows of a version."""
        model, version = key[0], str(key[1])
        if state.evaluated_until is None:
            return
        last_hour = state.evaluated_until - HOUR
        if last_hour in state.hours:
            ws = window_stats(state, last_hour, "hourly")
            m.SCORE_KL.labels(model, version, "hourly").set(ws.score_kl)
            m.SCORE_JS.labels(model, version, "hourly").set(ws.score_js)
            m.WINDOW_PREDICTIONS.labels(model, version, "hourly").set(ws.count)
        last_day = floor_day(state.evaluated_until) - DAY
        if any(last_day <= h < last_day + DAY for h in state.hours):
            ws = window_stats(state, last_day, "daily")
            for f in ws.features:
                m.FEATURE_PSI.labels(model, version, f.name, "daily").set(f.psi)
                m.FEATURE_KL.labels(model, version, f.name, "daily").set(f.kl)
                m.FEATURE_JS.labels(model, version, f.name, "daily").set(f.js)
                m.FEATURE_MISSING.labels(model, version, f.name, "daily").set(f.missing)
            m.SCORE_KL.labels(model, version, "daily").set(ws.score_kl)
            m.SCORE_JS.labels(model, version, "daily").set(ws.score_js)
            m.WINDOW_PREDICTIONS.labels(model, version, "daily").set(ws.count)
            m.APPROVAL_RATE.labels(model, version, "daily").set(ws.approval_rate)
        labeled_days = sorted({floor_day(h) for h, c in state.hours.items() if len(c.labels)})
        if labeled_days:
            ws = window_stats(state, labeled_days[-1], "daily")
            m.ACCURACY.labels(model, version, "daily").set(ws.accuracy)
            m.AUC.labels(model, version, "daily").set(ws.auc)
            m.ECE.labels(model, version, "daily").set(ws.ece)
            m.LABEL_DELAY.labels(model, version).set(ws.label_delay_hours * 3600.0)
            m.LABELED.labels(model, version, "daily").set(ws.labeled)
