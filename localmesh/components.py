"""How each kind of topology entry runs as local processes: Consul, RabbitMQ, the gateway, protomesh services."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localmesh import acl
from localmesh.consul import ConsulAgent
from localmesh.gateway import Gateway, GatewayPorts, cluster_hosts
from localmesh.process import ManagedProcess, free_port, port_open
from localmesh.rabbitmq import RabbitMQNode
from localmesh.security import MeshSecurity
from localmesh.supervisor import Supervised
from localmesh.topology import SERVICE_KIND, SERVICES_DIR, Spec, Topology

# Container ports the runner reads the host side of (the official images' and the project's defaults).
CONSUL_HTTP = 8500
AMQP = 5672
ENVOY_ADMIN = 9901
XDS = 18000
GATEWAY_LISTEN = 8080
# Variables of the runner itself: never passed on to the processes it starts.
RUNNER_VARIABLES = ("PROTOMESH_VAR_DIR", "PROTOMESH_RABBITMQ_NODE")
DESCRIPTOR = Path("gen") / "descriptors" / "protomesh.binpb"
GENERATED_PYTHON = Path("gen") / "python"
# What `make openapi` writes and installs: the gateway serves them at /openapi.json and /docs.
OPENAPI_DOCUMENT = Path("gen") / "openapi" / "protomesh.swagger.json"
SWAGGER_UI_ASSETS = Path(".tools") / "node" / "node_modules" / "swagger-ui-dist"


@dataclass
class Component:
    """One entry of the topology running locally: a supervised process per instance, and what to show of it."""

    spec: Spec
    instances: list[Supervised]
    url: str
    digest: str                      # what it was built from; reconcile restarts it when this changes
    extra: dict[str, object] = field(default_factory=dict)


@dataclass
class MeshContext:
    """What every component factory needs: the topology, where state goes, and the environment it inherits."""

    topology: Topology
    state_dir: Path
    rabbitmq_node: str
    environ: Mapping[str, str]
    on_change: Callable[[], None]
    gateway: Gateway | None = None
    # None when the topology turns security off (`x-protomesh.security.enabled: false`).
    security: MeshSecurity | None = None

    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"

    @property
    def consul_token(self) -> str:
        """The runner's own Consul token ("" when ACLs are off)."""
        return self.security.token(acl.RUNNER) if self.security is not None else ""

    @property
    def consul_address(self) -> str:
        return f"127.0.0.1:{self.topology.host_port('consul', CONSUL_HTTP)}"

    @property
    def envoy_admin_port(self) -> int | None:
        spec = self.topology.of_kind("gateway")
        return spec.ports.get(ENVOY_ADMIN) if spec is not None else None

    def environment(self, spec: Spec) -> dict[str, str]:
        """The inherited environment without the mesh's own knobs, plus the spec's (made local) environment."""
        knobs = set(self.topology.variables) | set(RUNNER_VARIABLES)
        inherited = {key: value for key, value in self.environ.items() if key not in knobs}
        return {**inherited, **self.topology.local_environment(spec, state_dir=self.state_dir)}

    def shared_gateway(self) -> Gateway:
        """The control plane and Envoy share ports and a bootstrap: one Gateway serves both components."""
        if self.gateway is None:
            topology = self.topology
            controlplane = topology.of_kind("controlplane")
            env = self.environment(controlplane) if controlplane is not None else dict(self.environ)
            secured = ["--plaintext"]  # security off: a plaintext gateway that checks no token
            if self.security is not None:
                env["CONSUL_HTTP_TOKEN"] = self.security.token(acl.CONTROLPLANE)
                secured = self.security.gateway_arguments()
            ports = GatewayPorts(listen=topology.host_port("gateway", _gateway_port(controlplane)),
                                 admin=topology.host_port("gateway", ENVOY_ADMIN),
                                 xds=topology.host_port("controlplane", XDS), status=free_port())
            # The services the topology declares are expected: until one passes, its API answers UNAVAILABLE.
            expect = ["--expect", ",".join(spec.name for spec in topology.services)]
            # The control plane's status server also serves the API docs, which Envoy routes to it on loopback.
            docs = ["--openapi", str(topology.project / OPENAPI_DOCUMENT),
                    "--docs-assets", str(topology.project / SWAGGER_UI_ASSETS),
                    "--docs-address", f"127.0.0.1:{ports.status}"]
            self.gateway = Gateway(self.logs, consul_address=self.consul_address,
                                   descriptor=topology.project / DESCRIPTOR, ports=ports, env=env,
                                   extra_args=[*expect, *docs, *secured], project=topology.project,
                                   tls=self.security is not None and not self.security.spec.plaintext_gateway)
        return self.gateway


