"""p1: a users-style GetUser on protomesh.Server (default interceptors) vs a bare grpc.aio servicer, on one core.

    .venv/bin/python -m bench --only p1                                  # into bench/results/latest.json
    .venv/bin/python -m bench.runtime_overhead --duration 2 --rounds 10  # printed only
    .venv/bin/python -m bench.runtime_overhead --variant bare="--mode bare" \\
        --variant uvloop="--mode bare --loop uvloop" --workload list50   # A/B of any bench.grpc_server flags
    .venv/bin/python -m bench.runtime_overhead --variant default="--mode protomesh" \
        --variant poll="GRPC_POLL_STRATEGY=poll --mode protomesh"         # leading NAME=VALUE: the server's env

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
from typing import Any

from bench import grpc_server
from bench._collector import collector
from bench._core import Figure, Options, Outcome, Target
from bench._load import grpc_load
from bench._measure import (
    Sample,
    cpu_us,
    described,
    measured,
    median_difference,
    median_ratio,
    paired,
    paired_rounds,
    quartiles,
    rps,
)
from bench._proc import SERVER_CPU, free_port, python_argv, started
from bench._rows import LIST_SIZE, TINY_ID
from bench._security import BenchPki
from protomesh.auth import CLAIMS_KEY

# Calls in flight over one connection: enough to keep a Python server's core busy while ghz waits.
CONCURRENCY = 50
DEFAULT_VARIANTS = {"bare": ("--mode", "bare"), "protomesh": ("--mode", "protomesh")}
CALLS = {"tiny": (grpc_server.GET_USER, {"user_id": TINY_ID}),
         "list50": (grpc_server.LIST_USERS, {"page_size": LIST_SIZE})}


def measure_variants(log_dir: Path, variants: Mapping[str, Sequence[str]], *, duration: float, rounds: int,
                     warmup: float, workload: str = "tiny",
                     clients: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, list[Sample]]:
    """Paired rounds against one bench.grpc_server per variant (its flags), all pinned to the server core; a
    variant's `clients` entry is how the load generator calls it (grpc_load's `tls` and `metadata`)."""
    call, data = CALLS[workload]
    with contextlib.ExitStack() as stack:
        subjects: dict[str, Callable[[], Sample]] = {}
        for name, words in variants.items():
            port = free_port()
            env, flags = split_env(words)
            argv = python_argv("bench.grpc_server", "--port", str(port), *flags)
            server = stack.enter_context(started(f"grpc-{name}", argv, log_dir=log_dir, cpu=SERVER_CPU, port=port,
                                                 env=env or None))
            client = (clients or {}).get(name, {})
            subjects[name] = _subject(server.pid, f"127.0.0.1:{port}", call, data, duration, client)
            if warmup:
                grpc_load(f"127.0.0.1:{port}", call, data, duration=warmup, concurrency=CONCURRENCY, **client)
        return paired_rounds(subjects, rounds)


def split_env(words: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """A variant's leading NAME=VALUE words (the server's environment: grpc's knobs) and its flags."""
    env: dict[str, str] = {}
    rest = list(words)
    while rest and "=" in rest[0] and not rest[0].startswith("-"):
        key, _, value = rest.pop(0).partition("=")
        env[key] = value
    return env, rest


def _subject(pid: int, target: str, call: str, data: Mapping[str, object], duration: float,
             client: Mapping[str, Any]) -> Callable[[], Sample]:
    def run() -> Sample:
        return measured([pid], lambda: grpc_load(target, call, data, duration=duration, concurrency=CONCURRENCY,
                                                 **client))

    return run


# The optional features whose CPU price per call p1 publishes, each against the runtime with everything off.
FEATURES = ("metrics", "tracing", "observed", "traced", "mtls")


