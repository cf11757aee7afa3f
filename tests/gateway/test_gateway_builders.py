"""The control plane's pure parts: Consul entries to catalog, catalog + descriptor to Envoy resources."""

from __future__ import annotations

import subprocess
import sys

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.buffer.v3 import buffer_pb2
from envoy.extensions.filters.http.grpc_json_transcoder.v3 import transcoder_pb2
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm

from gateway_envoy.bootstrap import (
    COMPOSE_ADMIN_HOST,
    COMPOSE_XDS_HOST,
    CONNECTION_MONITOR,
    DEFAULT_MAX_DOWNSTREAM_CONNECTIONS,
    XDS_CLUSTER,
    build_bootstrap,
    render_bootstrap,
)
from gateway_envoy.catalog import ConsulService, Endpoint, merge_last_known_good, package_owner, service_from_health
from gateway_envoy.clusters import HTTP_PROTOCOL_OPTIONS, LEGACY_MAX_REQUESTS, build_cluster, build_load_assignment
from gateway_envoy.descriptor import Descriptor, DescriptorError, parse_descriptor, read_descriptor
from gateway_envoy.front_filters import (
    GRPC_RESPONSE_HEADERS,
    HYGIENE_FILTER,
    REST_BUFFER_FILTER,
    REST_JSON_FILTER,
    REST_MARK_FILTER,
)
from gateway_envoy.options import DEFAULT_CLUSTER_MAX_REQUESTS, GatewayOptions
from gateway_envoy.routes import RETRY_ON, STREAM_IDLE_TIMEOUT_S, TRANSCODER_FILTER, MethodKinds, build_route_config
from gateway_envoy.snapshot import LISTENER_TYPE, ROUTE_TYPE, build_snapshot, transcoded_services
from localmesh.testing import find_binary, project_root

USERS = "acme.users.v1.UserService"
OPTIONS = GatewayOptions()


def mesh_routes(config: route_pb2.RouteConfiguration) -> list[route_components_pb2.Route]:
    """The routes to the mesh's services and the REST entry, without the gateway's own reflection routes and the
    gRPC catch-all."""
    return [r for r in config.virtual_hosts[0].routes
            if not r.name.startswith("/grpc.reflection.") and r.name != "unknown (grpc)"]


def users(*ports: int) -> ConsulService:
    return ConsulService("users", (USERS,), tuple(Endpoint("127.0.0.1", p) for p in ports))


def health_entry(port: int, status: str, grpc_services: str = USERS) -> dict[str, object]:
    return {"Node": {"Address": "10.0.0.1"},
            "Service": {"Address": "127.0.0.1", "Port": port, "Meta": {"grpc_services": grpc_services}},
            "Checks": [{"Status": "passing"}, {"Status": status}]}


def test_only_instances_whose_checks_all_pass_become_endpoints() -> None:
    service = service_from_health("users", [health_entry(1, "passing"), health_entry(2, "critical")])
    assert service == users(1)


def test_a_service_whose_instances_all_fail_keeps_its_grpc_services_and_has_no_endpoint() -> None:
    assert service_from_health("users", [health_entry(2, "critical")]) == users()


def test_services_without_grpc_meta_and_health_or_reflection_are_not_routable() -> None:
    assert service_from_health("consul", [{"Node": {"Address": "x"}, "Service": {"Port": 8300}}]) is None
    hidden = "grpc.health.v1.Health,grpc.reflection.v1alpha.ServerReflection"
    assert service_from_health("users", [health_entry(1, "passing", hidden)]) is None


def test_a_service_that_suddenly_reports_no_instance_keeps_its_last_known_good_endpoints() -> None:
    assert merge_last_known_good({"users": users(1)}, {}) == {"users": users(1)}
    assert merge_last_known_good({"users": users(1)}, {"users": users()}) == {"users": users(1)}
    assert merge_last_known_good({"users": users(1)}, {"users": users(2)}) == {"users": users(2)}
    assert merge_last_known_good({}, {"users": users()}) == {"users": users()}


