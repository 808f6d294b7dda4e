"""Harness of the monitor tests: the model they monitor, its tokens, an authenticated stub, the
environment of a test monitor and the type of the start fixture.

The monitor refuses every RPC without tokens configured, so a test monitor gets :data:`TOKENS`
(an admin, a writer and a reader) and a test talks to it through :func:`authed`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import grpc
import numpy as np
import polars as pl

from finpredict.api.monitor.v1 import monitor_pb2_grpc as pb_grpc
from finpredict.common.auth import BearerClientInterceptor, bearer_metadata
from finpredict.pipelines import dgp
from finpredict.testkit.process import ServiceProcess

MODEL = "credit-default"
ADMIN_TOKEN = "monitor-admin-token-for-tests-0001"
WRITER_TOKEN = "monitor-writer-token-for-tests-0001"
READER_TOKEN = "monitor-reader-token-for-tests-0001"
TOKENS = f"{ADMIN_TOKEN}=tester:admin,{WRITER_TOKEN}=gateway:writer,{READER_TOKEN}=viewer:reader"
ADMIN = bearer_metadata(ADMIN_TOKEN)

StartMonitor = Callable[..., ServiceProcess]


def monitor_env(work: Path, **extra: str) -> dict[str, str]:
    """The environment of a test monitor under ``work``: its data dir, :data:`TOKENS`, rules evaluated
    only by ``EvaluateRules``, and no registry (profiles come from ``<work>/profiles`` unless
    ``extra`` names a registry)."""
    return {
        "FINPREDICT_MONITOR_DATA_DIR": str(work / "data"),
        "FINPREDICT_MONITOR_PROFILES_DIR": str(work / "profiles"),
        "FINPREDICT_MONITOR_EVALUATE_INTERVAL_S": "0",
        "FINPREDICT_MONITOR_TOKENS": TOKENS,
        "FINPREDICT_MONITOR_REGISTRY_TARGET": "",
        **extra,
    }


def authed(channel: grpc.Channel, token: str = ADMIN_TOKEN) -> grpc.Channel:
    """``channel`` with every call authenticated by ``token`` (the admin's by default)."""
    return grpc.intercept_channel(channel, BearerClientInterceptor(token))


def stub(channel: grpc.Channel) -> pb_grpc.MonitorServiceStub:
    return pb_grpc.MonitorServiceStub(channel)


def labelled_stream(
    rows: int, seed: int, start: datetime, spacing: timedelta, scenario: str = "none"
) -> pl.DataFrame:
    """``rows`` predictions of the data-generating process, ``spacing`` apart from ``start``, in the
    replay's layout (``finpredict.demo.replay.to_records`` sends them): the features, the oracle's
    score, the true label (``defaulted``) and the protected attribute logged as a feature (what the
    pipeline's ``production`` source needs for the fairness gate)."""
    df = dgp.generate(rows, seed=seed, scenario=scenario, days=1)
    scores = 1.0 / (1.0 + np.exp(-dgp.default_logit(df)))
    features = df.select(
        pl.col(c) if df[c].dtype == pl.String else pl.col(c).cast(pl.Float64)
        for c in df.columns
        if c not in (dgp.ID, dgp.TIMESTAMP, dgp.LABEL)
    )
    tag = f"{seed}-{scenario}"
    return features.with_columns(
        pl.Series("request_id", [f"req-{tag}-{i:07d}" for i in range(rows)]),
        pl.Series("entity_id", [f"ent-{tag}-{i:07d}" for i in range(rows)]),
        pl.Series("time", [start + i * spacing for i in range(rows)], dtype=pl.Datetime("us", "UTC")),
        pl.Series("score", scores, dtype=pl.Float64),
        pl.lit(0.2).alias("threshold"),
        pl.Series("defaulted", df[dgp.LABEL].cast(pl.Boolean)),
        pl.lit("stable").alias("variant"),
    )
