"""serve() and run() against a real Consul: registration, the Context, ordered and graceful shutdown."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from acme.users.v1 import users_service_pb2, users_service_pb2_grpc
from test_app_slow_service import SERVICE as SLOW_SERVICE
from test_server_support import bindings

from localmesh.testing import ConsulAgent, ManagedProcess, project_root
from protomesh._app import Context, RunningService, serve
from protomesh._context import CORRELATION_ID_KEY
from protomesh._server import Binding
from protomesh._settings import ConfigError, ServiceSettings
from protomesh.aio import poll_until

SERVICE = "apptest"
SLOW_SERVICE_SCRIPT = Path(__file__).with_name("test_app_slow_service.py")
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3} [A-Z]+ [\w.]+ .+$")


def _env(consul_agent: ConsulAgent, **extra: str) -> dict[str, str]:
    # These tests are about the lifecycle; test_app_secured.py runs serve() with mTLS, ACLs and intentions.
    return {"CONSUL_HTTP_ADDR": consul_agent.address, "APPTEST_SERVER__DRAIN_S": "0",
            "APPTEST_SECURITY__MODE": "off", **extra}


async def _passing(consul_agent: ConsulAgent, service: str) -> list[dict[str, Any]]:
    return await asyncio.to_thread(consul_agent.passing_instances, service)


async def _agent_ids(consul_agent: ConsulAgent) -> set[str]:
    services = await asyncio.to_thread(consul_agent.get, "/v1/agent/services")
    assert isinstance(services, dict)
    return set(services)


def bindings_names() -> list[str]:
    return [binding.full_name for binding in bindings()]


async def _plain_build(ctx: Context[ServiceSettings]) -> list[Binding]:
    return bindings()


async def test_serve_registers_a_passing_instance_and_stop_removes_it(consul_agent: ConsulAgent,
                                                                       tmp_path: Path) -> None:
    running = await serve(SERVICE, ServiceSettings, _plain_build, env=_env(consul_agent), config_dir=tmp_path)
    try:
        await poll_until(lambda: _passing(consul_agent, SERVICE), what="instance passing in Consul")
        [instance] = await _passing(consul_agent, SERVICE)
        assert instance["ID"] == running.instance_id
        assert instance["Port"] == running.port
        assert instance["Meta"]["grpc_services"].split(",") == bindings_names()
    finally:
        await running.stop()

    assert running.instance_id not in await _agent_ids(consul_agent)


async def test_context_channel_reaches_the_service_through_consul_and_is_shared(consul_agent: ConsulAgent,
                                                                              tmp_path: Path) -> None:
    contexts: list[Context[ServiceSettings]] = []

    async def build(ctx: Context[ServiceSettings]) -> list[Binding]:
        contexts.append(ctx)
        return bindings()

    async with await serve(SERVICE, ServiceSettings, build, env=_env(consul_agent), config_dir=tmp_path):
        await poll_until(lambda: _passing(consul_agent, SERVICE), what="instance passing in Consul")
        channel = await contexts[0].channel(SERVICE)
        assert await contexts[0].channel(SERVICE) is channel
        await poll_until(lambda: channel.targets, what="discovery channel sees the instance")
        reply = await users_service_pb2_grpc.UserServiceStub(channel).GetUser(
            users_service_pb2.GetUserRequest(user_id="u-7"), timeout=5)
        assert reply.user.user_id == "u-7"


async def test_a_downstream_call_carries_the_correlation_id_and_a_shorter_deadline(consul_agent: ConsulAgent,
                                                                                  tmp_path: Path) -> None:
    async def build(ctx: Context[ServiceSettings]) -> list[Binding]:
        users = bindings()[0]
        scripted = users.servicer

        class Relay(users_service_pb2_grpc.UserServiceServicer):
            async def GetUser(self, request: Any, context: Any) -> Any:
                if request.user_id != "relay":
                    return await scripted.GetUser(request, context)
                stub = users_service_pb2_grpc.UserServiceStub(await ctx.channel(SERVICE))
                return await stub.GetUser(users_service_pb2.GetUserRequest(user_id="context"))

        return [Binding(users.service, Relay(), users.add_to_server)]

    async with await serve(SERVICE, ServiceSettings, build, env=_env(consul_agent), config_dir=tmp_path) as running:
        await poll_until(lambda: _passing(consul_agent, SERVICE), what="instance passing in Consul")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            reply = await users_service_pb2_grpc.UserServiceStub(channel).GetUser(
                users_service_pb2.GetUserRequest(user_id="relay"), timeout=5,
                metadata=((CORRELATION_ID_KEY, "cid-relay"),))

    assert reply.user.user_id == "cid-relay"
    # The relay passes on what is left of its own 5 s; grpc rounds a timeout up to its wire unit: allow 50 ms.
    assert 0 < float(reply.user.display_name) <= 5.05


async def test_shutdown_deregisters_and_stops_the_server_before_cleanups_which_run_in_reverse(
        consul_agent: ConsulAgent, tmp_path: Path) -> None:
    events: list[tuple[str, bool, bool]] = []
    holder: dict[str, RunningService[ServiceSettings]] = {}

    @asynccontextmanager
    async def resource(name: str) -> AsyncIterator[str]:
        yield name
        running = holder["running"]
        registered = running.instance_id in await _agent_ids(consul_agent)
        events.append((name, registered, await _accepts_calls(running.port)))

    async def build(ctx: Context[ServiceSettings]) -> list[Binding]:
        assert await ctx.enter(resource("first")) == "first"
        await ctx.enter(resource("second"))
        return bindings()

    holder["running"] = await serve(SERVICE, ServiceSettings, build, env=_env(consul_agent), config_dir=tmp_path)
    await poll_until(lambda: _passing(consul_agent, SERVICE), what="instance passing in Consul")
    await holder["running"].stop()

    assert events == [("second", False, False), ("first", False, False)]


async def _accepts_calls(port: int) -> bool:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            await users_service_pb2_grpc.UserServiceStub(channel).GetUser(
                users_service_pb2.GetUserRequest(user_id="u-1"), timeout=1)
        except grpc.aio.AioRpcError:
            return False
    return True


async def test_a_failing_build_closes_what_it_already_opened(consul_agent: ConsulAgent, tmp_path: Path) -> None:
    closed: list[str] = []

    @asynccontextmanager
    async def resource() -> AsyncIterator[None]:
        yield
        closed.append("resource")

    async def build(ctx: Context[ServiceSettings]) -> list[Binding]:
        await ctx.enter(resource())
        raise RuntimeError("cannot open the database")

    with pytest.raises(RuntimeError, match="cannot open the database"):
        await serve(SERVICE, ServiceSettings, build, env=_env(consul_agent), config_dir=tmp_path)

    assert closed == ["resource"]


async def test_a_wildcard_host_without_advertise_host_fails_before_serving(consul_agent: ConsulAgent,
                                                                          tmp_path: Path) -> None:
    env = _env(consul_agent, APPTEST_SERVER__HOST="0.0.0.0")

    with pytest.raises(ConfigError, match=r"server\.advertise_host"):
        await serve(SERVICE, ServiceSettings, _plain_build, env=env, config_dir=tmp_path)


def _slow_service(consul_address: str, tmp_path: Path, **extra: str) -> ManagedProcess:
    env = {**os.environ, "CONSUL_HTTP_ADDR": consul_address, "PROTOMESH_CONFIG_DIR": str(tmp_path),
           "SLOWSVC_SECURITY__MODE": "off", **extra}
    return ManagedProcess(SLOW_SERVICE, [sys.executable, str(SLOW_SERVICE_SCRIPT)], log_dir=tmp_path / "logs",
                          env=env, cwd=project_root())


@asynccontextmanager
async def _stub_of_passing(consul_agent: ConsulAgent) -> AsyncIterator[tuple[dict[str, Any], Any]]:
    """The slow service's instance once Consul reports it passing, and a UserService stub to it."""
    await poll_until(lambda: _passing(consul_agent, SLOW_SERVICE), what="slow service passing")
    [instance] = await _passing(consul_agent, SLOW_SERVICE)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{instance['Port']}") as channel:
        yield instance, users_service_pb2_grpc.UserServiceStub(channel)


