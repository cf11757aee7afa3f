"""The mesh a project declares in docker-compose.yml, and the rules that turn its containers into local processes.

docker-compose.yml is the one topology: `docker compose up` runs it as containers and `protomesh up` as local
processes. Compose's own fields keep their meaning (`deploy.replicas`, `restart`, `depends_on` conditions,
`environment`, `ports`, `volumes`); what Compose has no field for sits in `x-protomesh` extension fields:

    users:
      build: {context: ., dockerfile: services/Dockerfile, args: {SERVICE: users}}   # a protomesh service
    consul:
      image: hashicorp/consul:1.8.7
      x-protomesh: {run: consul}                                # infrastructure the runner knows how to run

Container-only values become local ones by four rules (see `local_environment`):
  1. `<name>:<port>` of another service (`consul:8500`, `amqp://...@rabbitmq:5672/`) becomes
     `127.0.0.1:<the host port it publishes>`;
  2. a service's own listen address (`<SERVICE>_SERVER__HOST`, `__PORT`, `__ADVERTISE_HOST`) is dropped:
     locally an instance binds 127.0.0.1 on a free port and registers the port it got;
  3. a path under a volume's mount point (`/data/users.db` with `users-data:/data`) moves to
     `<state>/volumes/users-data/users.db` (a named volume) or into the project (a bind mount);
  4. what the container stack's issuer mounts (identity folders, Consul token files, the gateway's edge mode) is
     dropped: the runner issues every local process credentials of its own (components.py, security.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localmesh.compose import TopologyError, load_compose
from localmesh.process import TOPOLOGY_FILE

EXTENSION = "x-protomesh"
# What the runner can run locally: infrastructure by name (x-protomesh.run), and protomesh services (a build
# of services/Dockerfile with the SERVICE argument naming a folder under services/).
INFRASTRUCTURE = ("consul", "rabbitmq", "controlplane", "gateway", "prometheus", "tracing", "collector", "issuer")
SERVICE_KIND = "service"
SERVICES_DIR = "services"
# Compose's restart values; protomesh up restarts a process that exits unless the file says otherwise.
RESTART_POLICIES = ("no", "always", "on-failure", "unless-stopped")
DEFAULT_RESTART = "unless-stopped"
# depends_on conditions (Compose's names); the list form of depends_on means "started".
STARTED, HEALTHY = "service_started", "service_healthy"
# Rule 4: the container stack's credentials (localmesh/issuer.py writes them), and a service's own identity folder.
ISSUED_VARIABLES = frozenset({"CONSUL_HTTP_TOKEN_FILE", "PROTOMESH_IDENTITY_DIR", "PROTOMESH_EDGE_IDENTITY_DIR",
                              "PROTOMESH_JWKS_FILE", "PROTOMESH_GATEWAY_PLAINTEXT"})
ISSUED_SETTINGS = ("SECURITY__IDENTITY_DIR",)


@dataclass(frozen=True)
class Restart:
    """A Compose restart policy: `no`, `always`, `unless-stopped`, or `on-failure[:max_retries]`."""

    policy: str = DEFAULT_RESTART
    max_retries: int | None = None

    @classmethod
    def parse(cls, raw: object, where: str) -> Restart:
        text = DEFAULT_RESTART if raw is None else str(raw)
        policy, _, count = text.partition(":")
        if policy not in RESTART_POLICIES or (count and (policy != "on-failure" or not count.isdigit())):
            raise TopologyError(f"{where}: restart: expected one of {', '.join(RESTART_POLICIES)} "
                                f"(or on-failure:N), got {text!r}")
        return cls(policy, int(count) if count else None)

    def restarts(self, exit_code: int, restarts_so_far: int) -> bool:
        """Whether a process that exited on its own with exit_code is started again."""
        if self.policy == "no":
            return False
        if self.policy == "on-failure":
            return exit_code != 0 and (self.max_retries is None or restarts_so_far < self.max_retries)
        return True


@dataclass(frozen=True)
class Spec:
    """One service of the topology file, as the runner reads it."""

    name: str
    kind: str
    replicas: int = 1
    restart: Restart = field(default_factory=Restart)
    depends_on: Mapping[str, str] = field(default_factory=dict)        # name -> condition
    environment: Mapping[str, str] = field(default_factory=dict)
    ports: Mapping[int, int] = field(default_factory=dict)             # container port -> host port
    volumes: Mapping[str, str] = field(default_factory=dict)           # mount point -> volume or ./path
    source: str = ""                                                   # services/<source> for a service
    background: bool = False                                           # never delays "up"
    extension: Mapping[str, Any] = field(default_factory=dict)

    @property
    def instances(self) -> list[str]:
        """The names of its processes: `users-1`, `users-2`, ... (Compose numbers replicas the same way)."""
        return [f"{self.name}-{index}" for index in range(1, self.replicas + 1)]

    @property
    def settings_prefix(self) -> str:
        """The prefix of the service's settings variables (`USERS_`), as the runtime reads them."""
        return self.source.upper().replace("-", "_") + "_"


