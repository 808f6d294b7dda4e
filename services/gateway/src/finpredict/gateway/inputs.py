"""Each variant's live inputs counted on its version's reference profile, off the request path.

A rollout judges the canary against its own expectations (:mod:`finpredict.gateway.stats.skew`):
its live inputs and scores against the training reference profile it was registered with, and
stable's against stable's. The request path only appends references to the requests' feature
maps and scores (:class:`PendingInputs`); the sync's publication and the controller's analysis
count them in batches, in a worker thread (:func:`count_pending`): the profile's columns as the float64
matrix drift_core reads (numbers, missing as NaN, categories as codes in the profile's order,
unseen -1, the score under :data:`SCORE_COLUMN`), counted by ``drift_core.Profile.histograms``
into a window that merges with the variant's :class:`~finpredict.gateway.analysis.VariantWindow`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

import drift_core
from finpredict.api.common.v1 import types_pb2
from finpredict.gateway.stats.skew import SCORE_COLUMN

NAN = math.nan


class ProfileColumns:
    """How a version's requests become rows of its reference profile (built once per version)."""

    def __init__(self, profile: drift_core.Profile) -> None:
        self.profile = profile
        names = profile.feature_names
        self.score_index = names.index(SCORE_COLUMN) if SCORE_COLUMN in names else -1
        # (column, name, category codes or None for a number), the score column left out
        self._columns: list[tuple[int, str, dict[str, float] | None]] = []
        for j, name in enumerate(names):
            if j == self.score_index:
                continue
            codes = None
            if profile.is_categorical(name):
                codes = {str(label): float(i) for i, label in enumerate(profile.categories(name) or [])}
            self._columns.append((j, name, codes))

    def matrix(
        self, rows: Sequence[Mapping[str, types_pb2.FeatureValue]], scores: Sequence[float]
    ) -> npt.NDArray[np.float64]:
        """The rows (and their scores) as the profile's float64 matrix."""
        out = np.full((len(rows), len(self._columns) + (self.score_index >= 0)), NAN)
        for i, row in enumerate(rows):
            line = out[i]
            for j, name, codes in self._columns:
                value = row.get(name)
                if value is None:
                    continue
                kind = value.WhichOneof("kind")
                if codes is None:
                    if kind == "number":
                        line[j] = value.number
                elif kind == "category":
                    line[j] = codes.get(value.category, -1.0)
        if self.score_index >= 0:
            out[:, self.score_index] = scores
        return out

    def count(
        self, rows: Sequence[Mapping[str, types_pb2.FeatureValue]], scores: Sequence[float]
    ) -> drift_core.Window:
        """A new window over the profile holding the rows' counts."""
        return self.profile.histograms(self.matrix(rows, scores))


@dataclass
class PendingInputs:
    """Requests of one variant in one analysis window, waiting to be counted on ``columns``."""

    rollout_id: str
    window: int
    variant: str
    columns: ProfileColumns
    rows: list[Mapping[str, types_pb2.FeatureValue]] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)


def count_pending(pending: Sequence[PendingInputs]) -> list[tuple[PendingInputs, drift_core.Window]]:
    """Counts each batch of pending inputs (blocking: the callers run it in a worker thread)."""
    return [(p, p.columns.count(p.rows, p.scores)) for p in pending if p.rows]
