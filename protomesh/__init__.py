"""protomesh: the runtime every service is written with (serve, register, configure, discover).

    import protomesh

    def main() -> None:
        protomesh.run("users", UsersSettings, build)

    async def build(ctx: protomesh.Context[UsersSettings]) -> list[protomesh.Binding]:
        repo = await ctx.enter(SqliteUserRepository.open(ctx.settings.database_path))
        return [protomesh.Binding(users_service_pb2.DESCRIPTOR.services_by_name["UserService"],
                                  UserHandlers(Users(repo)),
                                  users_service_pb2_grpc.add_UserServiceServicer_to_server)]

Who is calling is `protomesh.caller()` (see docs/SECURITY.md); identities live in `protomesh.identity`, rules
and claims in `protomesh.auth`, intentions in `protomesh.intentions`. Events live in `protomesh.events`,
domain errors in `protomesh.errors`, test helpers in `protomesh.testing`.
"""

from __future__ import annotations

# The contracts' own options (protos/protomesh/v1/auth.proto) generate `protomesh.v1`, which `make protos`
# writes beside every other stub: this package extends its path to the generated folder (a pkgutil-style
# namespace package), so generated stubs that import `protomesh.v1.auth_pb2` find it.
__path__ = __import__("pkgutil").extend_path(__path__, __name__)

from protomesh._app import Context, RunningService, run, serve
from protomesh._config import ConfigStore, load_settings, seed_config
from protomesh._config import kv_prefix as config_kv_prefix
from protomesh._context import correlation_id, time_remaining
from protomesh._discovery import DiscoveryChannel
from protomesh._interceptors import ProtomeshInterceptor, default_interceptors
from protomesh._registry import Registration
from protomesh._server import Binding, Server
from protomesh._settings import (
    ConfigError,
    ConsulSettings,
    ObservabilitySettings,
    SecuritySettings,
    ServerSettings,
    ServiceSettings,
)
from protomesh.auth import Caller, caller
from protomesh.consul import ConsulClient, ServiceInstance

__all__ = [
    "Binding",
    "Caller",
    "ConfigError",
    "ConfigStore",
    "ConsulClient",
    "ConsulSettings",
    "Context",
    "DiscoveryChannel",
    "ObservabilitySettings",
    "ProtomeshInterceptor",
    "Registration",
    "RunningService",
    "SecuritySettings",
    "Server",
    "ServerSettings",
    "ServiceInstance",
    "ServiceSettings",
    "caller",
    "config_kv_prefix",
    "correlation_id",
    "default_interceptors",
    "load_settings",
    "run",
    "seed_config",
    "serve",
    "time_remaining",
]
