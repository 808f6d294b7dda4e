"""A loaded, verified model: prediction and TreeSHAP reason codes.

XGBoost runs with ``nthread=1``: for the small batches a model server scores, one thread is
an order of magnitude faster than the default (no thread-pool start-up per call) and does not
oversubscribe the cores shared by several replicas.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import xgboost as xgb

from finpredict.features import FeatureSchema, records_to_matrix
from finpredict.features.schema import reason_code


@dataclass(frozen=True)
class ReasonCode:
    """One adverse-action reason: a feature that pushed the default risk up."""

    code: str
    feature: str
    contribution: float
    description: str


@dataclass(frozen=True)
class Predictions:
    """Scores of a batch of rows; with ``explain``, the TreeSHAP contributions too."""

    scores: npt.NDArray[np.float64]
    margins: npt.NDArray[np.float64]
    # (rows, model features) contributions to the margin, and the bias column (rows,)
    contributions: npt.NDArray[np.float64] | None = None
    bias: npt.NDArray[np.float64] | None = None


def _objective(booster: xgb.Booster) -> str:
    try:
        return str(json.loads(booster.save_config())["learner"]["objective"]["name"])
    except (KeyError, ValueError):
        return ""


@dataclass
class Model:
    """A booster together with the feature schema it was trained with."""

    booster: xgb.Booster
    schema: FeatureSchema
    manifest: dict[str, Any]
    sha256: str
    best_iteration: int | None = None
    objective: str = field(init=False, default="")
    _descriptions: dict[str, str] = field(init=False, default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.objective = _objective(self.booster)
        self._descriptions = self.schema.reason_descriptions()
        self._names = self.schema.model_feature_names

    @property
    def feature_names(self) -> list[str]:
        """Model input columns, in order."""
        return list(self._names)

    def matrix(
        self, records: Sequence[Mapping[str, object]], *, check: bool = True
    ) -> npt.NDArray[np.float32]:
        """The model input matrix of request records, computed by the shared feature module."""
        return records_to_matrix(records, self.schema, check=check)

    def predict(self, x: npt.NDArray[np.float32], *, explain: bool = False) -> Predictions:
        """Scores (probability of default) and margins (log-odds) of the rows of ``x``."""
        margins = np.asarray(self.booster.inplace_predict(x, predict_type="margin"), dtype=np.float64)
        margins = margins.reshape(-1)
        if self.objective == "binary:logistic":
            scores = 1.0 / (1.0 + np.exp(-margins))
        else:
            scores = np.asarray(self.booster.inplace_predict(x), dtype=np.float64).reshape(-1)
        if not explain:
            return Predictions(scores, margins)
        contribs = self.contributions(x)
        return Predictions(scores, margins, contribs[:, :-1], contribs[:, -1])

    def contributions(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """TreeSHAP contributions (rows, features + 1); the last column is the bias."""
        dm = xgb.DMatrix(x, feature_names=self.booster.feature_names, nthread=1, missing=np.nan)
        out = self.booster.predict(dm, pred_contribs=True)
        return np.asarray(out, dtype=np.float64).reshape(x.shape[0], -1)

    def reason_codes(self, contributions: npt.NDArray[np.float64], top_k: int) -> list[ReasonCode]:
        """The ``top_k`` most adverse reasons of one row (see :func:`reason_codes`)."""
        return reason_codes(contributions, self._names, self._descriptions, top_k)


def reason_codes(
    contributions: npt.NDArray[np.float64],
    feature_names: Sequence[str],
    descriptions: Mapping[str, str],
    top_k: int,
) -> list[ReasonCode]:
    """Adverse-action reasons of one row: the ``top_k`` features with the largest positive
    contribution to the margin (those that raised the probability of default), most adverse first.

    The code is stable per model feature (``R01`` is the first model feature), so the same
    reason always has the same code for a given feature schema. Ties break by feature order.
    """
    if top_k <= 0:
        return []
    order = sorted(range(len(feature_names)), key=lambda i: (-float(contributions[i]), i))
    out: list[ReasonCode] = []
    for i in order[:top_k]:
        value = float(contributions[i])
        if not value > 0.0 or math.isnan(value):
            break
        name = feature_names[i]
        what = descriptions.get(name) or name
        out.append(ReasonCode(reason_code(i), name, value, f"{what} increased the estimated default risk"))
    return out
