"""Shared helpers for the registry and discovery tests: real grpc.aio UserService instances and a Consul client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import grpc
from acme.users.v1 import users_pb2, users_service_pb2, users_service_pb2_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from localmesh.testing import ConsulAgent
from protomesh._context import CORRELATION_ID_KEY
from protomesh._registry import Registration
from protomesh._settings import ConsulSettings
from protomesh.auth import CLAIMS_KEY
from protomesh.consul import ConsulClient

USER_SERVICE = users_service_pb2.DESCRIPTOR.services_by_name["UserService"].full_name


class TaggedUsers(users_service_pb2_grpc.UserServiceServicer):
    """GetUser answers with the instance's tag, the correlation id it received and the time it had left
    (and, for user id "claims", the claims metadata it received as the user id)."""

    def __init__(self, tag: str) -> None:
        self.tag = tag

    async def GetUser(self, request: users_service_pb2.GetUserRequest,
                      context: grpc.aio.ServicerContext) -> users_service_pb2.GetUserResponse:
        metadata = dict(context.invocation_metadata() or ())
        remaining = context.time_remaining()
        user_id = str(metadata.get(CLAIMS_KEY, "")) if request.user_id == "claims" else request.user_id
        user = users_pb2.User(user_id=user_id, display_name=self.tag,
                              email=f"{metadata.get(CORRELATION_ID_KEY, '')}|{remaining}")
        return users_service_pb2.GetUserResponse(user=user)


@dataclass
class Instance:
    """A running test server: its port and its health servicer (to flip it NOT_SERVING)."""

    tag: str
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer


@asynccontextmanager
async def serving(tag: str) -> AsyncIterator[Instance]:
    """A real grpc.aio server on a free port with UserService and gRPC health marked SERVING."""
    server = grpc.aio.server()
    users_service_pb2_grpc.add_UserServiceServicer_to_server(TaggedUsers(tag), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", USER_SERVICE):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield Instance(tag, server, port, health_servicer)
    finally:
        await server.stop(None)


@asynccontextmanager
async def consul_client(agent: ConsulAgent) -> AsyncIterator[ConsulClient]:
    client = ConsulClient.from_settings(ConsulSettings(address=agent.address))
    try:
        yield client
    finally:
        await client.close()


@asynccontextmanager
async def registered(consul: ConsulClient, instance: Instance, *, service: str = "users",
                     version: str = "1.2.3") -> AsyncIterator[Registration]:
    registration = Registration(consul, service=service, address="127.0.0.1", port=instance.port,
                                grpc_services=[USER_SERVICE], version=version, tags=[instance.tag])
    await registration.start()
    try:
        yield registration
    finally:
        await registration.deregister()


def passing_ids(agent: ConsulAgent, service: str = "users") -> set[str]:
    return {str(entry["ID"]) for entry in agent.passing_instances(service)}
