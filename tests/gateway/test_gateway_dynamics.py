"""The gateway follows Consul quickly and survives restarts of its control plane and of Consul under load."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest
from gateway_support import Stack, run_load, step

from protomesh.aio import poll_until

pytestmark = pytest.mark.slow

LOAD_PATH = "/v1/users?pageSize=1"
# Issue 4's targets; the measured values are logged so a slow run is visible before it fails.
NEW_INSTANCE_TRAFFIC_WITHIN_S = 1.5
DEREGISTERED_GONE_WITHIN_S = 0.1
# How often the removal race is sampled: both sides are read in one loop, so the error is about one period.
SAMPLE_PERIOD_S = 0.002


async def test_a_new_instance_receives_traffic_within_1_5_s_of_starting(stack: Stack) -> None:
    # Steady light traffic (~100 req/s): enough to reach a new host at once without starving its startup.
    # It lasts until the new instance was served, however long a loaded machine takes to start it.
    served_event = asyncio.Event()
    load = asyncio.create_task(run_load(stack.gateway.url, LOAD_PATH, seconds=60, clients=2, pause_s=0.02,
                                        stop=served_event))
    await asyncio.sleep(0.2)
    entry = await asyncio.to_thread(stack.users.start)
    registered = time.monotonic()
    address = f"{entry['Address']}:{entry['Port']}"

    async def served() -> bool:
        return (await asyncio.to_thread(stack.gateway.hosts, "users")).get(address, 0) > 0

    await poll_until(served, timeout=5, what=f"traffic on {address}", interval=0.01)
    served_at = time.monotonic()
    served_event.set()
    elapsed = served_at - stack.users.spawned_at[entry["ID"]]
    result = await load
    # "Starting" is counted from when the instance serves and is registered: the interpreter's own start
    # (1-2 s for the users service on a busy 2-core machine) is logged but belongs to the runtime.
    step("new instance %s got its first request %.3f s after Consul listed it as passing (%.3f s after its "
         "process was spawned)", address, served_at - registered, elapsed)
    assert served_at - registered < NEW_INSTANCE_TRAFFIC_WITHIN_S
    step("no request failed meanwhile (%d ok)", result.ok)
    assert result.failures == []


def _removal_delay(stack: Stack, address: str, deadline: float) -> tuple[float | None, float | None]:
    """Sample Consul (passing instances) and Envoy (cluster hosts) until both dropped address."""
    consul_gone = envoy_gone = None
    while (consul_gone is None or envoy_gone is None) and time.monotonic() < deadline:
        now = time.monotonic()
        if consul_gone is None and address not in stack.users.passing_addresses():
            consul_gone = now
        if envoy_gone is None and address not in stack.gateway.hosts("users"):
            envoy_gone = time.monotonic()
        time.sleep(SAMPLE_PERIOD_S)
    return consul_gone, envoy_gone


async def test_a_deregistered_instance_stops_receiving_traffic_within_100_ms(stack: Stack) -> None:
    if len(stack.users.processes) < 2:
        await asyncio.to_thread(stack.users.start)
    instance_id = sorted(stack.users.processes, key=stack.users.spawned_at.__getitem__)[-1]
    entry = next(i for i in stack.consul.passing_instances("users") if i["ID"] == instance_id)
    address = f"{entry['Address']}:{entry['Port']}"
    load = asyncio.create_task(run_load(stack.gateway.url, LOAD_PATH, seconds=2.0))
    await asyncio.sleep(0.3)
    stack.users.signal(instance_id, signal.SIGTERM)  # the runtime deregisters, drains, then stops
    consul_gone, envoy_gone = await asyncio.to_thread(_removal_delay, stack, address, time.monotonic() + 5)
    result = await load
    step("Consul dropped %s and so did Envoy", address)
    assert consul_gone is not None
    assert envoy_gone is not None
    delay = envoy_gone - consul_gone
    step("Envoy stopped routing to it %.1f ms after Consul deregistered it", delay * 1000)
    assert delay < DEREGISTERED_GONE_WITHIN_S
    step("no request failed while it left (%d ok)", result.ok)
    assert result.failures == []
    stack.users.stop(instance_id)


async def test_restarting_the_control_plane_under_load_fails_no_request(stack: Stack) -> None:
    load = asyncio.create_task(run_load(stack.gateway.url, LOAD_PATH))
    await asyncio.sleep(0.5)
    before = stack.gateway.status()
    version = before["version"]
    await asyncio.to_thread(stack.gateway.restart_control_plane)
    result = await load
    step("no request failed while the control plane restarted (%d ok)", result.ok)
    assert result.failures == []
    assert result.ok > 0
    step("the restarted control plane computed the same snapshot version (content hash)")
    assert stack.gateway.status()["version"] == version
    step("Envoy reconnected to it")
    await poll_until(lambda: stack.gateway.status()["streams"] == 1, timeout=10, what="ADS reconnect")


async def test_restarting_consul_under_load_fails_no_request(stack: Stack) -> None:
    load = asyncio.create_task(run_load(stack.gateway.url, LOAD_PATH, seconds=4.0))
    await asyncio.sleep(0.3)
    await asyncio.to_thread(stack.consul.restart)
    result = await load
    step("no request failed while Consul restarted and forgot every instance (%d ok)", result.ok)
    assert result.failures == []
    assert result.ok > 0
    step("the users instance registered itself again in the new agent")
    await poll_until(stack.users.passing_addresses, timeout=10, what="re-registration")
