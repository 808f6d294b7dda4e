"""Baseline of the gateway benchmark: ``ScoringService.Score`` on a plain single-process ``grpc.aio``
server, scoring in process with the model server's own code (no Ray, no gateway).

It is the model-server baseline (``benchmarks/model_server/plain_server.py``) with the gateway's
client API mounted next to ``Predict``: one ``Score`` is one in-process ``Predict`` of the same
model. What it leaves out is what the gateway benchmark measures: bearer auth, routing, schema
validation, coalescing, the hop through Ray Serve's proxy to a replica, the prediction log.

    python -m benchmarks.gateway.plain_scoring_server <model_dir> <port_file>   (from the repository root)
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path
from typing import Any

import grpc

from benchmarks.model_server.plain_server import Plain, mount_predict, serve
from finpredict.api.scoring.v1 import scoring_pb2 as spb
from finpredict.api.scoring.v1 import scoring_pb2_grpc as spb_grpc
from finpredict.api.serving.v1 import model_server_pb2 as pb


class PlainScoring(spb_grpc.ScoringServiceServicer):
    def __init__(self, plain: Plain) -> None:
        self.plain = plain

    async def Score(self, request: spb.ScoreRequest, context: Any) -> spb.ScoreResponse:  # noqa: N802
        a = request.application
        lv = self.plain.loaded
        predict = pb.PredictRequest(model=lv.ref, rows=[pb.FeatureRow(features=a.features)])
        p = (await self.plain.Predict(predict, context)).predictions[0]
        return spb.ScoreResponse(
            result=spb.Score(
                request_id=a.request_id or uuid.uuid4().hex,
                entity_id=a.entity_id,
                score=p.score,
                decision=spb.DECISION_DECLINE if p.score >= lv.threshold else spb.DECISION_APPROVE,
                threshold=lv.threshold,
                model=lv.ref,
                variant=spb.VARIANT_STABLE,
            )
        )

    async def ScoreBatch(self, request: spb.ScoreBatchRequest, context: Any) -> spb.ScoreBatchResponse:  # noqa: N802
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "the baseline scores one application per call")
        raise AssertionError("unreachable")


def mount(plain: Plain, server: grpc.aio.Server) -> None:
    mount_predict(plain, server)
    spb_grpc.add_ScoringServiceServicer_to_server(PlainScoring(plain), server)  # type: ignore[abstract]


if __name__ == "__main__":
    asyncio.run(serve(Path(sys.argv[1]), Path(sys.argv[2]), mount))
