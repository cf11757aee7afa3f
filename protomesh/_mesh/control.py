"""`protomesh up --detach`, `down` and `status`: drive a mesh supervisor running in the background."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from protomesh._mesh.component import get_json
from protomesh._mesh.runner import state
from protomesh._mesh.topology import SERVICES, MeshPlan
from protomesh._process import pid_alive

# `protomesh up` cold-starts RabbitMQ (~9 s) and waits for every instance to pass its health check.
DETACH_READY_TIMEOUT_S = 120.0
# Services drain and stop with their grace period, then RabbitMQ flushes to disk: allow for all of it.
DOWN_TIMEOUT_S = 90.0


def up_detached(plan: MeshPlan) -> int:
    """Start `protomesh up` as a background supervisor and return once the mesh is ready."""
    running = state(plan)
    if running and running.get("status") == "ready" and pid_alive(int(str(running["supervisor_pid"]))):
        print(f"protomesh: already running (supervisor pid {running['supervisor_pid']})")
        return 0
    plan.state_dir.mkdir(parents=True, exist_ok=True)
    (plan.state_dir / "state.json").unlink(missing_ok=True)
    log_path = plan.state_dir / "up.log"
    with log_path.open("wb") as log:
        child = subprocess.Popen([sys.executable, "-m", "protomesh.cli", "up"], stdout=log,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=plan.root,
                                 start_new_session=True)
    deadline = time.monotonic() + DETACH_READY_TIMEOUT_S
    while time.monotonic() < deadline:
        current = state(plan)
        if current and current.get("status") == "ready" and current.get("supervisor_pid") == child.pid:
            print(log_path.read_text())
            print(f"protomesh: running in the background (pid {child.pid}); `protomesh down` stops it")
            return 0
        if child.poll() is not None:
            print(log_path.read_text(), file=sys.stderr)
            print(f"protomesh: the mesh did not start (log: {log_path})", file=sys.stderr)
            return 1
        time.sleep(0.2)
    child.send_signal(signal.SIGTERM)
    print(f"protomesh: not ready after {DETACH_READY_TIMEOUT_S:.0f}s (log: {log_path})", file=sys.stderr)
    return 1


def down(plan: MeshPlan) -> int:
    """Stop a detached mesh: its supervisor stops every component in reverse order."""
    current = state(plan)
    pid = int(str(current["supervisor_pid"])) if current else 0
    if not pid or not pid_alive(pid):
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


def status(plan: MeshPlan) -> int:
    """Print the instances and health of each service in Consul and the gateway's routes."""
    current = state(plan)
    print(f"mesh: {current.get('status') if current else 'not started by protomesh up'}")
    health = f"http://{plan.consul_address}/v1/health/service"
    for service in SERVICES:
        entries = get_json(f"{health}/{service}")
        if not isinstance(entries, list):
            print(f"  {service:<14} consul unreachable at {plan.consul_address}")
            continue
        for entry in entries:
            svc, checks = entry["Service"], entry["Checks"]
            worst = "passing" if all(c["Status"] == "passing" for c in checks) else "critical"
            print(f"  {service:<14} {svc['ID']:<40} {svc['Address']}:{svc['Port']}  {worst}")
    _print_routes(plan)
    return 0


def _print_routes(plan: MeshPlan) -> None:
    dump = get_json(f"http://127.0.0.1:{plan.ports.envoy_admin}/config_dump?resource=dynamic_route_configs")
    if not isinstance(dump, dict):
        print(f"  gateway        admin unreachable on :{plan.ports.envoy_admin}")
        return
    for config in dump.get("configs", []):
        for host in config.get("route_config", {}).get("virtual_hosts", []):
            for route in host.get("routes", []):
                target = route.get("route", {}).get("cluster", "(direct response)")
                print(f"  route          {route.get('match', {}).get('prefix', '?'):<44} -> {target}")
