"""A grpc.health.v1 probe: the health status of a server or one of its services, over plaintext or mTLS."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protomesh.identity import TRUST_DOMAIN, IdentityFolder, service_host_name

# A service's own setting of its identity folder (USERS_SECURITY__IDENTITY_DIR): what a container's healthcheck
# finds in its environment, so the same `protomesh probe 127.0.0.1:50051` works with mTLS on.
_IDENTITY_ENV = re.compile(r"(?P<prefix>[A-Z][A-Z0-9_]*_)SECURITY__IDENTITY_DIR")


@dataclass(frozen=True)
class ProbeTls:
    """Probe over mTLS: present this identity, and expect the server's certificate to hold server_name."""

    identity_dir: Path
    server_name: str

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ProbeTls | None:
        """The identity of the one service whose settings are in env (None: none, or security off).

        USERS_SECURITY__IDENTITY_DIR=/run/identity probes as users, expecting users.svc.<trust domain>
        (USERS_SECURITY__TRUST_DOMAIN, else protomesh.local); USERS_SECURITY__MODE=off means plaintext.
        """
        found = [(match["prefix"], value) for name, value in env.items()
                 if (match := _IDENTITY_ENV.fullmatch(name)) and value]
        if len(found) != 1:
            return None
        [(prefix, folder)] = found
        if env.get(f"{prefix}SECURITY__MODE", "").strip().lower() == "off":
            return None
        service = prefix[:-1].lower().replace("_", "-")
        trust_domain = env.get(f"{prefix}SECURITY__TRUST_DOMAIN") or TRUST_DOMAIN
        return cls(Path(folder), service_host_name(service, trust_domain))


def _channel(target: str, tls: ProbeTls | None) -> grpc.aio.Channel:
    if tls is None:
        return grpc.aio.insecure_channel(target)
    credentials = IdentityFolder.open(tls.identity_dir).channel_credentials()  # IdentityError when unusable
    return grpc.aio.secure_channel(target, credentials, options=[("grpc.ssl_target_name_override", tls.server_name)])


async def probe(target: str, service: str = "", *, timeout: float = 2.0, tls: ProbeTls | None = None) -> str:
    """The serving status name (`SERVING`, `NOT_SERVING`, ...) or `UNREACHABLE: <code>`.

        await probe("127.0.0.1:50051")                                              # plaintext
        await probe("127.0.0.1:50051", tls=ProbeTls(Path("/run/identity"), "users.svc.protomesh.local"))
    """
    async with _channel(target, tls) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            return f"UNREACHABLE: {exc.code().name}"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
