"""Baseline: the same scoring code on a plain single-process ``grpc.aio`` server (no Ray).

python -m benchmarks.model_server.plain_server <model_dir> <port_file>   (from the repository root)
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from finpredict.api.serving.v1 import model_server_pb2 as pb
from finpredict.api.serving.v1 import model_server_pb2_grpc as pb_grpc
from finpredict.model_server.scoring import (
    InvalidRequestError,
    LoadedVersion,
    ScoreItem,
    check_predict_request,
    predictions_to_proto,
    row_records,
    score_items,
)
from finpredict.modelio import load_model_dir


class Plain(pb_grpc.ModelServerServiceServicer):
    def __init__(self, loaded: LoadedVersion) -> None:
        self.loaded = loaded

    async def Predict(self, request: pb.PredictRequest, context: Any) -> pb.PredictResponse:  # noqa: N802
        try:
            check_predict_request(request, 1024, 10)
            lv = self.loaded
            records = row_records(request.rows, lv.model.schema)
            explain = request.explain or request.top_k > 0
            preds = score_items([ScoreItem(lv, records, explain)])[0]
            return predictions_to_proto(lv, preds, 0, len(records), request.top_k, False)
        except InvalidRequestError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise


def mount_predict(plain: Plain, server: grpc.aio.Server) -> None:
    pb_grpc.add_ModelServerServiceServicer_to_server(plain, server)


async def serve(
    model_dir: Path, port_file: Path, mount: Callable[[Plain, grpc.aio.Server], None] = mount_predict
) -> None:
    """Loads the model as ``bench`` version 1, mounts the services ``mount`` adds, writes the port."""
    model = load_model_dir(model_dir)
    name, version = "bench", 1
    server = grpc.aio.server()
    mount(Plain(LoadedVersion(name, version, model, 0.5, model.sha256, 0.0)), server)  # type: ignore[abstract]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    tmp = port_file.with_suffix(".tmp")
    await asyncio.to_thread(tmp.write_text, str(port))
    tmp.replace(port_file)  # whole or absent, never half-written
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(serve(Path(sys.argv[1]), Path(sys.argv[2])))