def test_a_cluster_is_named_after_its_consul_service_and_speaks_http2_with_a_raised_retry_budget() -> None:
    cluster = build_cluster(users(1), OPTIONS)
    assert (cluster.name, cluster.type) == ("users", cluster_pb2.Cluster.EDS)
    assert HTTP_PROTOCOL_OPTIONS in cluster.typed_extension_protocol_options
    assert cluster.circuit_breakers.thresholds[0].max_retries.value > 3
    assert cluster.outlier_detection.consecutive_gateway_failure.value > 0
    assert cluster.connect_timeout.ToMilliseconds() == OPTIONS.connect_timeout_s * 1000


def test_a_cluster_sheds_past_its_request_limit_and_zero_keeps_the_old_bounds() -> None:
    limits = build_cluster(users(1), OPTIONS).circuit_breakers.thresholds[0]
    assert limits.max_requests.value == limits.max_pending_requests.value == DEFAULT_CLUSTER_MAX_REQUESTS
    legacy = build_cluster(users(1), GatewayOptions(cluster_max_requests=0)).circuit_breakers.thresholds[0]
    assert legacy.max_requests.value == LEGACY_MAX_REQUESTS


def test_the_bootstrap_limits_downstream_connections_unless_told_not_to() -> None:
    monitors = build_bootstrap()["overload_manager"]["resource_monitors"]
    assert [m["name"] for m in monitors] == [CONNECTION_MONITOR]
    assert monitors[0]["typed_config"]["max_active_downstream_connections"] == DEFAULT_MAX_DOWNSTREAM_CONNECTIONS
    assert "overload_manager" not in build_bootstrap(max_connections=0)


def test_the_load_assignment_lists_the_passing_endpoints() -> None:
    assignment = build_load_assignment(users(1, 2))
    ports = [e.endpoint.address.socket_address.port_value for e in assignment.endpoints[0].lb_endpoints]
    assert (assignment.cluster_name, ports) == ("users", [1, 2])


def test_a_unary_call_gets_its_own_deadline_at_the_gateway_and_one_without_gets_the_route_timeout() -> None:
    config = build_route_config({"users": users(1)}, [USERS], OPTIONS)
    with_deadline, without, rest = mesh_routes(config)
    assert (rest.match.prefix, rest.direct_response.status) == ("/", 404)
    for route in (with_deadline, without):
        assert (route.match.prefix, route.route.cluster) == (f"/{USERS}/", "users")
        assert route.match.HasField("grpc")
        assert route.route.retry_policy.retry_on == "connect-failure,refused-stream"
        assert route.route.retry_policy.retry_host_predicate[0].name == "envoy.retry_host_predicates.previous_hosts"
    assert [(h.name, h.present_match) for h in with_deadline.match.headers] == [("grpc-timeout", True)]
    assert with_deadline.route.timeout.ToMilliseconds() == 0  # no gateway limit: the caller's deadline rules
    assert not with_deadline.route.HasField("max_stream_duration")
    assert without.route.timeout.ToMilliseconds() == OPTIONS.route_timeout_s * 1000
    assert not without.match.headers


def test_only_methods_the_contract_marks_retry_safe_are_retried_after_the_instance_may_have_run_them() -> None:
    methods = MethodKinds(retry_safe=frozenset({f"/{USERS}/GetUser"}))
    config = build_route_config({"users": users(1)}, [USERS], OPTIONS, methods)
    get_deadline, get, service_deadline, service, _rest = mesh_routes(config)
    assert {get.match.path, get_deadline.match.path} == {f"/{USERS}/GetUser"}
    assert set(get.route.retry_policy.retry_on.split(",")) == {"connect-failure", "refused-stream", "reset",
                                                               "unavailable"}
    assert service.match.prefix == f"/{USERS}/"
    assert service.route.retry_policy.retry_on == service_deadline.route.retry_policy.retry_on == RETRY_ON


