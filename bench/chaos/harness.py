"""A whole local mesh on free ports for the fault suite, its Consul/Envoy views, and the moves scenarios make on it."""

from __future__ import annotations

import asyncio
import secrets
import signal
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from protomesh._mesh.component import Component, get_json
from protomesh._mesh.rabbitmq import RabbitMQNode
from protomesh._mesh.runner import Mesh
from protomesh._mesh.topology import SERVICES, MeshPlan, MeshPorts
from protomesh._process import ManagedProcess, free_port, port_open, project_root

# A restarted instance must be passing in Consul and routed by Envoy within this long (a Python service
# starts in ~1-2 s on an idle 2-core machine, several times that when other suites share it).
SETTLE_TIMEOUT_S = 45.0
POLL_S = 0.05
# Envoy cluster counters worth reporting per scenario: they say why a request failed or how it was saved.
TROUBLE_WORDS = ("retry", "reset", "fail", "eject", "timeout", "destroy_with_active_rq", "503", "overflow",
                 "no_healthy")

Endpoint = tuple[str, int]


def chaos_plan(var_dir: Path) -> MeshPlan:
    """The default topology (users x2, orders, notifications) on free ports, with its own state and broker."""
    ports = MeshPorts(gateway=free_port(), envoy_admin=free_port(), xds=free_port(), consul=free_port(),
                      amqp=free_port())
    return MeshPlan(project_root(), ports, var_dir=var_dir, rabbitmq_node=f"protomesh-chaos-{secrets.token_hex(3)}")


