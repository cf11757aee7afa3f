"""What the local mesh runs: components, ports, replicas and each service's environment (env overridable)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

# The example domain's services; orders calls users, so users starts first. Orders and notifications
# start together: the outbox relay keeps an event until a consumer group's queue is bound for it.
SERVICES = ("users", "notifications", "orders")
# Services that publish or consume events and so need the broker's address.
EVENT_SERVICES = ("orders", "notifications")
# Every component, in start order; docker-compose.yml lists the same names.
COMPONENTS = ("consul", "rabbitmq", "controlplane", "gateway", *SERVICES)


def _int(env: Mapping[str, str], key: str, default: int) -> int:
    raw = env.get(key, "")
    try:
        return int(raw) if raw else default
    except ValueError:
        raise ValueError(f"{key}: expected a whole number, got {raw!r}") from None


@dataclass(frozen=True)
class MeshPorts:
    """Published ports; each is overridden by the environment variable of the same name in docker-compose.yml."""

    gateway: int = 8080
    envoy_admin: int = 9901
    xds: int = 18000
    consul: int = 8500
    amqp: int = 5672

    ENV: ClassVar[dict[str, str]] = {"gateway": "GATEWAY_PORT", "envoy_admin": "ENVOY_ADMIN_PORT", "xds": "XDS_PORT",
                                     "consul": "CONSUL_PORT", "amqp": "AMQP_PORT"}

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> MeshPorts:
        defaults = cls()
        return cls(**{name: _int(env, var, getattr(defaults, name)) for name, var in cls.ENV.items()})


@dataclass(frozen=True)
class MeshPlan:
    """Everything `protomesh up` needs to know: where it runs, its ports and how many instances of each service."""

    root: Path
    ports: MeshPorts = field(default_factory=MeshPorts)
    replicas: Mapping[str, int] = field(default_factory=lambda: dict.fromkeys(SERVICES, 1) | {"users": 2})
    # Where state, data and logs go; tests point it at a tmp dir to run a mesh beside a developer's own.
    var_dir: Path | None = None
    # A fixed node name lets `protomesh up` find its broker's data again; tests use a fresh one.
    rabbitmq_node: str = "protomesh"

    @classmethod
    def from_env(cls, root: Path, env: Mapping[str, str]) -> MeshPlan:
        """Ports from *_PORT variables, replicas from <SERVICE>_REPLICAS (users defaults to 2), state from
        PROTOMESH_VAR_DIR and the broker's node name from PROTOMESH_RABBITMQ_NODE."""
        base = cls(root)
        replicas = {name: _int(env, f"{name.upper()}_REPLICAS", n) for name, n in base.replicas.items()}
        var_dir = Path(env["PROTOMESH_VAR_DIR"]) if env.get("PROTOMESH_VAR_DIR") else None
        return cls(root, MeshPorts.from_env(env), replicas, var_dir,
                   env.get("PROTOMESH_RABBITMQ_NODE") or base.rabbitmq_node)

    @property
    def state_dir(self) -> Path:
        return self.var_dir or self.root / "var" / "mesh"

    def shown(self, path: Path) -> str:
        """A path as printed to people: relative to the checkout when it is inside it."""
        return str(path.relative_to(self.root)) if path.is_relative_to(self.root) else str(path)

    @property
    def descriptor(self) -> Path:
        return self.root / "gen" / "descriptors" / "protomesh.binpb"

    @property
    def consul_address(self) -> str:
        return f"127.0.0.1:{self.ports.consul}"

    @property
    def amqp_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.ports.amqp}/"

    def service_env(self, service: str) -> dict[str, str]:
        """The variables a service's instances get (docker-compose.yml sets the same keys).

        Instances of one service share its SQLite database (WAL allows several processes), as replicas
        sharing one volume do in docker-compose.yml.
        """
        prefix = service.upper()
        env = {
            "CONSUL_HTTP_ADDR": self.consul_address,
            f"{prefix}_DATABASE_PATH": str(self.state_dir / "data" / f"{service}.db"),
        }
        if service in EVENT_SERVICES:
            env[f"{prefix}_AMQP_URL"] = self.amqp_url
        return env
