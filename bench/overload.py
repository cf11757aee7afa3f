"""p10: overload, wrk through the gateway to two users instances at 100 / 1,000 / 4,000 connections, shedding on/off.

Three stacks run side by side (Consul, control plane, one-worker Envoy, two protomesh users instances each), all
plaintext, as P3's "security off": TLS would put wrk's handshakes for 4,000 connections on the load core and
measure them instead of the shedding. `shedding` is the default configuration (Envoy's limit of 1,024 connections,
the clusters' circuit breakers at 256 requests in flight, the instances' bound of 256 calls); `tight` is the same
with Envoy's limit at 256 connections; `off` is the old one (no connection limit, 8,192 in flight, no instance
bound). The instances share the server core; Envoy, wrk and the probe share the load core. Each connection count
runs on every stack, one after the other.

wrk counts every answer by HTTP status and google.rpc code (a Lua script reads the bodies), and its socket errors
(connections Envoy closed at its limit); a side-probe of a few keep-alive connections opened before wrk's
(bench/_httpprobe.py) times the successful requests alone, since wrk's latency distribution mixes in the fast
503s. Retry-After is not followed: wrk asks again at once and reconnects at once, the worst case.
"""

from __future__ import annotations

import contextlib
import json
import re
import resource
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import grpc_server
from bench._core import Figure, NotRun, Options, Outcome, Target
from bench._gateway import READY_TIMEOUT_S, _answers, consul_agent, envoy_gateway
from bench._load import OVERRUN_S, shown
from bench._proc import LOAD_CPU, SERVER_CPU, find_tool, free_port, pinned, python_argv, started, wait_until
from bench._rows import TINY_ID

INSTANCES = 2
TIGHT_CONNECTIONS = 256
# (control plane flags, Envoy's connection limit or None for the default, the instances' bound or None).
SETTINGS: Mapping[str, tuple[tuple[str, ...], int | None, int | None]] = {
    "shedding": ((), None, None),
    # The defaults with Envoy's connection limit at the circuit breakers' 256: the gateway then refuses connections
    # instead of answering 503s (the trade-off the default of 1,024 makes, shown beside it).
    "tight": ((), TIGHT_CONNECTIONS, None),
    "off": (("--cluster-max-requests", "0"), 0, 0),
}
FULL_CONNECTIONS = (100, 1000, 4000)
# Smoke: past the circuit breakers (256) at the top, so shedding runs too.
SMOKE_CONNECTIONS = (10, 100, 400)
PROBE_CONNECTIONS = 8
# The probe opens its connections before wrk starts (so they are ones the gateway admitted), counts from a second
# into wrk's run, and stops before wrk does.
PROBE_LEAD_S = 0.3
PROBE_WARMUP_S = 1.0
# wrk's answers by "status/code", printed by done() as one JSON line (the thread's table is copied out by get).
WRK_SCRIPT = """
counts = {}
function response(status, headers, body)
  local code = "-"
  if status ~= 200 then code = string.match(body or "", '"code"%s*:%s*(%d+)') or "-" end
  local key = status .. "/" .. code
  counts[key] = (counts[key] or 0) + 1
end
local threads = {}
function setup(thread) table.insert(threads, thread) end
function done(summary, latency, requests)
  local parts = {}
  local errors = summary.errors
  local socket = errors.connect + errors.read + errors.write + errors.timeout
  parts[#parts + 1] = string.format('"socket": %d', socket)
  for _, thread in ipairs(threads) do
    for key, n in pairs(thread:get("counts")) do parts[#parts + 1] = string.format('"%s": %d', key, n) end
  end
  io.write("P10COUNTS {" .. table.concat(parts, ", ") .. "}\\n")
end
"""
_COUNTS = re.compile(r"^P10COUNTS (\{.*\})$", re.MULTILINE)
_DURATION = re.compile(r"requests in ([\d.]+)(us|ms|s|m),")
_SECONDS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


# Between runs: the last run's connections are gone (Envoy at its limit would refuse the probe's).
SETTLE_TIMEOUT_S = 30.0
ACTIVE_CONNECTIONS = "http.gateway.downstream_cx_active"


