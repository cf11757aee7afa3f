"""Where a p1/p2 server's CPU goes under load: py-spy samples it while ghz or wrk drives it from the other core.

    .venv/bin/python -m bench.profile --server protomesh --workload tiny --duration 10
    .venv/bin/python -m bench.profile --server fastapi --workload list50 --keep /tmp/fastapi.txt

Prints the share of samples per function, inclusive (the function and what it calls) and self (the
function's own code), from py-spy's collapsed stacks with native frames (grpc's Cython core included).
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
from pathlib import Path

from bench._core import ROOT, NotRun, Options
from bench._proc import SERVER_CPU, find_tool, free_port, started
from bench.vs_fastapi import SUBJECTS, WORKLOADS, load_for, server_argv

# Samples per second: dense enough for a 10 s window, light enough not to slow the server visibly.
RATE = 250
TOP = 25


def record(kind: str, workload: str, duration: float, output: Path) -> None:
    """Run `kind` under `workload` load and let py-spy record it (collapsed stacks) into `output`."""
    py_spy = find_tool("py-spy")
    if py_spy is None:
        raise NotRun("py-spy is missing: it comes with the bench venv (requirements-bench.txt)", missing="py-spy")
    work = next(w for w in WORKLOADS if w.name == workload)
    port = free_port()
    with started(kind, server_argv(kind, port), log_dir=Options().work_dir / "profile", cpu=SERVER_CPU,
                 port=port, cwd=ROOT) as server:
        load_for(kind, port, work, 1.0)()  # warm-up, unrecorded
        spy = subprocess.Popen([py_spy, "record", "--pid", str(server.pid), "--rate", str(RATE), "--duration",
                                f"{duration:g}", "--format", "raw", "--native",
                                "--output", str(output)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        load_for(kind, port, work, duration + 1)()
        _, errors = spy.communicate(timeout=duration + 60)
        if spy.returncode != 0:
            raise RuntimeError(f"py-spy failed: {errors.decode(errors='replace')[-600:]}")


def summarize(collapsed: str, top: int = TOP) -> str:
    """Inclusive and self shares of the `top` functions, from py-spy's `frame;frame;... count` lines."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_short(frame) for frame in stack.split(";")]
        total += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            inclusive[frame] += int(count)
    lines = [f"{total} samples"]
    for title, counter in (("inclusive", inclusive), ("self", own)):
        lines.append(f"\n{title}:")
        lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in counter.most_common(top)]
    return "\n".join(lines)


def _short(frame: str) -> str:
    # "handle (protomesh/_interceptors.py:123)" -> "handle (protomesh/_interceptors.py)": lines split a function.
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", f"{ROOT}/", "lib/python3.11/"):
        path = path.split(marker)[-1]
    return f"{name} ({path})" if path else name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=SUBJECTS, default="protomesh")
    parser.add_argument("--workload", choices=[w.name for w in WORKLOADS], default="tiny")
    parser.add_argument("--duration", type=float, default=10.0, help="recorded seconds")
    parser.add_argument("--keep", type=Path, help="also keep py-spy's collapsed stacks here")
    parser.add_argument("--top", type=int, default=TOP)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        output = args.keep or Path(scratch) / "profile.txt"
        record(args.server, args.workload, args.duration, output)
        sys.stdout.write(summarize(output.read_text(), args.top) + "\n")


if __name__ == "__main__":
    main()
