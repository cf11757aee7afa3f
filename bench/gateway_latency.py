"""p3: REST through the gateway vs direct gRPC to the same instance, one connection: the p50 the gateway adds.

The backend (protomesh users-style server) runs on the server core, Envoy (one worker) and the load
generator on the other. One request in flight at a time, so the numbers are latencies, not queueing.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

from bench import grpc_server
from bench._collector import collector
from bench._core import Figure, Options, Outcome, Target
from bench._gateway import Stack, gateway_stack
from bench._load import grpc_load, http_load
from bench._measure import Sample, described, measured, paired_rounds
from bench._rows import TINY_ID


def subjects(stack: Stack, duration: float, concurrency: int) -> dict[str, Callable[[], Sample]]:
    """Direct gRPC, gRPC via the gateway and REST via the gateway; CPU charged to backend + Envoy."""
    pids = [stack.backend_pid, stack.envoy_pid]
    data = {"user_id": TINY_ID}

    def direct() -> Sample:
        return measured(pids, lambda: grpc_load(f"127.0.0.1:{stack.backend_port}", grpc_server.GET_USER, data,
                                                duration=duration, concurrency=concurrency))

    def gateway_grpc() -> Sample:
        return measured(pids, lambda: grpc_load(stack.gateway.address, grpc_server.GET_USER, data,
                                                duration=duration, concurrency=concurrency))

    def gateway_rest() -> Sample:
        return measured(pids, lambda: http_load(stack.rest_url, duration=duration, concurrency=concurrency))

    return {"direct_grpc": direct, "gateway_grpc": gateway_grpc, "gateway_rest": gateway_rest}


def measure(options: Options, name: str, concurrency: int, otlp: str | None = None) -> dict[str, list[Sample]]:
    """Warm every path once, then paired rounds of all three (traced to `otlp` when given)."""
    with gateway_stack(options.work_dir / name, otlp=otlp) as stack:
        warm = subjects(stack, options.pick(1.0, 1.0), concurrency)
        for path in warm.values():
            path()
        return paired_rounds(subjects(stack, options.pick(2.0, 1.0), concurrency), options.count(8, 1))


def _added(samples: dict[str, list[Sample]], path: str) -> float:
    return statistics.median(via.load.p50_ms - direct.load.p50_ms
                             for via, direct in zip(samples[path], samples["direct_grpc"], strict=True))


def run(options: Options) -> Outcome:
    samples = measure(options, "p3", concurrency=1)
    # The same stack with observability on as `make up` runs it: Envoy and the backend trace every request to a
    # collector, the backend counts every call.
    with collector(options.work_dir / "p3-observed") as otlp:
        observed = measure(options, "p3-observed", concurrency=1, otlp=otlp)
    added, added_grpc = _added(samples, "gateway_rest"), _added(samples, "gateway_grpc")
    observed_added = _added(observed, "gateway_rest")
    return Outcome(
        values={"p3_gateway_added_p50_ms": round(added, 3), "p3_observed_added_p50_ms": round(observed_added, 3)},
        baseline={"what": "direct gRPC to the instance, 1 connection, 1 in flight",
                  **described(samples["direct_grpc"])},
        subject={"what": "REST (HTTP/1.1 JSON) via Envoy's transcoder to the same instance",
                 **described(samples["gateway_rest"]), "gateway_grpc": described(samples["gateway_grpc"]),
                 "observed": {"what": "the same with tracing (Envoy + backend, exported) and metrics on",
                              "direct_grpc": described(observed["direct_grpc"]),
                              "gateway_rest": described(observed["gateway_rest"])}},
        commands=[samples[name][0].load.command for name in samples],
        notes=[f"gRPC via the gateway adds {added_grpc:.3f} ms at p50 (same ghz client on both paths)",
               f"observability on: REST p50 {described(observed['gateway_rest'])['median_p50_ms']} ms, direct gRPC "
               f"{described(observed['direct_grpc'])['median_p50_ms']} ms (off: "
               f"{described(samples['gateway_rest'])['median_p50_ms']} ms, "
               f"{described(samples['direct_grpc'])['median_p50_ms']} ms)",
               "REST and direct gRPC use different load generators (wrk, ghz); their client costs differ too"],
    )


FIGURE = Figure("p3", "gateway's added p50: REST via Envoy vs direct gRPC, 1 connection, observability off / on",
                {"p3_gateway_added_p50_ms": Target("<=", 0.3, " ms"),
                 "p3_observed_added_p50_ms": Target("<=", 0.5, " ms")}, run)
