"""Harness of the monitor tests: the model they monitor, a stub, the type of the start fixture."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from finpredict.api.monitor.v1 import monitor_pb2_grpc as pb_grpc
from finpredict.testkit.process import ServiceProcess

MODEL = "credit-default"

StartMonitor = Callable[..., ServiceProcess]


def stub(channel: grpc.Channel) -> pb_grpc.MonitorServiceStub:
    return pb_grpc.MonitorServiceStub(channel)
