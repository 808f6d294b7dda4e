"""The records the monitor logs: predictions and outcomes as received, their validation, and the
frames they are stored as (see :mod:`finpredict.monitor.store`)."""

from __future__ import annotations

import errno
import json
import math
import os
import re
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import polars as pl

from finpredict.monitor.store import FEATURE_PREFIX

# Model names as the registry allows them: they name files (profiles) and partitions.
MODEL_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
# Event times the monitor accepts: after the epoch, and far enough from datetime's end (year
# 9999) that window arithmetic (a day past the latest event) stays representable.
MAX_EVENT_TIME = datetime(9000, 1, 1, tzinfo=UTC)
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
RID_COLUMN = "_rid"  # the request-id digests riding along records being ingested (never stored)


class InvalidInputError(ValueError):
    """Bad input; the message names the field."""


class StorageError(Exception):
    """The log store could not write a batch (nothing of it was acknowledged); ``full`` when the
    disk or a size limit is exhausted rather than another I/O failure."""

    def __init__(self, what: str, exc: OSError) -> None:
        self.full = exc.errno in FULL_ERRNOS
        reason = "the log store is full" if self.full else "the log store failed"
        super().__init__(
            f"{reason} writing {what} ({os.strerror(exc.errno or 0)}): nothing was acknowledged, "
            "retry the batch (records already stored count as duplicates)"
        )


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
    # the reason codes the client received: (code, feature, contribution, description)
    reason_codes: tuple[tuple[str, str, float, str], ...] = ()
    # the rollout or experiment whose arm (``variant``) served it (empty: none)
    rollout_id: str = ""
    experiment_id: str = ""


@dataclass
class IngestBatch:
    """One request's records: decoded column by column (``frame``, in :func:`predictions_frame`'s
    layout) or record by record (``records``), and where they start in their stream (a rejection
    names ``records[offset + i]``)."""

    frame: pl.DataFrame | None = None
    records: Sequence[Prediction] = ()
    offset: int = 0

    def __len__(self) -> int:
        return self.frame.height if self.frame is not None else len(self.records)


@dataclass
class OutcomeIn:
    request_id: str
    entity_id: str
    defaulted: bool
    observed_at: datetime
    prediction_time: datetime | None


@dataclass(frozen=True)
class Labelled:
    """An outcome matched to its prediction, with what the prediction served and the arm that
    served it (``variant`` of the rollout ``rollout_id`` or the experiment ``experiment_id``)."""

    request_id: str
    model: str
    version: int
    score: float
    threshold: float
    defaulted: bool
    variant: str = ""
    rollout_id: str = ""
    experiment_id: str = ""


@dataclass
class OutcomeCounts:
    """What became of a batch of outcomes: matched to a prediction, waiting for one, or ignored
    as a repeat of an outcome already recorded for the same request; ``labelled``: the matched
    ones (by request id or entity) with their prediction's version, score and threshold."""

    matched: int = 0
    unmatched: int = 0
    duplicates: int = 0
    labelled: list[Labelled] = field(default_factory=list)


def model_name_problem(field: str, name: str) -> str | None:
    """Why ``name`` is not a model name (naming ``field``), or None."""
    if not name:
        return f"{field}: required"
    if not MODEL_NAME_RE.match(name):
        return f"{field}: {name[:80]!r} is not a model name ([a-z0-9][a-z0-9_-]*, at most 64 characters)"
    return None


def prediction_problem(i: int, p: Prediction) -> str | None:
    """The first problem of record ``i`` in itself (see also :func:`feature_kind_problem`), or None."""
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
    return None


def feature_kind_problem(
    i: int, p: Prediction, numeric: AbstractSet[str], categorical: AbstractSet[str]
) -> str | None:
    """The first feature of record ``i`` whose kind contradicts the profile (``numeric`` /
    ``categorical`` feature names), or None."""
    for name, v in p.features.items():
        if v is None:
            continue
        if isinstance(v, str):
            if name in numeric:
                return f"records[{i}].features[{name}]: expected a number, got a category"
        elif name in categorical:
            return f"records[{i}].features[{name}]: expected a category, got a number"
    return None


def check_outcomes(outcomes: Sequence[OutcomeIn]) -> None:
    """:class:`InvalidInputError` naming the first outcome that cannot be matched or dated."""
    for i, o in enumerate(outcomes):
        if not o.request_id and not o.entity_id:
            raise InvalidInputError(f"outcomes[{i}]: request_id or entity_id is required")
        if not o.request_id and o.prediction_time is None:
            raise InvalidInputError(f"outcomes[{i}].prediction_time: required when matching by entity_id")
        if o.observed_at.timestamp() <= 0:
            raise InvalidInputError(f"outcomes[{i}].observed_at: required")


def predictions_frame(preds: Sequence[Prediction]) -> pl.DataFrame:
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
        pl.Series("reason_codes", [reason_codes_json(p.reason_codes) for p in preds], dtype=pl.String),
        pl.Series("rollout_id", [p.rollout_id for p in preds], dtype=pl.String),
        pl.Series("experiment_id", [p.experiment_id for p in preds], dtype=pl.String),
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


def prediction_from_row(row: dict[str, Any]) -> Prediction:
    """A stored record (a row of :func:`predictions_frame`) as received (a missing feature: None)."""
    return Prediction(
        request_id=row["request_id"] or "",
        entity_id=row["entity_id"] or "",
        model=row["model"] or "",
        version=row["version"],
        variant=row["variant"] or "",
        score=row["score"],
        threshold=row["threshold"],
        latency_ms=row["latency_ms"],
        trace_id=row["trace_id"] or "",
        time=row["time"],
        features={k.removeprefix(FEATURE_PREFIX): v for k, v in row.items() if k.startswith(FEATURE_PREFIX)},
        reason_codes=tuple(reason_codes_from_json(row.get("reason_codes"))),
        rollout_id=row.get("rollout_id") or "",  # absent from records stored before they existed
        experiment_id=row.get("experiment_id") or "",
    )


def reason_codes_json(codes: Sequence[tuple[str, str, float, str]]) -> str | None:
    """Reason codes as stored: a JSON list of ``[code, feature, contribution, description]``
    (null when there are none)."""
    return json.dumps([list(c) for c in codes]) if codes else None


def reason_codes_from_json(text: str | None) -> list[tuple[str, str, float, str]]:
    """The stored reason codes back (none for null: a record logged without them)."""
    if not text:
        return []
    return [(str(c), str(f), float(v), str(d)) for c, f, v, d in json.loads(text)]


def outcomes_frame(outcomes: Sequence[OutcomeIn]) -> pl.DataFrame:
    """The outcomes as stored."""
    return pl.DataFrame(
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


def hour_partitions(frame: pl.DataFrame) -> list[tuple[str, int, datetime, pl.DataFrame]]:
    """Stored predictions split by (model, version, event-time hour), in order of appearance."""
    keys = frame.select("model", "version", pl.col("time").dt.truncate("1h").alias("_hour"))
    if frame.height and keys.n_unique() == 1:  # the usual batch: one partition, not copied
        mo, ve, ho = keys.row(0)
        return [(str(mo), int(ve), _dt(ho), frame)]
    frame = frame.with_columns(keys["_hour"])
    parts = frame.partition_by(["model", "version", "_hour"], as_dict=True, maintain_order=True)
    return [(str(mo), int(ve), _dt(ho), part.drop("_hour")) for (mo, ve, ho), part in parts.items()]


def _dt(value: object) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime, got {value!r}")
    return value
