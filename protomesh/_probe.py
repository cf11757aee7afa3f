"""A grpc.health.v1 probe: the health status of a server or one of its services."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


async def probe(target: str, service: str = "", *, timeout: float = 2.0) -> str:
    """The serving status name (`SERVING`, `NOT_SERVING`, ...) or `UNREACHABLE: <code>`."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            return f"UNREACHABLE: {exc.code().name}"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