async def _in_flight(stub: Any) -> int:
    reply = await stub.GetUser(users_service_pb2.GetUserRequest(user_id="in-flight"), timeout=5)
    return int(reply.user.display_name)


@pytest.mark.slow
async def test_sigterm_lets_in_flight_calls_finish_and_leaves_consul(consul_agent: ConsulAgent,
                                                                     tmp_path: Path) -> None:
    service = _slow_service(consul_agent.address, tmp_path, SLOWSVC_SERVER__GRACE_S="10")
    service.start()
    try:
        async with _stub_of_passing(consul_agent) as (instance, stub):
            calls = [asyncio.ensure_future(stub.GetUser(users_service_pb2.GetUserRequest(user_id=f"u-{n}"), timeout=30))
                     for n in range(20)]
            await poll_until(lambda: _counted(stub, 20), what="all 20 calls in flight")
            service.send_signal(signal.SIGTERM)
            results = await asyncio.gather(*calls, return_exceptions=True)
        assert service.proc is not None
        exit_code = await asyncio.to_thread(service.proc.wait, 30)
    finally:
        service.stop(sig=signal.SIGKILL)

    failed = [result for result in results if isinstance(result, BaseException)]
    assert failed == [], service.log_tail()
    assert [reply.user.user_id for reply in results] == [f"u-{n}" for n in range(20)]
    assert exit_code == 0, service.log_tail()
    assert instance["ID"] not in await _agent_ids(consul_agent)
    log = service.log_path.read_text().splitlines()
    assert all(LOG_LINE.match(line) for line in log), log
    assert any("deregistered" in line for line in log), log


