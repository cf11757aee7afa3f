"""p4: throughput through the gateway vs direct gRPC to the same instance, Envoy and the backend on separate cores.

The backend is the bottleneck by design (one Python process on the server core); the gateway passes if
it costs next to nothing of that: gRPC through Envoy ÷ direct gRPC, same ghz client and concurrency.
"""

from __future__ import annotations

from bench._core import Figure, Options, Outcome, Target
from bench._measure import described, median_ratio, rps
from bench._security import PLAINTEXT
from bench.gateway_latency import measure

CONCURRENCY = 50


def run(options: Options) -> Outcome:
    samples = measure(options, "p4", concurrency=CONCURRENCY)[PLAINTEXT.name]
    ratio = median_ratio(samples["gateway_grpc"], samples["direct_grpc"], rps)
    rest = median_ratio(samples["gateway_rest"], samples["direct_grpc"], rps)
    return Outcome(
        values={"p4_gateway_vs_direct": round(ratio, 3)},
        baseline={"what": f"direct gRPC, {CONCURRENCY} in flight", **described(samples["direct_grpc"])},
        subject={"what": f"gRPC via Envoy (1 worker, other core), {CONCURRENCY} in flight",
                 **described(samples["gateway_grpc"]), "gateway_rest": described(samples["gateway_rest"])},
        commands=[samples[name][0].load.command for name in samples],
        notes=[f"REST via the gateway (wrk, {CONCURRENCY} connections) ÷ direct gRPC: {rest:.3f}",
               "Envoy shares its core with the load generator; server CPU is charged to backend + Envoy"],
    )


FIGURE = Figure("p4", "throughput via the gateway vs direct gRPC", {"p4_gateway_vs_direct": Target(">=", 0.95)}, run)
