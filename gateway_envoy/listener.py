"""Pure builder for the gateway listener: one HCM (codec AUTO) with REST marking, transcoding and routing.

The listener never changes when a contract does: the transcoder's descriptor and services come per route
(see routes.py), because a new listener makes Envoy drain the old one and end its open streams.
"""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.core.v3 import address_pb2, config_source_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.http.grpc_json_transcoder.v3 import transcoder_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.wrappers_pb2 import BoolValue, UInt32Value

from gateway_envoy.clusters import ads_source
from gateway_envoy.edge_filters import JWT_FILTER, RATE_LIMIT_FILTER, RBAC_FILTER
from gateway_envoy.errors import build_local_reply_config
from gateway_envoy.front_filters import hygiene_filter, packed, rest_filters, token_guard_filter
from gateway_envoy.options import GatewayOptions
from gateway_envoy.routes import ROUTE_CONFIG_NAME, STREAM_IDLE_TIMEOUT_S, TRANSCODER_FILTER
from gateway_envoy.tls import edge_transport_socket
from gateway_envoy.tracing import build_tracing

LISTENER_NAME = "gateway"
# Response JSON style (documented in the README): proto3 JSON mapping with lowerCamelCase names, and
# fields at their default value printed too, so clients see `"nextPageToken": ""` rather than nothing.
# A streamed response (WatchNotifications) is newline-delimited JSON, one message per line: a client reads
# each as it comes, and a stream cut short still leaves whole documents (a JSON array would be left open).
PRINT_OPTIONS = transcoder_pb2.GrpcJsonTranscoder.PrintOptions(
    always_print_primitive_fields=True, preserve_proto_field_names=False, add_whitespace=False,
    stream_newline_delimited=True)


def _seconds(value: float) -> Duration:
    duration = Duration()
    duration.FromMilliseconds(round(value * 1000))
    return duration


def _discovered(name: str, config_type: type[Message]) -> hcm.HttpFilter:
    """A filter whose configuration comes over ECDS (edge_filters.py): Envoy waits for it before it opens the
    listener, and takes each new one for the next request without touching the listener."""
    type_url = "type.googleapis.com/" + config_type.DESCRIPTOR.full_name
    return hcm.HttpFilter(name=name, config_discovery=config_source_pb2.ExtensionConfigSource(
        config_source=ads_source(), type_urls=[type_url]))


def security_filters(options: GatewayOptions) -> list[hcm.HttpFilter]:
    """jwt_authn then rbac (when the gateway verifies tokens), then local_ratelimit: after the transcoder, so
    each sees the gRPC path; a call refused for its token or scopes never takes a token from a bucket."""
    filters = [_discovered(JWT_FILTER, jwt_pb2.JwtAuthentication),
               _discovered(RBAC_FILTER, rbac_pb2.RBAC)] if options.jwt is not None else []
    return [*filters, _discovered(RATE_LIMIT_FILTER, local_rate_limit_pb2.LocalRateLimit)]


def build_transcoder(descriptor: bytes, services: Sequence[str], options: GatewayOptions,
                     ) -> transcoder_pb2.GrpcJsonTranscoder:
    """Transcoder for every given service; unknown methods and query parameters are rejected (JSON 404/400).

    This is the configuration the route table carries (typed_per_filter_config); the listener's own copy
    names no service, which Envoy reads as "disabled" wherever no route overrides it.
    """
    return transcoder_pb2.GrpcJsonTranscoder(
        proto_descriptor_bin=descriptor,
        services=list(services),
        print_options=PRINT_OPTIONS,
        convert_grpc_status=True,
        request_validation_options=transcoder_pb2.GrpcJsonTranscoder.RequestValidationOptions(
            reject_unknown_method=True, reject_unknown_query_parameters=True),
        max_request_body_size=UInt32Value(value=options.max_request_bytes),
        max_response_body_size=UInt32Value(value=options.max_response_bytes),
    )


def disabled_transcoder() -> transcoder_pb2.GrpcJsonTranscoder:
    """The listener-level transcoder: no services (Envoy: disabled), an empty descriptor set."""
    return transcoder_pb2.GrpcJsonTranscoder(proto_descriptor_bin=b"")


def build_connection_manager(options: GatewayOptions) -> hcm.HttpConnectionManager:
    """The filter order matters: the front filters (front_filters.py) sit before the transcoder so they see REST
    requests as sent and REST responses as returned (after the transcoder turned them into JSON); the security
    filters sit after it (see security_filters)."""
    guard = [token_guard_filter(options.jwt.max_token_bytes)] if options.jwt is not None else []
    filters = [
        hygiene_filter(),
        *rest_filters(options.max_request_bytes),
        *guard,
        hcm.HttpFilter(name=TRANSCODER_FILTER, typed_config=packed(disabled_transcoder())),
        *security_filters(options),
        # No x-envoy-* headers either way (x-envoy-expected-rq-timeout-ms, -upstream-service-time, ...): a
        # service sees its caller's deadline and nothing of the gateway's own.
        hcm.HttpFilter(name="envoy.filters.http.router",
                       typed_config=packed(router_pb2.Router(suppress_envoy_headers=True))),
    ]
    return hcm.HttpConnectionManager(
        stat_prefix=LISTENER_NAME,
        codec_type=hcm.HttpConnectionManager.AUTO,
        rds=hcm.Rds(config_source=ads_source(), route_config_name=ROUTE_CONFIG_NAME),
        http_filters=filters,
        local_reply_config=build_local_reply_config(),
        # Edge proxy hygiene: the client's address is the peer, paths are normalized before routing.
        use_remote_address=BoolValue(value=True),
        normalize_path=BoolValue(value=True),
        merge_slashes=True,
        # Clients learn nothing of what the gateway runs on: no `server: envoy` is added to any response.
        server_header_transformation=hcm.HttpConnectionManager.PASS_THROUGH,
        # Streams have no overall limit but the caller's deadline; one with nothing passing is ended after this.
        stream_idle_timeout=_seconds(STREAM_IDLE_TIMEOUT_S),
        # A client that has not sent its request headers after this long gets 408, not a connection held open.
        request_headers_timeout=_seconds(options.request_headers_timeout_s),
        # OpenTelemetry spans to the collector when one is configured, else none (tracing.py).
        tracing=build_tracing(options),
    )


def build_listener(options: GatewayOptions) -> listener_pb2.Listener:
    """REST and native gRPC share one port: HCM's AUTO codec picks HTTP/1.1 or HTTP/2 per connection (with TLS,
    by what ALPN negotiated)."""
    manager = build_connection_manager(options)
    chain = listener_components_pb2.FilterChain(filters=[listener_components_pb2.Filter(
        name="envoy.filters.network.http_connection_manager", typed_config=packed(manager))])
    if options.edge_tls:
        # The certificate is the SDS secret `edge`: Envoy opens the port only once it has it.
        chain.transport_socket.CopyFrom(edge_transport_socket())
    return listener_pb2.Listener(
        name=LISTENER_NAME,
        address=address_pb2.Address(socket_address=address_pb2.SocketAddress(
            address=options.listen_host, port_value=options.listen_port)),
        # Also the most a REST request body may be: the REST branch buffers it, past this Envoy answers 413.
        per_connection_buffer_limit_bytes=UInt32Value(value=options.max_request_bytes),
        filter_chains=[chain],
    )
