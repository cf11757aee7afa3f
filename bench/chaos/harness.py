"""A whole self-healing local mesh on free ports for the fault suite, and its Consul and Envoy views."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from localmesh.components import get_json
from localmesh.supervisor import Supervised
from localmesh.testing import GatewayClient, isolated_mesh, port_open, project_root

# A restarted instance must be passing in Consul and routed by Envoy within this long (a Python service
# starts in ~1-2 s on an idle 2-core machine, several times that when other suites share it).
SETTLE_TIMEOUT_S = 45.0
POLL_S = 0.05
# Envoy cluster counters worth reporting per scenario: they say why a request failed or how it was saved.
TROUBLE_WORDS = ("retry", "reset", "fail", "eject", "timeout", "destroy_with_active_rq", "503", "overflow",
                 "no_healthy")

Endpoint = tuple[str, int]


class ChaosMesh:
    """`async with ChaosMesh(var_dir) as mesh:` a started, self-healing mesh; scenarios kill and restart its parts."""

    def __init__(self, var_dir: Path) -> None:
        self.mesh = isolated_mesh(project_root(), var_dir)
        self.services = [spec.name for spec in self.mesh.topology.services]

    async def __aenter__(self) -> ChaosMesh:
        await self.mesh.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.mesh.stop()

    @property
    def gateway(self) -> str:
        assert self.mesh.ctx.gateway is not None
        return self.mesh.ctx.gateway.address

    @property
    def client(self) -> GatewayClient:
        """How the load reaches the gateway: TLS with the mesh's CA, tokens from its issuer."""
        return GatewayClient.of(self.mesh)

    @property
    def logs(self) -> Path:
        return self.mesh.state_dir / "logs"

    @property
    def consul_address(self) -> str:
        return self.mesh.ctx.consul_address

    @property
    def consul_token(self) -> str:
        """The runner's token: with ACLs on (default deny), what the views below read the catalog with."""
        return self.mesh.ctx.consul_token

    @property
    def admin_port(self) -> int:
        assert self.mesh.ctx.gateway is not None
        return self.mesh.ctx.gateway.ports.admin

    def replicas(self, service: str) -> int:
        return self.mesh.topology.specs[service].replicas

    def component(self, name: str) -> Supervised:
        """A single-instance component's process (`consul`, `controlplane`, `rabbitmq`)."""
        return self.mesh.instance(name)

    def instances(self, service: str) -> list[Supervised]:
        """The service's supervised instances (`users-1`, `users-2`)."""
        return list(self.mesh.components[service].instances)

    # Views of Consul and Envoy (blocking HTTP on loopback: callers run them in a thread).

    def consul_instances(self, service: str, *, passing: bool) -> dict[str, Endpoint]:
        """instance id -> (address, port) of the service's instances in Consul (only passing ones, or all)."""
        query = "?passing=true" if passing else ""
        entries = get_json(f"http://{self.consul_address}/v1/health/service/{service}{query}", self.consul_token)
        if not isinstance(entries, list):
            return {}
        return {e["Service"]["ID"]: (e["Service"]["Address"], int(e["Service"]["Port"])) for e in entries}

    def agent_instances(self) -> int:
        """How many instances of the mesh's services the Consul agent lists (registered, any check state)."""
        listed = get_json(f"http://{self.consul_address}/v1/agent/services", self.consul_token)
        return sum(1 for s in listed.values() if s.get("Service") in self.services) if isinstance(listed, dict) else 0

    def envoy_hosts(self, service: str) -> set[Endpoint]:
        """The endpoints Envoy's cluster for the service holds (from its admin API)."""
        clusters = get_json(f"http://127.0.0.1:{self.admin_port}/clusters?format=json")
        statuses = clusters.get("cluster_statuses", []) if isinstance(clusters, dict) else []
        for cluster in statuses:
            if cluster.get("name") == service:
                return {(h["address"]["socket_address"]["address"], int(h["address"]["socket_address"]["port_value"]))
                        for h in cluster.get("host_statuses", [])}
        return set()

    def envoy_stat(self, name: str) -> int | None:
        stats = get_json(f"http://127.0.0.1:{self.admin_port}/stats?format=json&filter=^{name}$")
        for stat in stats.get("stats", []) if isinstance(stats, dict) else []:
            if stat.get("name") == name:
                return int(stat.get("value", 0))
        return None

    def envoy_counters(self) -> dict[str, int]:
        """Envoy's counters about upstream trouble (retries, resets, ejections) for the services' clusters."""
        stats = get_json(f"http://127.0.0.1:{self.admin_port}/stats?format=json&filter=^cluster.")
        counters = {}
        for stat in stats.get("stats", []) if isinstance(stats, dict) else []:
            name = str(stat.get("name", ""))
            cluster = name.split(".")[1] if name.count(".") > 1 else ""
            if cluster in self.services and any(word in name for word in TROUBLE_WORDS):
                counters[name.removeprefix("cluster.")] = int(stat.get("value", 0))
        return counters

    def settled_now(self, service: str, expected: int) -> bool:
        """Consul has exactly `expected` passing instances and Envoy routes to exactly those."""
        passing = set(self.consul_instances(service, passing=True).values())
        return len(passing) == expected and self.envoy_hosts(service) == passing

    async def settle(self, service: str, expected: int | None = None, *, timeout: float = SETTLE_TIMEOUT_S) -> float:
        """Wait until the service is settled (default: its planned replicas); returns the seconds it took."""
        count = self.replicas(service) if expected is None else expected
        return await poll(lambda: self.settled_now(service, count), timeout=timeout,
                          what=f"{service}: {count} passing instance(s) in Consul, exactly those in Envoy")

    async def settle_all(self, *, timeout: float = SETTLE_TIMEOUT_S) -> float:
        began = time.monotonic()
        for service in self.services:
            await self.settle(service, timeout=timeout)
        return time.monotonic() - began

    def dead(self) -> list[str]:
        """Instances the supervisor gave up on (a crash loop) or that exited under a no-restart policy."""
        return [i.name for c in self.mesh.components.values() for i in c.instances
                if i.status.state in ("failed", "exited")]

    def xds_listening(self) -> bool:
        assert self.mesh.ctx.gateway is not None
        return port_open(self.mesh.ctx.gateway.ports.xds)


async def poll(check: Callable[[], object], *, what: str, timeout: float = SETTLE_TIMEOUT_S) -> float:
    """Run a blocking check in a thread until it is true; returns the seconds it took, else TimeoutError."""
    began = time.monotonic()
    while not await asyncio.to_thread(check):
        if time.monotonic() - began > timeout:
            raise TimeoutError(f"{what}: not within {timeout:.0f}s")
        await asyncio.sleep(POLL_S)
    return time.monotonic() - began
