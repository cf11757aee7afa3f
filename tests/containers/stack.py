"""docker-compose.yml run by Debian's docker-compose against podman's API service, on free loopback ports."""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from localmesh.mesh import MeshOptions
from localmesh.process import free_port, pid_alive, wait_until
from tests.containers.compose_file import ComposeFile
from tests.containers.images import Images
from tests.containers.podman import Podman, run_logged, stop_orphaned_service

log = logging.getLogger("containers")

COMPOSE_LABEL = "com.docker.compose.project"
# A test's project is named after the PID of the test process, so a later run can tell an abandoned
# project (its run was killed before `down`) from one that another checkout is running right now.
PROJECT_NAME = re.compile(r"pmct(?P<pid>\d+)x[0-9a-f]+")
# docker-compose waits for every `condition: service_healthy` itself; bound the whole `up`.
UP_TIMEOUT_S = 420.0
# `down` gives each container this long to stop on SIGTERM before SIGKILL (Docker's default is 10 s).
STOP_TIMEOUT_S = 10
# The knob docker-compose.yml keeps a stack's credentials under (its issuer's state); each test project has its own.
STACK_STATE_VARIABLE = "STACK_STATE_DIR"


@dataclass(frozen=True)
class Container:
    """One container of the stack as podman reports it (pid is the host's PID of its main process)."""

    id: str
    name: str
    service: str
    status: str
    health: str
    pid: int
    restarts: int
    volumes: tuple[str, ...]


def project_name() -> str:
    return f"pmct{os.getpid()}x{secrets.token_hex(3)}"


def reap_abandoned(podman: Podman) -> list[str]:
    """Remove what test runs that were killed left: containers, networks, volumes, their podman service."""
    listed = podman.run("ps", "-a", "--format", f'{{{{.ID}}}} {{{{index .Labels "{COMPOSE_LABEL}"}}}}').stdout
    projects: dict[str, list[str]] = {}
    for line in listed.splitlines():
        container, _, project = line.partition(" ")
        match = PROJECT_NAME.fullmatch(project.strip())
        if match and not pid_alive(int(match["pid"])):
            projects.setdefault(project.strip(), []).append(container)
    for project, containers in projects.items():
        podman.run("rm", "-f", "-v", *containers, check=False, timeout=120)
        label = f"label={COMPOSE_LABEL}={project}"
        for kind in ("network", "volume"):
            names = podman.run(kind, "ls", "-q", "--filter", label).stdout.split()
            if names:
                podman.run(kind, "rm", "-f", *names, check=False)
    for run_dir in podman.state_dir.glob("pmct*"):
        match = PROJECT_NAME.fullmatch(run_dir.name)
        if match and not pid_alive(int(match["pid"])):
            service = stop_orphaned_service(run_dir)
            if service is not None:
                wait_until(partial(_gone, service), timeout=30, what=f"podman service {service} stopped")
            shutil.rmtree(run_dir, ignore_errors=True)
            projects.setdefault(run_dir.name, [])
    return sorted(projects)