class ChaosMesh:
    """`async with ChaosMesh(var_dir) as mesh:` a started mesh; scenarios kill and restart its parts."""

    def __init__(self, var_dir: Path) -> None:
        self.plan = chaos_plan(var_dir)
        self.mesh = Mesh(self.plan)
        self._replacements = 0
        self._brokers: list[RabbitMQNode] = []

    async def __aenter__(self) -> ChaosMesh:
        await self.mesh.__aenter__()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        try:
            await self.mesh.stop()
        finally:
            # The mesh's own node object remembers the pid it started and misses a node started again
            # after an outage (see the report): the object that started it stops it.
            for node in self._brokers:
                await asyncio.to_thread(node.stop)

    @property
    def gateway(self) -> str:
        return f"127.0.0.1:{self.plan.ports.gateway}"

    @property
    def logs(self) -> Path:
        return self.plan.state_dir / "logs"

    def component(self, name: str) -> Component:
        return self.mesh.component(name)

    def instances(self, service: str) -> list[Component]:
        """The service's instance components (`users-1`, `users-2`, or just `orders`)."""
        return [c for c in self.mesh.started if c.name == service or c.name.startswith(f"{service}-")]

    def broker(self) -> RabbitMQNode:
        """The mesh's RabbitMQ node (same name, ports and data), to stop and start it as an outage would."""
        node = RabbitMQNode(self.plan.state_dir / "rabbitmq", amqp_port=self.plan.ports.amqp,
                            name=self.plan.rabbitmq_node)
        self._brokers.append(node)
        return node

    # Views of Consul and Envoy (blocking HTTP on loopback: callers run them in a thread).

    def consul_instances(self, service: str, *, passing: bool) -> dict[str, Endpoint]:
        """instance id -> (address, port) of the service's instances in Consul (only passing ones, or all)."""
        query = "?passing=true" if passing else ""
        entries = get_json(f"http://{self.plan.consul_address}/v1/health/service/{service}{query}")
        if not isinstance(entries, list):
            return {}
        return {e["Service"]["ID"]: (e["Service"]["Address"], int(e["Service"]["Port"])) for e in entries}

    def agent_instances(self) -> int:
        """How many instances of the mesh's services the Consul agent lists (registered, any check state)."""
        listed = get_json(f"http://{self.plan.consul_address}/v1/agent/services")
        return sum(1 for s in listed.values() if s.get("Service") in SERVICES) if isinstance(listed, dict) else 0

    def envoy_hosts(self, service: str) -> set[Endpoint]:
        """The endpoints Envoy's cluster for the service holds (from its admin API)."""
        clusters = get_json(f"http://127.0.0.1:{self.plan.ports.envoy_admin}/clusters?format=json")
        statuses = clusters.get("cluster_statuses", []) if isinstance(clusters, dict) else []
        for cluster in statuses:
            if cluster.get("name") == service:
                return {(h["address"]["socket_address"]["address"], int(h["address"]["socket_address"]["port_value"]))
                        for h in cluster.get("host_statuses", [])}
        return set()

    def envoy_stat(self, name: str) -> int | None:
        stats = get_json(f"http://127.0.0.1:{self.plan.ports.envoy_admin}/stats?format=json&filter=^{name}$")
        for stat in stats.get("stats", []) if isinstance(stats, dict) else []:
            if stat.get("name") == name:
                return int(stat.get("value", 0))
        return None

    def envoy_counters(self) -> dict[str, int]:
        """Envoy's counters about upstream trouble (retries, resets, ejections) for the services' clusters."""
        stats = get_json(f"http://127.0.0.1:{self.plan.ports.envoy_admin}/stats?format=json&filter=^cluster.")
        counters = {}
        for stat in stats.get("stats", []) if isinstance(stats, dict) else []:
            name = str(stat.get("name", ""))
            cluster = name.split(".")[1] if name.count(".") > 1 else ""
            if cluster in SERVICES and any(word in name for word in TROUBLE_WORDS):
                counters[name.removeprefix("cluster.")] = int(stat.get("value", 0))
        return counters

    def settled_now(self, service: str, expected: int) -> bool:
        """Consul has exactly `expected` passing instances and Envoy routes to exactly those."""
        passing = set(self.consul_instances(service, passing=True).values())
        return len(passing) == expected and self.envoy_hosts(service) == passing

    async def settle(self, service: str, expected: int | None = None, *, timeout: float = SETTLE_TIMEOUT_S) -> float:
        """Wait until the service is settled (default: its planned replicas); returns the seconds it took."""
        count = self.plan.replicas[service] if expected is None else expected
        return await poll(lambda: self.settled_now(service, count), timeout=timeout,
                          what=f"{service}: {count} passing instance(s) in Consul, exactly those in Envoy")

    async def settle_all(self, *, timeout: float = SETTLE_TIMEOUT_S) -> float:
        began = time.monotonic()
        for service in SERVICES:
            await self.settle(service, timeout=timeout)
        return time.monotonic() - began

    async def start_instance(self, service: str, process: ManagedProcess, *, expected: int) -> float:
        """Start the process, wait for its new instance to pass in Consul and for Envoy to route to exactly the
        passing set; returns the seconds from start to settled."""
        before = await asyncio.to_thread(self.consul_instances, service, passing=False)
        began = time.monotonic()
        process.start()

        def new_instance_passing() -> bool:
            process.ensure_alive()
            return bool(set(self.consul_instances(service, passing=True)) - set(before))

        await poll(new_instance_passing, what=f"a new {process.name} instance passing in Consul")
        await self.settle(service, expected)
        return time.monotonic() - began

    async def stop_process(self, process: ManagedProcess, sig: signal.Signals) -> float:
        """Send sig and wait for the process to exit; returns the seconds it took."""
        began = time.monotonic()
        await asyncio.to_thread(process.stop, sig=sig, timeout=30.0)
        return time.monotonic() - began

    def replacement(self, component: Component) -> ManagedProcess:
        """A new process for the instance (same command and environment, its own log file), to start before
        the old one stops, as a rolling update with a surge instance does; adopt() it once the old is gone."""
        assert component.process is not None
        old = component.process
        self._replacements += 1
        return ManagedProcess(f"{component.name}.{self._replacements}", old.argv, log_dir=self.logs, env=old.env,
                              cwd=old.cwd)

    @staticmethod
    def adopt(component: Component, process: ManagedProcess) -> None:
        """The component's process is now `process`: the mesh stops it at the end."""
        component.process = process

    async def reseed_config(self) -> None:
        """Write config/ into Consul KV again, as `protomesh up` did (a restarted dev agent forgot it)."""
        await self.component("config").ready()

    def dead(self) -> list[str]:
        return self.mesh.dead()

    def xds_listening(self) -> bool:
        return port_open(self.plan.ports.xds)


async def poll(check: Callable[[], object], *, what: str, timeout: float = SETTLE_TIMEOUT_S) -> float:
    """Run a blocking check in a thread until it is true; returns the seconds it took, else TimeoutError."""
    began = time.monotonic()
    while not await asyncio.to_thread(check):
        if time.monotonic() - began > timeout:
            raise TimeoutError(f"{what}: not within {timeout:.0f}s")
        await asyncio.sleep(POLL_S)
    return time.monotonic() - began
