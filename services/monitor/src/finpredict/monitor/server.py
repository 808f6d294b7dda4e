"""Assembles the monitor service's gRPC services on the shared server skeleton."""

from __future__ import annotations

import asyncio

import grpc

from finpredict.api.monitor.v1 import monitor_pb2, monitor_pb2_grpc
from finpredict.common.server import ServiceBinding
from finpredict.monitor.service import MonitorService

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


_background: set[asyncio.Task[None]] = set()
