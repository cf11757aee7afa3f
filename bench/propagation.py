"""p5: a Consul change -> Envoy serving the new endpoints, p99 over >= 100 changes (instances added and removed).

One base instance of `users` stays registered (the control plane keeps last-known-good endpoints of a
service that drops to zero, which is not what is measured here). Each change registers or deregisters a
second instance through the Consul agent's HTTP API. Two measurements, on alternating changes of one run:
polled, the clock starts before that request and stops when Envoy's admin /clusters lists (or no longer lists)
the instance — Envoy applies an EDS update and ACKs it in the same step; acked, from the request being sent to the
ACK of the push carrying it, which the control plane records (bench/_pushes.py), with Envoy left alone.
"""

from __future__ import annotations

import time
from typing import Any

from bench._core import Figure, Options, Outcome, Target
from bench._gateway import deregister, gateway_stack, poll, register, summary_ms
from bench._proc import free_port
from bench._pushes import acked_change, parts_ms

SERVICE = "users"
GRPC_SERVICES = ("acme.users.v1.UserService",)
# A change must not land in the window after the previous push (20 ms) in which the control plane gathers
# changes: it would wait for that window to end.
PAUSE_S = 0.05
CHANGE_TIMEOUT_S = 10.0


def _change(stack: Any, action: Any, address: str, present: bool) -> float:
    """Seconds from the Consul request until Envoy shows `address` present (or absent) in the cluster."""
    began = time.perf_counter()
    action()
    done = poll(lambda: (address in stack.gateway.hosts(SERVICE)) == present, timeout=CHANGE_TIMEOUT_S,
                what=f"Envoy {'adding' if present else 'removing'} {address}")
    return done - began


def _acked(stack: Any, action: Any) -> dict[str, float]:
    """The control plane's record of one change: the Consul request sent -> Envoy's ACK, and its parts."""
    before = time.time()
    action()
    return acked_change(stack.gateway, SERVICE, before, time.time(), timeout=CHANGE_TIMEOUT_S)


def measure(options: Options) -> dict[str, list[Any]]:
    """Milliseconds per polled change, split into additions and removals, and the acked changes' timings."""
    rounds = options.count(100, 5)
    added: list[float] = []
    removed: list[float] = []
    acked: list[dict[str, float]] = []
    with gateway_stack(options.work_dir / "p5", backend=False) as stack:
        register(stack.consul, "users-base", SERVICE, free_port(), GRPC_SERVICES)
        poll(lambda: len(stack.gateway.hosts(SERVICE)) == 1, timeout=30, what="the base instance in Envoy",
             interval=0.05)
        for number in range(rounds):
            port, instance = free_port(), f"users-bench-{number}"
            address = f"127.0.0.1:{port}"
            time.sleep(PAUSE_S)
            added.append(1e3 * _change(stack, lambda i=instance, p=port: register(
                stack.consul, i, SERVICE, p, GRPC_SERVICES), address, present=True))
            time.sleep(PAUSE_S)
            removed.append(1e3 * _change(stack, lambda i=instance: deregister(stack.consul, i), address,
                                         present=False))
            instance = f"users-acked-{number}"
            time.sleep(PAUSE_S)
            acked.append(_acked(stack, lambda i=instance, p=port: register(stack.consul, i, SERVICE, p, GRPC_SERVICES)))
            time.sleep(PAUSE_S)
            acked.append(_acked(stack, lambda i=instance: deregister(stack.consul, i)))
    return {"added": added, "removed": removed, "acked": acked}


def run(options: Options) -> Outcome:
    changes = measure(options)
    every = changes["added"] + changes["removed"]
    overall = summary_ms(every)
    acked = summary_ms([timing["acked_ms"] for timing in changes["acked"]])
    return Outcome(
        values={"p5_propagation_p99_ms": overall["p99_ms"], "p5_propagation_acked_p99_ms": acked["p99_ms"]},
        subject={"what": "Consul agent register/deregister -> instance listed/unlisted by Envoy admin /clusters",
                 "all_changes": overall, "additions": summary_ms(changes["added"]),
                 "removals": summary_ms(changes["removed"]),
                 "acked": {"what": "Consul request sent -> Envoy ACKed the push carrying it (the control "
                                   "plane's record, Envoy not polled)", **acked,
                           "median_parts_ms": parts_ms(changes["acked"])}},
        commands=["PUT /v1/agent/service/register | /v1/agent/service/deregister/<id>  (Consul HTTP API)",
                  "GET /clusters?format=json  (Envoy admin, polled every ~1 ms)",
                  "GET /status/pushes  (the control plane's status port: per push, Consul answer / published / "
                  "ACKed times)"],
        notes=["the control plane pushes a change at once and gathers what arrives in the 20 ms after a push "
               "(gateway_envoy/state.py)",
               "acked = Consul request sent -> Envoy ACKed (the agent writes the catalog before it answers the "
               "request, so the watch can be answered first); parts: request = the request's own time, consul = sent "
               "-> the control plane read the blocking query's answer, control_plane = answer -> published, envoy = "
               "published -> ACK"],
    )


FIGURE = Figure("p5", "Consul change -> Envoy ACKed the new endpoints, p99",
                {"p5_propagation_p99_ms": Target("<=", 20, " ms"),
                 "p5_propagation_acked_p99_ms": Target("<=", 20, " ms")}, run)
