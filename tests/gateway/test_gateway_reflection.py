"""Server reflection at the gateway: grpcurl lists and describes every service of the mesh through :8080."""

from __future__ import annotations

import subprocess

import grpc
import grpc.aio
from gateway_support import Stack, step
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from localmesh.testing import find_binary

USERS = "acme.users.v1.UserService"


def grpcurl(stack: Stack, *args: str) -> str:
    result = subprocess.run([find_binary("grpcurl"), "-plaintext", stack.gateway.address, *args],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_grpcurl_lists_and_describes_the_meshs_services_through_the_gateway(stack: Stack) -> None:
    listed = grpcurl(stack, "list").split()
    step("grpcurl list: %s", listed)
    assert {USERS, "acme.orders.v1.OrderService", "acme.notifications.v1.NotificationService"} <= set(listed)
    assert not [name for name in listed if name.startswith("grpc.health.")]
    described = grpcurl(stack, "describe", f"{USERS}.GetUser")
    step("grpcurl describe: %s", described.strip())
    assert "rpc GetUser ( .acme.users.v1.GetUserRequest ) returns ( .acme.users.v1.GetUserResponse )" in described


def test_reflection_v1alpha_resolves_a_symbol_to_its_file_through_the_gateway(stack: Stack) -> None:
    with grpc.insecure_channel(stack.gateway.address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        file = database.FindFileContainingSymbol(f"{USERS}")
    assert USERS in services
    assert file.name == "acme/users/v1/users_service.proto"


async def test_reflection_v1_answers_the_same_on_its_own_name(stack: Stack) -> None:
    async with grpc.aio.insecure_channel(stack.gateway.address) as channel:
        call = channel.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                                     request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                                     response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
        stream = call(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
        [answer] = [response async for response in stream]
    names = {service.name for service in answer.list_services_response.service}
    assert USERS in names
    assert "grpc.reflection.v1.ServerReflection" in names
