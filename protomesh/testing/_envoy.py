"""A real gateway for tests: the control plane and Envoy as child processes on free loopback ports."""

from __future__ import annotations

import json
import sys
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from protomesh._process import ManagedProcess, find_binary, free_port, port_open, project_root, wait_until

# Tests use a short route timeout so that the 504 case (and a frozen instance) costs one second, not 15.
TEST_ROUTE_TIMEOUT_S = 1.0


class EnvoyGateway:
    """`python -m gateway_envoy.controlplane` + `envoy` with a rendered bootstrap, both restartable.

    >>> gateway = EnvoyGateway(tmp_path / "logs", consul_address=agent.address, descriptor=path)
    >>> gateway.start()                      # returns when the listener answers
    >>> gateway.url                          # "http://127.0.0.1:PORT" (REST and gRPC)
    """

    def __init__(self, log_dir: Path, *, consul_address: str, descriptor: Path,
                 route_timeout_s: float = TEST_ROUTE_TIMEOUT_S, extra_args: Sequence[str] = ()) -> None:
        self.log_dir = log_dir
        self.consul_address = consul_address
        self.descriptor = descriptor
        self.port, self.admin_port, self.xds_port, self.status_port = (free_port() for _ in range(4))
        python = sys.executable
        self.control_plane = ManagedProcess("controlplane", [
            python, "-m", "gateway_envoy.controlplane", "--consul", consul_address,
            "--xds-port", str(self.xds_port), "--listen", f"127.0.0.1:{self.port}",
            "--descriptor", str(descriptor), "--status-port", str(self.status_port),
            "--route-timeout", str(route_timeout_s), *extra_args,
        ], log_dir=log_dir, cwd=project_root())
        self.bootstrap_path = log_dir / "envoy.yaml"
        self.envoy = ManagedProcess("envoy", [
            find_binary("envoy"), "-c", str(self.bootstrap_path), "--disable-hot-restart",
            "--log-level", "warn", "--drain-time-s", "1",
        ], log_dir=log_dir)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def start(self) -> None:
        self.start_control_plane()
        self._render_bootstrap()
        self.envoy.start()
        wait_until(self._listening, what="Envoy gateway listener")

    def start_control_plane(self) -> None:
        self.control_plane.start()
        wait_until(self._control_plane_ready, what="control plane ready")

    def stop(self) -> None:
        self.envoy.stop()
        self.control_plane.stop()

    def restart_control_plane(self) -> None:
        self.control_plane.stop()
        self.start_control_plane()

    def _render_bootstrap(self) -> None:
        from gateway_envoy.bootstrap import render_bootstrap  # the gateway package is optional for other suites

        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.bootstrap_path.write_text(render_bootstrap(admin_port=self.admin_port, xds_port=self.xds_port))

    def _control_plane_ready(self) -> bool:
        self.control_plane.ensure_alive()
        try:
            return bool(self.status()["ready"])
        except OSError:
            return False

    def _listening(self) -> bool:
        self.envoy.ensure_alive()
        return port_open(self.port)

    def status(self) -> dict[str, object]:
        """The control plane's /status JSON (snapshot version, NACK count, services)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.status_port}/status", timeout=5) as response:
            result = json.loads(response.read())
        assert isinstance(result, dict)
        return result

    def admin(self, path: str) -> str:
        """GET an Envoy admin path (e.g. "/clusters", "/stats?filter=update_rejected")."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=5) as response:
            return str(response.read().decode())

    def hosts(self, cluster: str) -> dict[str, int]:
        """Envoy's current hosts of a cluster ("127.0.0.1:PORT") with the requests each has received."""
        data = json.loads(self.admin("/clusters?format=json"))
        for status in data.get("cluster_statuses", ()):
            if status["name"] == cluster:
                return {_host_address(h): _stat(h, "rq_total") for h in status.get("host_statuses", ())}
        return {}

    def stat(self, name: str) -> int:
        """One Envoy counter or gauge by exact name (0 when Envoy has not created it)."""
        for line in self.admin(f"/stats?filter=^{name}$").splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return int(value)
        return 0


def _host_address(host: dict[str, object]) -> str:
    socket = host["address"]["socket_address"]  # type: ignore[index]
    return f"{socket['address']}:{socket['port_value']}"


def _stat(host: dict[str, object], name: str) -> int:
    for stat in host.get("stats", ()):  # type: ignore[attr-defined]
        if stat.get("name") == name:
            return int(stat.get("value", 0))
    return 0
