"""The gateway as local processes: the control plane (`python -m gateway_envoy.controlplane`) and Envoy.

This is the one place that knows how to launch them; the local mesh, the test kit and the benchmarks all
start the gateway through it, with the same flags.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from localmesh.process import ManagedProcess, find_binary, free_port, port_open, wait_until

# Starts of Envoy with a newly picked admin port when the one picked before was taken meanwhile.
ADMIN_PORT_ATTEMPTS = 3


@dataclass(frozen=True)
class GatewayPorts:
    """Loopback ports of one gateway: the listener (REST + gRPC), Envoy's admin, xDS, and the status page."""

    listen: int = field(default_factory=free_port)
    admin: int = field(default_factory=free_port)
    xds: int = field(default_factory=free_port)
    status: int = field(default_factory=free_port)


class Gateway:
    """A control plane and an Envoy fed by it over ADS, as two child processes with their own logs.

        gateway = Gateway(log_dir, consul_address=agent.address, descriptor=path)
        gateway.start()                    # returns once the listener accepts connections
        gateway.url                        # "http(s)://127.0.0.1:PORT": REST and gRPC
    """

    def __init__(self, log_dir: Path, *, consul_address: str, descriptor: Path, ports: GatewayPorts | None = None,
                 route_timeout_s: float | None = None, extra_args: Sequence[str] = (),
                 envoy_args: Sequence[str] = (), env: Mapping[str, str] | None = None,
                 project: Path | None = None, tls: bool = False, max_connections: int | None = None) -> None:
        self.log_dir = log_dir
        # Envoy's downstream connection limit (None: the bootstrap's default, 0: none, as before load shedding).
        self.max_connections = max_connections
        self.tls = tls  # the listener serves TLS (extra_args give the control plane its certificate)
        # Ports picked here may be taken between picking and binding (an outgoing connection's local port):
        # Envoy's admin port is then picked again (see start); ports given by the caller never change.
        self._own_ports = ports is None
        self.ports = ports or GatewayPorts()
        self.descriptor = descriptor
        timeout = ["--route-timeout", str(route_timeout_s)] if route_timeout_s is not None else []
        self.control_plane = ManagedProcess("controlplane", [
            sys.executable, "-m", "gateway_envoy.controlplane", "--consul", consul_address,
            "--xds-port", str(self.ports.xds), "--listen", f"127.0.0.1:{self.ports.listen}",
            "--descriptor", str(descriptor), "--status-port", str(self.ports.status),
            # Locally the status endpoint (and /metrics, which Prometheus finds through Consul) stays on loopback.
            "--status-host", "127.0.0.1", "--advertise-host", "127.0.0.1", *timeout, *extra_args,
        ], log_dir=log_dir, env=env)
        self.bootstrap_path = log_dir / "envoy.yaml"
        # Without hot restart Envoy uses no shared memory or domain socket, so several (a developer's mesh, test
        # meshes) run side by side; a short drain keeps a stop quick on a local machine.
        self.envoy = ManagedProcess("gateway", [
            find_binary("envoy", project=project), "-c", str(self.bootstrap_path), "--disable-hot-restart",
            "--log-level", "warn", "--drain-time-s", "1", *envoy_args,
        ], log_dir=log_dir)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.ports.listen}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.address}"

    def write_bootstrap(self) -> None:
        """Render Envoy's bootstrap (only the xDS cluster and ADS) for these ports."""
        from gateway_envoy.bootstrap import render_bootstrap  # the gateway is a separate package above the runtime

        self.log_dir.mkdir(parents=True, exist_ok=True)
        limit = {} if self.max_connections is None else {"max_connections": self.max_connections}
        self.bootstrap_path.write_text(render_bootstrap(admin_port=self.ports.admin, xds_port=self.ports.xds, **limit))

    def start(self) -> None:
        self.start_control_plane()
        for attempt in range(1, ADMIN_PORT_ATTEMPTS + 1):
            self.write_bootstrap()
            self.envoy.start()
            try:
                wait_until(lambda: _alive(self.envoy) and self.listening(), what="Envoy gateway listener")
                return
            except RuntimeError:
                taken = f"cannot bind '127.0.0.1:{self.ports.admin}': Address already in use"
                if not self._own_ports or attempt == ADMIN_PORT_ATTEMPTS or taken not in self.envoy.log_tail():
                    raise
                self.envoy.stop()
                self.ports = replace(self.ports, admin=free_port())

    def start_control_plane(self) -> None:
        self.control_plane.start()
        wait_until(lambda: _alive(self.control_plane) and self.control_plane_ready(), what="control plane ready")

    def stop(self) -> None:
        self.envoy.stop()
        self.control_plane.stop()

    def restart_control_plane(self) -> None:
        self.control_plane.stop()
        self.start_control_plane()

    def control_plane_ready(self) -> bool:
        """Whether the control plane runs and built its first snapshot (it then serves xDS)."""
        if not self.control_plane.running():
            return False
        try:
            return bool(self.status()["ready"])
        except OSError:
            return False

    def listening(self) -> bool:
        return self.envoy.running() and port_open(self.ports.listen)

    def status(self) -> dict[str, object]:
        """The control plane's /status JSON (snapshot version, NACK count, services)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports.status}/status", timeout=5) as response:
            result = json.loads(response.read())
        assert isinstance(result, dict)
        return result

    def admin(self, path: str) -> str:
        """GET an Envoy admin path (e.g. "/clusters", "/stats?filter=update_rejected")."""
        return admin_get(self.ports.admin, path)

    def hosts(self, cluster: str) -> dict[str, int]:
        """Envoy's current hosts of a cluster ("127.0.0.1:PORT") with the requests each has received."""
        return cluster_hosts(self.ports.admin, cluster)

    def stat(self, name: str) -> int:
        """One Envoy counter or gauge by exact name (0 when Envoy has not created it)."""
        for line in self.admin(f"/stats?filter=^{name}$").splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return int(value)
        return 0


def _alive(process: ManagedProcess) -> bool:
    process.ensure_alive()  # a process that died while starting fails at once, with its log
    return True


def admin_get(admin_port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}{path}", timeout=5) as response:
        return str(response.read().decode())


def cluster_hosts(admin_port: int, cluster: str) -> dict[str, int]:
    """host:port -> requests received, for every host Envoy holds in the cluster ({} when unknown)."""
    data = json.loads(admin_get(admin_port, "/clusters?format=json"))
    for status in data.get("cluster_statuses", ()):
        if status["name"] == cluster:
            return {_host_address(h): _stat(h, "rq_total") for h in status.get("host_statuses", ())}
    return {}


def _host_address(host: dict[str, object]) -> str:
    socket = host["address"]["socket_address"]  # type: ignore[index]
    return f"{socket['address']}:{socket['port_value']}"


def _stat(host: dict[str, object], name: str) -> int:
    for stat in host.get("stats", ()):  # type: ignore[attr-defined]
        if stat.get("name") == name:
            return int(stat.get("value", 0))
    return 0