async def _counted(stub: Any, expected: int) -> bool:
    return await _in_flight(stub) == expected


@pytest.mark.parametrize(("settings", "expected"), [
    ({}, "uvloop frozen"),
    ({"SLOWSVC_SERVER__EVENT_LOOP": "asyncio", "SLOWSVC_SERVER__GC_FREEZE": "false"}, "asyncio not frozen"),
])
async def test_run_serves_on_uvloop_with_start_up_frozen_unless_the_settings_say_otherwise(
        consul_agent: ConsulAgent, tmp_path: Path, settings: dict[str, str], expected: str) -> None:
    service = _slow_service(consul_agent.address, tmp_path, **settings)
    service.start()
    try:
        async with _stub_of_passing(consul_agent) as (_, stub):

            async def answers_as_expected() -> bool:  # run() freezes right after serve() returned
                reply = await stub.GetUser(users_service_pb2.GetUserRequest(user_id="process"), timeout=5)
                return bool(reply.user.display_name == expected)

            await poll_until(answers_as_expected, timeout=5, what=f"the service to answer {expected!r}")
    finally:
        service.stop()


def test_run_with_an_unknown_event_loop_exits_with_code_2_saying_which_loops_exist(tmp_path: Path) -> None:
    service = _slow_service("127.0.0.1:1", tmp_path, SLOWSVC_SERVER__EVENT_LOOP="trio")
    service.start()
    assert service.proc is not None
    assert service.proc.wait(timeout=30) == 2
    assert "server.event_loop: expected one of uvloop, asyncio, got 'trio'" in service.log_tail()


def test_run_exits_with_code_2_naming_the_bad_key_before_touching_consul(tmp_path: Path) -> None:
    service = _slow_service("127.0.0.1:1", tmp_path, SLOWSVC_SERVER__PORT="not-a-port")
    service.start()
    assert service.proc is not None
    assert service.proc.wait(timeout=30) == 2
    assert "server.port" in service.log_tail()


def test_run_with_mtls_and_no_identity_folder_exits_with_code_2_naming_the_setting(tmp_path: Path) -> None:
    service = _slow_service("127.0.0.1:1", tmp_path, SLOWSVC_SECURITY__MODE="mtls")
    service.start()
    assert service.proc is not None
    assert service.proc.wait(timeout=30) == 2
    assert "SLOWSVC_SECURITY__IDENTITY_DIR" in service.log_tail()


def test_run_with_an_empty_identity_folder_exits_with_code_1_saying_what_writes_it(tmp_path: Path) -> None:
    service = _slow_service("127.0.0.1:1", tmp_path, SLOWSVC_SECURITY__MODE="mtls",
                            SLOWSVC_SECURITY__IDENTITY_DIR=str(tmp_path / "identity"))
    service.start()
    assert service.proc is not None
    assert service.proc.wait(timeout=30) == 1
    log = service.log_tail()
    assert "identity.pem: missing" in log
    assert "Traceback" not in log
