"""`protomesh up --detach` then `protomesh down` leaves no process running and no port bound."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from protomesh._process import pid_alive
from protomesh.testing import port_open, project_root
from tests.e2e.conftest import mesh_plan


def _protomesh(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "protomesh.cli", command, *(["--detach"] if command == "up" else [])],
                          cwd=project_root(), env=env, capture_output=True, text=True, timeout=180, check=False)


def test_up_detached_then_down_leaves_no_process_and_no_port(tmp_path: Path) -> None:
    plan = mesh_plan(tmp_path / "mesh")
    env = {**os.environ, "PROTOMESH_VAR_DIR": str(plan.state_dir), "PROTOMESH_RABBITMQ_NODE": plan.rabbitmq_node,
           **{variable: str(getattr(plan.ports, field)) for field, variable in plan.ports.ENV.items()}}

    up = _protomesh("up", env)
    assert up.returncode == 0, up.stdout + up.stderr
    assert "protomesh is up" in up.stdout
    state = json.loads((plan.state_dir / "state.json").read_text())
    pids = [state["supervisor_pid"], *state["processes"].values()]
    assert set(state["processes"]) >= {"consul", "rabbitmq", "controlplane", "gateway", "orders", "notifications"}
    assert all(pid_alive(pid) for pid in pids)

    down = _protomesh("down", env)
    assert down.returncode == 0, down.stdout + down.stderr
    assert [pid for pid in pids if pid_alive(pid)] == []
    ports = vars(plan.ports)
    assert [name for name, port in ports.items() if port_open(port)] == []
