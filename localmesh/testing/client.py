"""Reaching a running mesh's gateway from a test the way a client would: TLS with the mesh's CA, and a token.

    client = GatewayClient.of(mesh)
    token = client.token("orders:write")                       # or client.token(all_scopes=True)
    async with client.session(token) as http:                  # aiohttp, https with the CA, bearer token
        async with http.get(client.url + "/v1/users/u1") as response: ...
    async with client.channel(token) as channel:               # grpc.aio over TLS, token on every call
        ...
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
import grpc.aio

from localmesh.credentials import contract_scopes
from localmesh.mesh import Mesh, MeshOptions, read_state
from localmesh.security import ISSUER_FOLDER, PKI_FOLDER
from localmesh.tokens import DevIssuer
from protomesh.identity import CA_FILE


@dataclass(frozen=True)
class GatewayClient:
    """The gateway of one mesh: its address, whether it serves TLS, its CA and the mesh's token issuer."""

    address: str
    tls: bool
    ca_file: Path | None          # the mesh's development CA (None: security is off)
    issuer: DevIssuer | None
    project: Path

    @classmethod
    def of(cls, mesh: Mesh) -> GatewayClient:
        """The gateway of a mesh this process runs."""
        gateway, security = mesh.ctx.gateway, mesh.ctx.security
        if gateway is None:
            raise RuntimeError("this mesh has no gateway")
        return cls(gateway.address, gateway.tls, security.ca_file if security is not None else None,
                   security.issuer if security is not None else None, mesh.topology.project)

    @classmethod
    def of_running(cls, project: Path, env: Mapping[str, str]) -> GatewayClient:
        """The gateway of a mesh `protomesh up --detach` runs with this environment (from its state folder)."""
        state_dir = MeshOptions.from_env(project, env).state_dir
        state = read_state(state_dir) or {}
        ports = state.get("gateway")
        if not isinstance(ports, dict):
            raise RuntimeError(f"no mesh with a gateway runs from {state_dir}")
        ca = state_dir / PKI_FOLDER / CA_FILE
        secured = bool(state.get("secured"))
        issuer = DevIssuer.open(state_dir / ISSUER_FOLDER) if secured else None
        return cls(f"127.0.0.1:{ports['listen']}", bool(state.get("gateway_tls")), ca if secured else None, issuer,
                   project)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.address}"

    def token(self, *scopes: str, subject: str = "tester", all_scopes: bool = False, ttl_s: int = 3600) -> str:
        """A token from the mesh's development issuer ("" when the mesh runs without security)."""
        if self.issuer is None:
            return ""
        granted = [*scopes, *(contract_scopes(self.project) if all_scopes else [])]
        return self.issuer.token(subject, granted, ttl_s=ttl_s)

    def headers(self, token: str | None) -> dict[str, str]:
        return {"authorization": f"Bearer {token}"} if token else {}

    def ssl_context(self) -> ssl.SSLContext | None:
        """What verifies the gateway's certificate (None for a plaintext gateway)."""
        if not self.tls:
            return None
        return ssl.create_default_context(cafile=str(self.ca_file))

    def session(self, token: str | None = None, *, limit: int = 100) -> aiohttp.ClientSession:
        """An aiohttp session to the gateway (at most `limit` connections): the CA trusted, the token (if any) on
        every request."""
        context = self.ssl_context()
        connector = aiohttp.TCPConnector(ssl=context, limit=limit) if context is not None else \
            aiohttp.TCPConnector(limit=limit)
        return aiohttp.ClientSession(connector=connector, headers=self.headers(token))

    def channel_credentials(self, token: str | None = None) -> grpc.ChannelCredentials:
        assert self.ca_file is not None, "a plaintext gateway takes an insecure channel"
        tls = grpc.ssl_channel_credentials(self.ca_file.read_bytes())
        if not token:
            return tls
        return grpc.composite_channel_credentials(tls, grpc.access_token_call_credentials(token))

    def channel(self, token: str | None = None) -> grpc.aio.Channel:
        """A grpc.aio channel to the gateway: TLS with the CA and the token on every call (a plaintext gateway
        gets an insecure channel; send `metadata=client.metadata(token)` on each call, as call credentials need
        TLS)."""
        if not self.tls:
            return grpc.aio.insecure_channel(self.address)
        return grpc.aio.secure_channel(self.address, self.channel_credentials(token))

    def metadata(self, token: str | None) -> tuple[tuple[str, str], ...]:
        return tuple(self.headers(token).items())
