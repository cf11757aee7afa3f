"""The control plane pushes a change at once, gathers bursts, and records when each push was caused and ACKed."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from gateway_support import Stack, step

from gateway_envoy.catalog import ConsulService, Endpoint
from gateway_envoy.descriptor import Descriptor, read_descriptor
from gateway_envoy.options import GatewayOptions
from gateway_envoy.pushes import PushLog, changed_clusters
from gateway_envoy.snapshot import CLUSTER_TYPE, ENDPOINT_TYPE, build_snapshot
from gateway_envoy.state import COALESCE_S, ControlPlane
from localmesh.testing import project_root
from protomesh.aio import poll_until

# Generous: the push of one change is measured in milliseconds; a loaded machine may be far slower.
APPLIED_WITHIN_S = 1.0


@pytest.fixture
def descriptor() -> Descriptor:
    return read_descriptor(project_root() / "gen" / "descriptors" / "protomesh.binpb")


def catalog(services: int, *, extra: int | None = None) -> dict[str, ConsulService]:
    """services x 2 instances; with `extra`, that service has a third."""
    return {f"svc{n}": ConsulService(f"svc{n}", (f"bench.svc{n}.v1.Service",), tuple(
        Endpoint("127.0.0.1", 20_000 + 3 * n + k) for k in range(3 if n == extra else 2))) for n in range(services)}


def test_only_the_changed_service_is_rebuilt_and_the_versions_match_a_build_from_scratch(
        descriptor: Descriptor) -> None:
    options = GatewayOptions()
    first = build_snapshot(catalog(50), descriptor, descriptor.services, options)
    second = build_snapshot(catalog(50, extra=7), descriptor, descriptor.services, options, first)
    assert changed_clusters(first, second) == ["svc7"]
    assert second.resources[ENDPOINT_TYPE]["svc8"] is first.resources[ENDPOINT_TYPE]["svc8"]
    assert second.resources[CLUSTER_TYPE]["svc8"] is first.resources[CLUSTER_TYPE]["svc8"]
    assert second.versions[CLUSTER_TYPE] == first.versions[CLUSTER_TYPE]  # svc7's cluster came out the same
    fresh = build_snapshot(catalog(50, extra=7), descriptor, descriptor.services, options)
    assert second.versions == fresh.versions
    assert second.resources == fresh.resources
    assert build_snapshot(catalog(50), descriptor, descriptor.services, options, second).versions == first.versions


def test_a_push_is_acked_once_every_changed_type_is_and_an_older_one_left_waiting_is_superseded(
        descriptor: Descriptor) -> None:
    options = GatewayOptions()
    log = PushLog()
    a = build_snapshot(catalog(3), descriptor, descriptor.services, options)
    b = build_snapshot(catalog(3, extra=1), descriptor, descriptor.services, options, a)
    c = build_snapshot(catalog(3, extra=2), descriptor, descriptor.services, options, b)
    log.caused(100.0, index=7)
    log.caused(101.0, index=8)  # coalesced into the same push: the earliest cause counts
    log.published(None, a)
    log.published(a, b)
    log.published(b, c)
    first, second, third = log.recent()
    assert (first["caused_at"], first["consul_index"], second["caused_at"]) == (100.0, 7, None)
    assert second["changed"] == ["svc1"]
    assert third["changed"] == ["svc1", "svc2"]
    log.acked(ENDPOINT_TYPE, c.versions[ENDPOINT_TYPE])
    first, second, third = log.recent()
    assert third["acked_at"] is not None
    assert second["superseded"]
    assert second["acked_at"] is None
    assert first["superseded"]  # its other types were never ACKed before the newer push was
    log.acked(ENDPOINT_TYPE, b.versions[ENDPOINT_TYPE])  # a late ACK of a replaced version changes nothing
    assert log.recent()[1]["acked_at"] is None


async def test_one_change_is_pushed_at_once_and_a_burst_becomes_a_push_per_window(descriptor: Descriptor) -> None:
    plane = ControlPlane(GatewayOptions(), descriptor)
    plane.set_catalog(catalog(3))
    plane.rebuild()
    coalescer = asyncio.create_task(plane.run_coalescer())
    try:
        await asyncio.sleep(2 * COALESCE_S)
        before = len(plane.pushes.recent())
        plane.set_catalog(catalog(3, extra=0), caused_at=time.time())
        await asyncio.sleep(COALESCE_S / 4)  # well before the window would have ended
        assert len(plane.pushes.recent()) == before + 1
        await asyncio.sleep(2 * COALESCE_S)
        burst_began = len(plane.pushes.recent())
        for round_ in range(40):  # 40 changes within ~4 windows
            plane.set_catalog(catalog(3, extra=round_ % 3))
            await asyncio.sleep(COALESCE_S / 10)
        await asyncio.sleep(2 * COALESCE_S)
        pushes = len(plane.pushes.recent()) - burst_began
        assert 1 <= pushes <= 10
        assert plane.snapshot is not None
        last = catalog(3, extra=39 % 3)
        assert plane.catalog == last
    finally:
        coalescer.cancel()
        await asyncio.gather(coalescer, return_exceptions=True)


async def test_the_status_endpoint_records_a_registration_from_consul_answer_to_envoy_ack(stack: Stack) -> None:
    port = 29_517
    body = {"ID": "users-pushes-probe", "Name": "users", "Address": "127.0.0.1", "Port": port,
            "Meta": {"grpc_services": "acme.users.v1.UserService"}, "Check": {"TTL": "1h", "Status": "passing"}}
    sent = time.time()
    await asyncio.to_thread(stack.consul.put, "/v1/agent/service/register", json.dumps(body))
    step("registered a users instance on port %d with Consul", port)

    async def carried() -> dict[str, object] | None:
        records = await asyncio.to_thread(stack.gateway.status)
        return next((r for r in records["pushes"]  # type: ignore[attr-defined]
                     if r["published_at"] >= sent and "users" in r["changed"] and r["acked_at"]), None)

    await poll_until(carried, timeout=APPLIED_WITHIN_S * 5, what="the ACKed push of the new instance")
    record = await carried()
    assert record is not None
    caused, published, acked = record["caused_at"], record["published_at"], record["acked_at"]
    assert isinstance(caused, float)
    assert isinstance(published, float)
    assert isinstance(acked, float)
    step("Consul answered %.1f ms after the request, pushed %.1f ms later, Envoy ACKed %.1f ms after that",
         (caused - sent) * 1e3, (published - caused) * 1e3, (acked - published) * 1e3)
    assert sent <= caused <= published <= acked
    assert acked - sent < APPLIED_WITHIN_S
    assert f"127.0.0.1:{port}" in stack.gateway.hosts("users")
    step("Envoy lists the instance; the record's consul index is %s", record["consul_index"])
    await asyncio.to_thread(stack.consul.put, "/v1/agent/service/deregister/users-pushes-probe", b"")
