"""Pure builder for the route table: each announced service's gRPC paths to its Consul cluster, with timeouts and
retries that keep the gateway transparent to gRPC clients."""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.grpc_json_transcoder.v3 import transcoder_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.duration_pb2 import Duration
from google.protobuf.wrappers_pb2 import UInt32Value

from gateway_envoy.bootstrap import XDS_CLUSTER
from gateway_envoy.catalog import Catalog, routable
from gateway_envoy.errors import REST_METADATA_NAMESPACE, RETRY_AFTER_METADATA_KEY, rest_request_matcher
from gateway_envoy.front_filters import rest_route_configs
from gateway_envoy.options import GatewayOptions
from protomesh.auth import RateLimit

ROUTE_CONFIG_NAME = "protomesh"
TRANSCODER_FILTER = "envoy.filters.http.grpc_json_transcoder"
# Server reflection at the gateway (the control plane answers it; see reflection.py).
REFLECTION_SERVICES = ("grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection")
REFLECTION_METHOD = "ServerReflectionInfo"
# What the transcoder adds to a REST request it turns into gRPC, for Envoy's own use.
TRANSCODER_HEADERS = ["x-envoy-original-path", "x-envoy-original-method"]
# Only failures where the instance cannot have run the request: safe to retry for every method, CreateUser too.
RETRY_ON = "connect-failure,refused-stream"
# Methods the contract marks NO_SIDE_EFFECTS or IDEMPOTENT are also retried when the instance may have run
# them: it was killed mid-call (reset), or its handler answered UNAVAILABLE. Running them twice is harmless;
# running CreateOrder twice is not, so a handler's UNAVAILABLE reaches other methods' callers as it is.
RETRY_ON_SAFE_METHOD = f"{RETRY_ON},reset,unavailable"
# A stream the gateway keeps open with nothing passing either way for this long is ended: it protects Envoy
# from abandoned streams and sits well above WatchNotifications' heartbeat (20 s).
STREAM_IDLE_TIMEOUT_S = 300
# A gRPC request with a deadline (grpc-timeout) gets no limit of the gateway's own: 0 turns the route's off.
NO_CAP = 0
# Two more tries, each on a different instance (previous_hosts), covers one or two dead instances.
NUM_RETRIES = 2
# How often Envoy re-picks a host to honour previous_hosts before it settles for a repeat.
HOST_SELECTION_ATTEMPTS = 5
# A limited method's routes carry its path in their metadata (namespace, key); the local_ratelimit filter makes it
# the value of its descriptor and holds one token bucket per value (edge_filters.build_rate_limit).
RATE_LIMIT_METADATA = (REST_METADATA_NAMESPACE, "rate_limit")
RATE_LIMIT_DESCRIPTOR = "protomesh_method"
# First retry backoff; Envoy's default (25 ms) doubles per try, capped at 10x. A crashed instance
# refuses instantly, so the retry should go out almost at once.
RETRY_BASE_INTERVAL_MS = 10


def _duration_ms(milliseconds: int) -> Duration:
    duration = Duration()
    duration.FromMilliseconds(milliseconds)
    return duration


def _retry_policy(retry_on: str) -> route_components_pb2.RetryPolicy:
    predicate = AnyProto()
    predicate.Pack(previous_hosts_pb2.PreviousHostsPredicate(), deterministic=True)
    return route_components_pb2.RetryPolicy(
        retry_on=retry_on,
        num_retries=UInt32Value(value=NUM_RETRIES),
        retry_host_predicate=[route_components_pb2.RetryPolicy.RetryHostPredicate(
            name="envoy.retry_host_predicates.previous_hosts", typed_config=predicate)],
        host_selection_retry_max_attempts=HOST_SELECTION_ATTEMPTS,
        retry_back_off=route_components_pb2.RetryPolicy.RetryBackOff(
            base_interval=_duration_ms(RETRY_BASE_INTERVAL_MS)),
    )


def service_routes(catalog: Catalog) -> dict[str, str]:
    """gRPC service full name -> Consul service (cluster); a name announced twice goes to the first, sorted."""
    owners: dict[str, str] = {}
    for name in sorted(catalog):
        for grpc_service in catalog[name].grpc_services:
            owners.setdefault(grpc_service, name)
    return owners


def _match(grpc_service: str) -> route_components_pb2.RouteMatch:
    return route_components_pb2.RouteMatch(
        prefix=f"/{grpc_service}/", grpc=route_components_pb2.RouteMatch.GrpcRouteMatchOptions())


