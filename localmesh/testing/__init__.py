"""The real-component test kit: Consul, RabbitMQ, the gateway and whole meshes on free loopback ports.

Never stand-ins: a missing program fails the test with MissingComponentError naming `make setup`.
The pytest plugin (`localmesh.testing.plugin`, loaded through the `pytest11` entry point) adds the
`consul_agent` and `rabbitmq_node` fixtures.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from localmesh.compose import variable_defaults
from localmesh.consul import ConsulAgent
from localmesh.gateway import Gateway, GatewayPorts
from localmesh.mesh import Mesh, MeshOptions
from localmesh.process import (
    DEFAULT_READY_TIMEOUT_S,
    TOPOLOGY_FILE,
    ManagedProcess,
    MissingComponentError,
    find_binary,
    free_port,
    port_open,
    project_root,
    wait_until,
)
from localmesh.rabbitmq import RabbitMQNode, find_rabbitmq_script
from localmesh.testing.client import GatewayClient
from localmesh.topology import Topology

# Tests use a short route timeout so that the 504 case (and a frozen instance) costs one second, not 15.
TEST_ROUTE_TIMEOUT_S = 1.0



def isolated_env(project: Path, state_dir: Path, *, base: Mapping[str, str] | None = None,
                 overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment for a mesh beside anyone else's: a free port for every `*_PORT` knob of the project's
    docker-compose.yml, its own state folder and its own RabbitMQ node name."""
    ports = {name: str(free_port()) for name in variable_defaults(project / TOPOLOGY_FILE) if name.endswith("_PORT")}
    return {**(os.environ if base is None else base), **ports, "PROTOMESH_VAR_DIR": str(state_dir),
            "PROTOMESH_RABBITMQ_NODE": f"protomesh-test-{secrets.token_hex(3)}", **(overrides or {})}


def isolated_mesh(project: Path, state_dir: Path, *, overrides: Mapping[str, str] | None = None) -> Mesh:
    """The project's whole mesh (not started) on free ports with its own state: `async with isolated_mesh(...)`."""
    env = isolated_env(project, state_dir, overrides=overrides)
    return Mesh(Topology.load(project, env), MeshOptions.from_env(project, env), environ=env)


__all__ = [
    "DEFAULT_READY_TIMEOUT_S",
    "TEST_ROUTE_TIMEOUT_S",
    "ConsulAgent",
    "Gateway",
    "GatewayClient",
    "GatewayPorts",
    "ManagedProcess",
    "Mesh",
    "MissingComponentError",
    "RabbitMQNode",
    "find_binary",
    "find_rabbitmq_script",
    "free_port",
    "isolated_env",
    "isolated_mesh",
    "port_open",
    "project_root",
    "wait_until",
]
