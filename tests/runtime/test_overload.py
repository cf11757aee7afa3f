"""The runtime's concurrency bound, seen from a real client: one call over it is shed with UNAVAILABLE at once."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import grpc.aio
import pytest
from acme.users.v1 import users_service_pb2, users_service_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protomesh import Binding
from protomesh._overload import RETRY_AFTER_KEY, SHED_MESSAGE, ConcurrencyLimit
from protomesh._server import Server
from protomesh._settings import ServerSettings
from protomesh.aio import poll_until

DESCRIPTOR = users_service_pb2.DESCRIPTOR.services_by_name["UserService"]
# Every wait in these tests is bounded: a call that hangs fails the test instead of the suite.
CALL_TIMEOUT_S = 5.0


class HeldUsers(users_service_pb2_grpc.UserServiceServicer):
    """GetUser answers once `release` is set; `entered` counts the calls that reached the handler."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = 0

    async def GetUser(self, request: Any, context: Any) -> users_service_pb2.GetUserResponse:
        self.entered += 1
        await self.release.wait()
        return users_service_pb2.GetUserResponse()


async def test_a_call_over_the_bound_gets_unavailable_at_once_and_the_next_one_is_served() -> None:
    users = HeldUsers()
    server = Server(ServerSettings(port=0, max_concurrent_rpcs=1),
                    [Binding(DESCRIPTOR, users, users_service_pb2_grpc.add_UserServiceServicer_to_server)])
    port = await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = users_service_pb2_grpc.UserServiceStub(channel)
            held = stub.GetUser(users_service_pb2.GetUserRequest(user_id="u1"), timeout=CALL_TIMEOUT_S)
            await poll_until(lambda: users.entered == 1, timeout=CALL_TIMEOUT_S, what="the first call in its handler")

            with pytest.raises(grpc.aio.AioRpcError) as shed:
                await stub.GetUser(users_service_pb2.GetUserRequest(user_id="u2"), timeout=CALL_TIMEOUT_S)
            assert shed.value.code() == grpc.StatusCode.UNAVAILABLE
            assert shed.value.details() == SHED_MESSAGE
            assert (RETRY_AFTER_KEY, "1") in tuple(shed.value.trailing_metadata() or ())
            assert users.entered == 1, "the shed call never reached the handler"

            health = health_pb2_grpc.HealthStub(channel)
            checked = await health.Check(health_pb2.HealthCheckRequest(service=DESCRIPTOR.full_name),
                                         timeout=CALL_TIMEOUT_S)
            assert checked.status == health_pb2.HealthCheckResponse.SERVING, "an instance at its bound is healthy"

            users.release.set()
            await held
            await stub.GetUser(users_service_pb2.GetUserRequest(user_id="u3"), timeout=CALL_TIMEOUT_S)
            assert users.entered == 2
            assert server.limit is not None
            assert (server.limit.in_flight, server.limit.shed) == (0, 1)
    finally:
        await server.stop(0)


def test_the_bound_is_on_by_default_and_zero_turns_it_off() -> None:
    binding = Binding(DESCRIPTOR, HeldUsers(), users_service_pb2_grpc.add_UserServiceServicer_to_server)
    assert Server(ServerSettings(), [binding]).limit is not None
    assert Server(ServerSettings(max_concurrent_rpcs=0), [binding]).limit is None
    with pytest.raises(ValueError, match="at least 1"):
        ConcurrencyLimit(-1)
