"""See inside the mesh: the walkthrough's order as one trace in Zipkin, and the mesh's series in Prometheus."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from localmesh.topology import Topology
from protomesh.aio import poll_until
from tests.e2e.conftest import RunningMesh
from tests.e2e.test_walkthrough import create_user, place_order

pytestmark = pytest.mark.asyncio(loop_scope="module")
log = logging.getLogger("e2e")

# Spans reach Zipkin through two batches (service, collector: about 0.5 s each); series reach Prometheus with the
# next scrape (every 2 s) once discovery (Consul, a few seconds) has found the target.
TRACE_TIMEOUT_S = 30.0
SERIES_TIMEOUT_S = 45.0


def traceparent() -> tuple[str, str, str]:
    """A client-made W3C traceparent: (header, trace id, span id)."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


class Observed:
    """The running mesh's Prometheus and Zipkin, over their HTTP APIs."""

    def __init__(self, mesh: RunningMesh, http: aiohttp.ClientSession) -> None:
        self.mesh = mesh
        self.http = http  # plain: the gateway's bearer token is for the gateway only
        topology = mesh.mesh.topology
        self.prometheus = f"http://127.0.0.1:{topology.host_port('prometheus', 9090)}"
        self.zipkin = f"http://127.0.0.1:{topology.host_port('tracing', 9411)}"

    async def get(self, url: str, **params: str) -> Any:
        """The decoded JSON answer; None while the component does not answer (yet)."""
        try:
            async with self.http.get(url, params=params) as response:
                return await response.json(content_type=None) if response.status == 200 else None
        except aiohttp.ClientError:
            return None

    async def series(self, promql: str) -> list[dict[str, Any]]:
        body = await self.get(f"{self.prometheus}/api/v1/query", query=promql)
        return list(body["data"]["result"]) if body else []

    async def wait_series(self, promql: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []

        async def present() -> bool:
            found[:] = await self.series(promql)
            return bool(found)

        await poll_until(present, timeout=SERIES_TIMEOUT_S, interval=0.5, what=f"Prometheus series {promql}")
        return found

    async def targets(self) -> list[dict[str, Any]]:
        body = await self.get(f"{self.prometheus}/api/v1/targets", state="active")
        return list(body["data"]["activeTargets"]) if body else []

    async def trace(self, trace_id: str, services: set[str]) -> list[dict[str, Any]]:
        spans: list[dict[str, Any]] = []

        async def complete() -> bool:
            spans[:] = await self.get(f"{self.zipkin}/api/v2/trace/{trace_id}") or []
            return services <= {span["localEndpoint"]["serviceName"] for span in spans}

        await poll_until(complete, timeout=TRACE_TIMEOUT_S, interval=0.5, what=f"trace {trace_id} in Zipkin")
        return spans


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def observed(running_mesh: RunningMesh) -> AsyncIterator[Observed]:
    async with aiohttp.ClientSession() as http:
        observed = Observed(running_mesh, http)
        # Background components: the mesh was up before them.
        await poll_until(lambda: observed.get(f"{observed.prometheus}/api/v1/status/buildinfo"), timeout=60,
                         what="Prometheus ready")
        await poll_until(lambda: observed.get(f"{observed.zipkin}/health"), timeout=90, what="Zipkin ready")
        yield observed


async def rest(mesh: RunningMesh, method: str, path: str, body: object, headers: dict[str, str]) -> tuple[int, Any]:
    async with mesh.http.request(method, f"{mesh.url}{path}", json=body, headers=headers) as response:
        return response.status, await response.json(content_type=None)


async def test_a_placed_order_is_one_trace_from_the_gateway_through_orders_users_and_notifications(
    observed: Observed,
) -> None:
    user_id = await create_user(observed.mesh)
    header, trace_id, client_span = traceparent()
    status, body = await rest(observed.mesh, "POST", "/v1/orders", {
        "userId": user_id, "lineItems": [{"sku": "book", "quantity": 2, "unitPriceCents": 1250}]},
        {"traceparent": header})
    assert status == 200, body
    log.info("step: order placed with traceparent %s", header)
    spans = await observed.trace(trace_id, {"gateway", "orders", "users", "notifications"})
    log.info("step: trace %s has %d spans from %s", trace_id, len(spans),
             sorted({s["localEndpoint"]["serviceName"] for s in spans}))
    by_id = {span["id"]: span for span in spans}

    def one(service: str, kind: str, name: str) -> dict[str, Any]:
        found = [s for s in spans if s["localEndpoint"]["serviceName"] == service and s.get("kind") == kind
                 and s["name"].lower() == name.lower()]
        assert len(found) == 1, (service, kind, name, [(s["localEndpoint"]["serviceName"], s.get("kind"),
                                                        s["name"]) for s in spans])
        return found[0]

    def parent(span: dict[str, Any]) -> dict[str, Any]:
        return by_id[span["parentId"]]

    orders = one("orders", "SERVER", "acme.orders.v1.OrderService/CreateOrder")
    assert parent(orders)["localEndpoint"]["serviceName"] == "gateway"
    roots = [s for s in spans if s.get("parentId") not in by_id]
    assert {s.get("parentId") for s in roots} == {client_span}  # the client's traceparent was honoured
    users_call = one("orders", "CLIENT", "acme.users.v1.UserService/GetUser")
    assert parent(users_call) is orders
    users = one("users", "SERVER", "acme.users.v1.UserService/GetUser")
    assert parent(users) is users_call
    publish = one("orders", "PRODUCER", "publish protomesh.events")
    assert parent(publish) is orders  # published later by the relay, inside the request's trace (outbox row)
    consume = one("notifications", "CONSUMER", "process notifications")
    assert parent(consume) is publish
    assert consume["tags"]["otlp.link.0"].startswith(f"{trace_id}|{publish['id']}|")
    log.info("step: gateway -> orders -> users, orders -> publish -> notifications (child and link)")


async def test_prometheus_has_create_order_ok_and_an_error_code_after_a_failing_call(observed: Observed) -> None:
    user_id = await create_user(observed.mesh)
    await place_order(observed.mesh, user_id)
    status, _ = await observed.mesh.call("POST", "/v1/orders", {
        "userId": "nobody", "lineItems": [{"sku": "book", "quantity": 1, "unitPriceCents": 100}]})
    assert status == 400
    ok = await observed.wait_series(
        'grpc_server_handled_total{service="orders",grpc_method="CreateOrder",grpc_code="OK"} > 0')
    log.info("step: %d orders instance(s) report CreateOrder OK", len(ok))
    failed = await observed.wait_series(
        'grpc_server_handled_total{service="orders",grpc_method="CreateOrder",grpc_code="FailedPrecondition"} > 0')
    assert failed[0]["metric"]["grpc_type"] == "unary"
    client = await observed.wait_series('grpc_client_handled_total{service="orders",grpc_method="GetUser"}')
    log.info("step: orders' client calls to users: %s", [s["metric"]["grpc_code"] for s in client])
    events = await observed.wait_series('protomesh_events_consumed_total{service="notifications"} > 0')
    log.info("step: notifications consumed %s events", events[0]["value"][1])


async def test_prometheus_scrapes_envoy_and_the_control_plane_found_through_consul(observed: Observed) -> None:
    envoy = await observed.wait_series('envoy_cluster_upstream_rq_total{service="gateway",envoy_cluster_name="users"}')
    log.info("step: Envoy's series for cluster users: %s", envoy[0]["value"][1])
    snapshot = await observed.wait_series('protomesh_xds_snapshot_info{service="controlplane"} == 1')
    assert await observed.wait_series('protomesh_xds_connected_envoys{service="controlplane"} >= 1')
    log.info("step: control plane serves snapshot %s", snapshot[0]["metric"]["version"])
    targets = await observed.targets()
    assert {t["labels"]["service"] for t in targets} >= {"users", "orders", "notifications", "controlplane",
                                                         "gateway"}
    assert all("__meta_consul_service" in t["discoveredLabels"] for t in targets)


async def test_scaling_users_to_3_adds_a_target_with_no_config_change(observed: Observed) -> None:
    mesh = observed.mesh.mesh

    async def users_targets(count: int) -> bool:
        up = [t for t in await observed.targets() if t["labels"]["service"] == "users" and t["health"] == "up"]
        return len(up) == count

    await poll_until(lambda: users_targets(2), timeout=SERIES_TIMEOUT_S, interval=0.5, what="2 users targets")
    env = dict(mesh.ctx.environ)
    await mesh.reconcile(Topology.load(mesh.topology.project, {**env, "USERS_REPLICAS": "3"}))
    try:
        took = await poll_until(lambda: users_targets(3), timeout=SERIES_TIMEOUT_S, interval=0.5,
                                what="a third users target")
        log.info("step: the third users instance is a Prometheus target %.1fs after it was routed", took)
    finally:
        await mesh.reconcile(Topology.load(mesh.topology.project, env))


async def test_an_invalid_traceparent_starts_a_new_trace_and_never_fails_the_call(observed: Observed) -> None:
    for bad in ("garbage", "00-" + "0" * 32 + "-" + "0" * 16 + "-01", "ff-xyz"):
        status, body = await rest(observed.mesh, "POST", "/v1/users",
                                  {"email": f"{uuid.uuid4().hex[:10]}@example.com", "displayName": "Ada"},
                                  {"traceparent": bad})
        assert status == 200, (bad, body)


async def test_with_the_trace_backend_stopped_calls_still_succeed(observed: Observed) -> None:
    collector, zipkin = observed.mesh.mesh.instance("otelcol"), observed.mesh.mesh.instance("zipkin")
    await zipkin.stop()
    await collector.stop()
    log.info("step: Zipkin and the collector stopped")
    try:
        user_id = await create_user(observed.mesh)
        orders = [await place_order(observed.mesh, user_id) for _ in range(5)]
        log.info("step: %d orders placed while no span could be exported", len(orders))
    finally:
        await collector.start()
        await zipkin.start()
    log.info("step: the collector and Zipkin started again")


def run_top_in_tmux(prometheus: str, seconds: float) -> str:
    """`protomesh top` in a pseudo-terminal (its own tmux server), its screen after `seconds`."""
    socket = f"protomesh-top-{os.getpid()}-{secrets.token_hex(3)}"
    tmux = ["tmux", "-L", socket]
    command = f"{sys.executable} -m protomesh.cli top --prometheus {prometheus}"
    subprocess.run([*tmux, "new-session", "-d", "-x", "110", "-y", "30", command], check=True, timeout=10)
    try:
        time.sleep(seconds)
        return subprocess.run([*tmux, "capture-pane", "-p"], check=True, capture_output=True, text=True,
                              timeout=10).stdout
    finally:
        subprocess.run([*tmux, "kill-server"], check=False, timeout=10)


async def test_protomesh_top_in_a_terminal_shows_users_requests_per_second(observed: Observed) -> None:
    user_id = await create_user(observed.mesh)
    stop = asyncio.Event()

    async def traffic() -> None:
        while not stop.is_set():
            await observed.mesh.call("GET", f"/v1/users/{user_id}")
            await asyncio.sleep(0.02)

    load = asyncio.create_task(traffic())
    try:
        await observed.wait_series('sum(rate(grpc_server_handled_total{service="users"}[10s])) > 0')
        screen = await asyncio.to_thread(run_top_in_tmux, observed.prometheus, 4.0)
    finally:
        stop.set()
        await load
    log.info("step: protomesh top showed\n%s", screen)
    [users] = [line.split() for line in screen.splitlines() if line.split()[:1] == ["users"]]
    assert users[1] == "2"  # instances
    assert float(users[2]) > 0  # req/s