@dataclass(frozen=True)
class Topology:
    """The mesh of one project, read from its docker-compose.yml with one environment's variables."""

    project: Path
    specs: Mapping[str, Spec]
    variables: frozenset[str]             # every variable the file reads: the mesh's own knobs
    settings: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, project: Path, env: Mapping[str, str]) -> Topology:
        path = project / TOPOLOGY_FILE
        data, variables = load_compose(path, env)
        specs = {name: _spec(project, name, raw) for name, raw in data["services"].items()}
        topology = cls(project.resolve(), specs, variables, dict(data.get(EXTENSION) or {}))
        topology.start_order()  # unknown dependencies and cycles fail here, before anything starts
        return topology

    @property
    def services(self) -> list[Spec]:
        return [spec for spec in self.specs.values() if spec.kind == SERVICE_KIND]

    def of_kind(self, kind: str) -> Spec | None:
        return next((spec for spec in self.specs.values() if spec.kind == kind), None)

    def host_port(self, kind: str, container_port: int) -> int:
        """The host port the first component of `kind` publishes for container_port."""
        spec = self.of_kind(kind)
        if spec is None or container_port not in spec.ports:
            raise TopologyError(f"{TOPOLOGY_FILE}: no {kind} service publishing container port {container_port} "
                                f"(add `x-protomesh: {{run: {kind}}}` and a `ports:` entry)")
        return spec.ports[container_port]

    def start_order(self) -> list[Spec]:
        """Every spec after the ones it depends on (file order otherwise); TopologyError on unknown or cyclic."""
        ordered: list[Spec] = []
        visiting: set[str] = set()

        def visit(name: str, chain: tuple[str, ...]) -> None:
            if name in (spec.name for spec in ordered):
                return
            if name not in self.specs:
                raise TopologyError(f"{chain[-1]}: depends_on names {name!r}, which is not a service of the file")
            if name in visiting:
                raise TopologyError(f"depends_on cycle: {' -> '.join((*chain, name))}")
            visiting.add(name)
            for dependency in self.specs[name].depends_on:
                visit(dependency, (*chain, name))
            ordered.append(self.specs[name])

        for name in self.specs:
            visit(name, ())
        return ordered

    def local_environment(self, spec: Spec, *, state_dir: Path) -> dict[str, str]:
        """The spec's environment with the container-only values made local (the rules in the module doc)."""
        own = {f"{spec.settings_prefix}SERVER__{key}" for key in ("HOST", "PORT", "ADVERTISE_HOST")}
        own |= {f"{spec.settings_prefix}{key}" for key in ISSUED_SETTINGS}
        local = {}
        for key, value in spec.environment.items():
            if (spec.kind == SERVICE_KIND and key in own) or key in ISSUED_VARIABLES:
                continue
            local[key] = self._local_path(spec, self._local_addresses(spec, key, value), state_dir)
        return local

    def _local_addresses(self, spec: Spec, key: str, value: str) -> str:
        def local(match: re.Match[str]) -> str:
            target, port = self.specs[match["name"]], int(match["port"])
            if port not in target.ports:
                raise TopologyError(f"{spec.name}: {key}={value} names port {port} of {target.name}, which "
                                    f"{target.name} does not publish: add it to its `ports:`")
            return f"127.0.0.1:{target.ports[port]}"

        names = "|".join(re.escape(name) for name in sorted(self.specs, key=len, reverse=True))
        return re.sub(rf"(?<![\w.-])(?P<name>{names}):(?P<port>\d+)(?![\w.-])", local, value)

    def _local_path(self, spec: Spec, value: str, state_dir: Path) -> str:
        for mount, source in sorted(spec.volumes.items(), key=lambda item: len(item[0]), reverse=True):
            if value == mount or value.startswith(mount.rstrip("/") + "/"):
                rest = value[len(mount):].lstrip("/")
                base = (self.project / source) if source.startswith((".", "/")) else state_dir / "volumes" / source
                return str(base / rest) if rest else str(base)
        return value


