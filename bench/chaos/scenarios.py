"""The five faults, each run under steady load through the gateway and judged against its goals."""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from bench.chaos.harness import ChaosMesh, poll
from bench.chaos.load import MESH_MIX, ORDERS_MIX, USERS_MIX, CallFailed, Load, Workload, notifications_by_order
from bench.chaos.model import ScenarioResult, Tally, Timing
from localmesh.components import get_json

# Every instance must be listed by a restarted (empty) Consul agent again within this long (issue 6).
REREGISTER_GOAL_S = 3.0
# How long a placed order may take to become a notification after the load stopped (the broker may just
# have come back: the outbox relay and the consumer reconnect with backoff).
DELIVERY_TIMEOUT_S = 30.0
# After every order has its notification, a late duplicate would show up within this long.
DUPLICATE_WATCH_S = 1.0

Fault = Callable[[ChaosMesh, Load], Awaitable[dict[str, Any]]]
Goals = Callable[[Tally, dict[str, Any]], dict[str, bool]]


@dataclass(frozen=True)
class Scenario:
    """A fault, the load mix it runs under, and the goals its outcome is judged by."""

    name: str
    title: str
    mix: tuple[str, ...]
    fault: Fault
    goals: Goals


async def _kill_once(mesh: ChaosMesh, load: Load) -> tuple[float, float]:
    """kill -9 users-1 and let the mesh heal: (seconds until Envoy no longer routed to it, until it was back)."""
    victim = mesh.instances("users")[0]
    pid, restarts = victim.status.pid, victim.status.restarts
    assert pid is not None
    failed_before = load.tally.failed
    began = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    load.mark(f"kill -9 {victim.name} (pid {pid}) with {load.in_flight} call(s) in flight")
    def dropped_or_back() -> bool:
        return len(mesh.envoy_hosts("users")) < mesh.replicas("users") or victim.status.restarts > restarts

    dropped = await poll(dropped_or_back, what=f"Envoy dropping {victim.name}")
    load.mark(f"Envoy dropped it after {dropped:.2f}s")
    await poll(lambda: victim.status.restarts > restarts and victim.ready, what=f"{victim.name} restarted")
    await mesh.settle("users")
    back = time.monotonic() - began
    load.mark(f"{victim.name} restarted by the mesh: passing and routed {back:.2f}s after the kill; "
              f"{load.tally.failed - failed_before} call(s) failed since the kill")
    return dropped, back


async def _kill9(mesh: ChaosMesh, load: Load) -> dict[str, Any]:
    dropped, back, failed = [], [], []
    for kill in range(load.timing.kills):
        if kill:
            await asyncio.sleep(load.timing.before_s)
        failed_before = load.tally.failed
        seconds_dropped, seconds_back = await _kill_once(mesh, load)
        dropped.append(round(seconds_dropped, 2))
        back.append(round(seconds_back, 2))
        failed.append(load.tally.failed - failed_before)
    return {"failed_per_kill": failed, "dropped_after_s": max(dropped), "restarted_in_s": max(back)}


def _kill9_goals(tally: Tally, metrics: dict[str, Any]) -> dict[str, bool]:
    per_kill = list(metrics.get("failed_per_kill") or [0])
    per_kill[-1] += tally.failed - sum(per_kill)  # a failure outside the kills' windows counts against the goal
    return {"at most 1 failed call per kill (the one in flight)": max(per_kill) <= 1}


async def _rolling(mesh: ChaosMesh, load: Load, services: list[str] | None = None) -> dict[str, Any]:
    """`protomesh restart` of every service in turn: a surge instance, then each instance replaced."""
    took = {}
    for service in services or mesh.services:
        began = time.monotonic()
        await mesh.mesh.restart(service)
        await mesh.settle(service)
        took[service] = round(time.monotonic() - began, 2)
        load.mark(f"{service} restarted instance by instance in {took[service]:.2f}s")
    return {"restart_s": took}


def _leader(mesh: ChaosMesh) -> bool:
    return bool(get_json(f"http://{mesh.consul_address}/v1/status/leader"))


def _all_passing(mesh: ChaosMesh) -> bool:
    return all(len(mesh.consul_instances(s, passing=True)) == mesh.replicas(s) for s in mesh.services)


async def _consul(mesh: ChaosMesh, load: Load) -> dict[str, Any]:
    agent = mesh.component("consul")
    expected = sum(mesh.replicas(s) for s in mesh.services)
    began = time.monotonic()
    await agent.stop()
    load.mark("Consul agent stopped (a -dev agent keeps nothing)")
    starting = asyncio.create_task(agent.start())  # ready once it answers and config/ is seeded again
    back = await poll(lambda: _leader(mesh), what="Consul leader after the restart") + time.monotonic() - began
    load.mark(f"Consul agent answering again, empty, {back:.2f}s after the stop")
    registered = await poll(lambda: mesh.agent_instances() == expected, what=f"{expected} instances re-registered")
    load.mark(f"all {expected} instances re-registered {registered:.2f}s after the agent answered")
    passing = registered + await poll(lambda: _all_passing(mesh), what="every instance passing again")
    load.mark(f"all passing in the catalog {passing:.2f}s after the agent answered")
    await starting
    await mesh.settle_all()
    return {"agent_back_after_s": round(back, 2), "reregistered_s": round(registered, 2),
            "all_passing_s": round(passing, 2)}