@dataclass(frozen=True)
class Gateway:
    """One running stack: where REST answers, and the launcher (its admin API)."""

    url: str
    launcher: Any

    def settle(self) -> None:
        wait_until(lambda: self.launcher.stat(ACTIVE_CONNECTIONS) <= 1, timeout=SETTLE_TIMEOUT_S,
                   what="the gateway's connections closed")


@contextlib.contextmanager
def overload_stack(log_dir: Path, setting: str) -> Iterator[Gateway]:
    """Consul + control plane + Envoy with `setting`'s limits + two users instances, both behind Envoy."""
    control_args, max_connections, bound = SETTINGS[setting]
    with consul_agent(log_dir) as consul, contextlib.ExitStack() as stack:
        gateway = envoy_gateway(log_dir, consul.address, control_args=control_args, max_connections=max_connections)
        stack.callback(gateway.stop)
        try:
            gateway.start()
        except (RuntimeError, TimeoutError) as error:
            raise NotRun(f"the gateway did not start: {error}", missing="gateway") from error
        for index in range(INSTANCES):
            port = free_port()
            argv = grpc_server.argv("protomesh", port, consul=consul.address, max_concurrent_rpcs=bound)
            stack.enter_context(started(f"backend{index}", argv, log_dir=log_dir, cpu=SERVER_CPU, port=port))
        url = f"{gateway.url}/v1/users/{TINY_ID}"
        wait_until(lambda: len(gateway.hosts(grpc_server.SERVICE)) == INSTANCES and _answers(url, {}, None),
                   timeout=READY_TIMEOUT_S, what=f"REST via the gateway to {INSTANCES} instances")
        yield Gateway(url, gateway)


def _raise_descriptor_limit() -> None:
    """Children inherit the soft limit: raise it to the hard one so wrk and Envoy can hold 4,000 connections."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def load(gateway: Gateway, connections: int, duration: int, script: Path) -> dict[str, Any]:
    """wrk at `connections` for `duration` s with the probe beside it: 2xx req/s, answers by kind, socket errors,
    the probe's latencies of its successful requests, and the command."""
    url = gateway.url
    gateway.settle()
    wrk = find_tool("wrk")
    if wrk is None:
        raise NotRun("wrk is not installed (p10 needs its connection counts)", missing="wrk")
    argv = pinned([wrk, "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "10s", "-s", str(script), url],
                  LOAD_CPU)
    probe_argv = pinned(python_argv("bench._httpprobe", url, "--duration", f"{duration:g}", "--warmup",
                                    f"{PROBE_WARMUP_S + PROBE_LEAD_S:g}", "--connections", str(PROBE_CONNECTIONS)),
                        LOAD_CPU)
    with subprocess.Popen(probe_argv, stdout=subprocess.PIPE, text=True) as probe_run:
        time.sleep(PROBE_LEAD_S)
        wrk_run = subprocess.run(argv, capture_output=True, text=True, timeout=duration + OVERRUN_S, check=False)
        out, err = wrk_run.stdout, wrk_run.stderr
        probe = json.loads(probe_run.communicate(timeout=OVERRUN_S)[0])
    counts, seconds = _COUNTS.search(out), _DURATION.search(out)
    if wrk_run.returncode != 0 or counts is None or seconds is None:
        raise RuntimeError(f"{shown(argv)} exited {wrk_run.returncode}: {out[-800:]} {err[-800:]}")
    kinds: dict[str, int] = {key: n for key, n in json.loads(counts.group(1)).items() if n}
    socket = kinds.pop("socket", 0)
    wall = float(seconds.group(1)) * _SECONDS[seconds.group(2)]
    ok = sum(n for key, n in kinds.items() if key.startswith("2"))
    total = sum(kinds.values())
    return {"connections": connections, "rps": round(ok / wall, 1), "answers": total, "ok": ok,
            "non_2xx_share": round((total - ok) / total, 4) if total else 0.0, "kinds": kinds,
            "socket_errors": socket, "probe": probe, "command": shown(argv)}


def measure(options: Options) -> dict[str, list[dict[str, Any]]]:
    """Every connection count on every stack (all running side by side), one after the other."""
    _raise_descriptor_limit()
    work = options.work_dir / "p10"
    work.mkdir(parents=True, exist_ok=True)
    script = work / "count.lua"
    script.write_text(WRK_SCRIPT)
    duration = int(options.pick(10, 2))
    counts = SMOKE_CONNECTIONS if options.smoke else FULL_CONNECTIONS
    with contextlib.ExitStack() as stacks:
        gateways = {name: stacks.enter_context(overload_stack(work / name, name)) for name in SETTINGS}
        for gateway in gateways.values():  # warm: connections to the instances, the transcoder's first calls
            load(gateway, counts[0], 1, script)
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in SETTINGS}
        for connections in counts:
            for name, gateway in gateways.items():
                runs[name].append(load(gateway, connections, duration, script))
    return runs