class ComposeStack:
    """One compose project: its own name, network, volumes and host ports, all removed by down()."""

    def __init__(self, podman: Podman, compose: ComposeFile, project: str, docker_host: str,
                 images: Images) -> None:
        self.podman = podman
        self.compose_file = compose
        self.project = project
        self.images = images
        # Published ports go to free ports on loopback only: "${GATEWAY_PORT:-8080}:8080" with
        # GATEWAY_PORT=127.0.0.1:N publishes 127.0.0.1:N (an entry naming 127.0.0.1 itself just gets N), so a
        # mesh on the default ports is never in the way.
        published = compose.port_variables()
        self.ports = {variable: free_port() for variable in published}
        self.env = {**podman.env, "DOCKER_HOST": docker_host,
                    **{variable: str(port) if published[variable].bound_address else f"127.0.0.1:{port}"
                       for variable, port in self.ports.items()},
                    STACK_STATE_VARIABLE: str(podman.state_dir / project / "state")}
        self._tags: list[str] = []
        self.seen: dict[str, Container] = {}
        self._pids: dict[int, tuple[str, int]] = {}

    @property
    def state_dir(self) -> Path:
        """The stack's own state (its Consul tokens, each container's credentials), removed with the project."""
        return Path(self.env[STACK_STATE_VARIABLE])

    @property
    def mesh_state_dir(self) -> Path:
        """The local mesh's state, whose CA and token issuer the stack mounts (var/mesh unless PROTOMESH_VAR_DIR)."""
        return MeshOptions.from_env(self.compose_file.path.parent, self.env).state_dir

    def expected_replicas(self) -> dict[str, int]:
        return {name: spec.replicas(os.environ) for name, spec in self.compose_file.services.items()}

    def compose(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        argv = ["docker-compose", "-f", str(self.compose_file.path), "-p", self.project, *args]
        return run_logged(argv, env=self.env, timeout=timeout, what=f"docker-compose {args[0]}",
                          cwd=self.compose_file.path.parent)

    def up(self) -> None:
        """Tag the built images with the names compose looks for, then `up -d` (which waits for health)."""
        for name, image in self.images.built.items():
            wanted = self.compose_file.services[name].image_name(self.project)
            if wanted not in (image.tag, image.image_id):
                self.podman.run("tag", image.image_id, wanted)
                self._tags.append(wanted)
        self.compose("up", "-d", "--no-build", timeout=UP_TIMEOUT_S)

    def containers(self) -> list[Container]:
        found = []
        for info in self.podman.inspect(*self.podman.project_containers(self.project, all_states=True)):
            labels = info["Config"].get("Labels") or {}
            container = Container(
                id=info["Id"], name=info["Name"].lstrip("/"), service=labels.get("com.docker.compose.service", ""),
                status=info["State"]["Status"], health=(info["State"].get("Health") or {}).get("Status", ""),
                pid=int(info["State"].get("Pid") or 0), restarts=int(info.get("RestartCount") or 0),
                volumes=tuple(m["Name"] for m in info.get("Mounts", []) if m.get("Type") == "volume"))
            self.seen[container.id] = container
            if container.pid and container.pid not in self._pids and (started := _started(container.pid)):
                self._pids[container.pid] = (container.name, started)
            found.append(container)
        return found

    def unready(self) -> list[str]:
        """What keeps the stack from being up: missing replicas, containers not running or not healthy."""
        containers = self.containers()
        problems = []
        for service, replicas in self.expected_replicas().items():
            mine = [c for c in containers if c.service == service]
            if len(mine) != replicas:
                problems.append(f"{service}: {len(mine)} of {replicas} container(s)")
            problems += [f"{c.name}: {c.status} {c.health}".strip() for c in mine
                         if c.status != "running" or c.health not in ("", "healthy")]
        return problems

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while problems := self.unready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the stack was not healthy within {timeout:.0f}s: {'; '.join(problems)}")
            time.sleep(1)

    def logs(self) -> str:
        try:
            return self.compose("logs", "--no-color", "--tail=30", timeout=60).stdout[-12000:]
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            return f"(no logs: {error})"

    def down(self) -> None:
        """`down -v`: containers, the network and the volumes; then the extra image tags."""
        self.containers()  # remember every volume and container for leftovers()
        try:
            self.compose("down", "-v", "--remove-orphans", "--timeout", str(STOP_TIMEOUT_S), timeout=180)
        finally:
            for tag in self._tags:
                self.podman.run("untag", tag, tag, check=False)

    def leftovers(self) -> list[str]:
        """Anything of this project still there after down(): containers, networks, volumes, processes."""
        left = [f"container {c}" for c in self.podman.project_containers(self.project, all_states=True)]
        label = f"label={COMPOSE_LABEL}={self.project}"
        left += [f"network {n}" for n in self.podman.run("network", "ls", "-q", "--filter", label).stdout.split()]
        volumes = set(self.podman.run("volume", "ls", "-q").stdout.split())
        left += [f"volume {v}" for c in self.seen.values() for v in c.volumes if v in volumes]
        left += [f"process {p}" for p in _processes_mentioning([c.id for c in self.seen.values()])]
        left += [f"process {pid} ({name})" for pid, (name, started) in self._pids.items()
                 if _started(pid) == started]
        return left


def _gone(pid: int) -> bool:
    return not pid_alive(pid)


def _started(pid: int) -> int | None:
    """When a process started (clock ticks after boot), which tells a PID apart from its later reuse."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _processes_mentioning(ids: list[str]) -> list[int]:
    """PIDs whose command line names one of the container IDs (conmon, a stuck health check)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if any(i in cmdline for i in ids) and pid_alive(int(proc.name)):
            found.append(int(proc.name))
    return found
