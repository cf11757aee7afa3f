"""A real gateway for p3-p6: Consul dev agent, control plane and pinned Envoy, plus Consul registration helpers."""

from __future__ import annotations

import contextlib
import json
import statistics
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import grpc_server
from bench._core import NotRun
from bench._load import DESCRIPTOR
from bench._proc import LOAD_CPU, SERVER_CPU, free_port, need_binary, pinned, started, wait_until
from bench._rows import TINY_ID

# The bench's calls must never hit the route timeout; 15 s is the gateway's production default.
ROUTE_TIMEOUT_S = 15.0
# One Envoy worker: the gateway gets exactly the one core it is pinned to.
ENVOY_WORKERS = 1
READY_TIMEOUT_S = 60.0
# Longer than any figure runs: the registered instances stay passing throughout.
CHECK_TTL = "2h"


@dataclass
class Stack:
    """The running pieces; `backend_*` are set when a users-style backend was started and registered."""

    consul: Any          # localmesh.testing.ConsulAgent
    gateway: Any         # localmesh.gateway.Gateway
    backend_pid: int = 0
    backend_port: int = 0

    @property
    def envoy_pid(self) -> int:
        return int(self.gateway.envoy.pid)

    @property
    def rest_url(self) -> str:
        return f"{self.gateway.url}/v1/users/{TINY_ID}"


@contextlib.contextmanager
def consul_agent(log_dir: Path) -> Iterator[Any]:
    """A Consul dev agent on free loopback ports, stopped (by its PID) on exit."""
    need_binary("consul")
    from localmesh.testing import ConsulAgent

    agent = ConsulAgent(log_dir)
    try:
        agent.start()
        yield agent
    finally:
        agent.stop()


def envoy_gateway(log_dir: Path, consul_address: str, *, otlp: str | None = None) -> Any:
    """The mesh's own Gateway launcher (not started), with Envoy pinned to the load core and one worker; with
    `otlp`, Envoy traces every request to that collector."""
    need_binary("envoy")
    from localmesh.gateway import Gateway

    gateway = Gateway(log_dir, consul_address=consul_address, descriptor=DESCRIPTOR, route_timeout_s=ROUTE_TIMEOUT_S,
                      envoy_args=["--concurrency", str(ENVOY_WORKERS)],
                      extra_args=["--plaintext", *(["--otlp-endpoint", otlp] if otlp else [])])
    gateway.envoy.argv = pinned(gateway.envoy.argv, LOAD_CPU)
    return gateway


@contextlib.contextmanager
def gateway_stack(log_dir: Path, *, backend: bool = True, otlp: str | None = None) -> Iterator[Stack]:
    """Consul + control plane + Envoy (+ a protomesh users backend on the server core), REST answering; with `otlp`
    the gateway and the backend trace every request (and the backend serves metrics), as `make up` runs them."""
    with consul_agent(log_dir) as consul, contextlib.ExitStack() as stack:
        gateway = envoy_gateway(log_dir, consul.address, otlp=otlp)
        stack.callback(gateway.stop)
        try:
            gateway.start()
        except (RuntimeError, TimeoutError) as error:
            raise NotRun(f"the gateway did not start: {error}", missing="gateway") from error
        running = Stack(consul, gateway)
        if backend:
            port = free_port()
            process = stack.enter_context(started("backend", grpc_server.argv("protomesh", port,
                                                                              consul=consul.address, otlp=otlp),
                                                  log_dir=log_dir, cpu=SERVER_CPU, port=port))
            running.backend_pid, running.backend_port = process.pid, port
            wait_until(lambda: _answers(running.rest_url), timeout=READY_TIMEOUT_S, what="REST via the gateway")
        yield running


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def register(consul: Any, service_id: str, name: str, port: int, grpc_services: Sequence[str]) -> None:
    """An instance in Consul as protomesh registers one (meta grpc_services), with one check, passing.

    The check is a TTL check born passing (nothing listens on `port`): real instances carry a gRPC check,
    and a catalog of instances without checks would not be the shape the control plane watches.
    """
    body = {"ID": service_id, "Name": name, "Address": "127.0.0.1", "Port": port, "Tags": ["protomesh", "grpc"],
            "Meta": {"version": "bench", "grpc_services": ",".join(grpc_services)},
            "Check": {"TTL": CHECK_TTL, "Status": "passing"}}
    consul.put("/v1/agent/service/register", json.dumps(body))


def deregister(consul: Any, service_id: str) -> None:
    consul.put(f"/v1/agent/service/deregister/{service_id}", b"")


def envoy_stats(gateway: Any, pattern: str) -> dict[str, int]:
    """Envoy counters and gauges whose names match the regex `pattern` (admin /stats)."""
    text = gateway.admin(f"/stats?filter={urllib.parse.quote(pattern)}")
    stats = {}
    for line in text.splitlines():
        key, _, value = line.partition(": ")
        if value.strip().lstrip("-").isdigit():
            stats[key] = int(value)
    return stats


def poll(check: Any, *, timeout: float, what: str, interval: float = 0.001) -> float:
    """Poll `check` until true; returns the perf_counter time it became true (TimeoutError otherwise)."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if check():
            return time.perf_counter()
        time.sleep(interval)
    raise TimeoutError(f"{what} did not happen within {timeout:g}s")


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (p99 of 200 samples is the 198th smallest)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * fraction // 1))
    return ordered[int(rank) - 1]


def summary_ms(values: Sequence[float]) -> Mapping[str, float]:
    """Count, median, nearest-rank p99, max and min of millisecond samples."""
    return {"n": len(values), "p50_ms": round(statistics.median(values), 2),
            "p99_ms": round(percentile(values, 0.99), 2), "max_ms": round(max(values), 2),
            "min_ms": round(min(values), 2)}