def _method_match(path: str) -> route_components_pb2.RouteMatch:
    return route_components_pb2.RouteMatch(path=path, grpc=route_components_pb2.RouteMatch.GrpcRouteMatchOptions())


def _with_deadline(match: route_components_pb2.RouteMatch) -> route_components_pb2.RouteMatch:
    """The same match, for requests that carry a gRPC deadline (a grpc-timeout header)."""
    narrowed = route_components_pb2.RouteMatch()
    narrowed.CopyFrom(match)
    narrowed.headers.append(route_components_pb2.HeaderMatcher(name="grpc-timeout", present_match=True))
    return narrowed


def _action(cluster: str, retry_on: str, *, timeout_s: float | None) -> route_components_pb2.RouteAction:
    """To the cluster, with the gateway's own limit when timeout_s is given; without one, the gateway adds no
    limit at all: the caller's grpc-timeout reaches the service, which ends the call with DEADLINE_EXCEEDED in
    proper trailers (a gateway that cut it at the same instant would reset the stream instead)."""
    action = route_components_pb2.RouteAction(cluster=cluster, retry_policy=_retry_policy(retry_on))
    action.timeout.CopyFrom(_duration_ms(NO_CAP if timeout_s is None else round(timeout_s * 1000)))
    return action


@dataclass(frozen=True)
class Limited:
    """A method with a token bucket of its own: its gRPC path names the bucket."""

    path: str
    limit: RateLimit


def _rate_limited(route: route_components_pb2.Route, limited: Limited | None) -> route_components_pb2.Route:
    """The route, naming the method's token bucket when it has one (every route of the method names the same),
    and how long a refused caller should wait at most: Envoy refills a bucket continuously, one call every
    per_s / requests seconds, so that is when an emptied bucket has a call again (whole seconds, at least 1)."""
    if limited is not None:
        namespace, key = RATE_LIMIT_METADATA
        retry_after = max(1, math.ceil(limited.limit.per_s / limited.limit.requests))
        route.metadata.filter_metadata[namespace].update({key: limited.path,
                                                          RETRY_AFTER_METADATA_KEY: str(retry_after)})
    return route


def _unary(name: str, match: route_components_pb2.RouteMatch, cluster: str, retry_on: str,
           options: GatewayOptions, limited: Limited | None = None) -> list[route_components_pb2.Route]:
    """A call with a deadline gets exactly its deadline; one without (every REST call) the route timeout."""
    return [_rate_limited(route, limited) for route in (
        route_components_pb2.Route(name=f"{name} (deadline)", match=_with_deadline(match),
                                   route=_action(cluster, retry_on, timeout_s=None)),
        route_components_pb2.Route(name=name, match=match,
                                   route=_action(cluster, retry_on, timeout_s=options.route_timeout_s)),
    )]


def _stream(path: str, cluster: str, retry_on: str, limited: Limited | None = None) -> route_components_pb2.Route:
    """A streaming method lives until its deadline or cancellation; only a stream idle for minutes is ended."""
    action = _action(cluster, retry_on, timeout_s=None)
    action.idle_timeout.CopyFrom(_duration_ms(STREAM_IDLE_TIMEOUT_S * 1000))
    return _rate_limited(route_components_pb2.Route(name=path, match=_method_match(path), route=action), limited)


def _service(grpc_service: str, cluster: str, options: GatewayOptions, methods: MethodKinds,
             ) -> list[route_components_pb2.Route]:
    """The routes of one served service: its streaming, retry-safe and rate-limited methods first, then its
    prefix."""
    routes: list[route_components_pb2.Route] = []
    limits = dict(methods.rate_limited)
    own = {*methods.streaming, *methods.retry_safe, *limits}
    for path in sorted(p for p in own if p.startswith(f"/{grpc_service}/")):
        retry_on = RETRY_ON_SAFE_METHOD if path in methods.retry_safe else RETRY_ON
        limited = Limited(path, limits[path]) if path in limits else None
        if path in methods.streaming:
            routes.append(_stream(path, cluster, retry_on, limited))
        else:
            routes += _unary(path, _method_match(path), cluster, retry_on, options, limited)
    return routes + _unary(grpc_service, _match(grpc_service), cluster, RETRY_ON, options)


