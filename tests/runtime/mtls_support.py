"""Real certificates, a Consul agent with ACLs and TLS checks, and intentions for the runtime's security tests."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.request
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from google.protobuf import descriptor_pb2, descriptor_pool, wrappers_pb2

from localmesh.acl import RUNNER, MeshTokens, apply_when_ready, grants
from localmesh.consul import AgentSecurity, ConsulAgent
from localmesh.pki import DevCA, write_identity
from protomesh._server import Binding
from protomesh._settings import ConsulSettings
from protomesh.aio import poll_until
from protomesh.consul import ConsulClient
from protomesh.identity import IdentityFolder, Workload, service_host_name
from protomesh.intentions import Intention, Intentions, read_intentions

# The services the tests' Consul hands tokens to (localmesh.acl's per-service policies).
SERVICES = ("users", "orders", "billing", "apptest")
GATEWAY = Workload.service("gateway")
AGENT = Workload.agent("consul")


@dataclass
class Pki:
    """A development CA in a test's folder and the identity folders it issued."""

    folder: Path
    ca: DevCA

    @classmethod
    def create(cls, folder: Path) -> Pki:
        return cls(folder, DevCA.open(folder / "ca"))

    def folder_for(self, workload: Workload, *, ttl_s: float = 3600.0, name: str | None = None) -> Path:
        """An identity folder (identity.pem + ca.pem) freshly issued for workload."""
        folder = self.folder / "identities" / (name or f"{workload.kind}-{workload.name}-{workload.trust_domain}")
        write_identity(folder, self.ca.issue(workload, ttl_s=ttl_s), self.ca.bundle)
        return folder

    def identity(self, workload: Workload, **options: Any) -> IdentityFolder:
        return IdentityFolder.open(self.folder_for(workload, **options))

    def agent_files(self) -> tuple[Path, Path, Path]:
        """Consul's own certificate for its TLS health checks: (ca_file, cert_file, key_file)."""
        issued = self.ca.issue(AGENT)
        folder = self.folder / "agent"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "cert.pem").write_bytes(issued.cert_pem)
        (folder / "key.pem").write_bytes(issued.key_pem)
        (folder / "ca.pem").write_bytes(self.ca.bundle)
        return folder / "ca.pem", folder / "cert.pem", folder / "key.pem"


def secure_channel(identity: IdentityFolder, port: int, service: str = "users") -> grpc.aio.Channel:
    """A channel to 127.0.0.1:port presenting identity, expecting the certificate of service."""
    return grpc.aio.secure_channel(f"127.0.0.1:{port}", identity.channel_credentials(),
                                   options=[("grpc.ssl_target_name_override", service_host_name(service))])


def claims_value(claims: dict[str, Any]) -> str:
    """A claims metadata value as the gateway writes it: base64url JSON without padding."""
    return base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()


@dataclass
class SecureConsul:
    """A Consul dev agent with ACLs (default deny), its own certificate for TLS checks, and the mesh's tokens."""

    agent: ConsulAgent
    tokens: MeshTokens

    @property
    def address(self) -> str:
        return self.agent.address

    def token(self, name: str) -> str:
        return self.tokens.secret(name)

    def env(self, service: str) -> dict[str, str]:
        """What a service process gets to reach Consul: the address and its own token."""
        return {"CONSUL_HTTP_ADDR": self.address, "CONSUL_HTTP_TOKEN": self.token(service)}

    def client(self, service: str) -> ConsulClient:
        """A Consul client holding service's token (create it inside the running loop)."""
        return ConsulClient.from_settings(ConsulSettings(address=self.address, token=self.token(service)))

    def _call(self, method: str, path: str, body: object | None = None) -> object:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"http://{self.address}{path}", data=data, method=method,
                                         headers={"X-Consul-Token": self.token(RUNNER)})
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read() or b"null")

    def replace_intentions(self, wanted: Iterable[Intention]) -> None:
        """Make Consul hold exactly these intentions (written with the runner's token, as the local mesh does)."""
        existing = self._call("GET", "/v1/connect/intentions")
        for entry in existing if isinstance(existing, list) else ():
            self._call("DELETE", f"/v1/connect/intentions/{entry['ID']}")
        for intention in wanted:
            self._call("POST", "/v1/connect/intentions", intention.to_consul())

    def put_policy(self, policy: object) -> None:
        self._call("PUT", "/v1/kv/protomesh/security/policy", policy)

    async def intentions_now(self) -> Intentions:
        async with self.client("users") as consul:
            return (await read_intentions(consul))[1]


