"""A real gateway for p3-p6: Consul dev agent, control plane and pinned Envoy, plus Consul registration helpers.

    with gateway_stack(log_dir) as stack: ...                          # plaintext, no token (the dev gateway)
    with gateway_stack(log_dir, security=TLS_JWT_MTLS) as stack: ...   # as `protomesh up` secures it
"""

from __future__ import annotations

import contextlib
import json
import os
import ssl
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
from bench._load import DESCRIPTOR, ClientTls, LoadResult, grpc_load, http_load
from bench._proc import LOAD_CPU, SERVER_CPU, free_port, need_binary, pinned, started, wait_until
from bench._rows import TINY_ID
from bench._security import PLAINTEXT, RATE_LIMITED, BenchPki, GatewaySecurity, secured_consul
from localmesh import acl
from localmesh.security import put_policy
from protomesh.auth import CLAIMS_KEY
from protomesh.intentions import Intention

# The bench's calls must never hit the route timeout; 15 s is the gateway's production default.
ROUTE_TIMEOUT_S = 15.0
# One Envoy worker: the gateway gets exactly the one core it is pinned to.
ENVOY_WORKERS = 1
READY_TIMEOUT_S = 60.0
# Longer than any figure runs: the registered instances stay passing throughout.
CHECK_TTL = "2h"


@dataclass
class Stack:
    """The running pieces; `backend_*` are set when a users-style backend was started and registered.

    `pki` is set when the stack is secured: callers then speak TLS to the gateway (and carry a token when it
    checks them), and direct calls to an mTLS backend present the gateway's certificate and claims, as Envoy does.
    """

    consul: Any          # localmesh.consul.ConsulAgent
    gateway: Any         # localmesh.gateway.Gateway
    security: GatewaySecurity = PLAINTEXT
    pki: BenchPki | None = None
    backend_pid: int = 0
    backend_port: int = 0

    @property
    def envoy_pid(self) -> int:
        return int(self.gateway.envoy.pid)

    @property
    def rest_url(self) -> str:
        return f"{self.gateway.url}/v1/users/{TINY_ID}"

    @property
    def headers(self) -> dict[str, str]:
        """What every request to the gateway carries: a bearer token when the gateway checks them."""
        return {"authorization": f"Bearer {self.pki.token}"} if self.pki is not None and self.security.jwt else {}

    def rest(self, *, duration: float, concurrency: int) -> LoadResult:
        ca = self.pki.ca_file if self.pki is not None and self.security.edge_tls else None
        return http_load(self.rest_url, duration=duration, concurrency=concurrency, headers=self.headers, ca_file=ca)

    def gateway_grpc(self, call: str, data: Mapping[str, Any], *, duration: float, concurrency: int) -> LoadResult:
        tls = self.pki.edge_client() if self.pki is not None and self.security.edge_tls else None
        return grpc_load(self.gateway.address, call, data, duration=duration, concurrency=concurrency, tls=tls,
                         metadata=self.headers)

    def direct_grpc(self, call: str, data: Mapping[str, Any], *, duration: float, concurrency: int) -> LoadResult:
        tls: ClientTls | None = None
        metadata: dict[str, str] = {}
        if self.pki is not None and self.security.mtls:
            tls, metadata = self.pki.as_gateway(), {CLAIMS_KEY: self.pki.claims}
        return grpc_load(f"127.0.0.1:{self.backend_port}", call, data, duration=duration, concurrency=concurrency,
                         tls=tls, metadata=metadata)


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


def envoy_gateway(log_dir: Path, consul_address: str, *, otlp: str | None = None,
                  security_args: Sequence[str] = ("--plaintext",), env: Mapping[str, str] | None = None,
                  tls: bool = False, control_args: Sequence[str] = (), max_connections: int | None = None) -> Any:
    """The mesh's own Gateway launcher (not started), with Envoy pinned to the load core and one worker; with
    `otlp`, Envoy traces every request to that collector; `security_args` are the control plane's security flags,
    `control_args` any other of its flags, `max_connections` Envoy's connection limit (None: the default)."""
    need_binary("envoy")
    from localmesh.gateway import Gateway

    gateway = Gateway(log_dir, consul_address=consul_address, descriptor=DESCRIPTOR, route_timeout_s=ROUTE_TIMEOUT_S,
                      envoy_args=["--concurrency", str(ENVOY_WORKERS)], env=env, tls=tls,
                      max_connections=max_connections,
                      extra_args=[*security_args, *(["--otlp-endpoint", otlp] if otlp else []), *control_args])
    gateway.envoy.argv = pinned(gateway.envoy.argv, LOAD_CPU)
    return gateway


@contextlib.contextmanager
def gateway_stack(log_dir: Path, *, backend: bool = True, otlp: str | None = None,
                  security: GatewaySecurity = PLAINTEXT) -> Iterator[Stack]:
    """Consul + control plane + Envoy (+ a protomesh users backend on the server core), REST answering; with `otlp`
    the gateway and the backend trace every request (and the backend serves metrics), as `make up` runs them.

    A secured stack runs as `protomesh up` does: Consul with default-deny ACLs and one token per process, the
    gateway with `security`'s flags, and (with mtls) the backend in security.mode mtls, the intention
    gateway -> users in Consul."""
    with contextlib.ExitStack() as stack:
        pki = None if security.off else BenchPki.create(log_dir / "pki")
        if pki is None:
            consul, env, backend_env = stack.enter_context(consul_agent(log_dir)), None, None
            runner_token = ""
        else:
            secured = stack.enter_context(secured_consul(log_dir, pki))
            secured.allow(Intention("gateway", grpc_server.SERVICE))
            consul = secured.agent
            env = {**os.environ, "CONSUL_HTTP_TOKEN": secured.token(acl.CONTROLPLANE)}
            backend_env = {"CONSUL_HTTP_TOKEN": secured.token(grpc_server.SERVICE)}
            runner_token = secured.token(acl.RUNNER)
        if security.rate_limit:
            put_policy(consul.address, runner_token, RATE_LIMITED)  # as the runner writes the topology's
        gateway = envoy_gateway(log_dir, consul.address, otlp=otlp, env=env, tls=security.edge_tls,
                                security_args=security.gateway_args(pki) if pki is not None else ("--plaintext",))
        stack.callback(gateway.stop)
        try:
            gateway.start()
        except (RuntimeError, TimeoutError) as error:
            raise NotRun(f"the gateway did not start: {error}", missing="gateway") from error
        running = Stack(consul, gateway, security, pki)
        if backend:
            port = free_port()
            identity = pki.users_dir if pki is not None and security.mtls else None
            argv = grpc_server.argv("protomesh", port, consul=consul.address, otlp=otlp, identity_dir=identity)
            process = stack.enter_context(started("backend", argv, log_dir=log_dir, cpu=SERVER_CPU, port=port,
                                                  env=backend_env))
            running.backend_pid, running.backend_port = process.pid, port
            context = pki.ssl_context() if pki is not None and security.edge_tls else None
            wait_until(lambda: _answers(running.rest_url, running.headers, context), timeout=READY_TIMEOUT_S,
                       what="REST via the gateway")
        yield running


def _answers(url: str, headers: Mapping[str, str], context: ssl.SSLContext | None) -> bool:
    try:
        request = urllib.request.Request(url, headers=dict(headers))
        with urllib.request.urlopen(request, timeout=2, context=context) as response:
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