def test_a_streaming_method_has_no_route_timeout_only_an_idle_timeout_above_the_heartbeat() -> None:
    watch = "/acme.notifications.v1.NotificationService/WatchNotifications"
    catalog = {"notifications": ConsulService("notifications", ("acme.notifications.v1.NotificationService",),
                                              (Endpoint("127.0.0.1", 1),))}
    config = build_route_config(catalog, [], OPTIONS, MethodKinds(streaming=frozenset({watch})))
    stream = mesh_routes(config)[0]
    assert stream.match.path == watch
    assert stream.route.timeout.ToMilliseconds() == 0
    assert stream.route.idle_timeout.ToSeconds() == STREAM_IDLE_TIMEOUT_S > 60
    assert stream.route.retry_policy.retry_on == RETRY_ON


def test_only_rest_requests_reach_the_rest_entry_which_turns_on_the_rest_filters() -> None:
    *_, grpc_catch_all, rest = build_route_config({"users": users(1)}, [USERS], OPTIONS).virtual_hosts[0].routes
    assert (grpc_catch_all.match.prefix, grpc_catch_all.match.HasField("grpc")) == ("/", True)
    assert grpc_catch_all.direct_response.status == 404
    assert not grpc_catch_all.typed_per_filter_config
    assert (rest.name, rest.match.prefix, rest.match.HasField("grpc")) == ("rest", "/", False)
    assert sorted(rest.typed_per_filter_config) == sorted([REST_MARK_FILTER, REST_BUFFER_FILTER, REST_JSON_FILTER])
    json_only = header_mutation_pb2.HeaderMutationPerRoute()
    rest.typed_per_filter_config[REST_JSON_FILTER].Unpack(json_only)
    assert [m.remove for m in json_only.mutations.response_mutations] == list(GRPC_RESPONSE_HEADERS)
    buffer = buffer_pb2.BufferPerRoute()
    rest.typed_per_filter_config[REST_BUFFER_FILTER].Unpack(buffer)
    assert buffer.buffer.max_request_bytes.value == OPTIONS.max_request_bytes


def test_an_expected_api_service_without_instances_answers_503_and_hidden_services_get_no_route() -> None:
    config = build_route_config({}, ["acme.orders.v1.OrderService", "grpc.health.v1.Health"], OPTIONS,
                                expected={"acme.orders.v1.OrderService"})
    route, _rest = mesh_routes(config)
    assert (route.match.prefix, route.direct_response.status) == ("/acme.orders.v1.OrderService/", 503)


def test_an_api_service_nobody_declares_is_unimplemented_501_for_rest_and_404_for_grpc() -> None:
    config = build_route_config({}, ["grpc.testing.UnimplementedService"], OPTIONS)
    rest, grpc_route, _catch_all = mesh_routes(config)
    assert (rest.direct_response.status, rest.match.dynamic_metadata[0].filter) == (501, "protomesh.gateway")
    assert grpc_route.direct_response.status == 404  # Envoy's mapping of 404 for gRPC callers: UNIMPLEMENTED
    assert grpc_route.direct_response.body.inline_string == "unknown service grpc.testing.UnimplementedService"


@pytest.mark.parametrize(("grpc_service", "owner"), [
    ("acme.users.v1.UserService", "users"), ("acme.orders.v2beta1.OrderService", "orders"),
    ("grpc.testing.TestService", "testing"), ("Flat", ""),
])
def test_a_grpc_service_belongs_to_the_consul_service_its_package_names(grpc_service: str, owner: str) -> None:
    assert package_owner(grpc_service) == owner


@pytest.fixture(scope="module")
def descriptor() -> Descriptor:
    return read_descriptor(project_root() / "gen" / "descriptors" / "protomesh.binpb")


def test_the_descriptor_set_lists_every_contract_service(descriptor: Descriptor) -> None:
    assert USERS in descriptor.services
    with pytest.raises(DescriptorError):
        parse_descriptor(b"\xff not a descriptor")


def test_a_deployed_service_stays_transcoded_even_when_a_new_descriptor_lacks_it(descriptor: Descriptor) -> None:
    lacking = Descriptor(descriptor.data, tuple(s for s in descriptor.services if s != USERS), "lacking")
    assert USERS in transcoded_services(lacking, {"users": users(1)}, [USERS])
    assert USERS not in transcoded_services(lacking, {}, [USERS])


