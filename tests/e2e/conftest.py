"""One whole local mesh per test module (Consul, RabbitMQ, control plane, Envoy, every service) on free ports."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
import pytest_asyncio

from localmesh.testing import Mesh, isolated_mesh, project_root


@dataclass
class RunningMesh:
    """A started mesh and a REST client for its gateway."""

    mesh: Mesh
    http: aiohttp.ClientSession

    @property
    def gateway(self) -> str:
        assert self.mesh.ctx.gateway is not None
        return self.mesh.ctx.gateway.address

    @property
    def amqp_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.mesh.topology.host_port('rabbitmq', 5672)}/"

    async def call(self, method: str, path: str, body: object | None = None) -> tuple[int, dict[str, object]]:
        """One REST call through the gateway: (HTTP status, decoded JSON body)."""
        async with self.http.request(method, f"http://{self.gateway}{path}", json=body) as response:
            return response.status, await response.json(content_type=None)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def running_mesh(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningMesh]:
    async with isolated_mesh(project_root(), tmp_path_factory.mktemp("mesh")) as mesh, \
            aiohttp.ClientSession() as http:
        yield RunningMesh(mesh, http)
