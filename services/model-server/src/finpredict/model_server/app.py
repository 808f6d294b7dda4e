"""``build_app(args)``: the Serve application (``import_path: finpredict.model_server.app:build_app``)."""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from finpredict.model_server.app_args import AppArgs, parse_args
from finpredict.model_server.deployment import ModelServer

GRPC_SERVICER_FUNCTION = (
    "finpredict.api.serving.v1.model_server_pb2_grpc:add_ModelServerServiceServicer_to_server"
)


def build_app(args: dict[str, Any] | AppArgs | None = None) -> Application:
    """The model-server application; ``args`` are validated as :class:`AppArgs`."""
    parsed = parse_args(args)
    app: Application = ModelServer.bind(parsed.model_dump())  # type: ignore[attr-defined]
    return app