def _cancelled(run: Mapping[str, Any]) -> int:
    kinds = {**run["kinds"], **{f"probe {k}": n for k, n in run["probe"]["kinds"].items()}}
    return sum(n for key, n in kinds.items() if key.endswith("/1") or key.startswith(("499", "probe 499")))


def _kinds(run: Mapping[str, Any]) -> str:
    return ", ".join(f"{key}: {n}" for key, n in sorted(run["kinds"].items()) if not key.startswith("2")) or "none"


def _ratio(numerator: float, denominator: float) -> float:
    return round(numerator / denominator, 3) if denominator else float("nan")


def run(options: Options) -> Outcome:
    runs = measure(options)
    on, off, tight = runs["shedding"], runs["off"], runs["tight"]
    rows = [[name, r["connections"], r["rps"], r["probe"]["p50_ms"], r["probe"]["p99_ms"],
             round(100 * r["non_2xx_share"], 2), _kinds(r), r["socket_errors"]]
            for name in SETTINGS for r in runs[name]]
    return Outcome(
        values={"p10_rps_4000_vs_100": _ratio(on[-1]["rps"], on[0]["rps"]),
                "p10_p99_4000_vs_100": _ratio(on[-1]["probe"]["p99_ms"], on[0]["probe"]["p99_ms"]),
                "p10_cancelled_4000": _cancelled(on[-1]),
                "p10_off_rps_4000_vs_100": _ratio(off[-1]["rps"], off[0]["rps"]),
                "p10_off_p99_4000_vs_100": _ratio(off[-1]["probe"]["p99_ms"], off[0]["probe"]["p99_ms"]),
                "p10_off_cancelled_4000": _cancelled(off[-1]),
                "p10_tight_rps_4000_vs_100": _ratio(tight[-1]["rps"], tight[0]["rps"]),
                "p10_tight_p99_4000_vs_100": _ratio(tight[-1]["probe"]["p99_ms"], tight[0]["probe"]["p99_ms"])},
        baseline={"what": "the old configuration: no connection limit, 8,192 in flight per cluster, no instance bound",
                  "runs": off},
        subject={"what": "load shedding on (the defaults)", "runs": on,
                 "tight": {"what": f"the defaults with Envoy's connection limit at {TIGHT_CONNECTIONS}",
                           "runs": tight}},
        commands=[r["command"] for r in on] + [
            "python -m bench._httpprobe URL --duration D --connections 8  (beside each wrk run)"],
        notes=["req/s counts 2xx answers only; p50/p99 are of the probe's successful requests",
               "the largest connection count is compared with the smallest (4,000 vs 100; 200 vs 10 in smoke runs)",
               "shed answers are 503 with google.rpc code 14 (UNAVAILABLE) and Retry-After: 1",
               "socket errors: wrk's connections Envoy closed at its connection limit (wrk reconnects at once)"],
        table={"title": "Every run (shedding on, tight and off side by side in one run)",
               "columns": ["setting", "connections", "2xx req/s", "p50 ok ms", "p99 ok ms", "non-2xx %",
                           "non-2xx by status/google.rpc code", "socket errors (connections refused)"],
               "rows": rows},
    )


FIGURE = Figure("p10", "overload: wrk through the gateway, two users instances, 100 / 1,000 / 4,000 connections",
                {"p10_rps_4000_vs_100": Target(">=", 0.9),
                 "p10_p99_4000_vs_100": Target("<=", 4.0),
                 "p10_cancelled_4000": Target("<=", 0),
                 "p10_off_rps_4000_vs_100": None,
                 "p10_off_p99_4000_vs_100": None,
                 "p10_off_cancelled_4000": None,
                 "p10_tight_rps_4000_vs_100": None,
                 "p10_tight_p99_4000_vs_100": None}, run)
