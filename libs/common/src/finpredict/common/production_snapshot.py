"""The production snapshot's contract, shared by its writer (the monitor's export,
``finpredict drift export``) and its reader (the training pipeline's ``production`` source).

A snapshot is one Parquet file: the matured, labelled predictions of a window with their
outcomes (and, in ``feedback_label``, an analyst override's corrected label, the row flagged by
``label_overridden``), in :data:`SNAPSHOT_COLUMNS` plus one ``f.<feature>`` column per logged feature
(:data:`FEATURE_PREFIX`, as in the monitor's logs), and the export's figures
(:class:`ExportStats`) as JSON in the file's key-value metadata under :data:`METADATA_KEY`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

METADATA_KEY = "finpredict.export"
FEATURE_PREFIX = "f."
SNAPSHOT_COLUMNS = (
    "request_id",
    "entity_id",
    "model",
    "version",
    "variant",
    "score",
    "threshold",
    "time",
    "defaulted",
    "observed_at",
    "feedback_label",
    "label_overridden",
)


@dataclass(frozen=True)
class ExportStats:
    """What an export took: its window, the counts and the label coverage (the share of matured
    predictions that have a label)."""

    window_start: str  # ISO 8601, UTC
    window_end: str
    as_of: str
    maturity_days: float
    model: str  # "" for every model
    rows: int  # exported: matured and labelled
    excluded_unmatured: int
    excluded_unlabelled: int
    label_coverage: float
    feedback_labels: int  # rows whose label is an analyst's correction

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


STATS_FIELDS = tuple(f.name for f in fields(ExportStats))
