"""p3: REST through the gateway vs direct gRPC to the same instance, one connection: the p50 the gateway adds.

The backend (protomesh users-style server) runs on the server core, Envoy (one worker) and the load
generator on the other. One request in flight at a time, so the numbers are latencies, not queueing.
Every setting of the gateway has its own stack (Consul, control plane, Envoy, backend), all running at once,
and each round measures every path of every stack in turn: security off (P3's own goal), TLS at the edge,
TLS + JWT, TLS + JWT + mTLS to the service, and observability on, side by side in one run.
"""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bench import grpc_server
from bench._collector import collector
from bench._core import Figure, Options, Outcome, Target
from bench._gateway import Stack, envoy_stats, gateway_stack
from bench._measure import Sample, described, measured, median_difference, paired, paired_rounds, quartiles
from bench._rows import TINY_ID
from bench._security import PLAINTEXT, RATE_LIMIT, TLS, TLS_JWT, TLS_JWT_MTLS, GatewaySecurity

PATHS = ("direct_grpc", "gateway_grpc", "gateway_rest")
# The order of a round (reversed every other round): direct calls between the two gateway paths.
ORDER = ("gateway_rest", "direct_grpc", "gateway_grpc")
# The security settings compared, and the one whose increment the aim is about (JWT + mTLS on top of edge TLS).
SECURITY = (PLAINTEXT, TLS, TLS_JWT, TLS_JWT_MTLS, RATE_LIMIT)
OBSERVED = "observed"


def subjects(stack: Stack, duration: float, concurrency: int) -> dict[str, Callable[[], Sample]]:
    """Direct gRPC, gRPC via the gateway and REST via the gateway; CPU charged to backend + Envoy (each named)."""
    pids = {"backend": stack.backend_pid, "envoy": stack.envoy_pid}
    data = {"user_id": TINY_ID}
    load = {"duration": duration, "concurrency": concurrency}

    def direct() -> Sample:
        return measured(pids, lambda: stack.direct_grpc(grpc_server.GET_USER, data, **load))

    def gateway_grpc() -> Sample:
        return measured(pids, lambda: stack.gateway_grpc(grpc_server.GET_USER, data, **load))

    def gateway_rest() -> Sample:
        return measured(pids, lambda: stack.rest(**load))

    return {"direct_grpc": direct, "gateway_grpc": gateway_grpc, "gateway_rest": gateway_rest}


# A stack's setting: its security, and the collector it traces to (None: not traced).
Setting = tuple[GatewaySecurity, str | None]


def measure(options: Options, name: str, concurrency: int,
            settings: Mapping[str, Setting] | None = None) -> dict[str, dict[str, list[Sample]]]:
    """One stack per setting (its security, and the collector it traces to or None), all started first; every
    path warmed once, then paired rounds of every path of every stack (many short ones: on a shared machine
    only neighbouring measurements see the same load). Samples by setting, then path."""
    settings = settings or {PLAINTEXT.name: (PLAINTEXT, None)}
    with contextlib.ExitStack() as exits:
        stacks = {key: exits.enter_context(gateway_stack(options.work_dir / name / key, otlp=otlp, security=security))
                  for key, (security, otlp) in settings.items()}
        for stack in stacks.values():
            for path in subjects(stack, options.pick(1.0, 1.0), concurrency).values():
                path()
        runs = {key: subjects(stack, options.pick(1.0, 1.0), concurrency) for key, stack in stacks.items()}
        # Path by path, every stack in turn: the settings compared on one path run seconds apart, and a stack's
        # direct calls sit as far from its REST as from its gRPC via the gateway.
        rounds = paired_rounds({f"{key}/{path}": runs[key][path] for path in ORDER for key in stacks},
                               options.count(16, 1))
        for key, stack in stacks.items():
            if stack.security.rate_limit:
                _check_rate_limited(key, stack)
    return {key: {path: rounds[f"{key}/{path}"] for path in PATHS} for key in settings}


def _check_rate_limited(key: str, stack: Stack) -> None:
    """The rate-limited setting measured what it says: its calls went through the bucket, and none was refused."""
    stats = envoy_stats(stack.gateway, r"http_local_rate_limit\.(ok|rate_limited)$")
    passed = sum(value for name, value in stats.items() if name.endswith(".ok"))
    refused = sum(value for name, value in stats.items() if name.endswith(".rate_limited"))
    if passed == 0 or refused:
        raise RuntimeError(f"{key}: the rate limit did not apply as set up ({stats}); see {stack.gateway.log_dir}")


def p50_ms(sample: Sample) -> float:
    return sample.load.p50_ms


def _differences(minuends: Sequence[Sample], subtrahends: Sequence[Sample]) -> float:
    """Median over rounds of the p50 difference, round paired with round (ms)."""
    return median_difference(minuends, subtrahends, p50_ms)


def _spread(minuend: Mapping[str, list[Sample]], subtrahend: Mapping[str, list[Sample]], path: str) -> str:
    first, third = quartiles(paired(minuend[path], subtrahend[path], p50_ms))
    return f"{first:.3f} to {third:.3f}"


def _added(samples: Mapping[str, list[Sample]], path: str) -> float:
    return _differences(samples[path], samples["direct_grpc"])


def _per_request(samples: Sequence[Sample], part: str) -> float:
    return round(statistics.median(sample.part_us(part) for sample in samples), 1)


