"""mTLS and authorization on a real protomesh Server: certificates of a real CA, intentions and the policy from
a real Consul with ACLs (read with the service's own token), every call over real grpc."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from acme.users.v1 import users_service_pb2, users_service_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from mtls_support import (
    AGENT,
    GATEWAY,
    Pki,
    SecureConsul,
    claims_value,
    echo,
    secure_channel,
    unowned_binding,
    until_intentions,
)
from test_server_support import bindings

from protomesh._access import AccessState
from protomesh._security import authorizer_for
from protomesh._server import Server
from protomesh._settings import SecuritySettings, ServerSettings
from protomesh.aio import poll_until
from protomesh.auth import CLAIMS_KEY, Policy
from protomesh.identity import Workload
from protomesh.intentions import Intention

USERS, ORDERS, BILLING = Workload.service("users"), Workload.service("orders"), Workload.service("billing")
GET_USER = "/acme.users.v1.UserService/GetUser"


@dataclass
class Secured:
    """users' mTLS server (UserService, NotificationService and an unowned contract) and ways to call it."""

    port: int
    pki: Pki
    consul: SecureConsul
    access: AccessState

    async def intentions(self, *wanted: Intention) -> None:
        await until_intentions(self.consul, wanted, self.access)

    def channel(self, workload: Workload) -> grpc.aio.Channel:
        return secure_channel(self.pki.identity(workload), self.port)

    async def who(self, workload: Workload, claims: dict[str, Any] | None = None) -> Any:
        """GetUser("caller") as workload: what the handler saw of its caller (display_name, user_id)."""
        metadata = ((CLAIMS_KEY, claims_value(claims)),) if claims is not None else ()
        async with self.channel(workload) as channel:
            reply = await users_service_pb2_grpc.UserServiceStub(channel).GetUser(
                users_service_pb2.GetUserRequest(user_id="caller"), metadata=metadata, timeout=5)
        return reply.user


@pytest.fixture
async def secured(pki: Pki, consul: SecureConsul) -> AsyncIterator[Secured]:
    async with consul.client("users") as client:
        access = await AccessState.open(client)
        served = [*bindings(), unowned_binding()]
        guard = authorizer_for("users", SecuritySettings(), served, access)
        server = Server(ServerSettings(port=0, grace_s=0), served, identity=pki.identity(USERS), guard=guard)
        port = await server.start()
        try:
            state = Secured(port, pki, consul, access)
            await state.intentions()
            await consul_policy(consul, None, access)
            yield state
        finally:
            await server.stop(0)
            await access.close()


async def consul_policy(consul: SecureConsul, policy: object, access: AccessState) -> None:
    await asyncio.to_thread(consul.put_policy, policy)
    expected = Policy.parse(policy)
    await poll_until(lambda: access.policy == expected, timeout=5, what="security policy followed")


async def failed(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return raised.value


def get_user(channel: grpc.aio.Channel, user_id: str = "u-1", **kwargs: Any) -> Any:
    return users_service_pb2_grpc.UserServiceStub(channel).GetUser(users_service_pb2.GetUserRequest(user_id=user_id),
                                                                   timeout=5, **kwargs)


async def test_a_plaintext_caller_is_refused_at_the_handshake(secured: Secured) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{secured.port}") as channel:
        error = await failed(get_user(channel))
        health = await failed(health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5))

    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert health.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_certificate_from_another_ca_is_refused_at_the_handshake(secured: Secured, tmp_path: Path) -> None:
    await secured.intentions(Intention("orders", "users"))
    stranger = Pki.create(tmp_path).identity(ORDERS).current  # the right SPIFFE id, from the wrong CA
    credentials = grpc.ssl_channel_credentials(secured.pki.ca.bundle, stranger.private_key,
                                               stranger.certificate_chain)
    async with grpc.aio.secure_channel(f"127.0.0.1:{secured.port}", credentials,
                                       options=[("grpc.ssl_target_name_override", "users.svc.protomesh.local")]) as ch:
        error = await failed(get_user(ch))

    assert error.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_service_with_an_intention_is_served_in_its_own_name(secured: Secured) -> None:
    await secured.intentions(Intention("orders", "users"))

    user = await secured.who(ORDERS)

    assert user.display_name == "orders|None|"
    assert user.user_id == "spiffe://protomesh.local/service/orders"


async def test_without_an_intention_a_call_is_denied_and_logged_with_both_identities(
        secured: Secured, caplog: pytest.LogCaptureFixture) -> None:
    await secured.intentions(Intention("billing", "users"))

    with caplog.at_level(logging.WARNING, logger="protomesh.authz"):
        async with secured.channel(ORDERS) as channel:
            error = await failed(get_user(channel))

    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error.details() == "permission denied"
    [line] = [record.getMessage() for record in caplog.records if record.name == "protomesh.authz"]
    assert "spiffe://protomesh.local/service/orders -> spiffe://protomesh.local/service/users" in line
    assert GET_USER in line


async def test_an_exact_deny_beats_a_wildcard_allow(secured: Secured) -> None:
    await secured.intentions(Intention("*", "users"), Intention("orders", "users", allow=False))

    async with secured.channel(ORDERS) as channel:
        error = await failed(get_user(channel))
    user = await secured.who(BILLING)

    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert user.display_name == "billing|None|"


