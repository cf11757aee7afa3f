"""Helpers for gateway tests: the stack of real components, REST calls, bounded load, logged steps."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from probe_service import SERVICE as PROBE_SERVICE
from probe_service import Probe

from localmesh.testing import TEST_ROUTE_TIMEOUT_S, ConsulAgent, Gateway, ManagedProcess, project_root, wait_until
from protomesh import ConsulSettings, Registration, Server, ServerSettings
from protomesh.consul import ConsulClient

log = logging.getLogger("gateway-e2e")

# Load tests: a few concurrent clients for a bounded time (2-core machine shared with other suites).
LOAD_CLIENTS = 4
LOAD_SECONDS = 3.0
# A client that sends no complete request headers within this long gets 408 (short: the test waits for it).
REQUEST_HEADERS_TIMEOUT_S = 1.0
# The Consul services the gateway is told the mesh declares.
DECLARED = "users,notifications"
# A request through the gateway that takes longer than this counts as failed in load tests.
LOAD_REQUEST_TIMEOUT_S = 5.0


def step(message: str, *args: object) -> None:
    """One logged step per assertion: the log reads like a verify script when a test fails."""
    log.info("step: " + message, *args)


class UsersInstances:
    """Real users service processes (`python -m app` in services/users) sharing one SQLite database."""

    def __init__(self, consul: ConsulAgent, workdir: Path) -> None:
        self.consul = consul
        self.workdir = workdir
        self.processes: dict[str, ManagedProcess] = {}  # instance id -> process
        self.spawned_at: dict[str, float] = {}  # instance id -> time.monotonic() when its process started
        self._count = 0

    def start(self) -> dict[str, Any]:
        """Start one instance; returns its Consul entry once it is registered and passing."""
        self._count += 1
        before = {i["ID"] for i in self.consul.passing_instances("users")}
        process = ManagedProcess(f"users-{self._count}", [sys.executable, "-m", "app"], log_dir=self.workdir,
                                 cwd=project_root() / "services" / "users", env=self._env())
        process.start()
        spawned_at = time.monotonic()
        found: list[dict[str, Any]] = []

        def registered() -> bool:
            process.ensure_alive()
            found[:] = [i for i in self.consul.passing_instances("users") if i["ID"] not in before]
            return bool(found)

        wait_until(registered, what="users instance passing in Consul")
        self.processes[found[0]["ID"]] = process
        self.spawned_at[found[0]["ID"]] = spawned_at
        return found[0]

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        # Plaintext until this stack's gateway dials services with an identity of its own (mTLS: tests/runtime).
        env.update(CONSUL_HTTP_ADDR=self.consul.address, USERS_DATABASE_PATH=str(self.workdir / "users.db"),
                   USERS_LOG_LEVEL="WARNING", USERS_SERVER__GRACE_S="1", USERS_SECURITY__MODE="off")
        return env

    def passing_addresses(self) -> set[str]:
        """host:port of the passing users instances; empty while Consul does not answer (restarting)."""
        try:
            return {f"{i['Address']}:{i['Port']}" for i in self.consul.passing_instances("users")}
        except OSError:
            return set()

    def stop(self, instance_id: str) -> None:
        self.processes.pop(instance_id).stop()

    def signal(self, instance_id: str, sig: signal.Signals) -> None:
        self.processes[instance_id].send_signal(sig)

    def stop_all(self) -> None:
        for instance_id in list(self.processes):
            self.processes[instance_id].send_signal(signal.SIGCONT)  # a frozen one could not stop
            self.stop(instance_id)


@dataclass
class Stack:
    """Consul + control plane + Envoy + users instances, started together for a test module."""

    consul: ConsulAgent
    gateway: Gateway
    users: UsersInstances
    descriptor: Path
    workdir: Path
    extra: list[ManagedProcess] = field(default_factory=list)

    def close(self) -> None:
        for process in self.extra:
            process.stop()
        self.users.stop_all()
        self.gateway.stop()
        self.consul.stop()


def start_stack(workdir: Path, descriptor: Path, *, extra_args: Sequence[str] = ()) -> Stack:
    """Everything on free ports; the control plane watches a private copy of the descriptor set (and gets
    `extra_args` too)."""
    consul = ConsulAgent(workdir / "logs")
    consul.start()
    watched = workdir / "protomesh.binpb"
    shutil.copyfile(descriptor, watched)
    # users and notifications are declared (as a topology would); orders is in the API but nobody declares it.
    # The plaintext dev listener without token checks: these suites look at routing and transcoding (the secured
    # gateway has its own, test_gateway_security.py).
    gateway = Gateway(workdir / "logs", consul_address=consul.address, descriptor=watched,
                      route_timeout_s=TEST_ROUTE_TIMEOUT_S,
                      extra_args=["--plaintext", "--expect", DECLARED,
                                  "--request-headers-timeout", str(REQUEST_HEADERS_TIMEOUT_S), *extra_args])
    users = UsersInstances(consul, workdir)
    stack = Stack(consul, gateway, users, watched, workdir)
    try:
        users.start()
        gateway.start()
        wait_until(lambda: bool(gateway.hosts("users")), what="users endpoints in Envoy")
    except BaseException:
        stack.close()
        raise
    return stack


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: Any


async def rest(url: str, method: str, path: str, *, json: Any = None, data: bytes | str | None = None,
               headers: dict[str, str] | None = None) -> Reply:
    """One REST call through the gateway; body decoded as JSON (None when not JSON)."""
    payload = io.BytesIO(data.encode() if isinstance(data, str) else data) if data is not None else None
    async with aiohttp.ClientSession() as session, session.request(
            method, url + path, json=json, data=payload, headers=headers,
            timeout=aiohttp.ClientTimeout(total=LOAD_REQUEST_TIMEOUT_S)) as response:
        raw = await response.read()
        decoded = await response.json(content_type=None) if raw.startswith((b"{", b"[")) else None
        return Reply(response.status, {k.lower(): v for k, v in response.headers.items()}, decoded)


@dataclass
class LoadResult:
    ok: int = 0
    failures: list[str] = field(default_factory=list)


async def run_load(url: str, path: str, *, seconds: float = LOAD_SECONDS, clients: int = LOAD_CLIENTS,
                   pause_s: float = 0.0, stop: asyncio.Event | None = None) -> LoadResult:
    """clients concurrent keep-alive REST clients doing GET path for `seconds` (or until stop is set, if
    sooner); any non-200 is a failure."""
    result = LoadResult()
    deadline = time.monotonic() + seconds
    timeout = aiohttp.ClientTimeout(total=LOAD_REQUEST_TIMEOUT_S)

    async def client(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < deadline and not (stop and stop.is_set()):
            try:
                async with session.get(url + path, timeout=timeout) as response:
                    body = await response.read()
                    if response.status == 200:
                        result.ok += 1
                    else:
                        result.failures.append(f"{response.status} {body[:200]!r}")
            except (TimeoutError, aiohttp.ClientError) as exc:
                result.failures.append(repr(exc))

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    return result


@asynccontextmanager
async def served_probe(stack: Stack) -> AsyncIterator[Probe]:
    """The probe served by the runtime's Server in this loop, registered in Consul as `probe` and routed by Envoy."""
    served = Probe.load(stack.descriptor)
    server = Server(ServerSettings(port=0), [served.binding()])
    port = await server.start()
    consul = ConsulClient.from_settings(ConsulSettings(address=stack.consul.address))
    registration = Registration(consul, service="probe", address="127.0.0.1", port=port,
                                grpc_services=[PROBE_SERVICE], version="test")
    await registration.start()
    await asyncio.to_thread(wait_until, lambda: bool(stack.gateway.hosts("probe")), what="probe endpoints in Envoy")
    try:
        yield served
    finally:
        await registration.deregister()
        await consul.close()
        await server.stop(0)
