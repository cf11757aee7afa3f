"""Which components the local mesh runs, as start groups: a group starts once the one before is healthy."""

from __future__ import annotations

import asyncio
import os
import sys

from protomesh._mesh.component import Component, get_json, polled
from protomesh._mesh.consul import ConsulAgent
from protomesh._mesh.rabbitmq import RabbitMQNode
from protomesh._mesh.topology import EVENT_SERVICES, MeshPlan
from protomesh._process import ManagedProcess, find_binary, port_open


def consul(plan: MeshPlan) -> Component:
    agent = ConsulAgent(plan.state_dir / "logs", http_port=plan.ports.consul)
    process = ManagedProcess("consul", agent.argv(), log_dir=plan.state_dir / "logs")
    leader = polled(lambda: bool(get_json(f"http://{plan.consul_address}/v1/status/leader")))
    return Component("consul", process, leader, url=f"http://{plan.consul_address}/ui/")


def rabbitmq(plan: MeshPlan) -> Component:
    """A broker already listening on the AMQP port is used as it is; else the mesh starts its own node."""
    url = f"amqp://127.0.0.1:{plan.ports.amqp}"
    if port_open(plan.ports.amqp):
        return Component("rabbitmq", None, polled(lambda: True), url=f"{url} (already running)")
    node = RabbitMQNode(plan.state_dir / "rabbitmq", amqp_port=plan.ports.amqp, name=plan.rabbitmq_node)

    async def start_node() -> bool:
        if not node.running():
            await asyncio.to_thread(node.start)
        return True

    async def stop_node() -> None:
        await asyncio.to_thread(node.stop)

    # RabbitMQ's boot (~8 s) overlaps the gateway and users; the first consumer waits for it.
    return Component("rabbitmq", None, start_node, url=url, on_stop=stop_node, detached_pid=node.pid,
                     needed_by=EVENT_SERVICES[0])


def controlplane(plan: MeshPlan) -> Component:
    argv = [sys.executable, "-m", "gateway_envoy.controlplane", "--consul", plan.consul_address,
            "--xds-port", str(plan.ports.xds), "--listen", f"127.0.0.1:{plan.ports.gateway}",
            "--descriptor", str(plan.descriptor)]
    process = ManagedProcess("controlplane", argv, log_dir=plan.state_dir / "logs", cwd=plan.root)
    return Component("controlplane", process, polled(lambda: port_open(plan.ports.xds)),
                     url=f"xDS 127.0.0.1:{plan.ports.xds}")


def gateway(plan: MeshPlan) -> Component:
    from gateway_envoy.bootstrap import render_bootstrap

    config = plan.state_dir / "envoy.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(render_bootstrap(admin_port=plan.ports.envoy_admin, xds_port=plan.ports.xds))
    argv = [find_binary("envoy"), "-c", str(config), "--use-dynamic-base-id", "--log-level", "warn"]
    process = ManagedProcess("gateway", argv, log_dir=plan.state_dir / "logs")
    admin = f"http://127.0.0.1:{plan.ports.envoy_admin}"
    listening = polled(lambda: port_open(plan.ports.gateway))
    return Component("gateway", process, listening,
                     url=f"http://127.0.0.1:{plan.ports.gateway} (REST + gRPC; admin {admin})")


def gateway_hosts(plan: MeshPlan, service: str) -> int:
    """How many endpoints of the service's cluster Envoy has (from its admin API)."""
    clusters = get_json(f"http://127.0.0.1:{plan.ports.envoy_admin}/clusters?format=json")
    if not isinstance(clusters, dict):
        return 0
    for cluster in clusters.get("cluster_statuses", []):
        if cluster.get("name") == service:
            return len(cluster.get("host_statuses", []))
    return 0


def service_instances(plan: MeshPlan, service: str) -> list[Component]:
    """The instances of one service; healthy once Consul lists all as passing and the gateway routes to them."""
    replicas = plan.replicas[service]
    env = {**os.environ, **plan.service_env(service)}
    health = f"http://{plan.consul_address}/v1/health/service/{service}?passing=true"

    def all_passing() -> bool:
        entries = get_json(health)
        passing = isinstance(entries, list) and len(entries) >= replicas
        return passing and gateway_hosts(plan, service) >= replicas

    components = []
    for index in range(replicas):
        name = service if replicas == 1 else f"{service}-{index + 1}"
        process = ManagedProcess(name, [sys.executable, "-m", "app"], log_dir=plan.state_dir / "logs",
                                 env=env, cwd=plan.root / "services" / service)
        components.append(Component(name, process, polled(all_passing), url=f"consul service '{service}'"))
    return components


def seed(plan: MeshPlan) -> Component:
    """Not a process: seeds config/ into Consul KV before the services read it."""
    from protomesh._config import seed_config
    from protomesh._settings import ConsulSettings
    from protomesh.consul import ConsulClient

    async def seeded() -> bool:
        async with ConsulClient.from_settings(ConsulSettings(address=plan.consul_address)) as client:
            await seed_config(client, plan.root / "config")
        return True

    source = plan.shown(plan.root / "config")
    return Component("config", None, seeded, url=f"Consul KV protomesh/config/ (from {source})")


def mesh_components(plan: MeshPlan) -> list[list[Component]]:
    """Start groups in order: infrastructure, then config and the gateway, users, then the event services."""
    groups = [[consul(plan), rabbitmq(plan)], [seed(plan), controlplane(plan), gateway(plan)]]
    groups.append(service_instances(plan, "users"))
    groups.append([instance for service in EVENT_SERVICES for instance in service_instances(plan, service)])
    return groups
