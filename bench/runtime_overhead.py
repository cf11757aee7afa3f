"""p1: a users-style GetUser on protomesh.Server (default interceptors) vs a bare grpc.aio servicer, on one core.

    .venv/bin/python -m bench --only p1                                  # into bench/results/latest.json
    .venv/bin/python -m bench.runtime_overhead --duration 2 --rounds 10  # printed only
    .venv/bin/python -m bench.runtime_overhead --variant bare="--mode bare" \\
        --variant uvloop="--mode bare --loop uvloop" --workload list50   # A/B of any bench.grpc_server flags

All servers run side by side pinned to the server core; the load generator (ghz, else bench/_pyload.py)
runs on the other core and keeps each server saturated in turn. Two numbers per server: req/s (the
figure; meaningful because the server's core is the bottleneck) and server CPU µs per call (from /proc,
independent of the client's speed). Ratios are medians over many short paired rounds: on a shared machine
the load swings within seconds, and only neighbouring measurements see the same load.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from bench import grpc_server
from bench._collector import collector
from bench._core import Figure, Options, Outcome, Target
from bench._load import grpc_load
from bench._measure import Sample, cpu_us, described, measured, median_ratio, paired_rounds, rps
from bench._proc import SERVER_CPU, free_port, python_argv, started
from bench._rows import LIST_SIZE, TINY_ID

# Calls in flight over one connection: enough to keep a Python server's core busy while ghz waits.
CONCURRENCY = 50
DEFAULT_VARIANTS = {"bare": ("--mode", "bare"), "protomesh": ("--mode", "protomesh")}
CALLS = {"tiny": (grpc_server.GET_USER, {"user_id": TINY_ID}),
         "list50": (grpc_server.LIST_USERS, {"page_size": LIST_SIZE})}


def measure_variants(log_dir: Path, variants: Mapping[str, Sequence[str]], *, duration: float, rounds: int,
                     warmup: float, workload: str = "tiny") -> dict[str, list[Sample]]:
    """Paired rounds against one bench.grpc_server per variant (its flags), all pinned to the server core."""
    call, data = CALLS[workload]
    with contextlib.ExitStack() as stack:
        subjects: dict[str, Callable[[], Sample]] = {}
        for name, flags in variants.items():
            port = free_port()
            argv = python_argv("bench.grpc_server", "--port", str(port), *flags)
            server = stack.enter_context(started(f"grpc-{name}", argv, log_dir=log_dir, cpu=SERVER_CPU, port=port))
            subjects[name] = _subject(server.pid, f"127.0.0.1:{port}", call, data, duration)
            if warmup:
                grpc_load(f"127.0.0.1:{port}", call, data, duration=warmup, concurrency=CONCURRENCY)
        return paired_rounds(subjects, rounds)


def _subject(pid: int, target: str, call: str, data: Mapping[str, object], duration: float) -> Callable[[], Sample]:
    def run() -> Sample:
        return measured([pid], lambda: grpc_load(target, call, data, duration=duration, concurrency=CONCURRENCY))

    return run


def run(options: Options) -> Outcome:
    log_dir = options.work_dir / "p1"
    # Observability off (the runtime's interceptor only) and on as services run it: metrics, every call traced,
    # spans exported to a collector; all three servers measured in the same paired rounds.
    with collector(log_dir) as otlp:
        variants = {**DEFAULT_VARIANTS, "observed": ("--mode", "protomesh", "--otlp", otlp),
                    "traced": ("--mode", "protomesh", "--otlp", otlp, "--sampling", "1")}
        samples = measure_variants(log_dir, variants, duration=options.pick(2.0, 1.0), rounds=options.count(10, 1),
                                   warmup=options.pick(1.0, 0.0))
    bare, subject, observed, traced = samples["bare"], samples["protomesh"], samples["observed"], samples["traced"]
    return Outcome(
        values={"p1_runtime_vs_bare": round(median_ratio(subject, bare, rps), 3),
                "p1_observed_vs_bare": round(median_ratio(observed, bare, rps), 3)},
        baseline={"what": "bare grpc.aio servicer, same server options", **described(bare)},
        subject={"what": "protomesh.Server, observability off: ProtomeshInterceptor only (no access log: WARNING)",
                 **described(subject),
                 "observed": {"what": "observability on as the runtime defaults it: grpc_server_* metrics + /metrics, "
                                      "1 % of calls traced, batched OTLP export to a collector", **described(observed)},
                 "traced": {"what": "the same with every call traced (sampling 1.0, as the local mesh runs)",
                            **described(traced)}},
        commands=[bare[0].load.command],
        notes=[f"every call traced (sampling 1.0): {median_ratio(traced, bare, rps):.3f} of bare req/s",
               f"server CPU efficiency (bare µs ÷ protomesh µs per call): observability off "
               f"{median_ratio(bare, subject, cpu_us):.3f}, on {median_ratio(bare, observed, cpu_us):.3f}, "
               f"every call traced {median_ratio(bare, traced, cpu_us):.3f}",
               "the collector (nop exporter) runs on the load core; span export runs in a thread of the server"],
    )


FIGURE = Figure("p1", "protomesh runtime vs bare grpc.aio (GetUser, req/s, 1 server core), observability off / on",
                {"p1_runtime_vs_bare": Target(">=", 0.90), "p1_observed_vs_bare": Target(">=", 0.85)}, run)


def _variant(text: str) -> tuple[str, list[str]]:
    name, _, flags = text.partition("=")
    if not name or not flags:
        raise argparse.ArgumentTypeError(f"expected NAME=FLAGS, got {text!r}")
    return name, shlex.split(flags)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=2.0, help="measured seconds per server and round")
    parser.add_argument("--rounds", type=int, default=10, help="paired rounds")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per server first")
    parser.add_argument("--workload", choices=tuple(CALLS), default="tiny")
    parser.add_argument("--variant", type=_variant, action="append",
                        help="NAME=FLAGS for bench.grpc_server (repeat; the first is the baseline; "
                             "default: bare and protomesh)")
    args = parser.parse_args()
    variants = dict(args.variant) if args.variant else DEFAULT_VARIANTS
    samples = measure_variants(Options().work_dir / "runtime_overhead", variants, duration=args.duration,
                               rounds=args.rounds, warmup=args.warmup, workload=args.workload)
    baseline = samples[next(iter(variants))]
    for name, runs in samples.items():
        medians = described(runs)
        sys.stdout.write(f"{name:>12}: {medians['median_rps']:8.0f} req/s  {medians['median_server_cpu_us']:7.1f} "
                         f"µs/call  | vs first: {median_ratio(runs, baseline, rps):.3f} req/s, "
                         f"{median_ratio(baseline, runs, cpu_us):.3f} CPU efficiency\n")


if __name__ == "__main__":
    main()
