"""Pure builder for the gateway listener: one HCM (codec AUTO) with REST marking, transcoding and routing.

The listener never changes when a contract does: the transcoder's descriptor and services come per route
(see routes.py), because a new listener makes Envoy drain the old one and end its open streams.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources

from envoy.config.core.v3 import address_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.http.grpc_json_transcoder.v3 import transcoder_pb2
from envoy.extensions.filters.http.lua.v3 import lua_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.wrappers_pb2 import BoolValue, UInt32Value

from gateway_envoy.clusters import ads_source
from gateway_envoy.errors import build_local_reply_config
from gateway_envoy.options import GatewayOptions
from gateway_envoy.routes import ROUTE_CONFIG_NAME, STREAM_IDLE_TIMEOUT_S, TRANSCODER_FILTER
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


def _typed(message: Message) -> AnyProto:
    packed = AnyProto()
    packed.Pack(message, deterministic=True)
    return packed


def rest_filter_source() -> str:
    return resources.files("gateway_envoy").joinpath("rest_filter.lua").read_text()


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
    """The filter order matters: the Lua filter sits before the transcoder so it sees REST requests as sent
    and REST responses as returned (after the transcoder turned them into JSON)."""
    filters = [
        hcm.HttpFilter(name="envoy.filters.http.lua",
                       typed_config=_typed(lua_pb2.Lua(default_source_code={"inline_string": rest_filter_source()}))),
        hcm.HttpFilter(name=TRANSCODER_FILTER, typed_config=_typed(disabled_transcoder())),
        # No x-envoy-* headers either way (x-envoy-expected-rq-timeout-ms, -upstream-service-time, ...): a
        # service sees its caller's deadline and nothing of the gateway's own.
        hcm.HttpFilter(name="envoy.filters.http.router",
                       typed_config=_typed(router_pb2.Router(suppress_envoy_headers=True))),
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
    """REST and native gRPC share one port: HCM's AUTO codec picks HTTP/1.1 or HTTP/2 per connection."""
    manager = build_connection_manager(options)
    return listener_pb2.Listener(
        name=LISTENER_NAME,
        address=address_pb2.Address(socket_address=address_pb2.SocketAddress(
            address=options.listen_host, port_value=options.listen_port)),
        # Also the most a REST request body may be: the Lua filter buffers it, past this Envoy answers 413.
        per_connection_buffer_limit_bytes=UInt32Value(value=options.max_request_bytes),
        filter_chains=[listener_components_pb2.FilterChain(filters=[listener_components_pb2.Filter(
            name="envoy.filters.network.http_connection_manager", typed_config=_typed(manager))])],
    )
