"""`protomesh up` (foreground or detached), `down` and `restart`: run a project's mesh and drive a running one."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from localmesh import control
from localmesh.compose import TopologyError
from localmesh.mesh import UP_TABLE_HEADER, Mesh, MeshOptions, read_state
from localmesh.process import MissingComponentError, pid_alive
from localmesh.topology import Topology

# `protomesh up --detach` cold-starts RabbitMQ (~9 s) and waits for every instance to pass and be routed.
DETACH_READY_TIMEOUT_S = 120.0
# Services drain and stop with their grace period, then RabbitMQ flushes to disk: allow for all of it.
DOWN_TIMEOUT_S = 90.0
# What a mesh that cannot start says; every one of these is a reason with a message written for people.
START_ERRORS = (RuntimeError, TimeoutError, OSError, TopologyError, MissingComponentError)


def shown(project: Path, path: Path) -> str:
    """A path as printed to people: relative to the project when it is inside it."""
    return str(path.relative_to(project)) if path.is_relative_to(project) else str(path)


def running_supervisor(options: MeshOptions) -> int | None:
    """The pid of the supervisor of the mesh in this state folder, if one runs."""
    state = read_state(options.state_dir)
    pid = int(str(state.get("supervisor_pid") or 0)) if state else 0
    return pid if pid and pid_alive(pid) and state and state.get("status") != "stopped" else None


def examples(mesh: Mesh) -> str:
    """The calls the topology file suggests (`x-protomesh: try:`), how to get a token and trust the gateway's
    certificate, and the commands that show the mesh.

    The suggestions may use {gateway} (host:port), {url} (with its scheme), {cacert} (curl's `--cacert CA `, or
    nothing when the gateway is plaintext) and {grpc_tls} (grpcurl's `-cacert CA` or `-plaintext`)."""
    gateway, security, project = mesh.ctx.gateway, mesh.ctx.security, mesh.topology.project
    if gateway is None:
        return ""
    ca = shown(project, security.ca_file) if security is not None else ""
    values = {"{gateway}": gateway.address, "{url}": gateway.url,
              "{cacert}": f"--cacert {ca} " if gateway.tls else "",
              "{grpc_tls}": f"-cacert {ca}" if gateway.tls else "-plaintext"}
    suggested = str(mesh.topology.settings.get("try") or "")
    for placeholder, value in values.items():
        suggested = suggested.replace(placeholder, value)
    lines = []
    if security is not None:
        lines.append(f"Secured: TLS with the development CA {ca}" if gateway.tls else "Secured (plaintext gateway):")
        lines.append("  tokens: .venv/bin/protomesh token --sub NAME --scope SCOPE [--scope ...] [--ttl 1h] "
                     "(--all-scopes: every scope of the contracts)")
    if suggested.strip():
        lines += ["Try it (REST and gRPC share the gateway port):", textwrap.indent(suggested.rstrip(), "  ")]
    lines.append("See it: protomesh status · protomesh top · protomesh logs NAME -f · protomesh restart NAME · "
                 "protomesh down")
    return "\n".join(lines) + "\n"


async def run_foreground(project: Path, env: Mapping[str, str]) -> int:
    """`protomesh up`: start the mesh, print where it is, keep it running until Ctrl-C or SIGTERM."""
    options = MeshOptions.from_env(project, env)
    if (pid := running_supervisor(options)) is not None:
        print(f"protomesh: a mesh already runs from {shown(project, options.state_dir)} (supervisor pid {pid}): "
              "`protomesh up --detach` applies changes to it, `protomesh down` stops it", file=sys.stderr)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    began = time.monotonic()
    # The supervisor's own messages (an exit, a restart, a crash loop) go to the same output as the table.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s.%(msecs)03d %(message)s", datefmt="%H:%M:%S")
    print(f"==> starting the local mesh (state and logs in {shown(project, options.state_dir)})", flush=True)
    try:
        mesh = Mesh(Topology.load(project, env), options, environ=env, say=lambda line: print(line, flush=True))
        if not await _started(mesh, stop):
            return 130
    except START_ERRORS as exc:
        print(f"protomesh: the mesh did not start: {exc}", file=sys.stderr)
        print(f"protomesh: every component was stopped; logs in {shown(project, options.state_dir / 'logs')}",
              file=sys.stderr)
        return 1
    server = await control.serve_control(options.state_dir, lambda request, say: _handle(mesh, request, say))
    try:
        print(f"\n{mesh.table()}\n\n(up in {time.monotonic() - began:.1f}s; Ctrl-C stops everything)\n")
        print(examples(mesh), flush=True)
        await stop.wait()
        print("==> stopping (reverse order)", flush=True)
    finally:
        server.close()
        await mesh.stop()
    print("==> stopped", flush=True)
    return 0


async def _started(mesh: Mesh, stop: asyncio.Event) -> bool:
    """Start the mesh unless Ctrl-C comes first (then what started is stopped again): whether it started."""
    starting = asyncio.create_task(mesh.start())
    interrupted = asyncio.create_task(stop.wait())
    await asyncio.wait([starting, interrupted], return_when=asyncio.FIRST_COMPLETED)
    interrupted.cancel()
    if starting.done():
        starting.result()
        return True
    starting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await starting
    print("==> interrupted while starting; everything that started was stopped", flush=True)
    return False


async def _handle(mesh: Mesh, request: dict[str, Any], say: Any) -> list[str]:
    """A control request: `reconcile` with the requester's environment, or `restart` of one name."""
    def both(line: str) -> None:
        print(line, flush=True)
        say(line)

    mesh.say = both
    try:
        if request.get("op") == "reconcile":
            env = {str(k): str(v) for k, v in dict(request.get("env") or {}).items()}
            return await mesh.reconcile(Topology.load(mesh.topology.project, env))
        if request.get("op") == "restart":
            name = str(request.get("name"))
            try:
                return await mesh.restart(name)
            except KeyError:
                raise KeyError(f"no component or instance named {name!r} (see `protomesh status`)") from None
        raise ValueError(f"unknown request {request.get('op')!r}")
    finally:
        mesh.say = lambda line: print(line, flush=True)


def up_detached(project: Path, env: Mapping[str, str]) -> int:
    """`protomesh up --detach`: reconcile the running mesh, or start one in the background and wait until ready."""
    options = MeshOptions.from_env(project, env)
    if running_supervisor(options) is not None:
        print("==> applying the topology to the running mesh (only what is new or changed)", flush=True)
        return _report(control.request(options.state_dir, {"op": "reconcile", "env": dict(env)}))
    options.state_dir.mkdir(parents=True, exist_ok=True)
    (options.state_dir / "state.json").unlink(missing_ok=True)
    log_path = options.state_dir / "up.log"
    with log_path.open("wb") as log:
        child = subprocess.Popen([sys.executable, "-m", "protomesh.cli", "up", "--project", str(project)],
                                 stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=project,
                                 env=dict(env), start_new_session=True)
    deadline = time.monotonic() + DETACH_READY_TIMEOUT_S
    while time.monotonic() < deadline:
        state = read_state(options.state_dir)
        # The child marks its state ready a moment before it prints the table: wait for both.
        ready = state and state.get("status") == "ready" and state.get("supervisor_pid") == child.pid
        if ready and UP_TABLE_HEADER in (output := log_path.read_text()):
            print(output)
            print(f"protomesh: running in the background (pid {child.pid}); `protomesh down` stops it")
            return 0
        if child.poll() is not None:
            print(log_path.read_text(), file=sys.stderr)
            print(f"protomesh: the mesh did not start (log: {shown(project, log_path)})", file=sys.stderr)
            return 1
        time.sleep(0.2)
    child.send_signal(signal.SIGTERM)
    print(f"protomesh: not ready after {DETACH_READY_TIMEOUT_S:.0f}s (log: {shown(project, log_path)})",
          file=sys.stderr)
    return 1


def restart(project: Path, env: Mapping[str, str], name: str) -> int:
    """`protomesh restart NAME`: a rolling restart of a service, or a restart of one instance or component."""
    options = MeshOptions.from_env(project, env)
    if running_supervisor(options) is None:
        print("protomesh: no mesh is running (start one with `protomesh up`)", file=sys.stderr)
        return 1
    return _report(control.request(options.state_dir, {"op": "restart", "name": name}, say=print))


def _report(result: dict[str, Any]) -> int:
    if not result.get("ok"):
        print(f"protomesh: {result.get('error')}", file=sys.stderr)
        return 1
    for action in result.get("actions", []):
        print(f"  {action}")
    return 0


def down(project: Path, env: Mapping[str, str]) -> int:
    """Stop a detached mesh: its supervisor stops every component in reverse order."""
    options = MeshOptions.from_env(project, env)
    pid = running_supervisor(options)
    if pid is None:
        print("protomesh: no mesh is running")
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + DOWN_TIMEOUT_S
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if pid_alive(pid):
        print(f"protomesh: supervisor {pid} still running after {DOWN_TIMEOUT_S:.0f}s", file=sys.stderr)
        return 1
    print("protomesh: stopped")
    return 0
