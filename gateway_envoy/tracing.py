"""Pure builders for the gateway's tracing: OpenTelemetry spans over OTLP/gRPC to a collector cluster.

Off unless the control plane is given a collector (`--otlp-endpoint host:port`); then every request through the
gateway is a span (service `gateway`), an incoming `traceparent` is kept, and the services' spans are its children.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import grpc_service_pb2
from envoy.config.trace.v3 import http_tracer_pb2, opentelemetry_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from envoy.type.v3 import percent_pb2
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.wrappers_pb2 import BoolValue

from gateway_envoy.clusters import _seconds, fixed_address_cluster, http2_protocol_options
from gateway_envoy.options import GatewayOptions

# Not a Consul service name (those are DNS labels without dots), so it cannot collide with one.
COLLECTOR_CLUSTER = "protomesh.otlp-collector"
TRACER = "envoy.tracers.opentelemetry"
SERVICE_NAME = "gateway"
# Envoy's spans wait this long for the collector before they are dropped: never the request.
EXPORT_TIMEOUT_S = 1.0


def _endpoint(options: GatewayOptions) -> tuple[str, int]:
    host, _, port = options.tracing_endpoint.rpartition(":")
    return host, int(port)


def build_tracing(options: GatewayOptions) -> hcm.HttpConnectionManager.Tracing | None:
    """The HCM's tracing (None without a collector): OpenTelemetry over gRPC, `sampling_percent` of new traces."""
    if not options.tracing_endpoint:
        return None
    config = opentelemetry_pb2.OpenTelemetryConfig(
        grpc_service=grpc_service_pb2.GrpcService(
            envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=COLLECTOR_CLUSTER),
            timeout=_seconds(EXPORT_TIMEOUT_S)),
        service_name=SERVICE_NAME)
    packed = AnyProto()
    packed.Pack(config, deterministic=True)
    return hcm.HttpConnectionManager.Tracing(
        provider=http_tracer_pb2.Tracing.Http(name=TRACER, typed_config=packed),
        random_sampling=percent_pb2.Percent(value=options.tracing_sampling_percent),
        # The upstream call is its own CLIENT span, so a service's SERVER span has the gateway's as parent.
        spawn_upstream_span=BoolValue(value=True))


def build_collector_cluster(options: GatewayOptions) -> cluster_pb2.Cluster | None:
    """The collector as an HTTP/2 cluster (`otelcol` in containers, 127.0.0.1 locally)."""
    if not options.tracing_endpoint:
        return None
    host, port = _endpoint(options)
    cluster = fixed_address_cluster(COLLECTOR_CLUSTER, host, port, options.connect_timeout_s)
    for key, value in http2_protocol_options().items():
        cluster.typed_extension_protocol_options[key].CopyFrom(value)
    return cluster
