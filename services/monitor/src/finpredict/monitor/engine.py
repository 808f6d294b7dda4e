"""The monitor's core: durable ingest, streaming drift windows, label matching, rule evaluation.

Windows are keyed by event time (``PredictionRecord.time``): one drift_core ``Window`` per model
version and hour; a daily window is the merge of its 24 hourly ones. Rules are evaluated when
windows *close* (event time, or the clock given to :meth:`Engine.evaluate`, has passed their end),
never on wall-clock timers of their own, so a replay on a simulated clock is fast and
deterministic. Everything here is synchronous; the gRPC layer serialises calls with a lock.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import math
import os
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

import drift_core
from finpredict.monitor import metrics as m
from finpredict.monitor import stats
from finpredict.monitor.rules import Rule
from finpredict.monitor.store import FEATURE_PREFIX, RecordStore, hour_key, read_parquet

log = logging.getLogger("finpredict.monitor")

SCORE_COLUMN = "__score__"
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
NAN = float("nan")

VersionKey = tuple[str, int]
# Model names as the registry allows them: they name files (profiles) and partitions.
MODEL_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
# Event times the monitor accepts: after the epoch, and far enough from datetime's end (year
# 9999) that window arithmetic (a day past the latest event) stays representable.
MAX_EVENT_TIME = datetime(9000, 1, 1, tzinfo=UTC)
_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class InvalidInputError(ValueError):
    """Bad input; the message names the field."""


class StorageError(Exception):
    """The log store could not write a batch (nothing of it was acknowledged); ``full`` when the
    disk or a size limit is exhausted rather than another I/O failure."""

    def __init__(self, what: str, exc: OSError) -> None:
        self.full = exc.errno in _FULL
        reason = "the log store is full" if self.full else "the log store failed"
        super().__init__(
            f"{reason} writing {what} ({os.strerror(exc.errno or 0)}): nothing was acknowledged, "
            "retry the batch (records already stored count as duplicates)"
        )


def model_name_problem(field: str, name: str) -> str | None:
    """Why ``name`` is not a model name (naming ``field``), or None."""
    if not name:
        return f"{field}: required"
    if not MODEL_NAME_RE.match(name):
        return f"{field}: {name[:80]!r} is not a model name ([a-z0-9][a-z0-9_-]*, at most 64 characters)"
    return None


def floor_hour(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def floor_day(t: datetime) -> datetime:
    return floor_hour(t).replace(hour=0)


@dataclass
class Prediction:
    """One validated prediction record (features keep their wire type: float, str or None)."""

    request_id: str
    entity_id: str
    model: str
    version: int
    variant: str
    score: float
    threshold: float
    latency_ms: float
    trace_id: str
    time: datetime
    features: dict[str, float | str | None]


@dataclass
class OutcomeIn:
    request_id: str
    entity_id: str
    defaulted: bool
    observed_at: datetime
    prediction_time: datetime | None


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


@dataclass
class AlertRecord:
    id: str
    rule: str
    severity: str
    model: str
    version: int
    features: list[str]
    value: float
    threshold: float
    summary: str
    firing: bool
    started_at: datetime
    resolved_at: datetime | None = None
    retrained_version: int = 0
    retrain_job: str = ""

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["started_at"] = self.started_at.isoformat()
        d["resolved_at"] = self.resolved_at.isoformat() if self.resolved_at else None
        d["value"] = self.value if math.isfinite(self.value) else None
        return d

    @staticmethod
    def from_json(d: dict[str, Any]) -> AlertRecord:
        d = dict(d)
        d["started_at"] = datetime.fromisoformat(d["started_at"])
        d["resolved_at"] = datetime.fromisoformat(d["resolved_at"]) if d.get("resolved_at") else None
        d["value"] = NAN if d.get("value") is None else float(d["value"])
        return AlertRecord(**d)


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
class _Indexed:
    key: VersionKey
    hour: datetime
    score: float
    threshold: float
    time: datetime


def alert_id(rule: str, model: str, version: int, feature: str = "") -> str:
    return hashlib.sha256(f"{rule}|{model}|{version}|{feature}".encode()).hexdigest()[:16]


def _write_atomic(path: Path, text: str) -> None:
    # A temporary name of its own per write: two writers (e.g. two retraining jobs ending at
    # once) never rename each other's file away; the last complete write wins.
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    with tmp.open("w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Engine:
    """Logs, windows, statistics and alert state of one monitor process."""

    def __init__(
        self,
        data_dir: Path,
        profiles_dir: Path,
        rules: Sequence[Rule],
        allowed_lateness: timedelta = timedelta(minutes=5),
    ) -> None:
        self.store = RecordStore(data_dir)
        self.profiles_dir = profiles_dir
        self.rules = list(rules)
        self.lateness = allowed_lateness
        self.state_path = data_dir / "state.json"
        self.versions: dict[VersionKey, VersionState] = {}
        self.index: dict[str, _Indexed] = {}
        self.by_entity: dict[tuple[str, int], str] = {}
        self.pending: dict[str, OutcomeIn] = {}  # request id -> outcome waiting for its prediction
        self.pending_entity: dict[tuple[str, int], OutcomeIn] = {}
        self.labeled_ids: set[str] = set()
        self.alerts: dict[str, AlertRecord] = {}
        self.streaks: dict[str, int] = {}  # alert id -> consecutive breaching windows
        self.accuracy_day: dict[str, str] = {}  # rule|model|version -> latest evaluated day
        self.clock: datetime | None = None
        self.listeners: list[Callable[[AlertRecord, Rule | None], None]] = []
        self._recover()

    # ------------------------------------------------------------------ recovery

    def _recover(self) -> None:
        """Rebuilds windows, the dedup set and label matches from the logs; alert state from disk."""
        evaluated: dict[str, str] = {}
        if self.state_path.exists():
            doc = json.loads(self.state_path.read_text())
            self.alerts = {a["id"]: AlertRecord.from_json(a) for a in doc.get("alerts", [])}
            self.streaks = {k: int(v) for k, v in doc.get("streaks", {}).items()}
            self.accuracy_day = dict(doc.get("accuracy_day", {}))
            self.clock = datetime.fromisoformat(doc["clock"]) if doc.get("clock") else None
            evaluated = doc.get("evaluated_until", {})
        n = 0
        for path in self.store.prediction_files():
            frame = read_parquet(path)
            self._fold(frame)
            n += frame.height
        for key_s, until in evaluated.items():
            model, _, version = key_s.rpartition("|")
            state = self._version((model, int(version)))
            state.evaluated_until = datetime.fromisoformat(until)
            state.evaluated_any = True
        outcomes = self.store.read_outcomes()
        for row in outcomes.iter_rows(named=True):
            self._match(
                OutcomeIn(
                    row["request_id"] or "",
                    row["entity_id"] or "",
                    bool(row["defaulted"]),
                    row["observed_at"],
                    row["prediction_time"],
                )
            )
        for a in self.alerts.values():
            count = self._firing_count(a.rule, a.model, a.version)
            m.ALERTS_FIRING.labels(a.rule, a.model, str(a.version)).set(count)
        log.info(
            "recovered", extra={"predictions": n, "outcomes": outcomes.height, "alerts": len(self.alerts)}
        )

    def _save_state(self) -> None:
        doc = {
            "alerts": [a.to_json() for a in self.alerts.values()],
            "streaks": self.streaks,
            "accuracy_day": self.accuracy_day,
            "clock": self.clock.isoformat() if self.clock else None,
            "evaluated_until": {
                f"{k[0]}|{k[1]}": v.evaluated_until.isoformat()
                for k, v in self.versions.items()
                if v.evaluated_until is not None
            },
        }
        _write_atomic(self.state_path, json.dumps(doc, indent=1, sort_keys=True))

    # ------------------------------------------------------------------ profiles

    def _load_profile(self, model: str, version: int) -> drift_core.Profile | None:
        if not MODEL_NAME_RE.match(model):  # a name from disk or a request never escapes the folder
            return None
        path = self.profiles_dir / model / f"{version}.bin"
        if not path.exists():
            return None
        try:
            return drift_core.Profile.from_bytes(path.read_bytes())
        except drift_core.DriftCoreError as exc:
            log.error("bad reference profile", extra={"path": str(path), "error": str(exc)})
            return None

    def _version(self, key: VersionKey) -> VersionState:
        state = self.versions.get(key)
        if state is None:
            state = VersionState(key[0], key[1], self._load_profile(*key))
            if state.profile is not None:
                for name in state.profile.feature_names:
                    if name != SCORE_COLUMN:
                        (state.categorical if state.profile.is_categorical(name) else state.numeric).add(name)
            self.versions[key] = state
        return state

    # ------------------------------------------------------------------ ingest

    def validate(self, i: int, p: Prediction) -> str | None:
        """The first problem of record ``i``, naming the field, or None."""
        where = f"records[{i}]"
        if not p.request_id:
            return f"{where}.request_id: required"
        problem = model_name_problem(f"{where}.model.name", p.model)
        if problem is not None:
            return problem
        if p.version < 1:
            return f"{where}.model.version: must be >= 1"
        if p.time.timestamp() <= 0:
            return f"{where}.time: required, a time between 1970 and the year 9000"
        if not (math.isfinite(p.score) and 0.0 <= p.score <= 1.0):
            return f"{where}.score: must be a probability in [0, 1], got {p.score}"
        if not (math.isfinite(p.threshold) and 0.0 <= p.threshold <= 1.0):
            return f"{where}.threshold: must be in [0, 1], got {p.threshold}"
        if not (math.isfinite(p.latency_ms) and p.latency_ms >= 0):
            return f"{where}.latency_ms: must be finite and >= 0"
        state = self._version((p.model, p.version))
        for name, v in p.features.items():
            if v is None:
                continue
            if isinstance(v, str):
                if name in state.numeric:
                    return f"{where}.features[{name}]: expected a number, got a category"
            elif name in state.categorical:
                return f"{where}.features[{name}]: expected a category, got a number"
        return None

    def ingest(self, records: Sequence[Prediction], offset: int = 0) -> tuple[int, int, int, str]:
        """Validates, deduplicates, durably appends (fsync) and folds one batch.

        Returns (accepted, duplicates, rejected, first rejection), only after every accepted
        record is on disk.
        """
        accepted: list[Prediction] = []
        seen: set[str] = set()
        duplicates = rejected = 0
        first = ""
        m.RECORDS_RECEIVED.inc(len(records))
        for i, p in enumerate(records):
            problem = self.validate(offset + i, p)
            if problem is not None:
                rejected += 1
                first = first or problem
                m.RECORDS_REJECTED.labels(problem.split(":")[0].split(".", 1)[1].split("[")[0]).inc()
                continue
            if p.request_id in self.index or p.request_id in seen:
                duplicates += 1
                m.RECORDS_DUPLICATE.labels(p.model, str(p.version)).inc()
                continue
            seen.add(p.request_id)
            accepted.append(p)
        if not accepted:
            return 0, duplicates, rejected, first
        frame = self._frame(accepted).with_columns(pl.col("time").dt.truncate("1h").alias("_hour"))
        parts = frame.partition_by(["model", "version", "_hour"], as_dict=True, maintain_order=True)
        written: list[pl.DataFrame] = []
        try:
            for (model, version, hour), part in parts.items():
                self.store.append_predictions(
                    str(model), int(version), hour_key(_dt(hour)), part.drop("_hour")
                )
                written.append(part.drop("_hour"))
        except OSError as exc:
            # The partitions already written are durable: fold them, so that the client's retry of
            # the whole batch finds them as duplicates instead of storing them twice.
            if written:
                self._fold(pl.concat(written), live=True)
            m.STORE_WRITE_FAILURES.labels("full" if exc.errno in _FULL else "io").inc()
            raise StorageError(f"{len(accepted)} prediction records", exc) from exc
        self._fold(frame.drop("_hour"), live=True)
        return len(accepted), duplicates, rejected, first

    def _frame(self, preds: Sequence[Prediction]) -> pl.DataFrame:
        """The batch as stored: fixed columns, then ``f.<feature>`` (Float64 or String)."""
        series = [
            pl.Series("request_id", [p.request_id for p in preds], dtype=pl.String),
            pl.Series("entity_id", [p.entity_id for p in preds], dtype=pl.String),
            pl.Series("model", [p.model for p in preds], dtype=pl.String),
            pl.Series("version", [p.version for p in preds], dtype=pl.Int64),
            pl.Series("variant", [p.variant for p in preds], dtype=pl.String),
            pl.Series("score", [p.score for p in preds], dtype=pl.Float64),
            pl.Series("threshold", [p.threshold for p in preds], dtype=pl.Float64),
            pl.Series("latency_ms", [p.latency_ms for p in preds], dtype=pl.Float64),
            pl.Series("trace_id", [p.trace_id for p in preds], dtype=pl.String),
            pl.Series("time", [p.time for p in preds], dtype=pl.Datetime("us", "UTC")),
        ]
        names: dict[str, None] = {}
        for p in preds:
            names.update(dict.fromkeys(p.features))
        for name in sorted(names):
            values = [p.features.get(name) for p in preds]
            if any(isinstance(v, str) for v in values):
                # a category column (a profile check already refused numbers where categories
                # belong); a feature outside the profile with mixed kinds keeps numbers as text
                texts = [v if isinstance(v, str) or v is None else repr(v) for v in values]
                series.append(pl.Series(FEATURE_PREFIX + name, texts, dtype=pl.String))
            else:
                series.append(pl.Series(FEATURE_PREFIX + name, values, dtype=pl.Float64))
        return pl.DataFrame(series)

    @staticmethod
    def drift_frame(profile: drift_core.Profile, frame: pl.DataFrame) -> pl.DataFrame:
        """The columns drift_core's profile expects, from stored records (absent -> missing)."""
        cols = []
        for name in profile.feature_names:
            dtype = pl.String if profile.is_categorical(name) else pl.Float64
            if name == SCORE_COLUMN:
                cols.append(pl.col("score").cast(pl.Float64).alias(name))
            elif FEATURE_PREFIX + name in frame.columns:
                col = pl.col(FEATURE_PREFIX + name)
                if dtype == pl.Float64 and frame.schema[FEATURE_PREFIX + name] == pl.String:
                    col = col.cast(pl.Float64, strict=False)
                cols.append(
                    col.cast(dtype).fill_nan(None).alias(name) if dtype == pl.Float64 else col.alias(name)
                )
            else:
                cols.append(pl.lit(None, dtype=dtype).alias(name))
        return frame.select(cols)

    @staticmethod
    def drift_matrix(profile: drift_core.Profile, frame: pl.DataFrame) -> np.ndarray:
        """The profile's columns as the float64 matrix drift_core reads, in one polars pass:
        numbers with missing as NaN, categories as codes in the profile's order (unseen -1)."""
        nan = float("nan")
        exprs = []
        for name in profile.feature_names:
            stored = FEATURE_PREFIX + name
            if name == SCORE_COLUMN:
                exprs.append(pl.col("score").cast(pl.Float64).alias(name))
            elif stored not in frame.columns:
                exprs.append(pl.lit(nan, dtype=pl.Float64).alias(name))
            elif profile.is_categorical(name):
                labels = profile.categories(name) or []
                mapping = {str(label): float(i) for i, label in enumerate(labels)}
                text = pl.col(stored).cast(pl.String)
                coded = text.replace_strict(mapping, default=-1.0, return_dtype=pl.Float64)
                exprs.append(pl.when(text.is_null()).then(nan).otherwise(coded).alias(name))
            else:
                exprs.append(pl.col(stored).cast(pl.Float64, strict=False).fill_null(nan).alias(name))
        return np.ascontiguousarray(frame.select(exprs).to_numpy(), dtype=np.float64)

    def _fold(self, frame: pl.DataFrame, live: bool = False) -> None:
        """Adds stored records to their hourly windows and the request-id / entity indexes."""
        frame = frame.with_columns(pl.col("time").dt.truncate("1h").alias("_hour"))
        parts = frame.partition_by(["model", "version", "_hour"], as_dict=True, maintain_order=True)
        for (model_, version_, hour_), part in parts.items():
            model, version, hour = str(model_), int(version_), _dt(hour_)
            key = (model, version)
            state = self._version(key)
            cell = state.hours.get(hour)
            if cell is None:
                cell = HourCell(state.profile.window() if state.profile is not None else None)
                state.hours[hour] = cell
            if cell.window is not None and state.profile is not None:
                cell.window.add(self.drift_matrix(state.profile, part))
            elif live:
                m.RECORDS_UNPROFILED.labels(model, str(version)).inc(part.height)
            cell.count += part.height
            approved = part.group_by("variant").agg(
                (pl.col("score") < pl.col("threshold")).sum().alias("a"), pl.len().alias("n")
            )
            for variant, a, n in approved.iter_rows():
                counts = cell.approved.setdefault(variant or "", [0, 0])
                counts[0] += int(a)
                counts[1] += int(n)
            for rid, ent, t, score, thr in zip(
                part["request_id"],
                part["entity_id"],
                part["time"],
                part["score"],
                part["threshold"],
                strict=True,
            ):
                self.index[rid] = _Indexed(key, hour, score, thr, t)
                if ent:
                    self.by_entity[(ent, _us(t))] = rid
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
        if not (self.pending or self.pending_entity):
            return
        # outcomes that arrived before their predictions
        for rid, ent, t in zip(frame["request_id"], frame["entity_id"], frame["time"], strict=True):
            waiting = self.pending.pop(rid, None)
            if waiting is None and ent:
                waiting = self.pending_entity.pop((ent, _us(t)), None)
            if waiting is not None:
                self._attach(rid, waiting)

    # ------------------------------------------------------------------ outcomes

    def record_outcomes(self, outcomes: Sequence[OutcomeIn]) -> tuple[int, int, list[AlertRecord]]:
        """Durably appends outcomes, matches them to predictions, re-evaluates accuracy rules."""
        for i, o in enumerate(outcomes):
            if not o.request_id and not o.entity_id:
                raise InvalidInputError(f"outcomes[{i}]: request_id or entity_id is required")
            if not o.request_id and o.prediction_time is None:
                raise InvalidInputError(f"outcomes[{i}].prediction_time: required when matching by entity_id")
            if o.observed_at.timestamp() <= 0:
                raise InvalidInputError(f"outcomes[{i}].observed_at: required")
        if not outcomes:
            return 0, 0, []
        frame = pl.DataFrame(
            {
                "request_id": [o.request_id for o in outcomes],
                "entity_id": [o.entity_id for o in outcomes],
                "defaulted": [o.defaulted for o in outcomes],
                "observed_at": [o.observed_at for o in outcomes],
                "prediction_time": [o.prediction_time for o in outcomes],
            },
            schema={
                "request_id": pl.String,
                "entity_id": pl.String,
                "defaulted": pl.Boolean,
                "observed_at": pl.Datetime("us", "UTC"),
                "prediction_time": pl.Datetime("us", "UTC"),
            },
        )
        try:
            self.store.append_outcomes(frame)
        except OSError as exc:
            m.STORE_WRITE_FAILURES.labels("full" if exc.errno in _FULL else "io").inc()
            raise StorageError(f"{len(outcomes)} outcomes", exc) from exc
        matched = 0
        touched: set[tuple[VersionKey, datetime]] = set()
        for o in outcomes:
            hit = self._match(o)
            if hit is not None:
                matched += 1
                touched.add(hit)
        m.OUTCOMES.labels("matched").inc(matched)
        m.OUTCOMES.labels("unmatched").inc(len(outcomes) - matched)
        now = max(o.observed_at for o in outcomes)
        changed = self._evaluate_accuracy(touched, now)
        if changed:
            self._save_state()
        return matched, len(outcomes) - matched, changed

    def _match(self, o: OutcomeIn) -> tuple[VersionKey, datetime] | None:
        rid = o.request_id
        if not rid and o.prediction_time is not None:
            rid = self.by_entity.get((o.entity_id, _us(o.prediction_time)), "")
        if not rid or rid not in self.index:
            if o.request_id:
                self.pending[o.request_id] = o
            elif o.prediction_time is not None:
                self.pending_entity[(o.entity_id, _us(o.prediction_time))] = o
            return None
        return self._attach(rid, o)

    def _attach(self, rid: str, o: OutcomeIn) -> tuple[VersionKey, datetime] | None:
        if rid in self.labeled_ids:  # a repeated outcome for the same request: first one wins
            m.OUTCOMES.labels("duplicate").inc()
            return None
        ix = self.index[rid]
        cell = self.versions[ix.key].hours[ix.hour]
        delay = (o.observed_at - ix.time).total_seconds() / 3600.0
        cell.labels.append(Labeled(ix.score, ix.threshold, o.defaulted, delay))
        self.labeled_ids.add(rid)
        return ix.key, ix.hour

    # ------------------------------------------------------------------ statistics

    def _merged(
        self, state: VersionState, start: datetime, size: timedelta
    ) -> tuple[drift_core.Window | None, list[HourCell]]:
        cells = [c for h, c in state.hours.items() if start <= h < start + size]
        window: drift_core.Window | None = None
        if state.profile is not None:
            window = state.profile.window()
            for c in cells:
                if c.window is not None:
                    window.merge(c.window)
        return window, cells

    def window_stats(self, state: VersionState, start: datetime, size: str) -> WindowStats:
        window, cells = self._merged(state, start, HOUR if size == "hourly" else DAY)
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
        approved = sum(a for a, _ in by_variant.values())
        return WindowStats(
            start=start,
            size=size,
            count=count,
            features=features,
            score_kl=score_kl,
            score_js=score_js,
            labeled=len(labels),
            auc=stats.auc(scores, truth),
            accuracy=stats.accuracy(scores, thresholds, truth),
            ece=stats.ece(scores, truth),
            label_delay_hours=stats.median(delays),
            approval_rate=approved / count if count else NAN,
            approval_rate_by_variant={k: a / t for k, (a, t) in by_variant.items() if t},
        )

    def report(
        self, model: str, version: int, size: str, start: datetime | None, end: datetime | None
    ) -> list[WindowStats]:
        state = self.versions.get((model, version))
        if state is None:
            return []
        starts = sorted({h if size == "hourly" else floor_day(h) for h in state.hours})
        return [
            self.window_stats(state, s, size)
            for s in starts
            if (start is None or s >= start) and (end is None or s < end)
        ]

    # ------------------------------------------------------------------ rules

    def evaluate(self, now: datetime | None = None) -> list[AlertRecord]:
        """Closes every window that ended (by event time less the allowed lateness, or by ``now``)
        and evaluates the rules on them in time order. Returns the alerts that changed."""
        if now is not None and (self.clock is None or now > self.clock):
            self.clock = now
        changed: list[AlertRecord] = []
        closed_any = now is not None
        for key, state in sorted(self.versions.items()):
            if state.evaluated_until is None:
                continue
            bound = state.max_event - self.lateness if state.max_event is not None else None
            if self.clock is not None and (bound is None or self.clock > bound):
                bound = self.clock
            if bound is None:
                continue
            close_until = floor_hour(bound)  # hours starting before it have ended by ``bound``
            h = state.evaluated_until
            if h >= close_until:
                continue
            closed_any = True
            # Days without records have nothing to evaluate (neither their hours nor the day): skip
            # them in one step, so a clock far ahead of the data costs nothing.
            data_days = {floor_day(k) for k, c in state.hours.items() if c.count}
            while h < close_until:
                if floor_day(h) not in data_days:
                    h = min([close_until, *(d for d in data_days if d > h)])
                    continue
                end = h + HOUR
                changed += self._evaluate_window(key, state, h, "hourly", end)
                if end.hour == 0:
                    changed += self._evaluate_window(key, state, end - DAY, "daily", end)
                h = end
            if h > state.evaluated_until:
                state.evaluated_until = h
                state.evaluated_any = True
            self._publish_stats(key, state)
        if closed_any:
            self._save_state()
        return changed

    def _evaluate_window(
        self, key: VersionKey, state: VersionState, start: datetime, size: str, end: datetime
    ) -> list[AlertRecord]:
        rules = [r for r in self.rules if r.window == size and r.kind != "accuracy"]
        if not rules or state.profile is None:
            return []
        has_data = any(start <= h < end and c.count for h, c in state.hours.items())
        if not has_data:
            return []
        ws = self.window_stats(state, start, size)
        changed: list[AlertRecord] = []
        for rule in rules:
            if ws.count < rule.min_samples:
                continue
            if rule.kind == "score_kl":
                changed += self._transition(rule, key, "", ws.score_kl, end, f"score KL {ws.score_kl:.3f}")
            elif rule.kind == "feature_psi":
                for name, psi, _, _ in ws.features:
                    aid = alert_id(rule.name, key[0], key[1], name)
                    streak = self.streaks.get(aid, 0) + 1 if rule.breaches(psi) else 0
                    if streak:
                        self.streaks[aid] = streak
                    else:
                        self.streaks.pop(aid, None)
                    if streak >= rule.consecutive or (not streak and aid in self.alerts):
                        detail = f"PSI of {name} {psi:.3f}, {streak} consecutive {size} window(s) above"
                        changed += self._transition(rule, key, name, psi, end, detail, force=streak > 0)
        return changed

    def _evaluate_accuracy(
        self, touched: set[tuple[VersionKey, datetime]], now: datetime
    ) -> list[AlertRecord]:
        changed: list[AlertRecord] = []
        for rule in (r for r in self.rules if r.kind == "accuracy"):
            span = HOUR if rule.window == "hourly" else DAY
            starts = sorted({(key, h if rule.window == "hourly" else floor_day(h)) for key, h in touched})
            for key, start in starts:
                mark = f"{rule.name}|{key[0]}|{key[1]}"
                latest = self.accuracy_day.get(mark)
                if latest is not None and start < datetime.fromisoformat(latest):
                    continue  # a newer window already decides the state
                ws = self.window_stats(self.versions[key], start, rule.window)
                if ws.labeled < rule.min_samples:
                    continue
                self.accuracy_day[mark] = start.isoformat()
                changed += self._transition(
                    rule,
                    key,
                    "",
                    ws.accuracy,
                    now,
                    f"accuracy {ws.accuracy:.3f} on {ws.labeled} labels, "
                    f"{span.total_seconds() / 3600:.0f} h window from {start:%Y-%m-%d %H:%M}",
                )
                self._publish_stats(key, self.versions[key])
        return changed

    def _transition(
        self,
        rule: Rule,
        key: VersionKey,
        feature: str,
        value: float,
        at: datetime,
        detail: str,
        force: bool | None = None,
    ) -> list[AlertRecord]:
        """Fires or resolves one alert; returns it when its state changed (deduplicated by id)."""
        breach = rule.breaches(value) if force is None else force
        aid = alert_id(rule.name, key[0], key[1], feature)
        current = self.alerts.get(aid)
        if breach and (current is None or not current.firing):
            alert = AlertRecord(
                id=aid,
                rule=rule.name,
                severity=rule.severity,
                model=key[0],
                version=key[1],
                features=[feature] if feature else [],
                value=value,
                threshold=rule.threshold,
                summary=f"{rule.name} firing for {key[0]} v{key[1]}: {detail} (threshold {rule.threshold})",
                firing=True,
                started_at=at,
            )
            self.alerts[aid] = alert
        elif breach and current is not None:
            current.value = value  # still firing: refresh the value, no state change
            return []
        elif not breach and current is not None and current.firing:
            current.firing = False
            current.resolved_at = at
            current.value = value
            current.summary = f"{rule.name} resolved for {key[0]} v{key[1]}: {detail}"
            alert = current
        else:
            return []
        m.ALERTS_FIRING.labels(rule.name, key[0], str(key[1])).set(
            self._firing_count(rule.name, key[0], key[1])
        )
        m.ALERT_TRANSITIONS.labels(rule.name, "firing" if alert.firing else "resolved").inc()
        for listener in self.listeners:
            listener(alert, rule)
        return [alert]

    def _firing_count(self, rule: str, model: str, version: int) -> int:
        return sum(
            1
            for a in self.alerts.values()
            if a.firing and (a.rule, a.model, a.version) == (rule, model, version)
        )

    def rule(self, name: str) -> Rule | None:
        return next((r for r in self.rules if r.name == name), None)

    def save(self) -> None:
        self._save_state()

    # ------------------------------------------------------------------ metrics

    def _publish_stats(self, key: VersionKey, state: VersionState) -> None:
        """Gauges of the latest closed windows of a version."""
        model, version = key[0], str(key[1])
        if state.evaluated_until is None:
            return
        last_hour = state.evaluated_until - HOUR
        if last_hour in state.hours:
            ws = self.window_stats(state, last_hour, "hourly")
            m.SCORE_KL.labels(model, version, "hourly").set(ws.score_kl)
            m.SCORE_JS.labels(model, version, "hourly").set(ws.score_js)
            m.WINDOW_PREDICTIONS.labels(model, version, "hourly").set(ws.count)
        last_day = floor_day(state.evaluated_until) - DAY
        if any(last_day <= h < last_day + DAY for h in state.hours):
            ws = self.window_stats(state, last_day, "daily")
            for name, psi, missing, _ in ws.features:
                m.FEATURE_PSI.labels(model, version, name, "daily").set(psi)
                m.FEATURE_MISSING.labels(model, version, name, "daily").set(missing)
            m.SCORE_KL.labels(model, version, "daily").set(ws.score_kl)
            m.SCORE_JS.labels(model, version, "daily").set(ws.score_js)
            m.WINDOW_PREDICTIONS.labels(model, version, "daily").set(ws.count)
            m.APPROVAL_RATE.labels(model, version, "daily").set(ws.approval_rate)
        labeled_days = sorted({floor_day(h) for h, c in state.hours.items() if c.labels})
        if labeled_days:
            ws = self.window_stats(state, labeled_days[-1], "daily")
            m.ACCURACY.labels(model, version, "daily").set(ws.accuracy)
            m.AUC.labels(model, version, "daily").set(ws.auc)
            m.ECE.labels(model, version, "daily").set(ws.ece)
            m.LABEL_DELAY.labels(model, version).set(ws.label_delay_hours * 3600.0)
            m.LABELED.labels(model, version, "daily").set(ws.labeled)


def _dt(value: object) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime, got {value!r}")
    return value


def _us(t: datetime) -> int:
    return round(t.timestamp() * 1_000_000)
