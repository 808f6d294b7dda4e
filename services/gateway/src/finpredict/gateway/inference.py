"""The KServe Open Inference Protocol v2 (``inference.GRPCInferenceService``) on the gateway.

Server liveness, readiness and metadata are answered here. Model-level RPCs need the routing
policy and model server of the gateway issue; until then they answer UNIMPLEMENTED with a
message that says so, never a made-up result.
"""

from __future__ import annotations

import grpc

from finpredict.api.inference import grpc_predict_v2_pb2 as pb
from finpredict.api.inference import grpc_predict_v2_pb2_grpc as pb_grpc

SERVER_NAME = "finpredict"
SERVER_VERSION = "0.1.0"
_NOT_YET = "model routing is not available on this gateway yet"


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """Open Inference Protocol v2 endpoints."""

    def __init__(self) -> None:
        self.ready = True

    async def ServerLive(  # noqa: N802 (gRPC method name)
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(  # noqa: N802
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.ready)

    async def ServerMetadata(  # noqa: N802
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=SERVER_VERSION, extensions=[])

    async def ModelReady(  # noqa: N802
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.ModelReadyResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, _NOT_YET)
        raise AssertionError("unreachable")

    async def ModelMetadata(  # noqa: N802
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.ModelMetadataResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, _NOT_YET)
        raise AssertionError("unreachable")

    async def ModelInfer(  # noqa: N802
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.ModelInferResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, _NOT_YET)
        raise AssertionError("unreachable")