async def test_an_intention_removed_in_consul_denies_the_next_calls(secured: Secured) -> None:
    await secured.intentions(Intention("orders", "users"))
    async with secured.channel(ORDERS) as channel:
        await get_user(channel)
        await secured.intentions()
        error = await failed(get_user(channel))

    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_claims_from_the_gateway_are_trusted_and_must_hold_the_rpcs_scopes(secured: Secured) -> None:
    await secured.intentions(Intention("gateway", "*"))

    user = await secured.who(GATEWAY, {"sub": "alice", "scope": "users:read profile"})
    async with secured.channel(GATEWAY) as channel:
        error = await failed(get_user(channel, metadata=((CLAIMS_KEY, claims_value({"sub": "eve",
                                                                                    "scope": "users:write"})),)))

    assert user.display_name == "gateway|alice|profile users:read"
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error.details() == "permission denied"


async def test_the_gateway_without_claims_is_unauthenticated_unless_the_rpc_is_public(secured: Secured) -> None:
    await secured.intentions(Intention("gateway", "*"))

    async with secured.channel(GATEWAY) as channel:
        stub = users_service_pb2_grpc.UserServiceStub(channel)
        error = await failed(get_user(channel))
        # CreateUser is public: authorization lets it through to the scripted servicer, which lacks it.
        public = await failed(stub.CreateUser(users_service_pb2.CreateUserRequest(), timeout=5))

    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error.details() == "authentication required"
    assert public.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_unreadable_claims_from_the_gateway_are_unauthenticated(secured: Secured) -> None:
    await secured.intentions(Intention("gateway", "*"))

    async with secured.channel(GATEWAY) as channel:
        error = await failed(get_user(channel, metadata=((CLAIMS_KEY, "not base64 json!"),)))

    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_claims_are_trusted_from_a_source_whose_intention_forwards_them(secured: Secured) -> None:
    await secured.intentions(Intention("orders", "users", forward_claims=True))

    user = await secured.who(ORDERS, {"sub": "bob", "scope": "users:read"})
    async with secured.channel(ORDERS) as channel:
        error = await failed(get_user(channel, metadata=((CLAIMS_KEY, claims_value({"sub": "bob"})),)))

    assert user.display_name == "orders|bob|users:read"
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_claims_from_a_source_that_may_not_forward_them_are_ignored(secured: Secured) -> None:
    await secured.intentions(Intention("billing", "users"))

    user = await secured.who(BILLING, {"sub": "mallory", "scope": "users:read users:write"})

    assert user.display_name == "billing|None|"


async def test_a_policy_rule_holds_a_contract_the_project_does_not_own(secured: Secured) -> None:
    await secured.intentions(Intention("gateway", "users"))
    rule = "/thirdparty.echo.v1.EchoService/Echo"
    async with secured.channel(GATEWAY) as channel:
        undeclared = await failed(echo(channel, "hi", timeout=5))
        await consul_policy(secured.consul, {"rules": {rule: {"scopes": ["echo:call"]}}}, secured.access)
        lacking = await failed(echo(channel, "hi", timeout=5, metadata=((CLAIMS_KEY, claims_value({"sub": "a"})),)))
        holding = await echo(channel, "hi", timeout=5,
                             metadata=((CLAIMS_KEY, claims_value({"sub": "a", "scope": "echo:call"})),))
        await consul_policy(secured.consul, {"rules": {"/thirdparty.echo.v1.EchoService/": {"public": True}}},
                            secured.access)
        public = await echo(channel, "anyone", timeout=5)

    assert undeclared.code() == grpc.StatusCode.UNAUTHENTICATED
    assert lacking.code() == grpc.StatusCode.PERMISSION_DENIED
    assert (holding, public) == ("hi", "anyone")


async def test_consuls_agent_may_call_health_and_nothing_else(secured: Secured) -> None:
    await secured.intentions(Intention("*", "*"))

    async with secured.channel(AGENT) as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="acme.users.v1.UserService"), timeout=5)
        call = await failed(get_user(channel))
        reflect = await failed(_list_services(channel))

    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert call.code() == grpc.StatusCode.PERMISSION_DENIED
    assert reflect.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_health_and_reflection_answer_any_mesh_identity_without_an_intention(secured: Secured) -> None:
    async with secured.channel(BILLING) as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        services = await _list_services(channel)

    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert "acme.users.v1.UserService" in services


async def test_a_workload_of_another_trust_domain_is_denied(secured: Secured) -> None:
    await secured.intentions(Intention("orders", "users"))

    async with secured.channel(Workload.service("orders", "elsewhere.example")) as channel:
        error = await failed(get_user(channel))

    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_denied_call_never_reaches_the_handler_or_reads_the_request(secured: Secured) -> None:
    async with secured.channel(ORDERS) as channel:
        call = channel.unary_unary(GET_USER)  # raw bytes: not a GetUserRequest at all
        error = await failed(call(b"\xff\xff\xff", timeout=5))

    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


async def _list_services(channel: grpc.aio.Channel) -> list[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
    names = []
    async for response in call:
        names += [service.name for service in response.list_services_response.service]
    return names
