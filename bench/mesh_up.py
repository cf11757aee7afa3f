"""p8: `protomesh up --detach` from nothing running to every service healthy and REST answering, then `protomesh down`.

Runs the lead's runner in a checkout of its own (a folder of symlinks to this one), so its state, logs
and databases start empty (a cold start, RabbitMQ's first boot included) and never touch var/mesh of a
mesh someone else runs; every published port is a free one.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench._core import ROOT, Figure, NotRun, Options, Outcome, Target
from bench._gateway import poll
from localmesh.testing.client import GatewayClient

# What `protomesh up` needs from a checkout; everything it writes goes to <root>/var/mesh.
LINKED = ("docker-compose.yml", "Makefile", "protos", "services", "gen", "config", "pyproject.toml")
UP_TIMEOUT_S = 180.0
DOWN_TIMEOUT_S = 120.0
_HEALTHY = re.compile(r"^\s+(\S+)\s+healthy after\s+([\d.]+)s", re.MULTILINE)


def _checkout(base: Path) -> Path:
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    for name in LINKED:
        (base / name).symlink_to(ROOT / name)
    return base


def _protomesh() -> list[str]:
    script = Path(sys.executable).parent / "protomesh"
    return [str(script)] if script.exists() else [sys.executable, "-m", "protomesh.cli"]


def _rest_answers(gateway: GatewayClient, token: str) -> bool:
    """GET /v1/users answers 200 through the gateway, over TLS with the mesh's CA and a token when it is secured."""
    request = urllib.request.Request(f"{gateway.url}/v1/users", headers=gateway.headers(token))
    try:
        with urllib.request.urlopen(request, timeout=2, context=gateway.ssl_context()) as response:
            return int(response.status) == 200
    except OSError:
        return False


def _run(argv: list[str], root: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def _cycle(root: Path, env: dict[str, str]) -> dict[str, Any]:
    """One `up --detach` -> REST answering -> `down`; the seconds of each step."""
    up, down = [*_protomesh(), "up", "--detach"], [*_protomesh(), "down"]
    began = time.perf_counter()
    try:
        started = _run(up, root, env, UP_TIMEOUT_S)
        up_s = time.perf_counter() - began
        if started.returncode != 0:
            raise NotRun(f"`protomesh up --detach` failed ({started.returncode}): "
                         f"{(started.stdout + started.stderr)[-600:]}", missing="mesh runner")
        gateway = GatewayClient.of_running(root, env)
        token = gateway.token("users:read", subject="bench")
        answered = poll(lambda: _rest_answers(gateway, token), timeout=60, what="REST via the gateway", interval=0.02)
    finally:
        stopping = time.perf_counter()
        stopped = _run(down, root, env, DOWN_TIMEOUT_S)
        down_s = time.perf_counter() - stopping
    return {"total_s": round(answered - began, 2), "up_returned_s": round(up_s, 2),
            "components_healthy_after_s": {name: float(s) for name, s in _HEALTHY.findall(started.stdout)},
            "down_s": round(down_s, 2), "down_exit": stopped.returncode}


def run(options: Options) -> Outcome:
    from localmesh.testing import isolated_env

    root = _checkout(options.work_dir / "p8" / "checkout")
    # Free ports for every *_PORT knob and a node name of its own; consul and envoy from .tools/bin, as
    # scripts/test.sh puts them on PATH.
    env = isolated_env(root, root / "var" / "mesh",
                       overrides={"PATH": f"{ROOT / '.tools' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"})
    ports = {name: int(env[name]) for name in env if name.endswith("_PORT") and env[name].isdigit()}
    cold = _cycle(root, env)
    warm = _cycle(root, env)  # the state a previous `up` left: RabbitMQ's data exists
    setting = " ".join(f"{name}={env[name]}" for name in (*ports, "PROTOMESH_RABBITMQ_NODE"))
    return Outcome(
        values={"p8_up_cold_s": cold["total_s"]},
        subject={"what": "`protomesh up --detach` in a fresh checkout (no state) until GET /v1/users answers 200",
                 "cold": cold, "warm_second_up": warm},
        commands=[f"cd {root} && {setting} {shlex.join([*_protomesh(), 'up', '--detach'])}",
                  f"curl --cacert var/mesh/pki/ca.pem -H 'authorization: Bearer $TOKEN' "
                  f"https://127.0.0.1:{ports['GATEWAY_PORT']}/v1/users", shlex.join([*_protomesh(), "down"])],
        notes=[f"second `up` with the state the first one left (warm): {warm['total_s']} s"],
    )


FIGURE = Figure("p8", "`protomesh up` cold start to REST answering", {"p8_up_cold_s": Target("<=", 5, " s")}, run)
