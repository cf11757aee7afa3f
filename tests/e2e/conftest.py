"""One whole local mesh per test module (Consul, RabbitMQ, control plane, Envoy, every service) on free ports."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from protomesh._mesh.rabbitmq import RabbitMQNode
from protomesh._mesh.runner import Mesh
from protomesh._mesh.topology import MeshPlan, MeshPorts
from protomesh.testing import free_port, project_root


def mesh_plan(var_dir: Path) -> MeshPlan:
    """The default topology on free ports, with its own state folder and broker node."""
    ports = MeshPorts(gateway=free_port(), envoy_admin=free_port(), xds=free_port(), consul=free_port(),
                      amqp=free_port())
    return MeshPlan(project_root(), ports, var_dir=var_dir, rabbitmq_node=f"protomesh-e2e-{secrets.token_hex(3)}")


@dataclass
class RunningMesh:
    """A started mesh and a REST client for its gateway."""

    mesh: Mesh
    http: aiohttp.ClientSession

    @property
    def plan(self) -> MeshPlan:
        return self.mesh.plan

    @property
    def gateway(self) -> str:
        return f"127.0.0.1:{self.plan.ports.gateway}"

    def broker(self) -> RabbitMQNode:
        """The mesh's broker node, to stop and start it as an outage would."""
        plan = self.plan
        return RabbitMQNode(plan.state_dir / "rabbitmq", amqp_port=plan.ports.amqp, name=plan.rabbitmq_node)

    async def call(self, method: str, path: str, body: object | None = None) -> tuple[int, dict[str, object]]:
        """One REST call through the gateway: (HTTP status, decoded JSON body)."""
        async with self.http.request(method, f"http://{self.gateway}{path}", json=body) as response:
            return response.status, await response.json(content_type=None)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def running_mesh(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningMesh]:
    async with Mesh(mesh_plan(tmp_path_factory.mktemp("mesh"))) as mesh, aiohttp.ClientSession() as http:
        yield RunningMesh(mesh, http)
