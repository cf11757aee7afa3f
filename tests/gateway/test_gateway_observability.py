"""The gateway's observability: Envoy's OpenTelemetry tracing from the control plane, and its /metrics endpoint."""

from __future__ import annotations

import asyncio
import urllib.request

from envoy.config.trace.v3 import opentelemetry_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm

from gateway_envoy.catalog import ConsulService, Endpoint
from gateway_envoy.controlplane import start_status_server
from gateway_envoy.descriptor import read_descriptor
from gateway_envoy.listener import build_listener
from gateway_envoy.metrics import ControlPlaneMetrics
from gateway_envoy.options import GatewayOptions
from gateway_envoy.snapshot import CLUSTER_TYPE, build_snapshot
from gateway_envoy.tracing import COLLECTOR_CLUSTER, TRACER, build_collector_cluster
from localmesh.testing import project_root

TRACED = GatewayOptions(tracing_endpoint="otelcol:4317", tracing_sampling_percent=25.0)


def _manager(options: GatewayOptions) -> hcm.HttpConnectionManager:
    manager = hcm.HttpConnectionManager()
    build_listener(options).filter_chains[0].filters[0].typed_config.Unpack(manager)
    return manager


def test_without_a_collector_the_gateway_does_not_trace() -> None:
    assert not _manager(GatewayOptions()).HasField("tracing")
    assert build_collector_cluster(GatewayOptions()) is None


def test_with_a_collector_the_connection_manager_traces_with_opentelemetry_over_grpc_to_its_cluster() -> None:
    tracing = _manager(TRACED).tracing
    assert tracing.provider.name == TRACER
    config = opentelemetry_pb2.OpenTelemetryConfig()
    tracing.provider.typed_config.Unpack(config)
    assert config.grpc_service.envoy_grpc.cluster_name == COLLECTOR_CLUSTER
    assert config.service_name == "gateway"
    assert tracing.random_sampling.value == 25.0
    assert tracing.spawn_upstream_span.value


def test_the_collector_cluster_is_in_the_snapshot_beside_the_services_and_resolves_its_host() -> None:
    users = ConsulService("users", ("acme.users.v1.UserService",), (Endpoint("127.0.0.1", 5001),))
    descriptor = read_descriptor(project_root() / "gen" / "descriptors" / "protomesh.binpb")
    snapshot = build_snapshot({"users": users}, descriptor, ["acme.users.v1.UserService"], TRACED)
    assert set(snapshot.resources[CLUSTER_TYPE]) == {"users", COLLECTOR_CLUSTER}
    cluster = build_collector_cluster(TRACED)
    assert cluster is not None
    address = cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    assert (address.address, address.port_value) == ("otelcol", 4317)


def _get(url: str) -> tuple[str, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.headers["content-type"], response.read().decode()


async def test_the_status_endpoint_answers_metrics_as_prometheus_text_and_anything_else_as_status_json() -> None:
    metrics = ControlPlaneMetrics()
    metrics.served("abc123")
    metrics.answered("type.googleapis.com/envoy.config.cluster.v3.Cluster", metrics.pushed(
        "type.googleapis.com/envoy.config.cluster.v3.Cluster"), nack=True)
    server = await start_status_server(0, lambda: {"ready": True}, metrics=metrics.text)
    port = server.sockets[0].getsockname()[1]
    try:
        kind, text = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics")
        status_kind, status = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/status")
    finally:
        server.close()
    assert kind.startswith("text/plain")
    assert 'protomesh_xds_snapshot_info{version="abc123"} 1.0' in text
    assert 'protomesh_xds_nacks_total{type="Cluster"} 1.0' in text
    assert 'protomesh_xds_push_seconds_count{type="Cluster"} 1.0' in text
    assert "process_cpu_seconds_total" in text
    assert (status_kind, status) == ("application/json", '{"ready": true}')
