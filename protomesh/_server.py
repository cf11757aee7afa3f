"""A grpc.aio server with health, reflection and the default interceptor, started and stopped in order."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from protomesh._authz import CallGuard
from protomesh._interceptors import default_interceptors
from protomesh._overload import ConcurrencyLimit
from protomesh._settings import ServerSettings
from protomesh.auth import Rule, service_rules
from protomesh.identity import IdentityFolder

_LOG = logging.getLogger("protomesh.server")

# Accept keepalive pings from clients (discovery channels, Envoy) as often as every 10 s, also on idle
# connections: core's defaults count such pings as abuse (5 min interval, 2 h when idle) and answer with
# GOAWAY "too_many_pings", which drops the connection a client was trying to keep warm.
MIN_CLIENT_PING_INTERVAL_MS = 10_000
# Ping idle clients every 60 s and drop them after 20 s of silence, so connections from crashed peers
# (no FIN, e.g. a killed container) do not pile up.
KEEPALIVE_TIME_MS = 60_000
KEEPALIVE_TIMEOUT_MS = 20_000
# Explicit message limits: 4 MiB in (core's default: a client cannot make us buffer more) and out (an
# unbounded list response fails as RESOURCE_EXHAUSTED here instead of surprising clients and Envoy).
MAX_RECEIVE_MESSAGE_BYTES = 4 * 1024 * 1024
MAX_SEND_MESSAGE_BYTES = 4 * 1024 * 1024

SERVER_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", MIN_CLIENT_PING_INTERVAL_MS),
    ("grpc.max_receive_message_length", MAX_RECEIVE_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_SEND_MESSAGE_BYTES),
    # Bandwidth-delay probing pings busy connections to grow flow-control windows; small unary calls gain
    # nothing from that and the probes cost CPU (a few per cent, see the ARCHITECTURE field notes).
    ("grpc.http2.bdp_probe", 0),
    # With SO_REUSEPORT a second instance on a fixed port would silently share it; fail loudly instead.
    ("grpc.so_reuseport", 0),
)

HEALTH_SERVICE_NAME: str = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
_SERVING = health_pb2.HealthCheckResponse.SERVING


@dataclass(frozen=True)
class Binding:
    """One servicer to serve, with the generated function that registers it.

        Binding(users_service_pb2.DESCRIPTOR.services_by_name["UserService"], handlers,
                users_service_pb2_grpc.add_UserServiceServicer_to_server)
    """

    service: ServiceDescriptor
    servicer: object
    add_to_server: Callable[[Any, grpc.aio.Server], None]

    @property
    def full_name(self) -> str:
        """The gRPC service name, e.g. `acme.users.v1.UserService` (health, routes and checks use it)."""
        name: str = self.service.full_name
        return name


def declared_rules(bindings: Sequence[Binding]) -> dict[str, Rule]:
    """`/pkg.Service/Method` -> the rule its contract declares, for every rpc of the bindings that has one."""
    rules: dict[str, Rule] = {}
    for binding in bindings:
        rules.update(service_rules(binding.service))
    return rules


class Server:
    """Lifecycle of one grpc.aio server; usable without Consul (tests).

        server = Server(ServerSettings(port=0), [binding])
        port = await server.start()
        ...
        await server.stop()            # NOT_SERVING, then stop with settings.grace_s

    With `identity` the port speaks TLS only and requires a client certificate that chains to the identity's
    trust bundle (a rotated certificate is served from the next handshake on); `guard` authorizes every call
    (serve() passes both for security.mode mtls). Without them the port is plaintext and nobody is checked.
    `settings.max_concurrent_rpcs` bounds the unary calls in flight (ConcurrencyLimit, ahead of `interceptors`).
    """

    def __init__(self, settings: ServerSettings, bindings: Sequence[Binding], *,
                 interceptors: Sequence[grpc.aio.ServerInterceptor] | None = None,
                 identity: IdentityFolder | None = None, guard: CallGuard | None = None) -> None:
        if interceptors is not None and guard is not None:
            raise ValueError("pass the guard to your own ProtomeshInterceptor (Server gives it to its default one)")
        self.settings = settings
        self.bindings = tuple(bindings)
        self.identity = identity
        self.limit = ConcurrencyLimit(settings.max_concurrent_rpcs) if settings.max_concurrent_rpcs > 0 else None
        self._interceptors = [*([self.limit] if self.limit is not None else []),
                              *(default_interceptors(guard=guard) if interceptors is None else interceptors)]
        self._server: grpc.aio.Server | None = None
        self._health: health_aio.HealthServicer | None = None
        self._health_down = False
        self._stopped = False
        self.port = 0

    @property
    def service_names(self) -> list[str]:
        """Full names of the bound services, in binding order."""
        return [binding.full_name for binding in self.bindings]

    async def start(self) -> int:
        """Register servicers, health and reflection, bind, start, mark SERVING; returns the bound port."""
        if self._server is not None:
            raise RuntimeError("Server.start() called twice")
        server = grpc.aio.server(interceptors=self._interceptors, options=SERVER_OPTIONS)
        for binding in self.bindings:
            binding.add_to_server(binding.servicer, server)
        self._health = health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        reflection.enable_server_reflection([*self.service_names, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME],
                                            server)
        address = _bind_address(self.settings.host, self.settings.port)
        # Either raises RuntimeError when the address is taken.
        if self.identity is not None:
            self.port = server.add_secure_port(address, self.identity.server_credentials())
        else:
            self.port = server.add_insecure_port(address)
        self._server = server
        await server.start()
        for name in ("", *self.service_names):
            await health.set(name, _SERVING)
        _LOG.info("serving %s on %s:%d (%s)", ", ".join(self.service_names), self.settings.host, self.port,
                  "mTLS" if self.identity is not None else "plaintext")
        return self.port

    async def set_not_serving(self) -> None:
        """Report NOT_SERVING for every service from now on (health checks fail, calls still work)."""
        if self._health is not None and not self._health_down:
            self._health_down = True
            await self._health.enter_graceful_shutdown()
            _LOG.info("health NOT_SERVING for %s", ", ".join(self.service_names))

    async def stop(self, grace_s: float | None = None) -> None:
        """NOT_SERVING, then stop: in-flight calls get `grace_s` (default settings.grace_s) to finish."""
        if self._server is None or self._stopped:
            return
        self._stopped = True
        await self.set_not_serving()
        await self._server.stop(self.settings.grace_s if grace_s is None else grace_s)
        _LOG.info("stopped %s", ", ".join(self.service_names))


def _bind_address(host: str, port: int) -> str:
    # IPv6 literals need brackets in a gRPC target ("[::]:50051").
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"
