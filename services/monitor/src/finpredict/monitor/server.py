"""Assembles the monitor service's gRPC services on the shared server skeleton."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc

from finpredict.api.monitor.v1 import monitor_pb2, monitor_pb2_grpc
from finpredict.common.auth import ADMIN, READER, WRITER, BearerAuthInterceptor, TokenSpecError, parse_tokens
from finpredict.common.config import ConfigError, env_var_name
from finpredict.common.server import ServiceBinding
from finpredict.monitor.config import MonitorSettings
from finpredict.monitor.ingest import ColumnarIngestInterceptor
from finpredict.monitor.service import MonitorService

log = logging.getLogger("finpredict.monitor")

SERVICE_NAME = monitor_pb2.DESCRIPTOR.services_by_name["MonitorService"].full_name


def bindings(service: MonitorService) -> list[ServiceBinding]:
    """The gRPC services the monitor mounts (besides health and reflection, which every service has)."""

    def add(server: grpc.aio.Server) -> None:
        monitor_pb2_grpc.add_MonitorServiceServicer_to_server(service, server)
        # called from ServiceRunner.start, inside the running loop: start the background tasks
        task = asyncio.get_running_loop().create_task(service.start())
        _background.add(task)
        task.add_done_callback(_background.discard)

    return [ServiceBinding(SERVICE_NAME, add)]


# Role each RPC needs (admin implies writer implies reader).
METHOD_ROLES: dict[str, str] = {
    f"/{SERVICE_NAME}/{method}": role
    for method, role in {
        "IngestPredictions": WRITER,
        "RecordOutcomes": WRITER,
        "GetDriftReport": READER,
        "ListAlerts": READER,
        "WatchAlerts": READER,
        "TriggerRetraining": ADMIN,
        "ScheduleRetraining": ADMIN,
        "ListRetrainingJobs": READER,
        "EvaluateRules": ADMIN,
        "LookupPredictions": READER,
        "RecordFeedback": WRITER,
        "ListReviewCases": READER,
    }.items()
}


def interceptors(settings: MonitorSettings) -> list[grpc.aio.ServerInterceptor[Any, Any]]:
    """Bearer-token auth, always (like the registry and the gateway): with no tokens configured every
    RPC is refused; then ``IngestPredictions`` gets its requests decoded column by column. Raises
    :class:`ConfigError` naming the variable when ``tokens`` is malformed."""
    try:
        tokens = parse_tokens(settings.tokens.get_secret_value())
    except TokenSpecError as exc:
        raise ConfigError(f"{env_var_name(MonitorSettings, 'tokens')}: {exc}") from None
    if not tokens:
        log.warning(
            "no tokens configured: every monitor RPC will be refused (set %s)",
            env_var_name(MonitorSettings, "tokens"),
        )
    return [BearerAuthInterceptor(tokens, METHOD_ROLES), ColumnarIngestInterceptor()]


_background: set[asyncio.Task[None]] = set()
