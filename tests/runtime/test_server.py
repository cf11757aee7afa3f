"""The protomesh Server: bound port, health per service, reflection, and NOT_SERVING when it stops."""

from __future__ import annotations

import asyncio

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from test_server_support import Served, bindings

from localmesh.testing import free_port
from protomesh._server import Server
from protomesh._settings import ServerSettings

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
BOUND = ["acme.users.v1.UserService", "acme.notifications.v1.NotificationService"]


async def _health(channel: grpc.aio.Channel, service: str) -> int:
    response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service))
    return int(response.status)


async def test_port_zero_binds_a_port_the_os_picked_and_exposes_it(served: Served) -> None:
    assert served.server.port > 0
    assert served.server.service_names == BOUND


async def test_health_is_serving_overall_and_for_each_bound_service(served: Served) -> None:
    statuses = {name: await _health(served.channel, name) for name in ["", *BOUND]}

    assert statuses == dict.fromkeys(["", *BOUND], SERVING)


async def test_health_of_an_unbound_service_is_not_found(served: Served) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await _health(served.channel, "acme.orders.v1.OrderService")

    assert failure.value.code() == grpc.StatusCode.NOT_FOUND


async def test_reflection_lists_the_bound_services_health_and_reflection_itself(served: Served) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(served.channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")

    responses = [response async for response in stub.ServerReflectionInfo(iter([request]))]

    listed = {service.name for service in responses[0].list_services_response.service}
    assert listed == {*BOUND, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}


async def test_reflection_serves_the_file_that_defines_a_bound_service(served: Served) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(served.channel)
    request = reflection_pb2.ServerReflectionRequest(file_containing_symbol="acme.users.v1.UserService")

    responses = [response async for response in stub.ServerReflectionInfo(iter([request]))]

    assert responses[0].file_descriptor_response.file_descriptor_proto


async def test_an_unknown_method_is_unimplemented(served: Served) -> None:
    call = served.channel.unary_unary("/acme.users.v1.UserService/NoSuchMethod")(b"")

    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await call

    assert failure.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_stop_reports_not_serving_to_watchers_before_the_server_goes_away(served: Served) -> None:
    watch = health_pb2_grpc.HealthStub(served.channel).Watch(health_pb2.HealthCheckRequest(service=BOUND[0]))
    assert (await watch.read()).status == SERVING

    stopping = asyncio.create_task(served.server.stop(grace_s=5.0))
    assert (await asyncio.wait_for(watch.read(), timeout=5)).status == NOT_SERVING
    watch.cancel()  # a Watch never ends by itself; stop() would wait out the grace period for it
    await stopping


async def test_a_port_already_in_use_fails_start_instead_of_sharing_it(served: Served) -> None:
    taken = Server(ServerSettings(port=served.server.port), bindings())

    with pytest.raises(RuntimeError):
        await taken.start()


async def test_a_fixed_free_port_is_bound_as_configured() -> None:
    port = free_port()
    server = Server(ServerSettings(port=port), bindings())

    assert await server.start() == port
    await server.stop(0)
