"""The control plane's Consul watch: one blocking query on every check, re-reading only what changed, at scale."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import pytest

from gateway_envoy.catalog import ConsulService, Endpoint, service_from_health
from gateway_envoy.consul_checks import CheckRow, CheckRows, changed_services
from gateway_envoy.consul_watch import DEFAULT_RESYNC_S, CatalogWatcher
from localmesh.testing import ConsulAgent
from protomesh._settings import ConsulSettings
from protomesh.aio import poll_until
from protomesh.consul import DEFAULT_WAIT, ConsulClient

# The old watch (one blocking query per service) never got past ~100 services: py-consul's 100 pooled
# connections stayed held by blocking queries while the other services' first reads timed out.
SERVICES, INSTANCES = 200, 2
READ_WITHIN_S = 5.0
# A change reaches `services` in tens of milliseconds; the bound leaves room for a loaded machine.
CHANGE_WITHIN_S = 2.0
# External nodes registered through the catalog API: the dev agent's anti-entropy leaves them alone.
NODES = ("node-a", "node-b")
# Consul's own registration calls, in flight at once while populating the catalog.
REGISTER_CONCURRENCY = 8


def grpc_name(service: str) -> str:
    return f"test.{service}.v1.Service"


def instance_body(node: str, service: str, number: int, status: str = "passing",
                  grpc_services: str | None = None) -> dict[str, object]:
    """A /v1/catalog/register body: one instance on an external node, with its check."""
    instance_id = f"{service}-{number}"
    meta = {"grpc_services": grpc_name(service) if grpc_services is None else grpc_services}
    return {"Node": node, "Address": f"10.0.0.{NODES.index(node) + 1}" if node in NODES else "10.0.0.9",
            "Service": {"ID": instance_id, "Service": service, "Address": "127.0.0.1", "Port": 20_000 + number,
                        "Meta": meta},
            "Checks": [{"CheckID": f"service:{instance_id}", "Name": "grpc", "Status": status,
                        "ServiceID": instance_id}]}


async def register(agent: ConsulAgent, bodies: Sequence[dict[str, object]]) -> None:
    limit = asyncio.Semaphore(REGISTER_CONCURRENCY)

    async def one(body: dict[str, object]) -> None:
        async with limit:
            await asyncio.to_thread(agent.put, "/v1/catalog/register", json.dumps(body))

    await asyncio.gather(*(one(body) for body in bodies))


def ports(service: ConsulService | None) -> set[int]:
    return {endpoint.port for endpoint in service.endpoints} if service else set()


@contextlib.asynccontextmanager
async def watching(agent: ConsulAgent, *, wait: str = DEFAULT_WAIT,
                   resync_s: float = DEFAULT_RESYNC_S) -> AsyncIterator[CatalogWatcher]:
    """A CatalogWatcher running against the agent, stopped on exit."""
    consul = ConsulClient.from_settings(ConsulSettings(address=agent.address))
    watcher = CatalogWatcher(consul, lambda: None, wait=wait, resync_s=resync_s)
    task = asyncio.create_task(watcher.run())
    try:
        yield watcher
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await consul.close()


async def test_two_hundred_services_of_two_instances_are_read_into_one_state_within_five_seconds(
        consul_agent: ConsulAgent) -> None:
    await register(consul_agent, [instance_body(NODES[k], f"svc{n:03d}", k)
                                  for n in range(SERVICES) for k in range(INSTANCES)])
    async with watching(consul_agent) as watcher:
        started = time.monotonic()
        await asyncio.wait_for(watcher.ready.wait(), READ_WITHIN_S)
        took = time.monotonic() - started
        assert took < READ_WITHIN_S
        assert len(watcher.services) == SERVICES
        assert watcher.services["svc123"] == ConsulService(
            "svc123", (grpc_name("svc123"),), (Endpoint("127.0.0.1", 20_000), Endpoint("127.0.0.1", 20_001)))
        assert all(len(service.endpoints) == INSTANCES for service in watcher.services.values())


async def test_a_check_turning_critical_removes_that_instance_and_leaves_other_services_untouched(
        consul_agent: ConsulAgent) -> None:
    await register(consul_agent, [instance_body(NODES[k], name, k) for name in ("users", "orders") for k in (0, 1)])
    async with watching(consul_agent) as watcher:
        await asyncio.wait_for(watcher.ready.wait(), READ_WITHIN_S)
        orders = watcher.services["orders"]
        await register(consul_agent, [instance_body(NODES[0], "users", 0, status="critical")])
        await poll_until(lambda: ports(watcher.services.get("users")) == {20_001}, timeout=CHANGE_WITHIN_S,
                         what="the critical instance left the endpoints")
        assert watcher.services["orders"] is orders  # not read again: its checks did not change
        await register(consul_agent, [instance_body(NODES[1], "users", 1, status="critical")])
        await poll_until(lambda: not ports(watcher.services.get("users")), timeout=CHANGE_WITHIN_S,
                         what="every users instance failing")
        assert watcher.services["users"].grpc_services == (grpc_name("users"),)  # still routed (503, not 404)


async def test_a_failing_node_check_takes_every_instance_on_that_node_out(consul_agent: ConsulAgent) -> None:
    await register(consul_agent, [instance_body(NODES[k], name, k) for name in ("users", "orders") for k in (0, 1)])
    async with watching(consul_agent) as watcher:
        await asyncio.wait_for(watcher.ready.wait(), READ_WITHIN_S)
        node_check = {"Node": NODES[1], "Address": "10.0.0.2",
                      "Check": {"CheckID": "node-health", "Name": "node", "Status": "critical"}}
        await asyncio.to_thread(consul_agent.put, "/v1/catalog/register", json.dumps(node_check))
        await poll_until(
            lambda: ports(watcher.services.get("users")) == ports(watcher.services.get("orders")) == {20_000},
            timeout=CHANGE_WITHIN_S, what="node-b's instances out of both services")


async def test_a_deregistered_service_leaves_the_state(consul_agent: ConsulAgent) -> None:
    await register(consul_agent, [instance_body(NODES[0], name, 0) for name in ("users", "orders")])
    async with watching(consul_agent) as watcher:
        await asyncio.wait_for(watcher.ready.wait(), READ_WITHIN_S)
        body = {"Node": NODES[0], "ServiceID": "orders-0"}
        await asyncio.to_thread(consul_agent.put, "/v1/catalog/deregister", json.dumps(body))
        await poll_until(lambda: set(watcher.services) == {"users"}, timeout=CHANGE_WITHIN_S,
                         what="orders gone")


async def test_an_agent_restart_resets_the_index_and_rebuilds_the_state_from_the_new_agent(
        consul_agent: ConsulAgent) -> None:
    await register(consul_agent, [instance_body(NODES[k], f"old{n}", k) for n in range(20) for k in (0, 1)])
    async with watching(consul_agent) as watcher:
        await asyncio.wait_for(watcher.ready.wait(), READ_WITHIN_S)
        assert len(watcher.services) == 20
        await asyncio.to_thread(consul_agent.restart)  # a dev agent forgets everything; its index starts over
        await register(consul_agent, [instance_body(NODES[0], "fresh", 0)])
        await poll_until(lambda: set(watcher.services) == {"fresh"}, timeout=10,
                         what="the state of the restarted agent")
        assert ports(watcher.services["fresh"]) == {20_000}


async def test_the_full_read_agrees_with_the_health_endpoint_on_every_service(consul_agent: ConsulAgent) -> None:
    await register(consul_agent, [
        instance_body(NODES[0], "users", 0), instance_body(NODES[1], "users", 1, status="critical"),
        instance_body(NODES[0], "orders", 2, status="warning"), instance_body("node-c", "orders", 3),
        instance_body(NODES[1], "plain", 4, grpc_services=""),  # no gRPC service: not in the catalog
        instance_body(NODES[0], "probes", 5, grpc_services="grpc.health.v1.Health"),  # hidden only
    ])
    unchecked: dict[str, object] = {  # an instance without any check counts as passing
        "Node": NODES[1], "Address": "10.0.0.2",
        "Service": {"ID": "users-6", "Service": "users", "Address": "127.0.0.1", "Port": 20_006,
                    "Meta": {"grpc_services": grpc_name("users")}}}
    node_check: dict[str, object] = {  # a failing node check fails every instance on node-c
        "Node": "node-c", "Address": "10.0.0.9", "Check": {"CheckID": "maint", "Name": "m", "Status": "critical"}}
    await register(consul_agent, [unchecked, node_check])
    async with watching(consul_agent) as watcher:
        await asyncio.wait_for(watcher.ready.wait(), READ_WITHIN_S)
        expected = {}
        for name in ("users", "orders", "plain", "probes"):
            entries = await asyncio.to_thread(consul_agent.get, f"/v1/health/service/{name}")
            if (service := service_from_health(name, entries)) is not None:  # type: ignore[arg-type]
                expected[name] = service
        assert watcher.services == expected
        assert ports(watcher.services["users"]) == {20_000, 20_006}
        assert ports(watcher.services["orders"]) == set()


async def test_a_change_that_touches_no_check_is_caught_by_the_periodic_full_read(
        consul_agent: ConsulAgent) -> None:
    await register(consul_agent, [instance_body(NODES[0], "users", 0)])
    async with watching(consul_agent, wait="2s", resync_s=1.0) as watcher:
        await asyncio.wait_for(watcher.ready.wait(), READ_WITHIN_S)
        renamed = instance_body(NODES[0], "users", 0, grpc_services="acme.users.v2.UserService")
        del renamed["Checks"]  # the service alone is re-registered: no check changes, the blocking query sleeps
        await register(consul_agent, [renamed])
        await poll_until(
            lambda: watcher.services["users"].grpc_services == ("acme.users.v2.UserService",),
            timeout=5, what="the new meta seen")


class CountingCheckRows(CheckRows):
    """CheckRows counting the checks it decoded."""

    parsed = 0

    def _row(self, check: Mapping[str, Any]) -> CheckRow | None:
        self.parsed += 1
        return super()._row(check)


def test_check_rows_parse_only_what_changed_and_read_compact_and_indented_answers_alike() -> None:
    checks = [{"Node": "n1", "CheckID": "serfHealth", "Status": "passing", "ServiceID": "", "ServiceName": "",
               "ModifyIndex": 5, "Definition": {}},
              {"Node": "n1", "CheckID": "service:a-1", "Status": "passing", "ServiceID": "a-1", "ServiceName": "a",
               "ServiceTags": ["x"], "Output": '},{"Node": "fake"}', "ModifyIndex": 7, "Definition": {}},
              {"Node": "n1", "CheckID": "consul", "Status": "passing", "ServiceID": "consul",
               "ServiceName": "consul", "ModifyIndex": 3}]
    expected = frozenset({("", "n1", "", "serfHealth", "passing", 5), ("a", "n1", "a-1", "service:a-1", "passing", 7)})
    for body in (json.dumps(checks), json.dumps(checks, indent=4), json.dumps(checks, separators=(",", ":"))):
        assert CheckRows(frozenset({"consul"})).read(body.encode()) == expected
    rows = CountingCheckRows(frozenset({"consul"}))
    rows.read(json.dumps(checks, indent=4).encode())
    checks[1]["Status"], checks[1]["ModifyIndex"] = "critical", 9
    assert ("a", "n1", "a-1", "service:a-1", "critical", 9) in rows.read(json.dumps(checks, indent=4).encode())
    assert rows.parsed == len(checks) + 1  # the second answer decoded only the check that changed
    assert rows.read(b"[]") == frozenset()
    with pytest.raises(ValueError, match="expected a list of checks"):
        rows.read(b'{"unexpected": true}')


def test_changed_services_follow_service_checks_and_node_checks() -> None:
    before = frozenset({("", "n1", "", "serfHealth", "passing", 5), ("a", "n1", "a-1", "c1", "passing", 6),
                        ("b", "n1", "b-1", "c2", "passing", 6), ("c", "n2", "c-1", "c3", "passing", 6)})
    assert changed_services(before, before) == set()
    one = (before - {("a", "n1", "a-1", "c1", "passing", 6)}) | {("a", "n1", "a-1", "c1", "critical", 8)}
    assert changed_services(before, one) == {"a"}
    node = (before - {("", "n1", "", "serfHealth", "passing", 5)}) | {("", "n1", "", "serfHealth", "critical", 9)}
    assert changed_services(before, node) == {"a", "b"}
    assert changed_services(before, before | {("d", "n2", "d-1", "c4", "passing", 10)}) == {"d"}