async def _controlplane(mesh: ChaosMesh, load: Load) -> dict[str, Any]:
    plane = mesh.component("controlplane")
    began = time.monotonic()
    await plane.stop()
    load.mark("control plane stopped (Envoy keeps its last configuration)")
    await plane.start()
    await poll(mesh.xds_listening, what="the control plane's xDS port")
    await poll(lambda: mesh.envoy_stat("control_plane.connected_state") == 1, what="Envoy reconnected to xDS")
    back = time.monotonic() - began
    load.mark(f"Envoy connected to the new control plane {back:.2f}s after the stop")
    await mesh.settle_all()
    return {"reconnected_after_s": round(back, 2)}


async def _rabbitmq(mesh: ChaosMesh, load: Load) -> dict[str, Any]:
    broker = mesh.component("rabbitmq")
    began = time.monotonic()
    await broker.stop()
    load.mark(f"RabbitMQ stopped after {time.monotonic() - began:.2f}s (orders keep being placed)")
    started = await broker.start()
    load.mark(f"RabbitMQ accepting AMQP again after {started:.2f}s")
    return {"broker_down_s": round(time.monotonic() - began, 2)}


def _no_failure(tally: Tally, metrics: dict[str, Any]) -> dict[str, bool]:
    return {"0 failed requests": tally.failed == 0}


def _events_goals(tally: Tally, metrics: dict[str, Any]) -> dict[str, bool]:
    return {"0 lost events": metrics.get("lost_events") == 0,
            "0 duplicate notifications": metrics.get("duplicate_notifications") == 0}


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("kill9", "kill -9 of one of two users instances", USERS_MIX, _kill9, _kill9_goals),
    Scenario("restart", "`protomesh restart users` under load", USERS_MIX,
             lambda mesh, load: _rolling(mesh, load, ["users"]), _no_failure),
    Scenario("rolling", "rolling SIGTERM restart of every service instance", MESH_MIX, _rolling,
             lambda tally, m: _no_failure(tally, m) | _events_goals(tally, m)),
    Scenario("consul", "Consul agent restart with state loss", MESH_MIX, _consul,
             lambda tally, m: _no_failure(tally, m) | _events_goals(tally, m)
             | {f"every instance re-registered within {REREGISTER_GOAL_S:.0f} s":
                m.get("reregistered_s", float("inf")) <= REREGISTER_GOAL_S}),
    Scenario("controlplane", "control-plane restart", MESH_MIX, _controlplane,
             lambda tally, m: _no_failure(tally, m) | _events_goals(tally, m)),
    Scenario("rabbitmq", "RabbitMQ restart while orders are placed", ORDERS_MIX, _rabbitmq,
             lambda tally, m: _no_failure(tally, m) | _events_goals(tally, m)),
)}


async def _notifications(work: Workload, orders: dict[str, tuple[str, float]]) -> dict[str, list[float]] | None:
    """Each order's notification times, or None while they cannot be read (the mesh is still recovering)."""
    try:
        return await notifications_by_order(work, {user_id for user_id, _ in orders.values()})
    except (CallFailed, aiohttp.ClientError, OSError, TimeoutError, KeyError, ValueError):
        return None


async def count_events(work: Workload) -> dict[str, Any]:
    """Wait until every order placed under load has its notification; then count lost and duplicate ones,
    and how long the events took (order answered -> notification stored)."""
    orders = dict(work.orders)
    began = time.monotonic()
    while True:
        found = await _notifications(work, orders)
        if found is not None and all(found.get(order_id) for order_id in orders):
            break
        if time.monotonic() - began > DELIVERY_TIMEOUT_S:
            break
        await asyncio.sleep(0.2)
    await asyncio.sleep(DUPLICATE_WATCH_S)
    found = await _notifications(work, orders)
    if found is None:
        return {"orders_placed": len(orders), "error": "notifications could not be read to count the events"}
    took = sorted(min(found[o]) - placed for o, (_, placed) in orders.items() if found.get(o))
    metrics: dict[str, Any] = {"orders_placed": len(orders), "lost_events": sum(1 for o in orders if not found.get(o)),
               "duplicate_notifications": sum(max(0, len(found.get(o, ())) - 1) for o in orders)}
    if took:
        metrics |= {"event_p50_s": round(statistics.median(took), 3), "event_max_s": round(took[-1], 3)}
    return metrics


async def run_scenario(scenario: Scenario, mesh: ChaosMesh, work: Workload, timing: Timing) -> ScenarioResult:
    """Load, fault, recovery, more load; then the event count when the mix placed orders."""
    work.orders.clear()
    counters = await asyncio.to_thread(mesh.envoy_counters)
    began = time.monotonic()
    async with Load(work, scenario.mix, timing) as load:
        await asyncio.sleep(timing.before_s)
        try:
            metrics = await scenario.fault(mesh, load)
        except (TimeoutError, RuntimeError) as exc:  # the mesh did not recover: judged, not raised
            load.mark(f"did not recover: {exc}")
            metrics = {"error": str(exc)}
        else:
            load.mark("recovered; load goes on")
        if "error" not in metrics:
            await asyncio.sleep(timing.after_s)
    if "create_order" in scenario.mix:
        metrics |= await count_events(work)
    after = await asyncio.to_thread(mesh.envoy_counters)
    metrics["gateway_counters"] = {k: v - counters.get(k, 0) for k, v in after.items() if v != counters.get(k, 0)}
    result = ScenarioResult(scenario.name, scenario.title, load.tally, time.monotonic() - began, metrics,
                            events=load.events)
    result.goals = {"the mesh recovered": "error" not in metrics} | scenario.goals(load.tally, metrics)
    return result
