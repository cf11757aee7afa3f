"""podman as the container engine: project-local config, the API service docker-compose talks to, a health ticker."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localmesh.process import ManagedProcess, MissingComponentError, wait_until

log = logging.getLogger("containers")

# Debian tools the harness drives; each test fails naming `make setup` when one is missing.
REQUIRED_TOOLS = ("podman", "runc", "docker-compose", "debootstrap")
# Passed through CONTAINERS_CONF, so the system's own containers.conf stays untouched. podman's default
# ulimits exceed this sandbox's hard limits (setrlimit: Operation not permitted), and crun refuses a
# hybrid cgroup host ("cgroups in hybrid mode not supported") where runc works.
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
"""
# How often a starting container is checked; a healthy one is checked at its own interval. podman 4.3
# runs health checks through systemd timers, which this machine does not have, so nothing else runs them.
DEFAULT_TICK_S = 2.0
# Health checks run side by side on at most this many threads: each starts a process in a container,
# and a 2-core machine falls behind (and checks time out) when a dozen start at once.
HEALTH_CHECK_WORKERS = 2
# Beside the socket: lets a later run stop a service whose test process was killed before stopping it.
SERVICE_PID_FILE = "podman-service.pid"
# A unix socket path longer than this cannot be bound (sockaddr_un.sun_path).
MAX_SOCKET_PATH = 100


def require_tools() -> None:
    """MissingComponentError naming `make setup` for the first Debian container tool that is missing."""
    for tool in REQUIRED_TOOLS:
        if shutil.which(tool) is None:
            raise MissingComponentError(f"{tool} is not installed: run `make setup` (as root it installs the "
                                        "container tools with apt; CI runs it through `make test`)")


class Podman:
    """podman with the project's containers.conf; docker-format images so HEALTHCHECK is kept."""

    def __init__(self, state_dir: Path) -> None:
        require_tools()
        self.state_dir = state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        self.conf = state_dir / "containers.conf"
        if not self.conf.is_file() or self.conf.read_text() != CONTAINERS_CONF:
            self.conf.write_text(CONTAINERS_CONF)
        self.env = {**os.environ, "CONTAINERS_CONF": str(self.conf), "BUILDAH_FORMAT": "docker"}

    def run(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["podman", *args], env=self.env, capture_output=True, timeout=timeout, text=True,
                                check=False)
        if check and result.returncode != 0:
            raise RuntimeError(f"podman {' '.join(args[:3])} ... failed ({result.returncode}):\n"
                               f"{result.stderr[-3000:]}")
        return result

    def inspect(self, *refs: str, kind: str = "container") -> list[dict[str, Any]]:
        """podman inspect as data; refs that no longer exist are left out."""
        result = self.run(kind, "inspect", *refs, check=False)
        loaded = json.loads(result.stdout or "[]")
        return list(loaded) if isinstance(loaded, list) else []

    def image(self, ref: str) -> dict[str, Any] | None:
        found = self.inspect(ref, kind="image")
        return found[0] if found else None

    def project_containers(self, project: str, *, all_states: bool = False) -> list[str]:
        """IDs of the containers docker-compose made for project."""
        args = ["ps", "-q", "--no-trunc", "--filter", f"label=com.docker.compose.project={project}"]
        return self.run(*args, *(["-a"] if all_states else [])).stdout.split()


@dataclass(frozen=True)
class Service:
    """A running `podman system service`: where docker-compose finds it, and its PID."""

    socket: Path
    pid: int

    @property
    def docker_host(self) -> str:
        return f"unix://{self.socket}"


@contextmanager
def podman_service(podman: Podman, socket_path: Path) -> Iterator[Service]:
    """`podman system service` on a unix socket for as long as the block runs; stopped by its PID."""
    if len(str(socket_path)) > MAX_SOCKET_PATH:
        raise RuntimeError(f"socket path too long for a unix socket ({len(str(socket_path))} characters): "
                           f"{socket_path}; use a checkout with a shorter path")
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    socket_path.unlink(missing_ok=True)
    service = ManagedProcess("podman-service", ["podman", "system", "service", "--time=0", f"unix://{socket_path}"],
                             log_dir=socket_path.parent, env=podman.env)
    service.start()
    (socket_path.parent / SERVICE_PID_FILE).write_text(f"{service.pid}\n")
    try:
        wait_until(lambda: _pings(socket_path), timeout=30, what="podman system service answering _ping",
                   interval=0.1)
        yield Service(socket_path, service.pid)
    finally:
        service.stop(timeout=15)
        socket_path.unlink(missing_ok=True)


def stop_orphaned_service(run_dir: Path) -> int | None:
    """SIGTERM the service a killed run started in run_dir (checked by its command line); its PID or None."""
    try:
        pid = int((run_dir / SERVICE_PID_FILE).read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (OSError, ValueError):
        return None
    if f"unix://{run_dir / 'podman.sock'}" not in cmdline:
        return None  # the PID now belongs to another process
    os.kill(pid, signal.SIGTERM)
    return pid


def _pings(socket_path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            sock.connect(str(socket_path))
            sock.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
            return b"OK" in sock.recv(4096)
    except OSError:
        return False


class HealthTicker:
    """Runs `podman healthcheck run` for a compose project's containers, as Docker's engine would."""

    def __init__(self, podman: Podman, project: str, *, tick: float = DEFAULT_TICK_S) -> None:
        self.podman = podman
        self.project = project
        self.tick = tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"health-ticker-{project}", daemon=True)
        self._pool = ThreadPoolExecutor(HEALTH_CHECK_WORKERS, thread_name_prefix="health-check")
        self._running: dict[str, Future[None]] = {}
        self._next: dict[str, float] = {}

    def __enter__(self) -> HealthTicker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._round()
            except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError) as error:
                log.warning("health ticker: %s", error)
            self._stop.wait(min(self.tick, 1.0))

    def _round(self) -> None:
        ids = self.podman.project_containers(self.project)
        now = time.monotonic()
        due = [i for i in ids if self._next.get(i, 0.0) <= now and not self._busy(i)]
        for info in self.podman.inspect(*due) if due else []:
            check = info["Config"].get("Healthcheck") or {}
            if not check.get("Test") or check["Test"][0] == "NONE":
                self._next[info["Id"]] = float("inf")
                continue
            starting = (info["State"].get("Health") or {}).get("Status") != "healthy"
            interval = check.get("Interval", 0) / 1e9 or 30.0
            self._next[info["Id"]] = now + (min(interval, self.tick) if starting else max(interval, self.tick))
            timeout = check.get("Timeout", 0) / 1e9 or 30.0
            self._running[info["Id"]] = self._pool.submit(self._check, info["Id"], timeout)

    def _busy(self, container: str) -> bool:
        running = self._running.get(container)
        return running is not None and not running.done()

    def _check(self, container: str, timeout: float) -> None:
        # podman applies the check's own timeout; this bound only keeps a stuck podman from stalling us.
        self.podman.run("healthcheck", "run", container, check=False, timeout=timeout + 30)


def run_logged(argv: Sequence[str], *, env: dict[str, str], timeout: float, what: str,
               cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """A tool run whose output is shown only when it fails (RuntimeError with its tail)."""
    result = subprocess.run(list(argv), env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                            check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed ({result.returncode}):\n{(result.stdout + result.stderr)[-4000:]}")
    return result
