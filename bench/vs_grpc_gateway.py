"""p3g: protomesh's gateway (Envoy's transcoder) vs grpc-gateway, REST GetUser in front of the same backend instance.

grpc-gateway is what a Go team would pick instead of Envoy's transcoder: a Go reverse proxy generated from the same
protos with protoc-gen-grpc-gateway (bench/grpc_gateway, built by `scripts/bootstrap.sh grpcgateway`). One backend
(`bench.grpc_server --mode protomesh`) runs on the server core; the plaintext Envoy stack of bench/_gateway.py and the
grpc-gateway binary both proxy to that one instance. Both proxies are pinned to the other core, beside the load
generator: Envoy with one worker, the Go proxy under taskset with GOMAXPROCS=1, so each gets the same single core.
Same load tools as p3 (wrk for REST, ghz for direct gRPC). Before any timing both must answer the same JSON for the
same requests. Then paired short rounds (order reversed every other round), medians: (a) the p50 each adds at one
connection over direct gRPC to the backend, as p3 computes it; (b) req/s at CONNECTIONS connections.
"""

from __future__ import annotations

import contextlib
import json
import math
import statistics
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import grpc_server
from bench._core import Figure, NotRun, Options, Outcome, Target
from bench._gateway import Stack, gateway_stack
from bench._load import http_load
from bench._measure import Sample, described, measured, median_difference, median_ratio, paired_rounds, rps
from bench._proc import LOAD_CPU, find_tool, free_port, started, wait_until
from bench._rows import TINY_ID

BINARY = "bench-grpc-gateway"
# Connections of the throughput half: enough to keep the single-core backend busy through either proxy.
CONNECTIONS = 32
# One Go scheduler thread, as Envoy runs one worker (ENVOY_WORKERS): each proxy gets exactly its one core.
GO_ENV = {"GOMAXPROCS": "1"}
READY_TIMEOUT_S = 30.0
# What both gateways must answer alike before they are timed: the timed GET, a list page and a missing user.
PROBES = (f"/v1/users/{TINY_ID}", "/v1/users?page_size=2", f"/v1/users/{'f' * 32}")
# The order of a round (reversed every other round): direct calls between the two proxies, as in p3.
ORDER = ("envoy_rest", "direct_grpc", "grpc_gateway_rest", "envoy_rest_loaded", "grpc_gateway_rest_loaded")


@dataclass(frozen=True)
class Peer:
    """The running grpc-gateway proxy: its base URL and PID."""

    url: str
    pid: int


@dataclass(frozen=True)
class Answer:
    """What a gateway answered one GET: status, content type and the JSON body parsed."""

    status: int
    content_type: str
    body: Any


@contextlib.contextmanager
def grpc_gateway(log_dir: Path, backend_port: int) -> Iterator[Peer]:
    """grpc-gateway's proxy in front of the backend on `backend_port`, pinned to the load core, REST answering."""
    port = free_port()
    argv = [proxy_binary(), "--listen", f"127.0.0.1:{port}", "--backend", f"127.0.0.1:{backend_port}"]
    with started("grpc-gateway", argv, log_dir=log_dir, cpu=LOAD_CPU, port=port, env=GO_ENV) as process:
        peer = Peer(f"http://127.0.0.1:{port}", process.pid)
        wait_until(lambda: get(peer.url + PROBES[0]).status == 200, timeout=READY_TIMEOUT_S,
                   what="REST via grpc-gateway")
        yield peer


def proxy_binary() -> str:
    """The proxy `scripts/bootstrap.sh grpcgateway` built, or NotRun naming it."""
    binary = find_tool(BINARY)
    if binary is None:
        raise NotRun(f"{BINARY} is not built: run `scripts/bootstrap.sh grpcgateway` (make bench and make test do)",
                     missing=BINARY)
    return binary


