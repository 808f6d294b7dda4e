"""Server reflection that also resolves method symbols (``package.Service.Method``).

grpc's Python reflection finds the file of a service, a message or a field, but answers
NOT_FOUND for a method (grpc/grpc#34743), which tools that resolve a method by reflection
(``grpcurl describe``, ``ghz`` without ``--proto``) ask for first. :class:`ReflectionServicer`
retries such a symbol with its parent when the last component is a method of that service.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha._async import ReflectionServicer as AsyncReflectionServicer


class ReflectionServicer(AsyncReflectionServicer):  # type: ignore[misc]
    """grpc's asyncio reflection servicer, plus method symbols."""

    def _file_containing_symbol(
        self, request: reflection_pb2.ServerReflectionRequest, fully_qualified_name: str
    ) -> reflection_pb2.ServerReflectionResponse:
        response: reflection_pb2.ServerReflectionResponse = super()._file_containing_symbol(
            request, fully_qualified_name
        )
        service_name, _, method = fully_qualified_name.rpartition(".")
        if not response.HasField("error_response") or not service_name:
            return response
        try:
            service = self._pool.FindServiceByName(service_name)
        except KeyError:
            return response
        if method not in service.methods_by_name:
            return response
        return super()._file_containing_symbol(request, service_name)  # type: ignore[no-any-return]


def enable_reflection(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    """Mounts reflection listing ``service_names`` (and itself) on ``server``."""
    names = [*service_names, reflection.SERVICE_NAME]
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(ReflectionServicer(names), server)