def test_the_routes_carry_the_transcoder_with_status_conversion_and_strict_validation(descriptor: Descriptor) -> None:
    snapshot = build_snapshot({"users": users(1)}, descriptor, [USERS], OPTIONS)
    listener = listener_pb2.Listener()
    snapshot.resources[LISTENER_TYPE]["gateway"].Unpack(listener)
    manager = hcm.HttpConnectionManager()
    listener.filter_chains[0].filters[0].typed_config.Unpack(manager)
    assert manager.codec_type == hcm.HttpConnectionManager.AUTO
    names = [f.name for f in manager.http_filters]
    # Without token checks (no JWKS) the security filters are the rate limit alone (test_gateway_edge_builders.py).
    assert names == [HYGIENE_FILTER, REST_MARK_FILTER, REST_BUFFER_FILTER, REST_JSON_FILTER, TRANSCODER_FILTER,
                     "envoy.filters.http.local_ratelimit",
                     "envoy.filters.http.router"]
    routes = route_pb2.RouteConfiguration()
    snapshot.resources[ROUTE_TYPE]["protomesh"].Unpack(routes)
    transcoder = transcoder_pb2.GrpcJsonTranscoder()
    routes.virtual_hosts[0].typed_per_filter_config[TRANSCODER_FILTER].Unpack(transcoder)
    assert transcoder.convert_grpc_status
    assert transcoder.request_validation_options.reject_unknown_method
    assert transcoder.request_validation_options.reject_unknown_query_parameters
    assert list(transcoder.services) == [USERS]


def test_a_new_contract_changes_the_routes_and_never_the_listener(descriptor: Descriptor) -> None:
    before = build_snapshot({"users": users(1)}, descriptor, [USERS], OPTIONS)
    grown = Descriptor(descriptor.data + b"", (*descriptor.services, "acme.ledger.v1.LedgerService"), "grown")
    after = build_snapshot({"users": users(1)}, grown, [USERS, "acme.orders.v1.OrderService"], OPTIONS, before)
    assert after.versions[LISTENER_TYPE] == before.versions[LISTENER_TYPE]
    assert after.versions[ROUTE_TYPE] != before.versions[ROUTE_TYPE]


def test_the_snapshot_version_is_a_content_hash_that_another_process_reproduces() -> None:
    script = ("from gateway_envoy.catalog import *; from gateway_envoy.descriptor import read_descriptor;"
              "from gateway_envoy.options import GatewayOptions; from gateway_envoy.snapshot import build_snapshot;"
              "d = read_descriptor(__import__('pathlib').Path('gen/descriptors/protomesh.binpb'));"
              f"s = {{'users': ConsulService('users', ({USERS!r},), (Endpoint('127.0.0.1', 1),))}};"
              "print(build_snapshot(s, d, d.services, GatewayOptions()).version)")
    versions = {subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True,
                               cwd=project_root(), env={"PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert len(versions) == 1


@pytest.mark.parametrize(("name", "rendered"), [
    ("bootstrap.yaml", render_bootstrap()),
    ("envoy-compose.yaml", render_bootstrap(admin_host=COMPOSE_ADMIN_HOST, xds_host=COMPOSE_XDS_HOST)),
])
def test_the_committed_bootstraps_are_rendered_by_the_builder_and_envoy_accepts_them(name: str, rendered: str) -> None:
    committed = project_root() / "gateway_envoy" / name
    assert committed.read_text() == rendered, f"re-render {name} with python -m gateway_envoy.bootstrap"
    result = subprocess.run([find_binary("envoy"), "--mode", "validate", "-c", str(committed)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr




def test_reflection_at_the_gateway_goes_to_the_control_plane_for_both_versions() -> None:
    config = build_route_config({"users": users(1)}, [USERS], OPTIONS)
    reflection = {r.match.path: r.route for r in config.virtual_hosts[0].routes if r.name.startswith("/grpc.refl")}
    assert set(reflection) == {"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                               "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"}
    assert {route.cluster for route in reflection.values()} == {XDS_CLUSTER}
    assert all(route.timeout.ToMilliseconds() == 0 for route in reflection.values())