def _spec(project: Path, name: str, raw: object) -> Spec:
    if not isinstance(raw, Mapping):
        raise TopologyError(f"services.{name}: expected a mapping")
    extension = raw.get(EXTENSION) or {}
    if not isinstance(extension, Mapping):
        raise TopologyError(f"services.{name}.{EXTENSION}: expected a mapping")
    kind, source = _kind(project, name, raw, extension)
    return Spec(
        name=name, kind=kind, replicas=_replicas(name, raw), restart=Restart.parse(raw.get("restart"), name),
        depends_on=_depends_on(name, raw.get("depends_on")), environment=_environment(name, raw.get("environment")),
        ports=_ports(name, raw.get("ports") or []), volumes=_volumes(name, raw.get("volumes") or []),
        source=source, background=bool(extension.get("background", False)), extension=dict(extension),
    )


def _kind(project: Path, name: str, raw: Mapping[str, Any], extension: Mapping[str, Any]) -> tuple[str, str]:
    run = extension.get("run")
    if run is not None:
        if run not in INFRASTRUCTURE:
            raise TopologyError(f"services.{name}.{EXTENSION}.run: expected one of {', '.join(INFRASTRUCTURE)}, "
                                f"got {run!r}")
        return str(run), ""
    build = raw.get("build")
    args = build.get("args") if isinstance(build, Mapping) else None
    source = _build_args(args).get("SERVICE", "")
    if not source:
        raise TopologyError(f"services.{name}: protomesh up cannot run it locally: give it a build of "
                            f"services/Dockerfile with args SERVICE=<folder under services/>, or "
                            f"`{EXTENSION}: {{run: <{'|'.join(INFRASTRUCTURE)}>}}`")
    if not (project / SERVICES_DIR / source / "app").is_dir():
        raise TopologyError(f"services.{name}: SERVICE={source}, but {SERVICES_DIR}/{source}/app does not exist")
    return SERVICE_KIND, source


def _build_args(args: object) -> dict[str, str]:
    if isinstance(args, Mapping):
        return {str(key): str(value) for key, value in args.items()}
    if isinstance(args, list):
        return dict(str(item).partition("=")[::2] for item in args)
    return {}


def _replicas(name: str, raw: Mapping[str, Any]) -> int:
    deploy = raw.get("deploy") or {}
    value = deploy.get("replicas", 1) if isinstance(deploy, Mapping) else 1
    try:
        replicas = int(value)
    except (TypeError, ValueError):
        raise TopologyError(f"services.{name}.deploy.replicas: expected a whole number, got {value!r}") from None
    if replicas < 0:
        raise TopologyError(f"services.{name}.deploy.replicas: must not be negative, got {replicas}")
    return replicas


def _depends_on(name: str, raw: object) -> dict[str, str]:
    if raw is None:
        return {}
    if isinstance(raw, list):
        return {str(item): STARTED for item in raw}
    if isinstance(raw, Mapping):
        conditions = {}
        for other, options in raw.items():
            condition = (options or {}).get("condition", STARTED) if isinstance(options, Mapping) else STARTED
            if condition not in (STARTED, HEALTHY):
                raise TopologyError(f"services.{name}.depends_on.{other}.condition: expected {STARTED} or "
                                    f"{HEALTHY}, got {condition!r}")
            conditions[str(other)] = str(condition)
        return conditions
    raise TopologyError(f"services.{name}.depends_on: expected a list or a mapping")


def _environment(name: str, raw: object) -> dict[str, str]:
    if raw is None:
        return {}
    if isinstance(raw, Mapping):
        return {str(key): "" if value is None else str(value) for key, value in raw.items()}
    if isinstance(raw, list):
        return dict(str(item).partition("=")[::2] for item in raw)
    raise TopologyError(f"services.{name}.environment: expected a mapping or a list")


def _ports(name: str, raw: Sequence[object]) -> dict[int, int]:
    ports = {}
    for entry in raw:
        if isinstance(entry, Mapping):
            target, published = entry.get("target"), entry.get("published", entry.get("target"))
        else:
            parts = str(entry).split("/")[0].split(":")
            target, published = parts[-1], parts[-2] if len(parts) > 1 else parts[-1]
        try:
            ports[int(str(target))] = int(str(published))
        except ValueError:
            raise TopologyError(f"services.{name}.ports: cannot read {entry!r} (use HOST:CONTAINER)") from None
    return ports


def _volumes(name: str, raw: Sequence[object]) -> dict[str, str]:
    volumes = {}
    for entry in raw:
        if isinstance(entry, Mapping):
            source, target = str(entry.get("source", "")), str(entry.get("target", ""))
        else:
            parts = str(entry).split(":")
            if len(parts) < 2:
                continue  # an anonymous volume: nothing a local process can find again
            source, target = parts[0], parts[1]
        if not target:
            raise TopologyError(f"services.{name}.volumes: {entry!r} has no mount point")
        volumes[target] = source
    return volumes
