"""serve() with security.mode mtls against a real Consul with ACLs and TLS health checks: the identity from the
settings, intentions from Consul, discovery channels over mTLS that forward the caller's claims."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from acme.users.v1 import users_service_pb2, users_service_pb2_grpc
from mtls_support import GATEWAY, Pki, SecureConsul, claims_value, secure_channel
from test_server_support import bindings

from protomesh._app import Context, serve
from protomesh._probe import probe
from protomesh._registry import Registration
from protomesh._server import Binding, Server
from protomesh._settings import ConfigError, ServerSettings, ServiceSettings
from protomesh.aio import poll_until
from protomesh.auth import CLAIMS_KEY
from protomesh.identity import IdentityError, Workload
from protomesh.intentions import Intention

SERVICE = "apptest"
APPTEST = Workload.service(SERVICE)


def _env(consul: SecureConsul, identity_dir: Path | None, **extra: str) -> dict[str, str]:
    env = {**consul.env(SERVICE), "APPTEST_SERVER__DRAIN_S": "0", **extra}
    if identity_dir is not None:
        env["APPTEST_SECURITY__IDENTITY_DIR"] = str(identity_dir)
    return env


async def _relaying_build(ctx: Context[ServiceSettings]) -> list[Binding]:
    """UserService whose GetUser("relay") asks its own service, through Consul, who called it."""
    users = bindings()[0]
    scripted = users.servicer

    class Relay(users_service_pb2_grpc.UserServiceServicer):
        async def GetUser(self, request: Any, context: Any) -> Any:
            if request.user_id != "relay":
                return await scripted.GetUser(request, context)
            stub = users_service_pb2_grpc.UserServiceStub(await ctx.channel(SERVICE))
            return await stub.GetUser(users_service_pb2.GetUserRequest(user_id="caller"), timeout=5)

    return [Binding(users.service, Relay(), users.add_to_server)]


async def _passing(consul: SecureConsul) -> list[dict[str, Any]]:
    return await asyncio.to_thread(consul.agent.passing_instances, SERVICE)


async def test_an_mtls_instance_passes_consuls_tls_health_check_and_refuses_plaintext(consul: SecureConsul,
                                                                                      pki: Pki,
                                                                                      tmp_path: Path) -> None:
    env = _env(consul, pki.folder_for(APPTEST), APPTEST_SERVER__INSTANCE_ID="apptest-tls")
    async with await serve(SERVICE, ServiceSettings, _relaying_build, env=env, config_dir=tmp_path) as running:
        # The registration starts "passing"; only Consul's own check run can say so with an output.
        await poll_until(lambda: _check_ran(consul, "apptest-tls"), timeout=10, what="Consul ran the TLS check")
        [check] = await _checks(consul, "apptest-tls")
        plaintext = await probe(f"127.0.0.1:{running.port}", timeout=2)

    assert check["Status"] == "passing", check
    assert plaintext == "UNREACHABLE: UNAVAILABLE"


@pytest.mark.parametrize(("tls", "status"), [(True, "passing"), (False, "critical")])
async def test_only_a_tls_check_can_pass_against_an_mtls_port(consul: SecureConsul, pki: Pki, tls: bool,
                                                              status: str) -> None:
    server = Server(ServerSettings(port=0), bindings(), identity=pki.identity(APPTEST))
    port = await server.start()
    instance_id = f"apptest-check-{tls}"
    async with consul.client(SERVICE) as client:
        registration = Registration(client, service=SERVICE, address="127.0.0.1", port=port, instance_id=instance_id,
                                    grpc_services=server.service_names, version="1", tls=tls,
                                    initial_status="warning")
        await registration.start()
        try:
            await poll_until(lambda: _check_ran_to(consul, instance_id, ("passing", "critical")), timeout=10,
                             what="Consul ran the check")
            [check] = await _checks(consul, instance_id)
        finally:
            await registration.deregister()
            await server.stop(0)

    assert check["Status"] == status, check["Output"]


async def _check_ran_to(consul: SecureConsul, instance_id: str, statuses: tuple[str, ...]) -> bool:
    return any(check["Status"] in statuses for check in await _checks(consul, instance_id))


async def _checks(consul: SecureConsul, instance_id: str) -> list[dict[str, Any]]:
    checks = await asyncio.to_thread(consul.agent.get, "/v1/agent/checks")
    assert isinstance(checks, dict)
    return [check for check in checks.values() if check["ServiceID"] == instance_id]


async def _check_ran(consul: SecureConsul, instance_id: str) -> bool:
    return any(check["Output"].endswith("success") for check in await _checks(consul, instance_id))


@pytest.mark.parametrize(("forward", "subject"), [(True, "alice"), (False, "None")])
async def test_a_downstream_call_carries_the_claims_which_count_where_the_intention_forwards_them(
        consul: SecureConsul, pki: Pki, tmp_path: Path, forward: bool, subject: str) -> None:
    await asyncio.to_thread(consul.replace_intentions, [Intention("gateway", SERVICE),
                                                        Intention(SERVICE, SERVICE, forward_claims=forward)])
    env = _env(consul, pki.folder_for(APPTEST))
    async with await serve(SERVICE, ServiceSettings, _relaying_build, env=env, config_dir=tmp_path) as running:
        await poll_until(lambda: _passing(consul), timeout=10, what="instance passing in Consul")
        claims = claims_value({"sub": "alice", "scope": "users:read"})
        async with secure_channel(pki.identity(GATEWAY), running.port, SERVICE) as channel:
            reply = await users_service_pb2_grpc.UserServiceStub(channel).GetUser(
                users_service_pb2.GetUserRequest(user_id="relay"), metadata=((CLAIMS_KEY, claims),), timeout=10)

    assert reply.user.display_name.split("|")[:2] == [SERVICE, subject]
    assert reply.user.user_id == APPTEST.spiffe_id


async def test_a_call_from_a_service_without_an_intention_is_denied(consul: SecureConsul, pki: Pki,
                                                                   tmp_path: Path) -> None:
    await asyncio.to_thread(consul.replace_intentions, [Intention("gateway", SERVICE)])
    env = _env(consul, pki.folder_for(APPTEST))
    orders = pki.identity(Workload.service("orders"))
    async with await serve(SERVICE, ServiceSettings, _relaying_build, env=env, config_dir=tmp_path) as running, \
            secure_channel(orders, running.port, SERVICE) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await users_service_pb2_grpc.UserServiceStub(channel).GetUser(
                users_service_pb2.GetUserRequest(user_id="u-1"), timeout=5)

    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_mtls_without_an_identity_folder_fails_naming_the_setting(consul: SecureConsul, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"APPTEST_SECURITY__IDENTITY_DIR.*protomesh up.*APPTEST_SECURITY__MODE=off"):
        await serve(SERVICE, ServiceSettings, _relaying_build, env=_env(consul, None), config_dir=tmp_path)


async def test_an_unknown_security_mode_fails_naming_the_choices(consul: SecureConsul, tmp_path: Path) -> None:
    env = _env(consul, tmp_path, APPTEST_SECURITY__MODE="tls")

    with pytest.raises(ConfigError, match=r"security\.mode: expected 'mtls' or 'off', got 'tls'"):
        await serve(SERVICE, ServiceSettings, _relaying_build, env=env, config_dir=tmp_path)


async def test_an_identity_folder_without_its_files_fails_saying_who_writes_them(consul: SecureConsul,
                                                                                tmp_path: Path) -> None:
    with pytest.raises(IdentityError, match=r"identity\.pem: missing.*protomesh up"):
        await serve(SERVICE, ServiceSettings, _relaying_build, env=_env(consul, tmp_path / "empty"),
                    config_dir=tmp_path)
