"""The machine and tool versions a run measured on, for the report (absolute numbers only mean something with it)."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from bench._load import load_tools
from bench._proc import BENCH_VENV, find_tool, usable_cpus

_PROJECT_PACKAGES = ("grpcio", "protobuf", "aio-pika", "py-consul")
_BENCH_PACKAGES = ("fastapi", "uvicorn", "uvloop", "httptools", "pydantic", "py-spy")


def _output(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (done.stdout + done.stderr).strip()


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024 / 1024, 1)
    return 0.0


def _tool_versions() -> dict[str, str]:
    versions: dict[str, str] = {}
    if envoy := find_tool("envoy"):
        found = re.search(r"/(\d+\.\d+\.\d+)/", _output([envoy, "--version"]))
        versions["envoy"] = found.group(1) if found else "unknown"
    if consul := find_tool("consul"):
        versions["consul"] = _output([consul, "version"]).splitlines()[0].removeprefix("Consul ")
    if shutil.which("dpkg-query"):
        for package in ("rabbitmq-server", "erlang-base"):
            if version := _output(["dpkg-query", "-W", "-f", "${Version}", package]):
                versions[package] = version if "no packages" not in version else "not installed"
    if (ghz := find_tool("ghz")) and shutil.which("go"):
        found = re.search(r"mod\s+github.com/bojand/ghz\s+(\S+)", _output(["go", "version", "-m", ghz]))
        versions["ghz"] = found.group(1) if found else "unknown"
    if wrk := find_tool("wrk"):
        versions["wrk"] = _output([wrk, "-v"]).split(" [")[0].removeprefix("wrk ")
    return versions


def _bench_venv_versions() -> dict[str, str]:
    python = BENCH_VENV / "bin" / "python"
    if not python.exists():
        return {}
    script = ("import importlib.metadata as m, json\nout = {}\n"
              f"for n in {list(_BENCH_PACKAGES)!r}:\n"
              "    try: out[n] = m.version(n)\n"
              "    except m.PackageNotFoundError: pass\n"
              "print(json.dumps(out))")
    try:
        versions: dict[str, str] = json.loads(_output([str(python), "-c", script]))
    except ValueError:
        return {}
    return versions


def describe() -> dict[str, Any]:
    """CPU model, cores, memory, kernel, Python and every component's version."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": usable_cpus(),
        "memory_gib": _memory_gib(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "project_venv": {name: importlib.metadata.version(name) for name in _PROJECT_PACKAGES},
        "bench_venv": _bench_venv_versions(),
        "tools": _tool_versions(),
        "load_generators": load_tools(),
        "pinning": "taskset" if shutil.which("taskset") and usable_cpus() >= 2 else "none (one core or no taskset)",
    }