def run(options: Options) -> Outcome:
    log_dir = options.work_dir / "p1"
    pki = BenchPki.create(log_dir / "pki")
    # Features off (the runtime's interceptor only), each optional feature on by itself, and both observability
    # halves on as services run them by default (metrics, 1 % of calls traced, spans exported to a collector);
    # mTLS as security.mode mtls serves (every call authorized, the caller presenting the gateway's certificate
    # and claims as Envoy does). Plus the runtime before its loop defaults (asyncio, heap not frozen) and bare
    # grpc.aio on uvloop, so the loop's part and the runtime's part of the ratio are both visible.
    with collector(log_dir) as otlp:
        variants = {**DEFAULT_VARIANTS,
                    "bare_uvloop": ("--mode", "bare", "--loop", "uvloop"),
                    "protomesh_asyncio": ("--mode", "protomesh", "--loop", "asyncio", "--gc-freeze", "off"),
                    "metrics": ("--mode", "protomesh", "--otlp", otlp, "--observe", "metrics"),
                    "tracing": ("--mode", "protomesh", "--otlp", otlp, "--observe", "tracing"),
                    "observed": ("--mode", "protomesh", "--otlp", otlp),
                    "traced": ("--mode", "protomesh", "--otlp", otlp, "--sampling", "1"),
                    "mtls": ("--mode", "protomesh", "--identity-dir", str(pki.users_dir), "--allow", "gateway")}
        clients = {"mtls": {"tls": pki.as_gateway(), "metadata": {CLAIMS_KEY: pki.claims}}}
        # Many short rounds: nine servers take 9 s a round, so neighbours in a ratio see nearly the same load.
        samples = measure_variants(log_dir, variants, duration=options.pick(1.0, 1.0), rounds=options.count(20, 1),
                                   warmup=options.pick(1.0, 0.0), clients=clients)
    bare, subject, observed = samples["bare"], samples["protomesh"], samples["observed"]
    mtls, before = samples["mtls"], samples["protomesh_asyncio"]
    price = {name: round(median_difference(samples[name], subject, cpu_us), 1) for name in FEATURES}
    return Outcome(
        values={"p1_runtime_vs_bare": round(median_ratio(subject, bare, rps), 3),
                "p1_observed_vs_bare": round(median_ratio(observed, bare, rps), 3),
                "p1_runtime_vs_bare_uvloop": round(median_ratio(subject, samples["bare_uvloop"], rps), 3),
                "p1_mtls_vs_bare": round(median_ratio(mtls, bare, rps), 3),
                "p1_mtls_vs_plaintext": round(median_ratio(mtls, subject, rps), 3),
                "p1_feature_cpu_us": price},
        baseline={"what": VARIANTS_WHAT["bare"], **described(bare)},
        subject={"what": VARIANTS_WHAT["protomesh"], **described(subject),
                 **{name: {"what": VARIANTS_WHAT[name], **described(samples[name])}
                    for name in samples if name not in DEFAULT_VARIANTS}},
        commands=[bare[0].load.command, mtls[0].load.command],
        notes=[f"the loop defaults (uvloop, start-up heap frozen) against the runtime on asyncio: "
               f"{median_ratio(subject, before, rps):.3f} req/s, CPU efficiency "
               f"{median_ratio(before, subject, cpu_us):.3f}; the runtime on asyncio vs bare on asyncio: "
               f"{median_ratio(before, bare, rps):.3f} req/s",
               "p1_runtime_vs_bare_uvloop: the runtime's own cost, both on uvloop (bare grpc.aio on uvloop is "
               "what a team gets by adding uvloop themselves)",
               "p1_feature_cpu_us: server CPU µs per call each feature adds to the runtime with every feature off "
               "(median of round-by-round differences); observed = metrics + 1 % tracing, the default; traced = "
               "every call traced",
               f"server CPU efficiency (bare µs ÷ protomesh µs per call): features off "
               f"{median_ratio(bare, subject, cpu_us):.3f}, observed {median_ratio(bare, observed, cpu_us):.3f}, "
               f"mTLS {median_ratio(bare, mtls, cpu_us):.3f}",
               "p1_mtls_vs_plaintext quartiles of the round-by-round ratios: "
               f"{' to '.join(f'{q:.3f}' for q in quartiles(paired(mtls, subject, rps, ratio=True)))}",
               "mTLS: the load generator's TLS work is on the load core, the server's on the server core; one "
               "connection, so the handshake is paid once per round, not per call",
               "the collector (nop exporter) runs on the load core; span export runs in a thread of the server"],
        table=variant_table(samples, baseline="bare", plaintext="protomesh"),
    )


VARIANTS_WHAT = {
    "bare": "bare grpc.aio on the standard asyncio loop, plaintext (what a team writes without protomesh)",
    "protomesh": "protomesh.Server as protomesh.run() serves it (uvloop, start-up heap frozen), plaintext "
                 "(security.mode off), observability off",
    "bare_uvloop": "bare grpc.aio on uvloop",
    "protomesh_asyncio": "protomesh.Server on the standard asyncio loop, heap not frozen (the defaults before)",
    "metrics": "metrics on (grpc_server_* + /metrics), tracing off",
    "tracing": "tracing on (1 % of calls traced, batched OTLP export to a collector), metrics off",
    "observed": "observability on as the runtime defaults it: metrics + 1 % of calls traced",
    "traced": "metrics + every call traced (sampling 1.0, as the local mesh runs)",
    "mtls": "mTLS (security.mode mtls): client certificate required, SPIFFE id, intention and GetUser's scope "
            "checked on every call; observability off",
}


def variant_table(samples: Mapping[str, Sequence[Sample]], *, baseline: str, plaintext: str) -> dict[str, Any]:
    """Every server side by side: medians, and req/s and CPU per call as paired ratios to bare and to plaintext."""
    rows = []
    for name, runs in samples.items():
        medians = described(runs)
        rows.append([name, VARIANTS_WHAT.get(name, name), medians["median_rps"],
                     round(median_ratio(runs, samples[baseline], rps), 3),
                     round(median_ratio(runs, samples[plaintext], rps), 3), medians["median_server_cpu_us"],
                     round(median_ratio(runs, samples[baseline], cpu_us), 3)])
    return {"title": "Every server in the same paired rounds (ratios: medians of round-by-round ratios)",
            "columns": ["server", "what", "req/s", "÷ bare", "÷ protomesh plaintext", "server CPU µs/call",
                        "CPU ÷ bare"],
            "rows": rows}


FIGURE = Figure("p1", "protomesh runtime vs bare grpc.aio (GetUser, req/s, 1 server core), features off / on, and "
                      "the CPU price of each feature (metrics, tracing, mTLS)",
                {"p1_runtime_vs_bare": Target(">=", 0.95), "p1_observed_vs_bare": Target(">=", 0.85),
                 "p1_runtime_vs_bare_uvloop": None, "p1_mtls_vs_bare": None, "p1_mtls_vs_plaintext": None,
                 "p1_feature_cpu_us": None}, run)


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
                        help="NAME=FLAGS for bench.grpc_server, FLAGS may start with ENV=VALUE words for "
                             "the server's environment (repeat; the first is the baseline; default: bare and "
                             "protomesh)")
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
