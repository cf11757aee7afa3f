"""Pure builder for the route table: one gRPC-prefix route per announced service, to its Consul cluster."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.grpc_json_transcoder.v3 import transcoder_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.duration_pb2 import Duration
from google.protobuf.wrappers_pb2 import UInt32Value

from gateway_envoy.catalog import Catalog, routable
from gateway_envoy.errors import rest_request_matcher
from gateway_envoy.options import GatewayOptions

ROUTE_CONFIG_NAME = "protomesh"
TRANSCODER_FILTER = "envoy.filters.http.grpc_json_transcoder"
# Only failures where the instance cannot have processed the request: safe to retry even for
# non-idempotent calls such as CreateUser.
RETRY_ON = "connect-failure,refused-stream,unavailable"
# Methods the contract marks free of side effects are also retried when the stream was reset after the
# instance received it (it was killed mid-call, or during the ~10 ms a killed process takes to die):
# running them twice is harmless.
RETRY_ON_SAFE_METHOD = f"{RETRY_ON},reset"
# Two more tries, each on a different instance (previous_hosts), covers one or two dead instances.
NUM_RETRIES = 2
# How often Envoy re-picks a host to honour previous_hosts before it settles for a repeat.
HOST_SELECTION_ATTEMPTS = 5
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


def _to_cluster(grpc_service: str, cluster: str, options: GatewayOptions, *, method_path: str = "",
                ) -> route_components_pb2.Route:
    """The service's prefix route or, with method_path, the route of one retry-safe method (listed first)."""
    return route_components_pb2.Route(
        name=method_path or grpc_service,
        match=_method_match(method_path) if method_path else _match(grpc_service),
        route=route_components_pb2.RouteAction(
            cluster=cluster,
            # Applies to REST and gRPC alike. grpc_timeout_header_max is not set on purpose: with it, a request
            # without grpc-timeout (every REST request) would get no timeout at all. A gRPC client's deadline
            # still reaches the instance in the grpc-timeout header.
            timeout=_duration_ms(round(options.route_timeout_s * 1000)),
            retry_policy=_retry_policy(RETRY_ON_SAFE_METHOD if method_path else RETRY_ON)))


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


def _rest_entry() -> route_components_pb2.Route:
    # The transcoder reads its per-route configuration from the route the REST path matches *before* it
    # rewrites the path to gRPC; this catch-all is that route. A request it does not transcode and that no
    # gRPC route takes ends here: 404 (UNIMPLEMENTED for gRPC callers, JSON google.rpc.Status for REST).
    return route_components_pb2.Route(
        name="rest", match=route_components_pb2.RouteMatch(prefix="/"),
        direct_response=route_components_pb2.DirectResponseAction(status=404))


def build_route_config(catalog: Catalog, api_services: Sequence[str], options: GatewayOptions,
                       retry_safe_methods: Sequence[str] = (),
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
        # Exact-path routes of retry-safe methods go before the service's prefix route, which they refine.
        routes += [_to_cluster(grpc_service, cluster, options, method_path=path)
                   for path in sorted(retry_safe_methods) if path.startswith(f"/{grpc_service}/")]
        routes.append(_to_cluster(grpc_service, cluster, options))
    for grpc_service in sorted(set(api_services) - set(owners)):
        if routable(grpc_service):
            routes += _unserved(grpc_service, expected=grpc_service in expected)
    routes += extra_routes  # e.g. the docs pages (docs.py): plain HTTP paths, ahead of the REST catch-all
    routes.append(_rest_entry())
    host = route_components_pb2.VirtualHost(name="gateway", domains=["*"], routes=routes)
    if transcoder is not None:
        host.typed_per_filter_config[TRANSCODER_FILTER].Pack(transcoder, deterministic=True)
    return route_pb2.RouteConfiguration(name=ROUTE_CONFIG_NAME, virtual_hosts=[host])