def table(samples: Mapping[str, Mapping[str, list[Sample]]], whats: Mapping[str, str]) -> dict[str, Any]:
    """Every setting side by side: p50s, the gateway's added p50 (vs direct to the same backend), the increment
    over security off, and the CPU Envoy and the backend spent per REST request."""
    off = samples[PLAINTEXT.name]
    rows = []
    for key, paths in samples.items():
        medians = {path: described(paths[path])["median_p50_ms"] for path in PATHS}
        rows.append([key, whats[key], medians["gateway_rest"], medians["gateway_grpc"], medians["direct_grpc"],
                     round(_added(paths, "gateway_rest"), 3), round(_added(paths, "gateway_grpc"), 3),
                     round(_differences(paths["gateway_rest"], off["gateway_rest"]), 3),
                     round(_differences(paths["gateway_grpc"], off["gateway_grpc"]), 3),
                     _per_request(paths["gateway_rest"], "envoy"), _per_request(paths["gateway_rest"], "backend")])
    return {"title": "Every setting in the same paired rounds (ms; differences are medians of round-by-round "
                     "differences)",
            "columns": ["setting", "what", "REST p50", "gRPC via gateway p50", "direct gRPC p50", "REST added",
                        "gRPC added", "REST vs off", "gRPC vs off", "Envoy CPU µs/REST req", "backend CPU µs/REST req"],
            "rows": rows}


def run(options: Options) -> Outcome:
    with collector(options.work_dir / "p3-collector") as otlp:
        settings: dict[str, Setting] = {s.name: (s, None) for s in SECURITY}
        # Observability on as `make up` runs it (security off): Envoy and the backend trace every request to a
        # collector, the backend counts every call.
        settings[OBSERVED] = (PLAINTEXT, otlp)
        samples = measure(options, "p3", concurrency=1, settings=settings)
    whats = {**{s.name: s.what for s in SECURITY}, OBSERVED: "security off, tracing (Envoy + backend) and metrics on"}
    off, observed, secured = samples[PLAINTEXT.name], samples[OBSERVED], samples[TLS_JWT_MTLS.name]
    edge = samples[TLS.name]
    jwt_mtls = {"rest": round(_differences(secured["gateway_rest"], edge["gateway_rest"]), 3),
                "grpc": round(_differences(secured["gateway_grpc"], edge["gateway_grpc"]), 3)}
    # Each feature's price at p50 on REST via the gateway: the setting with it minus the one without it.
    steps = {"tls": (TLS.name, PLAINTEXT.name), "jwt": (TLS_JWT.name, TLS.name),
             "mtls": (TLS_JWT_MTLS.name, TLS_JWT.name), "ratelimit": (RATE_LIMIT.name, PLAINTEXT.name),
             "observed": (OBSERVED, PLAINTEXT.name)}
    prices = {feature: round(_differences(samples[on]["gateway_rest"], samples[without]["gateway_rest"]), 3)
              for feature, (on, without) in steps.items()}
    return Outcome(
        values={"p3_gateway_added_p50_ms": round(_added(off, "gateway_rest"), 3),
                "p3_observed_added_p50_ms": round(_added(observed, "gateway_rest"), 3),
                "p3_jwt_mtls_added_p50_ms": jwt_mtls,
                "p3_secured_added_p50_ms": {"rest": round(_added(secured, "gateway_rest"), 3),
                                            "grpc": round(_added(secured, "gateway_grpc"), 3)},
                "p3_feature_added_p50_ms": prices},
        baseline={"what": "direct gRPC to the instance, 1 connection, 1 in flight (security off)",
                  **described(off["direct_grpc"])},
        subject={"what": "REST (HTTP/1.1 JSON) via Envoy's transcoder to the same instance (security off)",
                 **described(off["gateway_rest"]), "gateway_grpc": described(off["gateway_grpc"]),
                 **{key: {"what": whats[key], **{path: described(paths[path]) for path in PATHS}}
                    for key, paths in samples.items() if key != PLAINTEXT.name}},
        commands=[samples[key][path][0].load.command for key in (PLAINTEXT.name, TLS_JWT_MTLS.name) for path in PATHS],
        notes=[f"gRPC via the gateway adds {_added(off, 'gateway_grpc'):.3f} ms at p50 (same ghz client on both "
               "paths), security off",
               "p3_jwt_mtls_added_p50_ms: p50 via the gateway with TLS + JWT + mTLS minus with TLS only, paired by "
               "round; it includes the backend's side of mTLS and its per-call authorization; quartiles of the "
               f"round-by-round differences: REST {_spread(secured, edge, 'gateway_rest')}, gRPC "
               f"{_spread(secured, edge, 'gateway_grpc')} ms",
               "p3_secured_added_p50_ms: everything on, via the gateway minus direct mTLS to the same backend (the "
               "direct caller presents the gateway's certificate and claims, as Envoy does)",
               "TLS costs include the load generator's own TLS work (wrk for REST, ghz for gRPC) on the load core",
               "REST and direct gRPC use different load generators (wrk, ghz); their client costs differ too",
               "p3_feature_added_p50_ms: REST p50 with a feature minus without it, paired by round: tls = TLS at the "
               "edge vs off, jwt = + JWT vs TLS, mtls = + mTLS vs TLS + JWT, ratelimit = GetUser under a rate limit "
               "vs off, observed = tracing + metrics vs off"],
        table=table(samples, whats),
    )


FIGURE = Figure("p3", "gateway's added p50: REST via Envoy vs direct gRPC, 1 connection, observability off / on, "
                      "TLS, JWT, mTLS and rate limit off / on",
                {"p3_gateway_added_p50_ms": Target("<=", 0.15, " ms"),
                 "p3_observed_added_p50_ms": Target("<=", 0.5, " ms"),
                 "p3_jwt_mtls_added_p50_ms": Target("<=", 0.3, " ms"),
                 "p3_secured_added_p50_ms": None, "p3_feature_added_p50_ms": None}, run)
