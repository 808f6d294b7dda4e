"""Streaming windows: one drift_core ``Window`` per model version and event-time hour.

A daily window is the merge of its 24 hourly ones. Each hour also keeps its record count, the
labels matched to its predictions and its approval counts per variant, so the statistics of any
hourly or daily window (:func:`window_stats`) come from the cells alone, never from the logs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

import drift_core
from finpredict.metrics import accuracy, approved, auc_roc, expected_calibration_error
from finpredict.monitor import metrics as m
from finpredict.monitor.drift_input import SCORE_COLUMN, drift_matrix
from finpredict.monitor.records import MODEL_NAME_RE

log = logging.getLogger("finpredict.monitor")

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
NAN = float("nan")

VersionKey = tuple[str, int]


def floor_hour(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def floor_day(t: datetime) -> datetime:
    return floor_hour(t).replace(hour=0)


@dataclass
class Labeled:
    score: float
    threshold: float
    defaulted: bool
    delay_hours: float


@dataclass
class HourCell:
    """One hour of one version: its drift window, labels and approval counts."""

    window: drift_core.Window | None
    count: int = 0
    labels: list[Labeled] = field(default_factory=list)
    approved: dict[str, list[int]] = field(default_factory=dict)  # variant -> [approved, total]


@dataclass
class VersionState:
    model: str
    version: int
    profile: drift_core.Profile | None
    hours: dict[datetime, HourCell] = field(default_factory=dict)
    max_event: datetime | None = None
    evaluated_until: datetime | None = None  # start of the first hour not yet evaluated
    evaluated_any: bool = False
    categorical: set[str] = field(default_factory=set)
    numeric: set[str] = field(default_factory=set)


@dataclass
class WindowStats:
    start: datetime
    size: str  # "hourly" | "daily"
    count: int
    features: list[tuple[str, float, float, float]]  # name, psi, missing, reference missing
    score_kl: float
    score_js: float
    labeled: int
    auc: float
    accuracy: float
    ece: float
    label_delay_hours: float
    approval_rate: float
    approval_rate_by_variant: dict[str, float]


def load_profile(profiles_dir: Path, model: str, version: int) -> drift_core.Profile | None:
    """The reference profile ``<profiles_dir>/<model>/<version>.bin``, or None (absent or unreadable)."""
    if not MODEL_NAME_RE.match(model):  # a name from disk or a request never escapes the folder
        return None
    path = profiles_dir / model / f"{version}.bin"
    if not path.exists():
        return None
    try:
        return drift_core.Profile.from_bytes(path.read_bytes())
    except drift_core.DriftCoreError as exc:
        log.error("bad reference profile", extra={"path": str(path), "error": str(exc)})
        return None


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
    features: list[tuple[str, float, float, float]] = []
    score_kl = score_js = NAN
    profile = state.profile
    if window is not None and profile is not None and window.n_rows > 0:
        report = window.report()
        for fd in report.features:
            if fd.name == SCORE_COLUMN:
                continue
            features.append((fd.name, fd.psi, fd.missing_share_current, fd.missing_share_reference))
        if SCORE_COLUMN in profile.feature_names:
            ref = profile.reference_proportions(SCORE_COLUMN)
            cur = window.proportions(SCORE_COLUMN)
            score_kl = float(drift_core.kl(ref, cur))
            score_js = float(drift_core.js(ref, cur))
    labels = [lab for c in cells for lab in c.labels]
    scores = np.array([lab.score for lab in labels], dtype=np.float64)
    thresholds = np.array([lab.threshold for lab in labels], dtype=np.float64)
    truth = np.array([lab.defaulted for lab in labels], dtype=np.bool_)
    delays = np.array([lab.delay_hours for lab in labels], dtype=np.float64)
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
        labeled=len(labels),
        auc=auc_roc(truth, scores),
        accuracy=accuracy(truth, scores, thresholds),
        ece=expected_calibration_error(truth, scores),
        label_delay_hours=float(np.median(delays)) if delays.size else NAN,
        approval_rate=n_approved / count if count else NAN,
        approval_rate_by_variant={k: a / t for k, (a, t) in by_variant.items() if t},
    )


class Windows:
    """The hourly cells of every model version seen (in records or in saved state)."""

    def __init__(self, profiles_dir: Path) -> None:
        self.profiles_dir = profiles_dir
        self.versions: dict[VersionKey, VersionState] = {}

    def version(self, key: VersionKey) -> VersionState:
        """The state of ``key``, created (with its reference profile, if any) on first use."""
        state = self.versions.get(key)
        if state is None:
            state = VersionState(key[0], key[1], load_profile(self.profiles_dir, *key))
            if state.profile is not None:
                for name in state.profile.feature_names:
                    if name != SCORE_COLUMN:
                        (state.categorical if state.profile.is_categorical(name) else state.numeric).add(name)
            self.versions[key] = state
        return state

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
        elif live:
            m.RECORDS_UNPROFILED.labels(model, str(version)).inc(part.height)
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
            for name, psi, missing, _ in ws.features:
                m.FEATURE_PSI.labels(model, version, name, "daily").set(psi)
                m.FEATURE_MISSING.labels(model, version, name, "daily").set(missing)
            m.SCORE_KL.labels(model, version, "daily").set(ws.score_kl)
            m.SCORE_JS.labels(model, version, "daily").set(ws.score_js)
            m.WINDOW_PREDICTIONS.labels(model, version, "daily").set(ws.count)
            m.APPROVAL_RATE.labels(model, version, "daily").set(ws.approval_rate)
        labeled_days = sorted({floor_day(h) for h, c in state.hours.items() if c.labels})
        if labeled_days:
            ws = window_stats(state, labeled_days[-1], "daily")
            m.ACCURACY.labels(model, version, "daily").set(ws.accuracy)
            m.AUC.labels(model, version, "daily").set(ws.auc)
            m.ECE.labels(model, version, "daily").set(ws.ece)
            m.LABEL_DELAY.labels(model, version).set(ws.label_delay_hours * 3600.0)
            m.LABELED.labels(model, version, "daily").set(ws.labeled)