def _gateway_port(controlplane: Spec | None) -> int:
    """The container port the control plane opens the gateway listener on (its PROTOMESH_GATEWAY_PORT)."""
    raw = controlplane.environment.get("PROTOMESH_GATEWAY_PORT", "") if controlplane is not None else ""
    return int(raw) if raw.isdigit() else GATEWAY_LISTEN


def digest(*parts: object) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(json.dumps(part, sort_keys=True, default=str).encode())
    return hasher.hexdigest()[:16]


def source_digest(folder: Path) -> str:
    """The content of a service's code (what an image build would copy): a change restarts it on reconcile."""
    hasher = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        hasher.update(path.relative_to(folder).as_posix().encode())
        hasher.update(path.read_bytes())
    return hasher.hexdigest()[:16]


def polled(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    """A blocking check (HTTP on loopback, a port) run off the event loop."""

    async def ready() -> bool:
        return await asyncio.to_thread(check)

    return ready


def get_json(url: str, token: str = "") -> object:
    """GET url (with a Consul token when given) and decode its JSON body; None when it cannot be reached or read."""
    request = urllib.request.Request(url, headers={"X-Consul-Token": token} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=1) as response:
            return json.loads(response.read() or b"null")
    except (OSError, ValueError):
        return None


def supervised(ctx: MeshContext, spec: Spec, name: str, process: ManagedProcess, ready: Callable[[], Awaitable[bool]],
               *, on_exit: Callable[[int], Awaitable[None]] | None = None) -> Supervised:
    return Supervised(name, process, ready=ready, restart=spec.restart, on_change=ctx.on_change, on_exit=on_exit,
                      pid=lambda: process.pid if process.proc is not None else None)


def consul(ctx: MeshContext, spec: Spec) -> Component:
    """A dev agent on the published HTTP port (ACLs default deny unless security is off); each (re)start gets its
    tokens, intentions, the security policy and config/ again before it counts as ready."""
    security = ctx.security.consul_agent() if ctx.security is not None else None
    agent = ConsulAgent(ctx.logs, http_port=spec.ports.get(CONSUL_HTTP) or free_port(), project=ctx.topology.project,
                        security=security)
    process = ManagedProcess(spec.instances[0], agent.argv(), log_dir=ctx.logs, env=ctx.environment(spec))
    seeded: dict[str, int] = {}

    async def ready() -> bool:
        if not await asyncio.to_thread(lambda: bool(get_json(f"http://{agent.address}/v1/status/leader"))):
            return False
        if seeded.get("pid") != process.pid:  # a restarted dev agent forgot everything: set it up again
            try:
                await configure_consul(ctx)
            except acl.AclNotReady:
                return False
            seeded["pid"] = process.pid
        return True

    return Component(spec, [supervised(ctx, spec, spec.instances[0], process, ready)],
                     f"http://{agent.address}/ui/", digest(spec))


async def configure_consul(ctx: MeshContext) -> None:
    """What the mesh keeps in Consul: ACL tokens, intentions and the security policy, then config/."""
    if ctx.security is not None:
        await ctx.security.configure_consul(ctx.consul_address, [spec.name for spec in ctx.topology.services])
    await seed_config(ctx)


async def seed_config(ctx: MeshContext) -> int:
    """Write config/ into Consul KV, where services read (and follow) their settings."""
    from protomesh import ConsulSettings, seed_config
    from protomesh.consul import ConsulClient

    folder = ctx.topology.project / "config"
    if not folder.is_dir():
        return 0
    async with ConsulClient.from_settings(ConsulSettings(address=ctx.consul_address, token=ctx.consul_token)) as client:
        return await seed_config(client, folder)


class _BrokerNode:
    """A detached RabbitMQ node as a supervised process (the broker daemonizes, so it is not our child)."""

    def __init__(self, node: RabbitMQNode | None) -> None:
        self.node = node

    def start(self) -> None:
        if self.node is not None and not self.node.running():
            self.node.start()

    def exit_code(self) -> int | None:
        return None if self.node is None or self.node.running() else 1

    def stop(self) -> int | None:
        if self.node is not None:
            self.node.stop()
        return 0

    def log_tail(self, lines: int = 40) -> str:
        return self.node.log_tail(lines) if self.node is not None else ""


def rabbitmq(ctx: MeshContext, spec: Spec) -> Component:
    """The mesh's own node on the published AMQP port, or a broker already listening there, used as it is."""
    port = spec.ports.get(AMQP) or free_port()
    external = port_open(port)
    node = None if external else RabbitMQNode(ctx.state_dir / "rabbitmq", amqp_port=port, name=ctx.rabbitmq_node)
    broker = _BrokerNode(node)

    async def ready() -> bool:
        return external or await asyncio.to_thread(lambda: port_open(port))

    instance = Supervised(spec.instances[0], broker, ready=ready, restart=spec.restart, on_change=ctx.on_change,
                          pid=lambda: node.pid() if node is not None else None)
    url = f"amqp://127.0.0.1:{port}" + (" (already running)" if external else "")
    return Component(spec, [instance], url, digest(spec), {"node": node})


def controlplane(ctx: MeshContext, spec: Spec) -> Component:
    gateway = ctx.shared_gateway()
    ready = polled(gateway.control_plane_ready)
    return Component(spec, [supervised(ctx, spec, spec.instances[0], gateway.control_plane, ready)],
                     f"xDS 127.0.0.1:{gateway.ports.xds}", digest(spec))


def envoy(ctx: MeshContext, spec: Spec) -> Component:
    gateway = ctx.shared_gateway()
    gateway.write_bootstrap()
    instance = supervised(ctx, spec, spec.instances[0], gateway.envoy, polled(gateway.listening))
    url = f"{gateway.url} (REST + gRPC; admin http://127.0.0.1:{gateway.ports.admin})"
    return Component(spec, [instance], url, digest(spec))


def service(ctx: MeshContext, spec: Spec) -> Component:
    """`python -m app` in services/<name>, one process per replica, each registered in Consul under its own id."""
    project = ctx.topology.project
    folder = project / SERVICES_DIR / spec.source
    instances = [service_instance(ctx, spec, folder, name) for name in spec.instances]
    return Component(spec, instances, f"consul service '{spec.name}'",
                     digest(spec, source_digest(folder / "app")))


def service_instance(ctx: MeshContext, spec: Spec, folder: Path, name: str) -> Supervised:
    project = ctx.topology.project
    env = ctx.environment(spec)
    env.update({
        "PROTOMESH_CONFIG_DIR": str(project / "config"),
        "PROTOMESH_STATE_DIR": str(ctx.state_dir),
        f"{spec.settings_prefix}SERVER__INSTANCE_ID": name,
        **(ctx.security.service_environment(spec.settings_prefix, spec.name, name) if ctx.security is not None
           else {f"{spec.settings_prefix}SECURITY__MODE": "off"}),
        # The project's generated stubs come first, so a project's own contracts win over any installed ones.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(project / GENERATED_PYTHON), env.get("PYTHONPATH")])),
    })
    process = ManagedProcess(name, [sys.executable, "-m", "app"], log_dir=ctx.logs, env=env, cwd=folder)

    async def ready() -> bool:
        return await asyncio.to_thread(instance_routed, ctx, spec.name, name)

    async def deregister(_code: int) -> None:
        # A killed instance cannot deregister itself: its registration would linger, critical, for a minute.
        await asyncio.to_thread(_deregister, ctx.consul_address, name, ctx.consul_token)

    return supervised(ctx, spec, name, process, ready, on_exit=deregister)


def instance_routed(ctx: MeshContext, service_name: str, instance_id: str) -> bool:
    """Whether Consul lists the instance as passing and (when the mesh has a gateway) Envoy routes to it."""
    entries = get_json(f"http://{ctx.consul_address}/v1/health/service/{service_name}?passing=true", ctx.consul_token)
    target = next((f"{e['Service']['Address']}:{e['Service']['Port']}" for e in listed(entries)
                   if e["Service"]["ID"] == instance_id), None)
    if target is None:
        return False
    admin = ctx.envoy_admin_port
    if admin is None:
        return True
    try:
        return target in cluster_hosts(admin, service_name)
    except (OSError, ValueError):
        return False


def listed(entries: object) -> list[dict[str, Any]]:
    """A Consul list answer's entries (none when it was not a list: Consul down or restarting)."""
    return [entry for entry in entries if isinstance(entry, dict)] if isinstance(entries, list) else []


def _deregister(consul_address: str, instance_id: str, token: str) -> None:
    request = urllib.request.Request(f"http://{consul_address}/v1/agent/service/deregister/{instance_id}",
                                     method="PUT", headers={"X-Consul-Token": token} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=2):
            pass
    except OSError:
        pass  # Consul down or the instance already gone: nothing left to clean up


def issuer(_ctx: MeshContext, spec: Spec) -> Component:
    """The container stack's issuer has no process here: the runner itself issues (MeshSecurity), so it is ready."""
    return Component(spec, [], "", digest(spec))


FACTORIES: dict[str, Callable[[MeshContext, Spec], Component]] = {
    "consul": consul, "rabbitmq": rabbitmq, "controlplane": controlplane, "gateway": envoy, SERVICE_KIND: service,
    "issuer": issuer,
}
