"""Harness of the monitor tests: the model they monitor, its tokens, an authenticated stub, the
environment of a test monitor and the type of the start fixture.

The monitor refuses every RPC without tokens configured, so a test monitor gets :data:`TOKENS`
(an admin, a writer and a reader) and a test talks to it through :func:`authed`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc

from finpredict.api.monitor.v1 import monitor_pb2_grpc as pb_grpc
from finpredict.common.auth import BearerClientInterceptor, bearer_metadata
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
