"""Helpers for the secured gateway's tests: the inputs the local mesh gives it (a development CA, the edge and
gateway identities, a token issuer, Consul with ACLs and the policy), and TLS clients for REST and gRPC."""

from __future__ import annotations

import json
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import grpc.aio

from localmesh import acl
from localmesh.consul import AgentSecurity
from localmesh.pki import DevCA, Issued, write_identity
from localmesh.testing import TEST_ROUTE_TIMEOUT_S, ConsulAgent, Gateway, GatewayPorts
from localmesh.tokens import AUDIENCE, DevIssuer
from protomesh.auth import POLICY_KEY
from protomesh.identity import IdentityFolder, Workload

# Certificates of the tests live minutes: long enough for a module, short like the mesh's own.
CERT_TTL_S = 900.0
REQUEST_TIMEOUT_S = 5.0


@dataclass
class EdgeSecurity:
    """A development CA, the gateway's two identity folders (edge certificate, mesh identity), an issuer, and the
    Consul ACL tokens (the control plane's own, default deny)."""

    folder: Path
    ca: DevCA
    issuer: DevIssuer
    tokens: acl.MeshTokens

    @classmethod
    def create(cls, folder: Path) -> EdgeSecurity:
        made = cls(folder, DevCA.open(folder / "pki"), DevIssuer.open(folder / "issuer"),
                   acl.MeshTokens.open(folder / "consul-tokens.json"))
        made.rotate_edge()
        made.rotate_mesh()
        return made

    @property
    def edge_dir(self) -> Path:
        return self.folder / "identities" / "edge"

    @property
    def mesh_dir(self) -> Path:
        return self.folder / "identities" / "gateway"

    @property
    def ca_file(self) -> Path:
        return self.folder / "pki" / "ca.pem"

    def issue(self, workload: Workload, folder: Path, **sans: Any) -> Issued:
        issued = self.ca.issue(workload, ttl_s=CERT_TTL_S, **sans)
        write_identity(folder, issued, self.ca.bundle)
        return issued

    def rotate_mesh(self) -> Issued:
        """A new certificate for the gateway's workload identity (what it presents to services)."""
        return self.issue(Workload.service("gateway"), self.mesh_dir)

    def rotate_edge(self) -> Issued:
        """A new edge certificate (new key, new serial) for localhost and 127.0.0.1, written as an issuer would."""
        return self.issue(Workload.service("gateway"), self.edge_dir, dns_names=["localhost"],
                          ip_addresses=["127.0.0.1"])

    def identity(self, service: str, *, holding: str | None = None, instance: int = 1) -> IdentityFolder:
        """An identity folder for an instance of service, with the certificate of `holding` (another service's,
        for an impostor) or its own."""
        folder = self.folder / "identities" / f"{service}-{instance}"
        self.issue(Workload.service(holding or service), folder)
        return IdentityFolder.open(folder)

    def token(self, *scopes: str, **options: Any) -> str:
        return self.issuer.token("alice", scopes, **options)

    def controlplane_args(self) -> list[str]:
        return ["--edge-identity-dir", str(self.edge_dir), "--identity-dir", str(self.mesh_dir),
                "--jwks-file", str(self.issuer.jwks_path), "--jwt-issuer", self.issuer.issuer,
                "--jwt-audience", AUDIENCE]

    def ssl_context(self, *, alpn: tuple[str, ...] = ("h2", "http/1.1")) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.set_alpn_protocols(list(alpn))
        return context

    def channel(self, address: str) -> grpc.aio.Channel:
        return grpc.aio.secure_channel(address, grpc.ssl_channel_credentials(self.ca.bundle))


@dataclass
class SecureStack:
    consul: ConsulAgent
    gateway: Gateway
    security: EdgeSecurity

    @property
    def url(self) -> str:
        return f"https://{self.gateway.address}"

    def close(self) -> None:
        self.gateway.stop()
        self.consul.stop()


def start_consul(workdir: Path, security: EdgeSecurity) -> ConsulAgent:
    """Consul with ACLs on (default deny): the agent's token and the control plane's, as the local mesh makes them."""
    consul = ConsulAgent(workdir / "logs", security=AgentSecurity(master_token=security.tokens.master))
    consul.start()
    acl.apply_when_ready(consul.address, security.tokens,
                         {acl.AGENT: acl.AGENT_RULES, acl.CONTROLPLANE: acl.controlplane_rules()})
    return consul


def put_policy(consul: ConsulAgent, policy: dict[str, Any]) -> None:
    consul.put(f"/v1/kv/{POLICY_KEY}", json.dumps(policy))


def start_secure_stack(workdir: Path, descriptor: Path, policy: dict[str, Any] | None = None, *,
                       token_args: list[str] | None = None) -> SecureStack:
    """Consul (ACLs, the policy stored) and a gateway with TLS, tokens and mTLS, on free ports; it also serves an
    OpenAPI document (a path of no contract). token_args replace the local JWKS file's flags."""
    security = EdgeSecurity.create(workdir / "security")
    consul = start_consul(workdir, security)
    if policy is not None:
        put_policy(consul, policy)
    env = {**os.environ, "CONSUL_HTTP_TOKEN": security.tokens.secret(acl.CONTROLPLANE)}
    ports = GatewayPorts()
    document = workdir / "openapi.json"
    document.write_text('{"swagger": "2.0"}')
    docs = ["--openapi", str(document), "--docs-address", f"127.0.0.1:{ports.status}"]
    args = security.controlplane_args()
    if token_args is not None:
        args = [*args[:4], *token_args]
    gateway = Gateway(workdir / "logs", consul_address=consul.address, descriptor=descriptor, ports=ports,
                      route_timeout_s=TEST_ROUTE_TIMEOUT_S, env=env, extra_args=[*args, *docs])
    stack = SecureStack(consul, gateway, security)
    try:
        gateway.start()
    except BaseException:
        stack.close()
        raise
    return stack


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any
    raw: bytes


async def https(stack: SecureStack, method: str, path: str, *, token: str | None = None,
                headers: dict[str, str] | None = None, json_body: Any = None) -> Answer:
    """One REST call over TLS (a new connection), body decoded as JSON when it is JSON."""
    sent = dict(headers or {})
    if token is not None:
        sent["authorization"] = f"Bearer {token}"
    connector = aiohttp.TCPConnector(ssl=stack.security.ssl_context(alpn=("http/1.1",)))
    async with aiohttp.ClientSession(connector=connector) as session, session.request(
            method, stack.url + path, headers=sent, json=json_body,
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)) as response:
        raw = await response.read()
        decoded = json.loads(raw) if raw.startswith(b"{") else None
        return Answer(response.status, {k.lower(): v for k, v in response.headers.items()}, decoded, raw)


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)
