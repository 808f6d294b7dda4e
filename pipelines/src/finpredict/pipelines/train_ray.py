"""The ``ray`` backend of the train stage: XGBoost's own collective over workers on a Ray cluster.

The stage process joins the cluster (``FINPREDICT_TRAIN_RAY_ADDRESS``,
:class:`~finpredict.pipelines.config.PipelineSettings`), starts XGBoost's tracker on its node's
address and runs ``train.ray_workers`` Ray tasks, spread over the nodes, with
``train.ray_cpus_per_worker`` CPUs (and XGBoost threads) each. Each worker reads its own
contiguous share of the rows of the Parquet splits (``scan_parquet`` plus a slice: only the row
groups it needs), so the data never passes through the stage process, and runs
:func:`finpredict.pipelines.train.fit` inside XGBoost's collective: the quantile sketch, the
gradient histograms and the evaluation metrics are all-reduced, so every worker ends with the
same booster, cut at the same best iteration. The first worker sends the model back as UBJ
bytes; the stage writes the same artifact as the local backend, with the workers (node, rows)
recorded in the manifest's ``training.ray``.

The feature splits must be readable at the same absolute path on every node (a shared volume;
the loopback cluster of the tests shares the machine's disk).
"""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
import ray
from ray.exceptions import RayError
from xgboost import collective
from xgboost.tracker import RabitTracker

from finpredict.common.config import ConfigError, load_settings
from finpredict.pipelines._xgb import xgb
from finpredict.pipelines.common import DatasetSchema, PipelineError
from finpredict.pipelines.config import PipelineSettings
from finpredict.pipelines.train import Fit, dmatrices, fit, to_matrix

Shard = tuple[npt.NDArray[np.float32], npt.NDArray[np.int8]]


def read_shard(path: Path, ds: DatasetSchema, index: int, count: int) -> Shard:
    """Rows ``[index * n / count, (index + 1) * n / count)`` of a split: features and label."""
    frame = pl.scan_parquet(path).select([*ds.features.model_feature_names, ds.label])
    n = int(frame.select(pl.len()).collect().item())
    lo, hi = index * n // count, (index + 1) * n // count
    return to_matrix(frame.slice(lo, hi - lo).collect(), ds)


def reachable(address: str, timeout: float = 5.0) -> None:
    """Refuses a ``host:port`` nothing answers on at once (``ray.init`` would retry for minutes);
    ``auto`` and ``ray://`` addresses are left to Ray."""
    host, sep, port = address.rpartition(":")
    if not sep or "://" in address or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise PipelineError(f"cannot join the Ray cluster at {address!r}: {exc}") from None


def train_worker(
    index: int,
    count: int,
    tracker: dict[str, Any],
    features: Path,
    ds: DatasetSchema,
    params: dict[str, Any],
    rounds: int,
    early_stopping: int | None,
) -> dict[str, Any]:
    """One worker of the collective (run as a Ray task): reads its shards, trains, reports."""
    with collective.CommunicatorContext(**tracker, dmlc_task_id=f"{index:06d}"):
        train, valid = (read_shard(features / f"{s}.parquet", ds, index, count) for s in ("train", "valid"))
        fitted = fit(
            params, *dmatrices(params, train, valid, ds.features.model_feature_names), rounds, early_stopping
        )
    return {
        "index": index,
        "node": ray.get_runtime_context().get_node_id(),
        "train_rows": len(train[1]),
        "valid_rows": len(valid[1]),
        "model": bytes(fitted.booster.save_raw("ubj")) if index == 0 else b"",
        "best_iteration": fitted.best_iteration,
        "train_auc": fitted.train_auc,
        "valid_auc": fitted.valid_auc,
        "seconds": fitted.seconds,
    }


def fit_on_ray(
    features: Path,
    ds: DatasetSchema,
    params: dict[str, Any],
    rounds: int,
    early_stopping: int | None,
    tp: dict[str, Any],
) -> tuple[Fit, tuple[int, int], dict[str, Any]]:
    """Trains on the Ray cluster; returns the fit, the (train, valid) row counts and the run's
    summary for the manifest (``backend``, ``ray``)."""
    try:
        address = load_settings(PipelineSettings).train_ray_address or "auto"
    except ConfigError as exc:
        raise PipelineError(str(exc)) from None
    workers = int(tp.get("ray_workers", 2))
    cpus = float(tp.get("ray_cpus_per_worker", 1))
    timeout = float(tp.get("ray_timeout_s", 3600))
    if workers < 1 or cpus <= 0:
        raise PipelineError("params.yaml train: ray_workers must be >= 1 and ray_cpus_per_worker > 0")
    reachable(address)
    labels = pl.scan_parquet(features / "train.parquet").select(pl.col(ds.label).n_unique()).collect()
    if int(labels.item()) < 2:
        raise PipelineError(f"{features / 'train.parquet'}: the label has a single class")
    try:
        ray.init(address=address, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise PipelineError(f"cannot join the Ray cluster at {address!r}: {exc}") from None
    try:
        have = float(ray.cluster_resources().get("CPU", 0))  # type: ignore[no-untyped-call]
        if have < workers * cpus:
            raise PipelineError(
                f"the Ray cluster at {address!r} has {have:g} CPUs; train needs "
                f"{workers} workers x {cpus:g} CPUs (params.yaml train.ray_workers, ray_cpus_per_worker)"
            )
        results = _run_workers(
            features.resolve(),
            ds,
            {**params, "nthread": max(1, int(cpus))},
            rounds,
            early_stopping,
            workers,
            cpus,
            timeout,
        )
    finally:
        ray.shutdown()
    first = next(r for r in results if r["index"] == 0)
    booster = xgb.Booster(model_file=bytearray(first["model"]))
    fitted = Fit(booster, first["best_iteration"], first["train_auc"], first["valid_auc"], first["seconds"])
    rows = (sum(r["train_rows"] for r in results), sum(r["valid_rows"] for r in results))
    run = {
        "backend": "ray",
        "ray": {
            "workers": workers,
            "cpus_per_worker": cpus,
            "nodes": len({r["node"] for r in results}),
            "shards": [
                {"node": r["node"], "train_rows": r["train_rows"], "valid_rows": r["valid_rows"]}
                for r in sorted(results, key=lambda r: r["index"])
            ],
        },
    }
    return fitted, rows, run


def _run_workers(
    features: Path,
    ds: DatasetSchema,
    params: dict[str, Any],
    rounds: int,
    early_stopping: int | None,
    workers: int,
    cpus: float,
    timeout: float,
) -> list[dict[str, Any]]:
    """Starts the tracker and the workers; waits for all of them (a failed or late worker
    cancels the others, which would otherwise wait in the collective)."""
    host = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
    tracker = RabitTracker(n_workers=workers, host_ip=host, sortby="task", timeout=int(timeout))
    tracker.start()
    task = ray.remote(num_cpus=cpus, max_retries=0, scheduling_strategy="SPREAD")(train_worker)
    args = tracker.worker_args()
    pending = [
        task.remote(i, workers, args, features, ds, params, rounds, early_stopping) for i in range(workers)
    ]
    deadline = time.monotonic() + timeout
    results: list[dict[str, Any]] = []
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
            if not done:
                raise PipelineError(f"Ray training did not finish within {timeout:g}s (train.ray_timeout_s)")
            try:
                results.append(ray.get(done[0]))
            except RayError as exc:
                raise PipelineError(f"a Ray training worker failed: {exc}") from None
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
    tracker.wait_for(timeout=60)
    return results
