"""The running local mesh: the topology's components started in dependency order, kept running, reconciled with a
changed topology (only what is new or changed is touched), restarted without downtime, stopped in reverse order."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from localmesh import components, observability
from localmesh.components import Component, MeshContext, digest, service_instance, source_digest
from localmesh.observability import PROMETHEUS_HTTP
from localmesh.security import MeshSecurity, SecuritySpec
from localmesh.supervisor import Supervised
from localmesh.topology import HEALTHY, SERVICE_KIND, SERVICES_DIR, Spec, Topology
from protomesh.aio import BackgroundTasks

log = logging.getLogger("localmesh.mesh")

# The runner's own state folder and broker node name (environment variables of `protomesh up`).
DEFAULT_STATE_DIR = Path("var") / "mesh"
DEFAULT_RABBITMQ_NODE = "protomesh"
STATE_FILE = "state.json"
# The first line of what `protomesh up` prints once every component is ready (`up --detach` waits for it).
UP_TABLE_HEADER = "protomesh is up:"
# How each kind of topology entry runs locally.
FACTORIES = {**components.FACTORIES, **observability.FACTORIES}


@dataclass(frozen=True)
class MeshOptions:
    """Where one mesh keeps its state, data and logs, and the name of its RabbitMQ node."""

    state_dir: Path
    rabbitmq_node: str = DEFAULT_RABBITMQ_NODE

    @classmethod
    def from_env(cls, project: Path, env: Mapping[str, str]) -> MeshOptions:
        """PROTOMESH_VAR_DIR (default var/mesh in the project) and PROTOMESH_RABBITMQ_NODE (default protomesh)."""
        state = Path(env["PROTOMESH_VAR_DIR"]) if env.get("PROTOMESH_VAR_DIR") else project / DEFAULT_STATE_DIR
        return cls(state.resolve(), env.get("PROTOMESH_RABBITMQ_NODE") or DEFAULT_RABBITMQ_NODE)


def spec_digest(topology: Topology, spec: Spec) -> str:
    """What a running component was built from, replica count aside (scaling is not a change)."""
    unscaled = dataclasses.replace(spec, replicas=0)
    if spec.kind == SERVICE_KIND:
        return digest(unscaled, source_digest(topology.project / SERVICES_DIR / spec.source / "app"))
    return digest(unscaled)


class Mesh:
    """`async with Mesh(topology, options) as mesh:` runs the mesh; leaving the block stops it."""

    def __init__(self, topology: Topology, options: MeshOptions, *, environ: Mapping[str, str] | None = None,
                 say: Callable[[str], None] = print) -> None:
        self.topology = topology
        self.options = options
        self.components: dict[str, Component] = {}   # in the order they started
        self.timings: dict[str, float] = {}
        self.status = "starting"
        self.say = say
        self._background = BackgroundTasks()
        self.ctx = MeshContext(topology, options.state_dir, options.rabbitmq_node,
                               dict(os.environ if environ is None else environ), self._write_state)
        spec = SecuritySpec.parse(topology.settings)
        if spec.enabled:
            self.ctx.security = MeshSecurity(spec, options.state_dir)

    @property
    def state_dir(self) -> Path:
        return self.options.state_dir

    async def __aenter__(self) -> Mesh:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start every component; on any failure stop what started and raise."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self.ctx.security is not None:
            await self.ctx.security.renewer.start()
        try:
            await self._start_specs(self.topology.start_order())
        except BaseException:
            await self.stop()
            raise
        self.status = "ready"
        self._write_state()

    async def _start_specs(self, specs: list[Spec]) -> None:
        """Each spec starts once its dependencies are started (or healthy, as depends_on says); specs that do
        not depend on each other start together. Background specs never hold up the rest: they start once the
        others are healthy (a JVM's or Prometheus' start-up would otherwise take CPU from the path to "up"),
        except one the others depend on, which starts with them."""
        started = {spec.name: asyncio.Event() for spec in specs}
        healthy = {spec.name: asyncio.Event() for spec in specs}
        for name in self.components:  # already running (a reconcile): their dependants need not wait
            started.setdefault(name, asyncio.Event()).set()
            healthy.setdefault(name, asyncio.Event()).set()

        async def run(spec: Spec) -> None:
            for dependency, condition in spec.depends_on.items():
                await (healthy if condition == HEALTHY else started)[dependency].wait()
            component = FACTORIES[spec.kind](self.ctx, spec)
            self.components[spec.name] = component
            started[spec.name].set()
            await asyncio.gather(*(self._timed(instance) for instance in component.instances))
            healthy[spec.name].set()

        needed = {name for spec in specs if not spec.background for name in spec.depends_on}
        later = [spec for spec in specs if spec.background and spec.name not in needed]
        try:
            async with asyncio.TaskGroup() as group:
                for spec in specs:
                    if spec.background and spec.name in needed:
                        self._background.start(run(spec), name=f"start-{spec.name}")
                    elif not spec.background:
                        group.create_task(run(spec), name=f"start-{spec.name}")
        except BaseExceptionGroup as failed:  # the first component that failed says why
            raise _first_cause(failed) from None
        for spec in later:
            self._background.start(run(spec), name=f"start-{spec.name}")

    async def _timed(self, instance: Supervised) -> None:
        seconds = await instance.start()
        self.timings[instance.name] = seconds
        self.say(f"    {instance.name:<18} healthy after {seconds:5.1f}s")

    async def stop(self) -> None:
        """Stop every component, newest first; a stop that fails does not keep the others running."""
        await self._background.stop()
        while self.components:
            name = next(reversed(self.components))
            await self._stop_component(self.components.pop(name))
        if self.ctx.security is not None:
            await self.ctx.security.renewer.stop()
        self.status = "stopped"
        self._write_state()

    async def _stop_component(self, component: Component) -> None:
        results = await asyncio.gather(*(instance.stop() for instance in reversed(component.instances)),
                                       return_exceptions=True)
        for instance, result in zip(reversed(component.instances), results, strict=True):
            if isinstance(result, BaseException):
                log.error("stopping %s failed: %r", instance.name, result)

    def instance(self, name: str) -> Supervised:
        """An instance (`users-2`) or single-instance component (`consul`, `consul-1`) by name."""
        for component in self.components.values():
            for instance in component.instances:
                if name in (instance.name, component.spec.name):
                    return instance
        raise KeyError(name)

    async def restart(self, name: str) -> list[str]:
        """Restart a service without downtime (rolling), or one instance or infrastructure component."""
        component = self.components.get(name)
        if component is not None and component.spec.kind == SERVICE_KIND:
            await self._roll(component, component.spec)
            return [f"restarted {name} ({len(component.spec.instances)} instance(s), one at a time)"]
        instance = self.instance(name)
        await instance.stop()
        await self._timed(instance)
        return [f"restarted {instance.name}"]

    async def reconcile(self, topology: Topology) -> list[str]:
        """Make the running mesh match `topology`, the way `docker compose up -d` does: start what is new, roll
        what changed, scale what changed in count, stop what is gone, and leave everything else running."""
        old = self.topology
        self.topology = self.ctx.topology = topology
        if self.ctx.security is not None:  # new intentions, rules and rate limits (configure_consul applies them)
            self.ctx.security.spec = SecuritySpec.parse(topology.settings)
        actions = []
        for name in [name for name in self.components if name not in topology.specs]:
            await self._stop_component(self.components.pop(name))
            actions.append(f"stopped {name} (no longer in the topology)")
        new = []
        for spec in topology.start_order():
            component = self.components.get(spec.name)
            if component is None:
                new.append(spec)
            elif spec_digest(old, old.specs[spec.name]) != spec_digest(topology, spec):
                actions.append(await self._replace(component, spec))
            elif spec.kind == SERVICE_KIND and spec.replicas != len(component.instances):
                # Only services scale: infrastructure runs what its factory starts (the issuer entry, nothing).
                actions.append(await self._scale(component, spec))
        # Consul first learns what is new (a new service's token, intentions, policy, config), then it starts: a
        # service started before its token exists could not register. A new Consul is set up by its own start.
        await _reseed(self.ctx)
        if new:
            await self._start_specs(new)
            actions += [f"started {spec.name}" for spec in new]
        self._write_state()
        return actions or ["nothing changed"]

    async def _replace(self, component: Component, spec: Spec) -> str:
        if spec.kind == SERVICE_KIND:
            await self._roll(component, spec)
            return f"updated {spec.name} (rolling, {spec.replicas} instance(s))"
        await self._stop_component(component)
        replacement = FACTORIES[spec.kind](self.ctx, spec)
        self.components[spec.name] = replacement
        for instance in replacement.instances:
            await self._timed(instance)
        return f"restarted {spec.name} (its definition changed)"

    async def _roll(self, component: Component, spec: Spec) -> None:
        """One extra instance of the new definition first, then each instance replaced in turn, then the extra
        one stopped: at least `replicas` instances serve at every moment, so no call fails."""
        folder = self.topology.project / SERVICES_DIR / spec.source
        surge = service_instance(self.ctx, spec, folder, f"{spec.name}-{max(spec.replicas, 1) + 1}")
        await self._timed(surge)
        replacement = FACTORIES[spec.kind](self.ctx, spec)
        old = {instance.name: instance for instance in component.instances}
        for instance in replacement.instances:
            if instance.name in old:
                await old.pop(instance.name).stop()
            await self._timed(instance)
        for leftover in old.values():
            await leftover.stop()
        self.components[spec.name] = replacement
        await surge.stop()

    async def _scale(self, component: Component, spec: Spec) -> str:
        folder = self.topology.project / SERVICES_DIR / spec.source
        have = {instance.name: instance for instance in component.instances}
        for name in spec.instances:
            if name not in have:
                instance = service_instance(self.ctx, spec, folder, name)
                component.instances.append(instance)
                await self._timed(instance)
        for instance in [i for i in component.instances if i.name not in spec.instances]:
            component.instances.remove(instance)
            await instance.stop()
        component.spec = spec
        return f"scaled {spec.name} to {spec.replicas}"

    def _write_state(self) -> None:
        """state.json: what `protomesh status`, `logs` and `down` read (written atomically on every change)."""
        state = {
            "status": self.status,
            "supervisor_pid": os.getpid(),
            "project": str(self.topology.project),
            "control_socket": str(self.state_dir / "control.sock"),
            "gateway": dataclasses.asdict(self.ctx.gateway.ports) if self.ctx.gateway is not None else None,
            "gateway_tls": self.ctx.gateway is not None and self.ctx.gateway.tls,
            "secured": self.ctx.security is not None,
            "consul": self.ctx.consul_address if self.topology.of_kind("consul") else None,
            "prometheus": self._prometheus_url(),
            "components": {name: {"kind": c.spec.kind, "url": c.url, "instances": {
                i.name: {**dataclasses.asdict(i.status), "log": str(self.state_dir / "logs" / f"{i.name}.log")}
                for i in c.instances}} for name, c in self.components.items()},
        }
        path = self.state_dir / STATE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(path)

    def _prometheus_url(self) -> str | None:
        """Where the mesh's Prometheus answers (`protomesh top` reads it), if the topology has one."""
        spec = self.topology.of_kind("prometheus")
        port = spec.ports.get(PROMETHEUS_HTTP) if spec is not None else None
        return f"http://127.0.0.1:{port}" if port else None

    def table(self) -> str:
        rows = [f"  {name:<16} {component.url}" for name, component in self.components.items() if component.url]
        return "\n".join([UP_TABLE_HEADER, *rows])


def _first_cause(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The failure that made the task group cancel the rest (not one of the cancellations it caused)."""
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            return _first_cause(error)
        if not isinstance(error, asyncio.CancelledError):
            return error
    return group.exceptions[0]


async def _reseed(ctx: MeshContext) -> None:
    from localmesh.components import configure_consul

    try:
        await configure_consul(ctx)
    except Exception as exc:  # the services keep their current settings; the next reconcile seeds again
        log.warning("could not apply the security policy and config/ to Consul: %r", exc)


def read_state(state_dir: Path) -> dict[str, object] | None:
    """The state file of a mesh (None when no mesh ever ran there)."""
    try:
        loaded = json.loads((state_dir / STATE_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return loaded if isinstance(loaded, dict) else None
