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
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
import grpc.aio

from localmesh.credentials import contract_scopes
from localmesh.mesh import Mesh
from localmesh.security import MeshSecurity


@dataclass(frozen=True)
class GatewayClient:
    """The gateway of one mesh: its address, whether it serves TLS, its CA and the mesh's token issuer."""

    address: str
    tls: bool
    security: MeshSecurity | None
    project: Path

    @classmethod
    def of(cls, mesh: Mesh) -> GatewayClient:
        gateway = mesh.ctx.gateway
        if gateway is None:
            raise RuntimeError("this mesh has no gateway")
        return cls(gateway.address, gateway.tls, mesh.ctx.security, mesh.topology.project)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.address}"

    @property
    def ca_file(self) -> Path | None:
        return self.security.ca_file if self.security is not None else None

    def token(self, *scopes: str, subject: str = "tester", all_scopes: bool = False, ttl_s: int = 3600) -> str:
        """A token from the mesh's development issuer ("" when the mesh runs without security)."""
        if self.security is None:
            return ""
        granted = [*scopes, *(contract_scopes(self.project) if all_scopes else [])]
        return self.security.issuer.token(subject, granted, ttl_s=ttl_s)

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
