"""`protomesh up --detach` then `protomesh down` leaves no process running and no port bound."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from localmesh.process import pid_alive
from localmesh.testing import isolated_env, port_open, project_root


def protomesh(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "protomesh.cli", *args], cwd=project_root(), env=env,
                          capture_output=True, text=True, timeout=180, check=False)


def test_up_detached_with_one_users_replica_then_down_leaves_no_process_and_no_port(tmp_path: Path) -> None:
    # USERS_REPLICAS is a knob of the topology file: it must never reach the users service's settings.
    env = isolated_env(project_root(), tmp_path / "mesh", overrides={"USERS_REPLICAS": "1"})

    up = protomesh("up", "--detach", env=env)
    assert up.returncode == 0, up.stdout + up.stderr
    assert "protomesh is up" in up.stdout
    state = json.loads((tmp_path / "mesh" / "state.json").read_text())
    instances = {name: info for component in state["components"].values()
                 for name, info in component["instances"].items()}
    core = {"consul-1", "rabbitmq-1", "controlplane-1", "gateway-1", "users-1", "orders-1", "notifications-1"}
    # Prometheus, the collector and Zipkin start in the background: "up" does not wait for them.
    assert core <= set(instances) <= core | {"prometheus-1", "otelcol-1", "zipkin-1"}
    pids = [state["supervisor_pid"], *(info["pid"] for info in instances.values())]
    assert all(pid_alive(pid) for pid in pids)

    status = protomesh("status", env=env)
    routes = [line for line in status.stdout.splitlines() if line.strip().startswith("route")]
    assert "  route          /acme.users.v1.UserService/GetUser" in "\n".join(routes), status.stdout
    assert not [line for line in routes if " ? " in line], status.stdout

    down = protomesh("down", env=env)
    assert down.returncode == 0, down.stdout + down.stderr
    assert [pid for pid in pids if pid_alive(pid)] == []
    ports = {name: int(value) for name, value in env.items() if name.endswith("_PORT") and value.isdigit()}
    assert [name for name, port in ports.items() if port_open(port)] == []
