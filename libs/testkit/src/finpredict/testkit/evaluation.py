"""What the training pipeline registers with a version that passed its evaluation, for tests that
register versions themselves: the four quality gates of the ``evaluate`` stage (values that pass
the registry's default promotion policy, compared with the pipeline's ``params.yaml`` thresholds),
the lineage of ``register`` (git commit, DVC md5 of the data, ``dvc.lock`` sha256, params, W&B run,
trigger) and a drift_core reference profile of the training records and scores.

A version registered with these may become ``production`` under the default policy, as one from
the pipeline may; tests never append gate results after registration to make a version
promotable (only a ``validator`` may, and recorded results are immutable).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl
from google.protobuf import struct_pb2

import drift_core
from finpredict.api.common.v1 import types_pb2
from finpredict.api.registry.v1 import registry_pb2

GE = types_pb2.COMPARATOR_GREATER_OR_EQUAL
LE = types_pb2.COMPARATOR_LESS_OR_EQUAL


def gate(
    name: str, value: float, threshold: float, ge: bool = True, detail: str = ""
) -> types_pb2.GateResult:
    """One gate result as the ``evaluate`` stage reports it (``passed`` agrees with the rule)."""
    return types_pb2.GateResult(
        name=name,
        value=value,
        threshold=threshold,
        comparator=GE if ge else LE,
        passed=value >= threshold if ge else value <= threshold,
        detail=detail or "test evaluation",
    )


# The evaluate stage's four gates with the thresholds of params.yaml (the registry's defaults).
PASSING_GATES = [
    gate("auc_roc", 0.86, 0.82),
    gate("ece", 0.021, 0.05, ge=False),
    gate("compute_p99_ms", 3.2, 50.0, ge=False),
    gate("demographic_parity_diff", 0.018, 0.05, ge=False),
]
PASSING_METRICS = {"auc_roc": 0.86, "ece": 0.021, "compute_p99_ms": 3.2, "demographic_parity_diff": 0.018}


def lineage(
    trigger: str = "manual", parents: Sequence[types_pb2.ModelRef] = (), params: dict[str, Any] | None = None
) -> registry_pb2.Lineage:
    """The lineage the ``register`` stage sends (fixed, well-formed values)."""
    struct = struct_pb2.Struct()
    struct.update(params or {"train": {"max_depth": 3, "eta": 0.3, "num_boost_round": 20}})
    return registry_pb2.Lineage(
        git_commit="3f9c2e1d8b7a6c5d4e3f2a1b0c9d8e7f6a5b4c3d",
        data_md5={
            "data/raw/applications.parquet": "9e107d9d372bb6826bd81d3542a419d6",
            "data/features": "4a7d1ed414474e4033ac29ccb8653d9b.dir",
        },
        dvc_lock_sha256="b5bb9d8014a0f9b1d61e21e796d78dccdf1352f23cd32812f4850b878ae4944c",
        params=struct,
        wandb_run_id="k3x9q2",
        wandb_run_path="finpredict/credit-default/k3x9q2",
        trigger=trigger,
        parents=list(parents),
    )


def reference_profile(records: Sequence[dict[str, Any]], scores: Sequence[float]) -> bytes:
    """A drift_core profile of training records' inputs and the model's scores on them (the
    ``profile`` stage's columns: every input, numbers as Float64, plus ``__score__``)."""
    frame = pl.DataFrame(list(records)).with_columns(
        pl.Series("__score__", np.asarray(scores, dtype=np.float64))
    )
    numeric = [c for c, t in frame.schema.items() if t != pl.String]
    frame = frame.with_columns(pl.col(c).cast(pl.Float64) for c in numeric)
    return bytes(drift_core.Profile.fit(frame, n_bins=10, binning="quantile", allow_copy=True).to_bytes())