def get(url: str) -> Answer:
    """One GET; an HTTP error status is an answer too (its body is the gateway's JSON error)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return _answer(int(response.status), response.headers.get("content-type", ""), response.read())
    except urllib.error.HTTPError as error:
        return _answer(error.code, error.headers.get("content-type", ""), error.read())
    except (urllib.error.URLError, OSError):
        return Answer(0, "", None)


def _answer(status: int, content_type: str, raw: bytes) -> Answer:
    try:
        body = json.loads(raw)
    except ValueError:
        body = raw.decode(errors="replace")
    return Answer(status, content_type.split(";")[0].strip(), body)


def differences(envoy_url: str, peer_url: str, paths: Sequence[str] = PROBES) -> list[str]:
    """The probes the two gateways answer differently (status, content type or JSON value), described."""
    found = []
    for path in paths:
        envoy, peer = get(envoy_url + path), get(peer_url + path)
        if envoy != peer:
            found.append(f"GET {path}: Envoy {envoy} vs grpc-gateway {peer}")
    return found


def subjects(stack: Stack, peer: Peer, duration: float) -> dict[str, Callable[[], Sample]]:
    """Direct gRPC and REST via either proxy at 1 connection, REST via either at CONNECTIONS; CPU charged by name."""
    pids = {"backend": stack.backend_pid, "envoy": stack.envoy_pid, "grpc_gateway": peer.pid}
    peer_url = f"{peer.url}/v1/users/{TINY_ID}"

    def direct() -> Sample:
        return measured(pids, lambda: stack.direct_grpc(grpc_server.GET_USER, {"user_id": TINY_ID},
                                                        duration=duration, concurrency=1))

    def rest(url: str, connections: int) -> Callable[[], Sample]:
        return lambda: measured(pids, lambda: http_load(url, duration=duration, concurrency=connections))

    return {"envoy_rest": rest(stack.rest_url, 1), "direct_grpc": direct,
            "grpc_gateway_rest": rest(peer_url, 1), "envoy_rest_loaded": rest(stack.rest_url, CONNECTIONS),
            "grpc_gateway_rest_loaded": rest(peer_url, CONNECTIONS)}


def measure(options: Options) -> tuple[dict[str, list[Sample]], Answer]:
    """Both proxies before the same backend, checked alike, each path warmed once, then paired rounds of all."""
    log_dir = options.work_dir / "p3g"
    proxy_binary()  # before anything starts
    with gateway_stack(log_dir) as stack, grpc_gateway(log_dir, stack.backend_port) as peer:
        if found := differences(stack.gateway.url, peer.url):
            raise RuntimeError("Envoy and grpc-gateway answer differently: " + "; ".join(found))
        answer = get(stack.rest_url)
        runs = subjects(stack, peer, options.pick(1.0, 1.0))
        for path in runs.values():
            path()
        return paired_rounds({name: runs[name] for name in ORDER}, options.count(12, 1)), answer


def p50_ms(sample: Sample) -> float:
    return sample.load.p50_ms


def _cpu(samples: Sequence[Sample], part: str) -> float:
    return round(statistics.median(sample.part_us(part) for sample in samples), 1)


def table(samples: Mapping[str, list[Sample]]) -> dict[str, Any]:
    """Every path side by side: p50, req/s and the CPU each process spent per request (medians over rounds)."""
    whats = {"direct_grpc": "direct gRPC (ghz), 1 connection", "envoy_rest": "REST via Envoy (wrk), 1 connection",
             "grpc_gateway_rest": "REST via grpc-gateway (wrk), 1 connection",
             "envoy_rest_loaded": f"REST via Envoy (wrk), {CONNECTIONS} connections",
             "grpc_gateway_rest_loaded": f"REST via grpc-gateway (wrk), {CONNECTIONS} connections"}
    rows = [[name, whats[name], described(samples[name])["median_p50_ms"], described(samples[name])["median_rps"],
             _cpu(samples[name], "envoy"), _cpu(samples[name], "grpc_gateway"), _cpu(samples[name], "backend")]
            for name in ORDER]
    return {"title": "Both gateways before the same backend, in the same paired rounds (medians over rounds)",
            "columns": ["path", "what", "p50 ms", "req/s", "Envoy CPU µs/req", "grpc-gateway CPU µs/req",
                        "backend CPU µs/req"],
            "rows": rows}


def run(options: Options) -> Outcome:
    samples, answer = measure(options)
    envoy_added = median_difference(samples["envoy_rest"], samples["direct_grpc"], p50_ms)
    peer_added = median_difference(samples["grpc_gateway_rest"], samples["direct_grpc"], p50_ms)
    # A peer adding nothing measurable is one Envoy cannot be below: infinity, the target unmet.
    ratio = round(envoy_added / peer_added, 3) if peer_added > 0 else math.inf
    between = median_difference(samples["envoy_rest"], samples["grpc_gateway_rest"], p50_ms)
    loaded = {name: described(samples[name]) for name in ("envoy_rest_loaded", "grpc_gateway_rest_loaded")}
    return Outcome(
        values={"p3g_envoy_added_p50_ms": round(envoy_added, 3),
                "p3g_grpc_gateway_added_p50_ms": round(peer_added, 3),
                "p3g_added_p50_envoy_vs_grpc_gateway": ratio,
                "p3g_rps_envoy_vs_grpc_gateway": round(median_ratio(samples["envoy_rest_loaded"],
                                                                    samples["grpc_gateway_rest_loaded"], rps), 3)},
        baseline={"what": "grpc-gateway v2 (Go, GOMAXPROCS=1, the proxy core) before the same backend",
                  "answer": answer.body, "direct_grpc": described(samples["direct_grpc"]),
                  "rest": described(samples["grpc_gateway_rest"]),
                  f"rest_{CONNECTIONS}_connections": loaded["grpc_gateway_rest_loaded"]},
        subject={"what": "protomesh's gateway: Envoy's transcoder (1 worker, the proxy core), plaintext",
                 "answer": answer.body, "rest": described(samples["envoy_rest"]),
                 f"rest_{CONNECTIONS}_connections": loaded["envoy_rest_loaded"]},
        commands=[samples[name][0].load.command for name in ORDER],
        notes=[f"REST p50 via Envoy minus via grpc-gateway, same wrk client, paired by round: {between:.3f} ms",
               "added p50: REST (wrk) via the proxy minus direct gRPC (ghz) to the same backend, paired by round; "
               "the two load generators' own costs differ, the difference between the proxies does not depend on it",
               f"before timing both answered {len(PROBES)} GETs alike (status, content type, JSON): "
               + ", ".join(PROBES),
               f"req/s at {CONNECTIONS} connections: the backend (one Python process) is the bottleneck of both; "
               "the proxies' CPU per request in the table is where they differ",
               "both proxies share the load core with wrk; Envoy runs 1 worker, the Go proxy GOMAXPROCS=1"],
        table=table(samples),
    )


FIGURE = Figure("p3g", "gateway vs grpc-gateway: added p50 and req/s, REST GetUser, same backend",
                {"p3g_envoy_added_p50_ms": None, "p3g_grpc_gateway_added_p50_ms": None,
                 "p3g_added_p50_envoy_vs_grpc_gateway": Target("<=", 1.0), "p3g_rps_envoy_vs_grpc_gateway": None},
                run)
