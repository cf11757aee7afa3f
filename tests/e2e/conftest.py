"""One whole local mesh per test module (Consul, RabbitMQ, control plane, Envoy, every service) on free ports."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import grpc.aio
import pytest
import pytest_asyncio

from localmesh.testing import GatewayClient, Mesh, isolated_mesh, project_root


@dataclass
class RunningMesh:
    """A started mesh, secured as `make up` runs it, and a REST client for its gateway (TLS with the mesh's
    CA, a token holding every scope of the contracts: these tests are about what the services do)."""

    mesh: Mesh
    http: aiohttp.ClientSession
    client: GatewayClient
    token: str

    @property
    def gateway(self) -> str:
        return self.client.address

    @property
    def url(self) -> str:
        """The gateway with its scheme: https://127.0.0.1:PORT."""
        return self.client.url

    def channel(self) -> grpc.aio.Channel:
        """A gRPC channel to the gateway: TLS with the mesh's CA, the token on every call."""
        return self.client.channel(self.token)

    @property
    def amqp_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.mesh.topology.host_port('rabbitmq', 5672)}/"

    async def call(self, method: str, path: str, body: object | None = None) -> tuple[int, dict[str, object]]:
        """One REST call through the gateway: (HTTP status, decoded JSON body)."""
        async with self.http.request(method, f"{self.url}{path}", json=body) as response:
            return response.status, await response.json(content_type=None)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def running_mesh(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningMesh]:
    async with isolated_mesh(project_root(), tmp_path_factory.mktemp("mesh")) as mesh:
        client = GatewayClient.of(mesh)
        token = client.token(subject="e2e", all_scopes=True)
        async with client.session(token) as http:
            yield RunningMesh(mesh, http, client, token)