@contextmanager
def secure_consul(folder: Path, pki: Pki) -> Iterator[SecureConsul]:
    """Start the agent and apply the mesh's tokens; stopped on exit."""
    tokens = MeshTokens.open(folder / "tokens.json")
    ca_file, cert_file, key_file = pki.agent_files()
    agent = ConsulAgent(folder / "logs", security=AgentSecurity(tokens.master, ca_file, cert_file, key_file))
    agent.start()
    try:
        apply_when_ready(agent.address, tokens, grants(SERVICES))
        yield SecureConsul(agent, tokens)
    finally:
        agent.stop()


def _names(intentions: Iterable[Intention]) -> set[tuple[str, str, bool, bool]]:
    return {(i.source, i.destination, i.allow, i.forward_claims) for i in intentions}


async def until_intentions(consul: SecureConsul, expected: Sequence[Intention], state: Any) -> float:
    """Write expected into Consul and wait until `state` (an AccessState) follows; returns how long it took."""
    await asyncio.to_thread(consul.replace_intentions, expected)
    return await poll_until(lambda: _names(state.intentions.entries) == _names(expected), timeout=5,
                            what=f"{len(expected)} intention(s) followed")


# A contract the project does not own: no (protomesh.v1.auth) options, rules come from the policy.
UNOWNED_SERVICE = "thirdparty.echo.v1.EchoService"
UNOWNED_METHOD = f"/{UNOWNED_SERVICE}/Echo"


def _unowned_descriptor() -> Any:
    pool = descriptor_pool.Default()
    try:
        return pool.FindServiceByName(UNOWNED_SERVICE)
    except KeyError:
        pass
    wrappers = wrappers_pb2.DESCRIPTOR
    file = descriptor_pb2.FileDescriptorProto(name="thirdparty/echo/v1/echo.proto", package="thirdparty.echo.v1",
                                              dependency=[wrappers.name], syntax="proto3")
    service = file.service.add(name="EchoService")
    service.method.add(name="Echo", input_type=".google.protobuf.StringValue",
                       output_type=".google.protobuf.StringValue")
    pool.Add(file)
    return pool.FindServiceByName(UNOWNED_SERVICE)


class Echo:
    """The unowned contract's servicer: echoes its request."""

    async def Echo(self, request: wrappers_pb2.StringValue, context: Any) -> wrappers_pb2.StringValue:
        return wrappers_pb2.StringValue(value=request.value)


def _add_echo(servicer: Echo, server: grpc.aio.Server) -> None:
    handler = grpc.unary_unary_rpc_method_handler(servicer.Echo, wrappers_pb2.StringValue.FromString,
                                                  wrappers_pb2.StringValue.SerializeToString)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(UNOWNED_SERVICE, {"Echo": handler})])


def unowned_binding() -> Binding:
    return Binding(_unowned_descriptor(), Echo(), _add_echo)


async def echo(channel: grpc.aio.Channel, value: str, **kwargs: Any) -> str:
    call = channel.unary_unary(UNOWNED_METHOD, request_serializer=wrappers_pb2.StringValue.SerializeToString,
                               response_deserializer=wrappers_pb2.StringValue.FromString)
    reply: wrappers_pb2.StringValue = await call(wrappers_pb2.StringValue(value=value), **kwargs)
    return reply.value


@asynccontextmanager
async def channels(*opened: grpc.aio.Channel) -> AsyncIterator[tuple[grpc.aio.Channel, ...]]:
    try:
        yield opened
    finally:
        for channel in opened:
            await channel.close()
