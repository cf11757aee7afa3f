"""Server reflection at the gateway (`grpc.reflection.v1` and `v1alpha`), answered by the control plane from the
descriptor set Envoy transcodes with, so `grpcurl <gateway> list` and `describe` see every service of the mesh.

Each instance keeps its own reflection; the gateway never routes to it (see catalog.HIDDEN_SERVICE_PREFIXES).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from gateway_envoy.catalog import routable
from gateway_envoy.descriptor import Descriptor
from gateway_envoy.routes import REFLECTION_METHOD, REFLECTION_SERVICES

log = logging.getLogger("gateway_envoy.reflection")

# grpc's v1 is v1alpha under a new package, message for message the same on the wire; grpcio-reflection
# serves only v1alpha, so v1 is the same servicer registered under v1's name.
V1, V1ALPHA = REFLECTION_SERVICES


class _SymbolPool:
    """A descriptor pool that also finds the file of a method or field (`acme.users.v1.UserService.GetUser`,
    what `grpcurl describe` asks for): protobuf's own pool knows only top-level symbols, so the lookup falls
    back to the enclosing one."""

    def __init__(self, descriptor: Descriptor) -> None:
        self._pool = descriptor_pool.DescriptorPool()
        for file in descriptor_pb2.FileDescriptorSet.FromString(descriptor.data).file:
            self._pool.Add(file)  # protoc --include_imports writes dependencies before the files that need them

    def FindFileContainingSymbol(self, symbol: str) -> Any:
        while True:
            try:
                return self._pool.FindFileContainingSymbol(symbol)
            except KeyError:
                symbol, dot, _ = symbol.rpartition(".")
                if not dot:
                    raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


class GatewayReflection(reflection_pb2_grpc.ServerReflectionServicer):  # type: ignore[misc]
    """Reflection over the descriptor set the gateway currently serves; update() swaps in a new one."""

    def __init__(self, descriptor: Descriptor) -> None:
        self._current = self._servicer(descriptor)

    @staticmethod
    def _servicer(descriptor: Descriptor) -> Any:
        names = [*sorted(s for s in descriptor.services if routable(s)), *REFLECTION_SERVICES]
        return reflection.aio.ReflectionServicer(names, pool=_SymbolPool(descriptor))

    def update(self, descriptor: Descriptor) -> None:
        self._current = self._servicer(descriptor)
        log.info("reflection now answers for descriptor %s", descriptor.digest)

    async def ServerReflectionInfo(self, request_iterator: AsyncIterator[reflection_pb2.ServerReflectionRequest],
                                   context: grpc.aio.ServicerContext[Any, Any],
                                   ) -> AsyncIterator[reflection_pb2.ServerReflectionResponse]:
        async for response in self._current.ServerReflectionInfo(request_iterator, context):
            yield response

    def add_to_server(self, server: grpc.aio.Server) -> None:
        """Both versions on the control plane's gRPC server (the one Envoy already reaches over ADS)."""
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(self, server)
        handler = grpc.stream_stream_rpc_method_handler(
            self.ServerReflectionInfo, request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString)
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(V1, {REFLECTION_METHOD: handler})])
