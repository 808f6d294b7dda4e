"""Assembles the gateway's gRPC services on the shared server skeleton."""

from __future__ import annotations

from finpredict.api.inference import grpc_predict_v2_pb2 as oip_pb
from finpredict.api.inference import grpc_predict_v2_pb2_grpc as oip_grpc
from finpredict.common.server import ServiceBinding
from finpredict.gateway.inference import InferenceServicer


def bindings() -> list[ServiceBinding]:
    """The gRPC services the gateway mounts."""
    inference = InferenceServicer()
    return [
        ServiceBinding(
            oip_pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
            lambda server: oip_grpc.add_GRPCInferenceServiceServicer_to_server(inference, server),
        ),
    ]
