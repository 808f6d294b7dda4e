"""The demo's view of the running platform: channels and stubs to its APIs, with the tokens each
caller uses, and the model it tells the story of."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import grpc

from finpredict.api.common.v1 import types_pb2
from finpredict.api.monitor.v1 import monitor_pb2_grpc
from finpredict.api.registry.v1 import registry_pb2, registry_pb2_grpc
from finpredict.api.rollout.v1 import rollout_pb2_grpc
from finpredict.api.serving.v1 import model_server_pb2, model_server_pb2_grpc
from finpredict.stack.launcher import Stack

MODEL = "credit-default"
DAY = timedelta(days=1)


class Platform:
    """Channels and stubs to the running stack, with the tokens each caller uses."""

    def __init__(self, stack: Stack) -> None:
        t = stack.targets()
        serve = stack.serve_target()
        if serve is None:
            raise RuntimeError("the model server has no Serve gRPC port in its ready file")
        self.targets = {**t, "serve": serve}
        tokens = stack.secrets()
        self.admin_token = tokens["FINPREDICT_TOKEN"]
        self.client_token = tokens["FINPREDICT_CLIENT_TOKEN"]
        self.outcomes_token = tokens["FINPREDICT_OUTCOMES_TOKEN"]  # the gateway's writer role
        self.writer_token = tokens["FINPREDICT_REGISTRY_TOKEN"]
        self.admin: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {self.admin_token}"),)
        self._channels = [grpc.insecure_channel(self.targets[s]) for s in ("registry", "gateway", "monitor")]
        self._channels.append(grpc.insecure_channel(serve))
        reg, gw, mon, srv = self._channels
        self.registry = registry_pb2_grpc.RegistryServiceStub(reg)
        self.rollouts = rollout_pb2_grpc.RolloutServiceStub(gw)
        self.monitor = monitor_pb2_grpc.MonitorServiceStub(mon)
        self.serve = model_server_pb2_grpc.ModelServerServiceStub(srv)

    def close(self) -> None:
        for channel in self._channels:
            channel.close()

    def version(self, version: int) -> registry_pb2.ModelVersion:
        return self.registry.GetVersion(
            registry_pb2.GetVersionRequest(model=MODEL, version=version), metadata=self.admin, timeout=30
        ).version

    def production(self) -> int:
        got = self.registry.GetModel(
            registry_pb2.GetModelRequest(name=MODEL), metadata=self.admin, timeout=30
        )
        return int(got.model.aliases.get("production", 0))

    def predict(self, version: int, rows: Sequence[model_server_pb2.FeatureRow]) -> list[float]:
        """Scores ``rows`` with ``version`` on the model server's Serve ingress (no gateway)."""
        md = (("application", "model-server"), ("multiplexed_model_id", f"{MODEL}:{version}"))
        request = model_server_pb2.PredictRequest(
            model=types_pb2.ModelRef(name=MODEL, version=version), rows=rows
        )
        deadline = time.monotonic() + 120
        while True:
            try:
                resp = self.serve.Predict(request, metadata=md, timeout=max(deadline - time.monotonic(), 1))
            except grpc.RpcError as exc:
                # UNAVAILABLE is worth another try (as the gateway's backend does), e.g. a replica
                # whose registry connection was just reset; anything else is an answer.
                if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline - 5:
                    raise
                time.sleep(1.0)  # back-off before the retry
                continue
            return [p.score for p in resp.predictions]


def get_json(url: str) -> Any:
    """The JSON at ``url`` (None when it cannot be fetched or parsed)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return json.loads(resp.read())
    except (OSError, ValueError):
        return None
