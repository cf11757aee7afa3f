"""Processes the harness starts (pinned to a core, stopped by PID) and what it reads about them from /proc."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from bench._core import ROOT, NotRun
from localmesh.process import ManagedProcess, MissingComponentError, free_port, port_open, wait_until

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
# On the 2-core machine: the measured server on one core, the load generator (or Envoy) on the other,
# so neither steals cycles from the side being measured.
SERVER_CPU = 0
LOAD_CPU = 1
BENCH_VENV = ROOT / ".tools" / "bench-venv"
# A server gets this long to bind its port; a loaded shared machine starts Python slowly.
START_TIMEOUT_S = 60.0

__all__ = ["BENCH_VENV", "LOAD_CPU", "SERVER_CPU", "cpu_seconds", "find_tool", "free_port", "load_average",
           "pinned", "port_open", "rss_mb", "started", "wait_until"]


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0))


def pinned(argv: Sequence[str], cpu: int | None) -> list[str]:
    """argv run under `taskset -c cpu` (taskset execs it: the PID stays the program's); unpinned on 1 core."""
    taskset = shutil.which("taskset")
    if cpu is None or taskset is None or usable_cpus() < 2:
        return list(argv)
    return [taskset, "-c", str(cpu), *argv]


def find_tool(name: str) -> str | None:
    """A load generator or profiler from PATH, the project's .tools/bin or the bench venv; None if absent."""
    found = shutil.which(name)
    if found:
        return found
    for folder in (ROOT / ".tools" / "bin", BENCH_VENV / "bin"):
        if os.access(folder / name, os.X_OK):
            return str(folder / name)
    return None


def need_binary(name: str) -> str:
    """A component binary (consul, envoy) or NotRun naming it."""
    from localmesh.process import find_binary

    try:
        return find_binary(name)
    except MissingComponentError as error:
        raise NotRun(str(error), missing=name) from error


def cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of a process, all its threads included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@functools.cache
def bench_venv_python(modules: str, what: str) -> str:
    """The bench venv's interpreter when it imports `modules` (comma-separated), else NotRun saying how to get it;
    `what` names the packages in that message."""
    python = BENCH_VENV / "bin" / "python"
    probe = [str(python), "-c", f"import {modules}"]
    if not python.exists() or subprocess.run(probe, capture_output=True, check=False).returncode != 0:
        raise NotRun(f"the bench venv ({BENCH_VENV.relative_to(ROOT)}) with {what} is missing: run "
                     "`scripts/bootstrap.sh bench`", missing="bench-venv")
    return str(python)


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def _cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of every CPU since boot, from /proc/stat."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_share(seconds: float) -> float:
    """The share of the machine's CPU (0..1) that was busy over the next `seconds`, with nothing of the bench
    running: what other work takes from a figure that starts now (the 1-minute load average also counts the
    previous figure's own load, which is no one else's)."""
    busy, total = _cpu_jiffies()
    time.sleep(seconds)
    busy_after, total_after = _cpu_jiffies()
    return round((busy_after - busy) / max(total_after - total, 1), 3)


@contextlib.contextmanager
def started(name: str, argv: Sequence[str], *, log_dir: Path, cpu: int | None = None, port: int | None = None,
            env: Mapping[str, str] | None = None, cwd: Path | None = None) -> Iterator[ManagedProcess]:
    """A child process (pinned to `cpu`), ready once `port` accepts connections; stopped by its PID on exit."""
    process = ManagedProcess(name, pinned(argv, cpu), log_dir=log_dir, cwd=cwd,
                             env=None if env is None else {**os.environ, **env})
    process.start()
    try:
        if port is not None:
            wait_until(lambda: _listening(process, port), timeout=START_TIMEOUT_S, what=f"{name} on :{port}")
        yield process
    finally:
        process.stop(timeout=15)


def _listening(process: ManagedProcess, port: int) -> bool:
    process.ensure_alive()
    return port_open(port)


def python_argv(module: str, *args: str) -> list[str]:
    """`python -m module args` with the harness's own interpreter (the project venv)."""
    return [sys.executable, "-m", module, *args]


def stopwatch() -> float:
    return time.perf_counter()
