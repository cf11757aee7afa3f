"""p6: the control plane with 1,000 services x 3 instances in a real Consul: first full push, one change, memory.

The catalog is registered first. Then the control plane starts and builds its first snapshot; Envoy
starts once it is ready, and the full push is timed from Envoy's ADS connection (admin stat
control_plane.connected_state) until Envoy has every cluster active, none warming and the listener up.
A change adds or removes one instance of one service. Two measurements on separate changes of one run: polled,
timed until Envoy's membership gauge of that cluster moves (admin /stats?filter=, which at 1,000 clusters costs
~50 ms of Envoy's main thread per call, the thread that applies xDS); acked, from the Consul request being sent to
Envoy's ACK of the push carrying it, which the control plane records (bench/_pushes.py), Envoy not polled.
RSS is the control plane's resident memory after all of it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench._core import Figure, NotRun, Options, Outcome, Target
from bench._gateway import consul_agent, deregister, envoy_gateway, envoy_stats, poll, register, summary_ms
from bench._proc import rss_mb, wait_until
from bench._pushes import acked_change, parts_ms

# The polled one-change figure includes the /stats polls' cost: reported beside the acked one, without a target.
TARGETS = {"p6_cp_full_push_s": Target("<=", 1, " s"), "p6_cp_one_change_acked_ms": Target("<=", 50, " ms"),
           "p6_cp_one_change_ms": None, "p6_cp_rss_mb": Target("<=", 150, " MB")}
INSTANCES = 3
# Registrations in flight against the Consul agent; more only queues inside the agent.
REGISTER_THREADS = 8
# The control plane may take minutes to read a big catalog (that is a finding, not a harness failure).
READY_TIMEOUT_S = 300.0
PUSH_TIMEOUT_S = 300.0
# One change may take as long as a Consul blocking query waits (30 s) when the watch of that service is
# queued; the changes stop after CHANGES_BUDGET_S so the figure stays bounded.
CHANGE_TIMEOUT_S = 90.0
CHANGES_BUDGET_S = 120.0
_PUSH_STATS = (r"^(control_plane\.connected_state|cluster_manager\.(active|warming)_clusters"
               r"|listener_manager\.total_listeners_active)$")


def _name(number: int) -> str:
    return f"svc{number:04d}"


def populate(consul: Any, services: int) -> float:
    """Register services x INSTANCES instances; returns the seconds it took."""
    began = time.perf_counter()
    jobs = [(number, k) for number in range(services) for k in range(INSTANCES)]
    with ThreadPoolExecutor(REGISTER_THREADS) as pool:
        list(pool.map(lambda job: register(consul, f"{_name(job[0])}-{job[1]}", _name(job[0]),
                                           20_000 + INSTANCES * job[0] + job[1],
                                           [f"bench.{_name(job[0])}.v1.Service"]), jobs))
    wait_until(lambda: len(consul.get("/v1/catalog/services")) > services, what="catalog complete", timeout=120)
    return time.perf_counter() - began


def _pushed(gateway: Any, clusters: int, marks: dict[str, float]) -> bool:
    try:
        stats = envoy_stats(gateway, _PUSH_STATS)
    except OSError:  # Envoy's admin is not listening yet
        return False
    if stats.get("control_plane.connected_state") == 1:
        marks.setdefault("connected", time.perf_counter())
    return (stats.get("cluster_manager.active_clusters", 0) >= clusters
            and stats.get("cluster_manager.warming_clusters", 1) == 0
            and stats.get("listener_manager.total_listeners_active", 0) >= 1)


def full_push(gateway: Any, services: int) -> dict[str, float]:
    """Start the control plane, then Envoy; seconds to first snapshot, to connect, and to the full push."""
    marks = {"start": time.perf_counter()}
    gateway.control_plane.start()
    marks["snapshot"] = poll(lambda: _snapshot_ready(gateway), timeout=READY_TIMEOUT_S,
                             what="the control plane's first snapshot", interval=0.05)
    gateway.write_bootstrap()
    gateway.envoy.start()
    marks["envoy"] = time.perf_counter()
    # Every Consul service plus the static xDS cluster from the bootstrap.
    done = poll(lambda: _pushed(gateway, services + 1, marks), timeout=PUSH_TIMEOUT_S, what="full push",
                interval=0.005)
    return {"cp_first_snapshot_s": marks["snapshot"] - marks["start"],
            "envoy_start_to_connected_s": marks["connected"] - marks["envoy"],
            "full_push_s": done - marks["connected"], "cold_total_s": done - marks["start"]}


def _snapshot_ready(gateway: Any) -> bool:
    gateway.control_plane.ensure_alive()
    try:
        return bool(gateway.status()["ready"])
    except OSError:  # its status endpoint is not up yet
        return False


def one_changes(consul: Any, gateway: Any, services: int, count: int) -> tuple[list[float], list[dict[str, float]]]:
    """One-instance changes (add a 4th instance, remove it again), alternately polled (milliseconds until Envoy's
    gauge shows it) and acked (the control plane's record: request sent -> Envoy ACKed, with its parts)."""
    name = _name(services // 2)
    gauge = f"cluster.{name}.membership_total"
    polled: list[float] = []
    acked: list[dict[str, float]] = []
    budget_ends = time.perf_counter() + CHANGES_BUDGET_S
    for number in range(2 * count):
        if number >= 4 and time.perf_counter() > budget_ends:
            break
        adding, by_stats = number % 2 == 0, number % 4 < 2
        instance = f"{name}-{'polled' if by_stats else 'acked'}"
        began, before = time.perf_counter(), time.time()
        if adding:
            register(consul, instance, name, 19_999, [f"bench.{name}.v1.Service"])
        else:
            deregister(consul, instance)
        if by_stats:
            want = INSTANCES + 1 if adding else INSTANCES
            done = poll(lambda w=want: envoy_stats(gateway, f"^{gauge}$").get(gauge) == w,
                        timeout=CHANGE_TIMEOUT_S, what=f"{gauge} == {want}")
            polled.append((done - began) * 1e3)
        else:
            acked.append(acked_change(gateway, name, before, time.time(), timeout=CHANGE_TIMEOUT_S))
        time.sleep(0.05)  # outside the 20 ms after a push in which the control plane gathers changes
    return polled, acked


def run(options: Options, services: int | None = None) -> Outcome:
    services = services or options.count(1000, 20)
    with consul_agent(options.work_dir / "p6") as consul:
        registering_s = populate(consul, services)
        gateway = envoy_gateway(options.work_dir / "p6", consul.address)
        try:
            timings = full_push(gateway, services)
            changes, acked = one_changes(consul, gateway, services, options.count(10, 4))
            rss, envoy_rss = rss_mb(gateway.control_plane.pid), rss_mb(gateway.envoy.pid)
        except (RuntimeError, TimeoutError) as error:
            raise NotRun(f"the gateway did not come up with {services} services: {error} (log: "
                         f"{gateway.control_plane.log_path})", missing="gateway") from error
        finally:
            gateway.stop()
    values = {"p6_cp_full_push_s": round(timings["full_push_s"], 3),
              "p6_cp_one_change_acked_ms": round(statistics.median(t["acked_ms"] for t in acked), 2),
              "p6_cp_one_change_ms": round(statistics.median(changes), 2), "p6_cp_rss_mb": round(rss, 1)}
    return Outcome(
        values=values,
        subject={"what": f"{services} services x {INSTANCES} instances in Consul 1.8 (dev agent)",
                 "registering_catalog_s": round(registering_s, 1),
                 **{key: round(value, 3) for key, value in timings.items()},
                 "one_change": summary_ms(changes),
                 "one_change_acked": {**summary_ms([t["acked_ms"] for t in acked]),
                                      "median_parts_ms": parts_ms(acked)},
                 "envoy_rss_mb": round(envoy_rss, 1)},
        commands=["python -m gateway_envoy.controlplane (via localmesh.gateway.Gateway)",
                  "GET /stats?filter=... (Envoy admin: connected_state, active/warming clusters, membership_total)",
                  "GET /status/pushes (the control plane's status port: per push, Consul answer / published / "
                  "ACKed times)"],
        notes=["full push = Envoy's ADS connection -> all clusters active, none warming, listener active",
               "one change = Consul agent register/deregister of a 4th instance -> membership_total moves "
               "(polled, p6_cp_one_change_ms) or -> Envoy ACKed the push carrying it (acked)",
               "acked = Consul request sent -> Envoy ACKed (the agent writes the catalog before it answers the "
               "request, so the watch can be answered first); parts: request = the request's own time, consul = sent "
               "-> the control plane read the blocking query's answer, control_plane = answer -> published, envoy = "
               "published -> ACK"],
    )


FIGURE = Figure("p6", "control plane at 1,000 services x 3 instances", TARGETS, run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=1000, help="Consul services of 3 instances each")
    args = parser.parse_args()
    outcome = run(Options(), services=args.services)
    sys.stdout.write(json.dumps({**outcome.values, **outcome.subject}, indent=2) + "\n")


if __name__ == "__main__":
    main()
