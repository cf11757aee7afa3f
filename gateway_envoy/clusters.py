"""Pure builders for the upstream side: one EDS cluster per Consul service and its load assignment."""

from __future__ import annotations

import ipaddress

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import address_pb2, config_source_pb2, protocol_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.duration_pb2 import Duration
from google.protobuf.wrappers_pb2 import UInt32Value

from gateway_envoy.catalog import ConsulService
from gateway_envoy.options import GatewayOptions
from gateway_envoy.tls import mesh_transport_socket

HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
# Envoy allows only 3 concurrent retries per cluster by default; when an instance dies at ~1k req/s many
# requests retry at once and the overflow fails. Retries are cheap here (connect failures on loopback/LAN).
MAX_RETRIES = 256
# Upstream connections per cluster: HTTP/2 needs one per instance and worker, so this only stops a runaway.
MAX_CONNECTIONS = 4096
# The bounds before load shedding (GatewayOptions.cluster_max_requests = 0): far above any instance's capacity,
# so an overloaded service queued every request and p99 grew with the queue (bench p10 keeps them as its baseline).
LEGACY_MAX_PENDING_REQUESTS = 4096
LEGACY_MAX_REQUESTS = 8192
# Outlier detection ejects an instance that keeps failing at the connection level (crashed, frozen,
# or kept as last-known-good after it left Consul) well before the next Consul update would.
CONSECUTIVE_GATEWAY_FAILURES = 3
OUTLIER_INTERVAL_S = 1
OUTLIER_BASE_EJECTION_S = 5
# Allow ejecting every host: an ejected dead host is better than a panic-routed one (Envoy's default is 10 %).
OUTLIER_MAX_EJECTION_PERCENT = 100
# HTTP/2 PING keepalive on upstream connections: detects a dead peer (no RST, e.g. host gone) in ~35 s.
KEEPALIVE_INTERVAL_S = 30
KEEPALIVE_TIMEOUT_S = 5


def _seconds(value: float) -> Duration:
    duration = Duration()
    duration.FromMilliseconds(round(value * 1000))
    return duration


def ads_source() -> config_source_pb2.ConfigSource:
    """Every dynamic resource comes over the one ADS stream the bootstrap opens."""
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(), resource_api_version=config_source_pb2.V3)


def http2_protocol_options() -> dict[str, AnyProto]:
    """typed_extension_protocol_options that make a cluster speak HTTP/2 (gRPC needs it; else 502)."""
    options = http_protocol_options_pb2.HttpProtocolOptions(
        explicit_http_config=http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig(
            http2_protocol_options=protocol_pb2.Http2ProtocolOptions(
                connection_keepalive=protocol_pb2.KeepaliveSettings(
                    interval=_seconds(KEEPALIVE_INTERVAL_S), timeout=_seconds(KEEPALIVE_TIMEOUT_S)))))
    packed = AnyProto()
    packed.Pack(options, deterministic=True)
    return {HTTP_PROTOCOL_OPTIONS: packed}


def circuit_breakers(options: GatewayOptions) -> circuit_breaker_pb2.CircuitBreakers:
    """Over max_requests in flight (or as many waiting for a connection) Envoy answers 503 at once: the overflow is
    shed at the edge, where it costs the instances nothing, instead of queueing in front of them."""
    limit = options.cluster_max_requests
    return circuit_breaker_pb2.CircuitBreakers(thresholds=[circuit_breaker_pb2.CircuitBreakers.Thresholds(
        max_connections=UInt32Value(value=MAX_CONNECTIONS),
        max_pending_requests=UInt32Value(value=limit or LEGACY_MAX_PENDING_REQUESTS),
        max_requests=UInt32Value(value=limit or LEGACY_MAX_REQUESTS),
        max_retries=UInt32Value(value=MAX_RETRIES))])


def build_cluster(service: ConsulService, options: GatewayOptions) -> cluster_pb2.Cluster:
    """EDS cluster named after the Consul service ("users"), HTTP/2, with load shedding, retry budget and outlier
    detection; with the mesh identity, mTLS that accepts only an instance holding that service's certificate."""
    cluster = cluster_pb2.Cluster(
        name=service.name,
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=ads_source()),
        connect_timeout=_seconds(options.connect_timeout_s),
        lb_policy=cluster_pb2.Cluster.ROUND_ROBIN,
        circuit_breakers=circuit_breakers(options),
        outlier_detection=outlier_detection_pb2.OutlierDetection(
            consecutive_gateway_failure=UInt32Value(value=CONSECUTIVE_GATEWAY_FAILURES),
            enforcing_consecutive_gateway_failure=UInt32Value(value=100),
            interval=_seconds(OUTLIER_INTERVAL_S),
            base_ejection_time=_seconds(OUTLIER_BASE_EJECTION_S),
            max_ejection_percent=UInt32Value(value=OUTLIER_MAX_EJECTION_PERCENT)),
    )
    for key, value in http2_protocol_options().items():
        cluster.typed_extension_protocol_options[key].CopyFrom(value)
    if options.mesh_tls:
        cluster.transport_socket.CopyFrom(mesh_transport_socket(service.name, options.trust_domain))
    return cluster


def build_load_assignment(service: ConsulService) -> endpoint_pb2.ClusterLoadAssignment:
    """The passing instances of a service (possibly none: Envoy then answers 503, no healthy upstream)."""
    lb_endpoints = [
        endpoint_components_pb2.LbEndpoint(endpoint=endpoint_components_pb2.Endpoint(
            address=address_pb2.Address(socket_address=address_pb2.SocketAddress(
                address=endpoint.address, port_value=endpoint.port))))
        for endpoint in service.endpoints
    ]
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=service.name,
        endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=lb_endpoints)])


def fixed_address_cluster(name: str, host: str, port: int, connect_timeout_s: float) -> cluster_pb2.Cluster:
    """A cluster of one endpoint the gateway itself knows (the docs server, the trace collector, an issuer's
    JWKS): STATIC for an IP, STRICT_DNS for a name (`controlplane` or `otelcol` in containers)."""
    try:
        ipaddress.ip_address(host)
        kind = cluster_pb2.Cluster.STATIC
    except ValueError:
        kind = cluster_pb2.Cluster.STRICT_DNS
    endpoint = endpoint_components_pb2.LbEndpoint(endpoint=endpoint_components_pb2.Endpoint(
        address=address_pb2.Address(socket_address=address_pb2.SocketAddress(address=host, port_value=port))))
    return cluster_pb2.Cluster(name=name, type=kind, connect_timeout=_seconds(connect_timeout_s),
                               load_assignment=endpoint_pb2.ClusterLoadAssignment(cluster_name=name, endpoints=[
                                   endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[endpoint])]))
