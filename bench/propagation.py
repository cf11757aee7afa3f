"""p5: a Consul change -> Envoy serving the new endpoints, p99 over >= 100 changes (instances added and removed).

One base instance of `users` stays registered (the control plane keeps last-known-good endpoints of a
service that drops to zero, which is not what is measured here). Each change registers or deregisters a
second instance through the Consul agent's HTTP API; the clock starts before that request and stops
when Envoy's admin /clusters lists (or no longer lists) the instance — Envoy applies an EDS update and
ACKs it in the same step, so that is the moment it has ACKed.
"""

from __future__ import annotations

import time
from typing import Any

from bench._core import Figure, Options, Outcome, Target
from bench._gateway import deregister, gateway_stack, poll, register, summary_ms
from bench._proc import free_port

SERVICE = "users"
GRPC_SERVICES = ("acme.users.v1.UserService",)
# A change must not land in the previous one's coalescing window (20 ms): it would be measured as faster.
PAUSE_S = 0.05
CHANGE_TIMEOUT_S = 10.0


def _change(stack: Any, action: Any, address: str, present: bool) -> float:
    """Seconds from the Consul request until Envoy shows `address` present (or absent) in the cluster."""
    began = time.perf_counter()
    action()
    done = poll(lambda: (address in stack.gateway.hosts(SERVICE)) == present, timeout=CHANGE_TIMEOUT_S,
                what=f"Envoy {'adding' if present else 'removing'} {address}")
    return done - began


def measure(options: Options) -> dict[str, list[float]]:
    """Milliseconds per change, split into additions and removals."""
    rounds = options.count(100, 5)
    added: list[float] = []
    removed: list[float] = []
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
    return {"added": added, "removed": removed}


def run(options: Options) -> Outcome:
    changes = measure(options)
    every = changes["added"] + changes["removed"]
    overall = summary_ms(every)
    return Outcome(
        values={"p5_propagation_p99_ms": overall["p99_ms"]},
        subject={"what": "Consul agent register/deregister -> instance listed/unlisted by Envoy admin /clusters",
                 "all_changes": overall, "additions": summary_ms(changes["added"]),
                 "removals": summary_ms(changes["removed"])},
        commands=["PUT /v1/agent/service/register | /v1/agent/service/deregister/<id>  (Consul HTTP API)",
                  "GET /clusters?format=json  (Envoy admin, polled every ~1 ms)"],
        notes=["the control plane coalesces Consul changes for 20 ms before it pushes (gateway_envoy/state.py)"],
    )


FIGURE = Figure("p5", "Consul change -> Envoy ACKed the new endpoints, p99",
                {"p5_propagation_p99_ms": Target("<=", 20, " ms")}, run)
