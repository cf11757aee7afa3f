"""p2: server CPU per request of protomesh vs FastAPI + uvicorn (uvloop, httptools) + pydantic doing the same work.

Two workloads, each its own value: `tiny` (GetUser: one row) and `list50` (ListUsers: 50 rows). Both
servers (and a bare grpc.aio one, for context) run side by side on the server core; ghz and wrk load them
in paired rounds from the other core; the figure is FastAPI's server CPU µs per request ÷ protomesh's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import grpc_server
from bench._core import ROOT, Figure, Options, Outcome, Target
from bench._load import LoadResult, grpc_load, http_load
from bench._measure import Sample, cpu_us, described, measured, median_ratio, paired_rounds
from bench._proc import SERVER_CPU, bench_venv_python, free_port, started
from bench._rows import LIST_SIZE, TINY_ID

CONCURRENCY = 50
# protomesh (as protomesh.run() serves: uvloop, start-up heap frozen), FastAPI, and for context: bare grpc.aio,
# and protomesh before those loop defaults (the standard asyncio loop, heap not frozen).
SUBJECTS = ("protomesh", "fastapi", "bare", "protomesh_asyncio")


@dataclass(frozen=True)
class Workload:
    """One operation, as a gRPC call and as the REST GET FastAPI serves."""

    name: str
    call: str
    data: Mapping[str, Any]
    path: str


WORKLOADS = (
    Workload("tiny", grpc_server.GET_USER, {"user_id": TINY_ID}, f"/v1/users/{TINY_ID}"),
    Workload("list50", grpc_server.LIST_USERS, {"page_size": LIST_SIZE}, f"/v1/users?page_size={LIST_SIZE}"),
)


def bench_python() -> str:
    """The bench venv's interpreter, or NotRun when it (or one of FastAPI's pieces) is missing."""
    return bench_venv_python("fastapi, uvicorn, uvloop, httptools, pydantic",
                             "FastAPI, uvicorn[standard] and pydantic")


def server_argv(kind: str, port: int) -> list[str]:
    """The command line serving `kind` ("protomesh", "bare" or "fastapi") on `port`."""
    if kind == "fastapi":
        return [bench_python(), "-m", "bench.fastapi_server", "--port", str(port)]
    if kind == "protomesh_asyncio":
        return [*grpc_server.argv("protomesh", port), "--loop", "asyncio", "--gc-freeze", "off"]
    return grpc_server.argv(kind, port)


def load_for(kind: str, port: int, work: Workload, duration: float) -> Callable[[], LoadResult]:
    if kind == "fastapi":
        return lambda: http_load(f"http://127.0.0.1:{port}{work.path}", duration=duration, concurrency=CONCURRENCY)
    return lambda: grpc_load(f"127.0.0.1:{port}", work.call, work.data, duration=duration,
                             concurrency=CONCURRENCY)


def _servers(stack: contextlib.ExitStack, log_dir: Path) -> dict[str, tuple[int, int]]:
    """subject -> (pid, port), every server pinned to the server core and answering."""
    servers = {}
    for kind in SUBJECTS:
        port = free_port()
        process = stack.enter_context(started(kind, server_argv(kind, port), log_dir=log_dir, cpu=SERVER_CPU,
                                              port=port, cwd=ROOT))
        servers[kind] = (process.pid, port)
    return servers


def measure(options: Options) -> dict[str, dict[str, list[Sample]]]:
    """workload -> subject -> samples of paired rounds."""
    bench_python()  # NotRun before anything starts when the bench venv is missing
    duration, warmup = options.pick(2.0, 1.0), options.pick(1.0, 0.0)
    results: dict[str, dict[str, list[Sample]]] = {}
    with contextlib.ExitStack() as stack:
        servers = _servers(stack, options.work_dir / "p2")
        for work in WORKLOADS:
            subjects: dict[str, Callable[[], Sample]] = {}
            for kind, (pid, port) in servers.items():
                if warmup:
                    load_for(kind, port, work, warmup)()
                subjects[kind] = _measured(pid, load_for(kind, port, work, duration))
            results[work.name] = paired_rounds(subjects, options.count(6, 1))
    return results


def _measured(pid: int, load: Callable[[], LoadResult]) -> Callable[[], Sample]:
    return lambda: measured([pid], load)


def run(options: Options) -> Outcome:
    results = measure(options)
    ratios = {name: round(median_ratio(by["fastapi"], by["protomesh"], cpu_us), 3) for name, by in results.items()}
    context = {name: round(median_ratio(by["bare"], by["protomesh"], cpu_us), 3) for name, by in results.items()}
    before = {name: round(median_ratio(by["fastapi"], by["protomesh_asyncio"], cpu_us), 3)
              for name, by in results.items()}
    gain = {name: round(median_ratio(by["protomesh_asyncio"], by["protomesh"], cpu_us), 3)
            for name, by in results.items()}
    commands = [by[kind][0].load.command for by in results.values() for kind in ("protomesh", "fastapi")]
    return Outcome(
        values={"p2_runtime_vs_fastapi": ratios},
        baseline={"what": "FastAPI + uvicorn (uvloop, httptools) + pydantic, no access log",
                  **{name: described(by["fastapi"]) for name, by in results.items()}},
        subject={"what": "protomesh.Server, default interceptors, on uvloop with start-up's heap frozen (run()'s "
                         "defaults)",
                 **{name: described(by["protomesh"]) for name, by in results.items()},
                 "bare_grpc_aio": {name: described(by["bare"]) for name, by in results.items()},
                 "protomesh_asyncio": {name: described(by["protomesh_asyncio"]) for name, by in results.items()}},
        commands=commands,
        notes=[f"bare grpc.aio µs ÷ protomesh µs (runtime cost in this run): {context}",
               f"before the loop defaults (asyncio, heap not frozen), FastAPI µs ÷ protomesh µs: {before}; the "
               f"defaults' CPU efficiency (asyncio µs ÷ uvloop+frozen µs): {gain}"],
    )


FIGURE = Figure("p2", "protomesh vs FastAPI+uvicorn+pydantic (server CPU µs per request, FastAPI ÷ protomesh)",
                {"p2_runtime_vs_fastapi": Target(">=", 1.0, per_key={"tiny": 0.5, "list50": 1.0})}, run)
