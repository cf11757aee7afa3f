"""The secured edge's pure parts: contract + policy to rules, rules to jwt_authn / rbac / local_ratelimit, TLS
resources, and which resource a change touches (never the listener)."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import extension_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.rbac.v3 import rbac_pb2 as rbac_config
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from google.protobuf.message import Message

from gateway_envoy.access import access_rules
from gateway_envoy.catalog import ConsulService, Endpoint
from gateway_envoy.controlplane import options_from, parse_args
from gateway_envoy.descriptor import Descriptor, read_descriptor
from gateway_envoy.edge_filters import JWT_FILTER, OPEN_PATHS, RATE_LIMIT_FILTER, RBAC_FILTER
from gateway_envoy.errors import RETRY_AFTER_METADATA_KEY
from gateway_envoy.front_filters import (
    HYGIENE_FILTER,
    REST_BUFFER_FILTER,
    REST_JSON_FILTER,
    REST_MARK_FILTER,
    TOKEN_GUARD_FILTER,
)
from gateway_envoy.options import GatewayOptions, JwtOptions
from gateway_envoy.routes import RATE_LIMIT_METADATA
from gateway_envoy.snapshot import (
    CLUSTER_TYPE,
    EXTENSION_CONFIG_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    SECRET_TYPE,
    EdgeInputs,
    Snapshot,
    build_snapshot,
)
from localmesh.testing import project_root
from protomesh.auth import Policy, RateLimit, Rule
from protomesh.identity import Credentials

USERS = "acme.users.v1.UserService"
ORDERS = "acme.orders.v1.OrderService"
JWT = JwtOptions(issuer="https://issuer.example", audiences=("protomesh",))
SECURED = GatewayOptions(edge_tls=True, mesh_tls=True, jwt=JWT)
POLICY = Policy.parse({
    "rules": {f"/{USERS}/": {"scopes": ["ignored"]},              # the contract declares every UserService rule
              "/grpc.testing.TestService/": {"public": True},
              "/grpc.testing.TestService/UnaryCall": {"scopes": ["interop:call"]}},
    "rate_limits": {f"/{ORDERS}/": {"requests": 5, "per_s": 1}, f"/{ORDERS}/CreateOrder": {"requests": 2}}})
JWKS = '{"keys": [{"kty": "EC", "crv": "P-256", "x": "x", "y": "y"}]}'


@pytest.fixture(scope="module")
def descriptor() -> Descriptor:
    return read_descriptor(project_root() / "gen" / "descriptors" / "protomesh.binpb")


def credentials(serial: int) -> Credentials:
    return Credentials(b"key %d" % serial, b"cert %d" % serial, b"bundle")


def snapshot(descriptor: Descriptor, edge: EdgeInputs, previous: Snapshot | None = None,
             options: GatewayOptions = SECURED) -> Snapshot:
    catalog = {"users": ConsulService("users", (USERS,), (Endpoint("127.0.0.1", 1),))}
    return build_snapshot(catalog, descriptor, [USERS], options, previous, edge=edge)


M = TypeVar("M", bound=Message)


def unpack(snap: Snapshot, type_url: str, name: str, message: M) -> M:
    resource = snap.resources[type_url][name]
    if type_url == EXTENSION_CONFIG_TYPE:
        config = extension_pb2.TypedExtensionConfig()
        resource.Unpack(config)
        resource = config.typed_config
    resource.Unpack(message)
    return message


def test_a_contracts_rule_wins_and_the_policy_covers_only_what_the_contracts_leave_open(descriptor: Descriptor) -> None:
    rules = {rule.path: rule for rule in access_rules(descriptor, POLICY).rules}
    assert rules[f"/{USERS}/CreateUser"].rule == Rule(public=True)
    assert rules[f"/{USERS}/GetUser"].rule == Rule(frozenset({"users:read"}))
    # grpc.testing is not in the descriptor set: its service prefix stays, without the method that has its own rule.
    assert rules["/grpc.testing.TestService/"].excluded == ("/grpc.testing.TestService/UnaryCall",)
    assert rules["/grpc.testing.TestService/UnaryCall"].rule == Rule(frozenset({"interop:call"}))
    assert f"/{USERS}/" not in rules


def test_a_service_wide_rate_limit_gives_each_method_a_bucket_of_its_own(descriptor: Descriptor) -> None:
    limits = dict(access_rules(descriptor, POLICY).rate_limits)
    assert limits[f"/{ORDERS}/CreateOrder"] == RateLimit(2)
    assert limits[f"/{ORDERS}/GetOrder"] == RateLimit(5, 1.0)


def test_the_listener_runs_the_security_filters_after_the_transcoder_in_the_documented_order(
        descriptor: Descriptor) -> None:
    listener = unpack(snapshot(descriptor, EdgeInputs(jwks=JWKS)), LISTENER_TYPE, "gateway", listener_pb2.Listener())
    manager = hcm.HttpConnectionManager()
    listener.filter_chains[0].filters[0].typed_config.Unpack(manager)
    assert [f.name for f in manager.http_filters] == [
        HYGIENE_FILTER, REST_MARK_FILTER, REST_BUFFER_FILTER, REST_JSON_FILTER, TOKEN_GUARD_FILTER,
        "envoy.filters.http.grpc_json_transcoder", JWT_FILTER,
        RBAC_FILTER, RATE_LIMIT_FILTER, "envoy.filters.http.router"]
    assert all(f.config_discovery.config_source.HasField("ads") for f in manager.http_filters[6:9])
    context = tls_pb2.DownstreamTlsContext()
    listener.filter_chains[0].transport_socket.typed_config.Unpack(context)
    common = context.common_tls_context
    assert list(common.alpn_protocols) == ["h2", "http/1.1"]
    assert common.tls_params.tls_minimum_protocol_version == common_pb2.TlsParameters.TLSv1_2
    assert [sds.name for sds in common.tls_certificate_sds_secret_configs] == ["edge"]


def test_tokens_are_required_except_on_open_paths_and_optional_but_checked_on_public_rpcs(
        descriptor: Descriptor) -> None:
    config = unpack(snapshot(descriptor, EdgeInputs(jwks=JWKS)), EXTENSION_CONFIG_TYPE, JWT_FILTER,
                    jwt.JwtAuthentication())
    provider = config.providers["protomesh"]
    assert (provider.issuer, list(provider.audiences), provider.forward) == (JWT.issuer, ["protomesh"], False)
    assert (provider.forward_payload_header, provider.clock_skew_seconds) == ("x-protomesh-claims", 30)
    assert [(h.name, h.value_prefix) for h in provider.from_headers] == [("authorization", "Bearer ")]
    assert provider.local_jwks.inline_string == JWKS
    by_path = {rule.match.path or rule.match.prefix: rule for rule in config.rules}
    assert all(not by_path[path].HasField("requires") for path in OPEN_PATHS)
    public = by_path[f"/{USERS}/CreateUser"].requires.requires_any.requirements
    assert [r.WhichOneof("requires_type") for r in public] == ["provider_name", "allow_missing"]
    assert f"/{USERS}/GetUser" not in by_path   # the catch-all covers it: a token, whatever the path
    assert config.rules[-1].match.prefix == "/"
    assert config.rules[-1].requires.provider_name == "protomesh"


def test_rbac_denies_a_scoped_rpc_unless_the_token_holds_every_scope(descriptor: Descriptor) -> None:
    config = unpack(snapshot(descriptor, EdgeInputs(jwks=JWKS)), EXTENSION_CONFIG_TYPE, RBAC_FILTER, rbac_pb2.RBAC())
    assert config.rules.action == rbac_config.RBAC.DENY
    policy = config.rules.policies["needs users:write"]
    paths = {p.url_path.path.exact for p in policy.permissions[0].or_rules.rules}
    assert paths == {f"/{USERS}/DeleteUser", f"/{USERS}/UpdateUser"}
    holds = policy.principals[0].not_id.and_ids.ids[0].or_ids.ids
    assert [(m.sourced_metadata.metadata_matcher.path[1].key,
             m.sourced_metadata.metadata_matcher.value.list_match.one_of.string_match.exact) for m in holds] == [
        ("scope", "users:write"), ("scp", "users:write")]


def test_a_limited_method_gets_routes_that_name_one_bucket_enforced_for_every_request(descriptor: Descriptor) -> None:
    policy = Policy.parse({"rate_limits": {f"/{USERS}/GetUser": {"requests": 3, "per_s": 2}}})
    snap = snapshot(descriptor, EdgeInputs(jwks=JWKS, policy=policy))
    routes = unpack(snap, ROUTE_TYPE, "protomesh", route_pb2.RouteConfiguration()).virtual_hosts[0].routes
    namespace, key = RATE_LIMIT_METADATA
    named = [r.name for r in routes if r.metadata.filter_metadata[namespace].fields[key].string_value]
    assert named == [f"/{USERS}/GetUser (deadline)", f"/{USERS}/GetUser"]
    config = unpack(snap, EXTENSION_CONFIG_TYPE, RATE_LIMIT_FILTER, local_rate_limit_pb2.LocalRateLimit())
    assert config.filter_enabled.default_value.numerator == config.filter_enforced.default_value.numerator == 100
    assert config.rate_limited_as_resource_exhausted
    (bucket,) = config.descriptors
    assert (bucket.entries[0].value, bucket.token_bucket.max_tokens) == (f"/{USERS}/GetUser", 3)
    assert bucket.token_bucket.fill_interval.ToMilliseconds() == 2000


@pytest.mark.parametrize(("requests", "per_s", "retry_after"), [(3, 2, "1"), (2, 20, "10"), (1, 0.5, "1")])
def test_a_limited_routes_retry_after_is_the_longest_an_emptied_bucket_takes_to_have_a_call_again(
        descriptor: Descriptor, requests: int, per_s: float, retry_after: str) -> None:
    policy = Policy.parse({"rate_limits": {f"/{USERS}/GetUser": {"requests": requests, "per_s": per_s}}})
    routes = unpack(snapshot(descriptor, EdgeInputs(jwks=JWKS, policy=policy)), ROUTE_TYPE, "protomesh",
                    route_pb2.RouteConfiguration()).virtual_hosts[0].routes
    namespace, _ = RATE_LIMIT_METADATA
    said = {r.metadata.filter_metadata[namespace].fields[RETRY_AFTER_METADATA_KEY].string_value
            for r in routes if r.name.startswith(f"/{USERS}/GetUser")}
    assert said == {retry_after}


def test_each_service_cluster_takes_only_that_services_spiffe_id(descriptor: Descriptor) -> None:
    cluster = unpack(snapshot(descriptor, EdgeInputs(jwks=JWKS)), CLUSTER_TYPE, "users", cluster_pb2.Cluster())
    context = tls_pb2.UpstreamTlsContext()
    cluster.transport_socket.typed_config.Unpack(context)
    assert context.sni == "users.svc.protomesh.local"
    combined = context.common_tls_context.combined_validation_context
    assert [m.matcher.exact for m in combined.default_validation_context.match_typed_subject_alt_names] == [
        "spiffe://protomesh.local/service/users"]
    assert combined.validation_context_sds_secret_config.name == "mesh-ca"
    assert [s.name for s in context.common_tls_context.tls_certificate_sds_secret_configs] == ["mesh"]


def test_a_rotated_certificate_new_keys_a_new_policy_or_contract_never_change_the_listener(
        descriptor: Descriptor) -> None:
    first = snapshot(descriptor, EdgeInputs(edge=credentials(1), mesh=credentials(2), jwks=JWKS))
    rotated = snapshot(descriptor, EdgeInputs(edge=credentials(3), mesh=credentials(2), jwks=JWKS), first)
    assert {t for t in first.versions if first.versions[t] != rotated.versions[t]} == {SECRET_TYPE}
    edge = unpack(rotated, SECRET_TYPE, "edge", secret_pb2.Secret())
    assert edge.tls_certificate.certificate_chain.inline_bytes == b"cert 3"
    keys = snapshot(descriptor, EdgeInputs(edge=credentials(3), mesh=credentials(2), jwks=JWKS.replace("x", "z")),
                    rotated)
    assert {t for t in rotated.versions if rotated.versions[t] != keys.versions[t]} == {EXTENSION_CONFIG_TYPE}
    policy = Policy.parse({"rate_limits": {f"/{USERS}/GetUser": {"requests": 3}}})
    limited = snapshot(descriptor, EdgeInputs(edge=credentials(3), mesh=credentials(2), jwks=JWKS, policy=policy),
                       keys)
    assert limited.versions[LISTENER_TYPE] == first.versions[LISTENER_TYPE]


def test_the_control_plane_refuses_to_start_without_a_listener_mode_or_with_half_a_token_setup(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ([], ["--plaintext", "--edge-identity-dir", "x"], ["--plaintext", "--jwks-file", "jwks.json"]):
        with pytest.raises(SystemExit):
            parse_args(argv, env={})
    assert "--plaintext for a development gateway" in capsys.readouterr().err
    options = options_from(parse_args(["--edge-identity-dir", "edge", "--identity-dir", "id", "--jwks-uri",
                                       "https://issuer.example/jwks", "--jwt-issuer", "i", "--jwt-audience", "a",
                                       "--jwt-audience", "b"], env={}))
    assert (options.edge_tls, options.mesh_tls) == (True, True)
    assert options.jwt == JwtOptions(issuer="i", audiences=("a", "b"), jwks_uri="https://issuer.example/jwks")
    dev = options_from(parse_args([], env={"PROTOMESH_GATEWAY_PLAINTEXT": "1"}))
    assert (dev.edge_tls, dev.mesh_tls, dev.jwt) == (False, False, None)