def _unserved(grpc_service: str, *, expected: bool) -> list[route_components_pb2.Route]:
    """Routes of a service of the API (descriptor) that no instance announces right now."""
    if expected:
        # The mesh expects it (declared in the topology, or announced since the control plane started), so it
        # is coming back, e.g. during a full redeploy: 503 UNAVAILABLE, which clients may retry.
        return [route_components_pb2.Route(name=grpc_service, match=_match(grpc_service),
                                           direct_response=route_components_pb2.DirectResponseAction(status=503))]
    # Nobody declares it or ever announced it: it is not implemented here, as a gRPC server answers for a
    # service it lacks. gRPC callers get UNIMPLEMENTED (Envoy maps a 404 to it), REST callers 501.
    rest = _match(grpc_service)
    rest.dynamic_metadata.append(rest_request_matcher())
    return [
        route_components_pb2.Route(name=f"{grpc_service} (rest)", match=rest, direct_response=_text_response(
            501, f"{grpc_service} is not implemented by any service of this mesh")),
        route_components_pb2.Route(name=grpc_service, match=_match(grpc_service),
                                   direct_response=_text_response(404, f"unknown service {grpc_service}")),
    ]


def _text_response(status: int, text: str) -> route_components_pb2.DirectResponseAction:
    return route_components_pb2.DirectResponseAction(status=status, body=base_pb2.DataSource(inline_string=text))


def _catch_all(options: GatewayOptions) -> list[route_components_pb2.Route]:
    """The last routes. A gRPC call no route took ends at the first: 404, UNIMPLEMENTED for its caller.

    Every other request is REST and matches the second before the transcoder rewrites its path to gRPC: the
    transcoder reads its per-route configuration there (from the virtual host), and the route turns on the REST
    filters (front_filters.py). One the transcoder does not take ends there too: 404, as JSON google.rpc.Status.
    """
    not_found = route_components_pb2.DirectResponseAction(status=404)
    grpc = route_components_pb2.Route(name="unknown (grpc)", direct_response=not_found,
                                      match=route_components_pb2.RouteMatch(
                                          prefix="/", grpc=route_components_pb2.RouteMatch.GrpcRouteMatchOptions()))
    rest = route_components_pb2.Route(name="rest", match=route_components_pb2.RouteMatch(prefix="/"),
                                      direct_response=not_found)
    for name, config in rest_route_configs(options.max_request_bytes).items():
        rest.typed_per_filter_config[name].Pack(config, deterministic=True)
    return [grpc, rest]


@dataclass(frozen=True)
class MethodKinds:
    """gRPC paths ("/acme.users.v1.UserService/GetUser") of the methods that get routes of their own."""

    retry_safe: frozenset[str] = frozenset()   # unary, NO_SIDE_EFFECTS or IDEMPOTENT
    streaming: frozenset[str] = frozenset()    # client-, server- or bidi-streaming
    # With a token bucket of their own (the topology's policy), as AccessRules.rate_limits lists them.
    rate_limited: tuple[tuple[str, RateLimit], ...] = ()


def build_route_config(catalog: Catalog, api_services: Sequence[str], options: GatewayOptions,
                       methods: MethodKinds = MethodKinds(),
                       transcoder: transcoder_pb2.GrpcJsonTranscoder | None = None,
                       expected: Collection[str] = (),
                       extra_routes: Sequence[route_components_pb2.Route] = ()) -> route_pb2.RouteConfiguration:
    """Routes on `/<package>.<Service>/`: REST requests match after the transcoder rewrote them to gRPC.

    Every service announced in Consul goes to its cluster; services of the API (descriptor) that nobody
    announces answer 503 when `expected` names them, else UNIMPLEMENTED. The transcoder's configuration
    (descriptor and services) rides on the virtual host, so a new contract is a route update, which Envoy
    applies without draining any connection.
    """
    owners = service_routes(catalog)
    routes = []
    for grpc_service, cluster in sorted(owners.items()):
        routes += _service(grpc_service, cluster, options, methods)
    for grpc_service in sorted(set(api_services) - set(owners)):
        if routable(grpc_service):
            routes += _unserved(grpc_service, expected=grpc_service in expected)
    # Reflection of the whole mesh, answered by the control plane over the cluster Envoy reaches it by.
    routes += [_stream(f"/{service}/{REFLECTION_METHOD}", XDS_CLUSTER, RETRY_ON) for service in REFLECTION_SERVICES]
    routes += extra_routes  # e.g. the docs pages (docs.py): plain HTTP paths, ahead of the REST catch-all
    routes += _catch_all(options)
    # The transcoder adds these after every other filter ran; a service never sees them.
    host = route_components_pb2.VirtualHost(name="gateway", domains=["*"], routes=routes,
                                            request_headers_to_remove=TRANSCODER_HEADERS)
    if transcoder is not None:
        host.typed_per_filter_config[TRANSCODER_FILTER].Pack(transcoder, deterministic=True)
    return route_pb2.RouteConfiguration(name=ROUTE_CONFIG_NAME, virtual_hosts=[host])
