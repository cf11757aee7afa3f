"""Pure builders for the edge's security filters: jwt_authn (who is calling), rbac (may they), local_ratelimit.

Their configurations depend on the contracts, the policy and the JWKS, so they reach Envoy over ECDS (one
`TypedExtensionConfig` each, on the ADS stream) rather than inside the listener: a new contract, policy or key
changes a filter's next instantiation and nothing else (a changed listener would drain every connection).

They run after grpc_json_transcoder, on the gRPC path (`/pkg.Service/Method`) a REST request was rewritten to,
so a REST path cannot skip a rule the gRPC path has.
"""

from __future__ import annotations

import urllib.parse

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2, extension_pb2, http_uri_pb2
from envoy.config.rbac.v3 import rbac_pb2 as rbac_config
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2 as local_ratelimit
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.type.matcher.v3 import metadata_pb2, path_pb2, string_pb2, value_pb2
from envoy.type.metadata.v3 import metadata_pb2 as metadata_key_pb2
from envoy.type.v3 import percent_pb2, token_bucket_pb2
from google.protobuf.duration_pb2 import Duration
from google.protobuf.empty_pb2 import Empty
from google.protobuf.message import Message
from google.protobuf.wrappers_pb2 import BoolValue, UInt32Value

from gateway_envoy.access import AccessRules, PathRule
from gateway_envoy.clusters import fixed_address_cluster
from gateway_envoy.docs import DOCS_PATH, OPENAPI_PATH
from gateway_envoy.errors import JWT_FAILURE_KEY, JWT_METADATA_NAMESPACE
from gateway_envoy.options import JwtOptions
from gateway_envoy.routes import RATE_LIMIT_DESCRIPTOR, RATE_LIMIT_METADATA, REFLECTION_METHOD, REFLECTION_SERVICES
from gateway_envoy.tls import public_transport_socket
from protomesh.auth import CLAIMS_KEY

JWT_FILTER = JWT_METADATA_NAMESPACE  # the filter's name is also its metadata namespace
RBAC_FILTER = "envoy.filters.http.rbac"
RATE_LIMIT_FILTER = "envoy.filters.http.local_ratelimit"
JWT_PROVIDER = "protomesh"
# jwt_authn writes the verified payload into dynamic metadata under its own name, at this key (rbac reads it).
JWT_PAYLOAD_KEY = "jwt_payload"
# The token's `scope` claim is one space-separated string (RFC 8693); jwt_authn splits it into a list in the
# metadata, so rbac matches whole scopes ("orders:write" never matches "orders:write-all"). `scp` is a list.
SCOPE_CLAIMS = ("scope", "scp")
JWKS_CLUSTER = "protomesh.jwks"
JWKS_FETCH_TIMEOUT_S = 5
# Rejected remote JWKS fetches are retried this often (Envoy's default waits a full second between them).
JWKS_RETRIES = 3
# Runtime keys Envoy requires beside the 100 % defaults (nothing sets them).
RATE_LIMIT_ENABLED_KEY = "protomesh.rate_limit.enabled"
RATE_LIMIT_ENFORCED_KEY = "protomesh.rate_limit.enforced"
# Paths of no contract that the gateway serves itself: the API's document and page, and reflection.
OPEN_PATHS = (OPENAPI_PATH, DOCS_PATH, *(f"/{service}/{REFLECTION_METHOD}" for service in REFLECTION_SERVICES))
OPEN_PREFIXES = (DOCS_PATH + "/",)


def _duration(seconds: float) -> Duration:
    duration = Duration()
    duration.FromMilliseconds(round(seconds * 1000))
    return duration


def extension_config(name: str, config: Message) -> extension_pb2.TypedExtensionConfig:
    """An ECDS resource: the filter's configuration under the filter's name (what Envoy subscribes to)."""
    resource = extension_pb2.TypedExtensionConfig(name=name)
    resource.typed_config.Pack(config, deterministic=True)
    return resource


# --- jwt_authn -----------------------------------------------------------------------------------------------

def _provider(options: JwtOptions, jwks: str) -> jwt.JwtProvider:
    provider = jwt.JwtProvider(
        issuer=options.issuer, audiences=list(options.audiences),
        # Only `Authorization: Bearer`: Envoy would also take an `access_token` query parameter, which ends up
        # in access logs and browser history.
        from_headers=[jwt.JwtHeader(name="authorization", value_prefix="Bearer ")],
        forward=False, forward_payload_header=CLAIMS_KEY, payload_in_metadata=JWT_PAYLOAD_KEY,
        failed_status_in_metadata=JWT_FAILURE_KEY,
        normalize_payload_in_metadata=jwt.JwtProvider.NormalizePayload(space_delimited_claims=["scope"]),
        clock_skew_seconds=options.clock_skew_s)
    if options.jwks_uri:
        provider.remote_jwks.CopyFrom(jwt.RemoteJwks(
            http_uri=http_uri_pb2.HttpUri(uri=options.jwks_uri, cluster=JWKS_CLUSTER,
                                          timeout=_duration(JWKS_FETCH_TIMEOUT_S)),
            cache_duration=_duration(options.jwks_cache_s),
            # Fetched when the filter is built, not on the first request, and retried on failure.
            async_fetch=jwt.JwksAsyncFetch(),
            retry_policy=base_pb2.RetryPolicy(num_retries=UInt32Value(value=JWKS_RETRIES))))
    else:
        provider.local_jwks.inline_string = jwks
    return provider


def _requirement_rule(rule: PathRule, requires: jwt.JwtRequirement) -> jwt.RequirementRule:
    match = (route_components_pb2.RouteMatch(prefix=rule.path) if rule.prefix
             else route_components_pb2.RouteMatch(path=rule.path))
    return jwt.RequirementRule(match=match, requires=requires)


def build_jwt_authn(options: JwtOptions, jwks: str, access: AccessRules) -> jwt.JwtAuthentication:
    """The first matching rule decides: open paths need nothing; public rpcs take a token but need none (one that
    is sent must be valid); every other path, known or not, needs a valid token."""
    required = jwt.JwtRequirement(provider_name=JWT_PROVIDER)
    optional = jwt.JwtRequirement(requires_any=jwt.JwtRequirementOrList(requirements=[
        required, jwt.JwtRequirement(allow_missing=Empty())]))
    rules = [jwt.RequirementRule(match=route_components_pb2.RouteMatch(path=path)) for path in OPEN_PATHS]
    rules += [jwt.RequirementRule(match=route_components_pb2.RouteMatch(prefix=prefix)) for prefix in OPEN_PREFIXES]
    # Exact method paths come before service prefixes (access_rules orders them so): the method's rule wins.
    rules += [_requirement_rule(rule, optional) for rule in access.public()]
    rules.append(jwt.RequirementRule(match=route_components_pb2.RouteMatch(prefix="/"), requires=required))
    return jwt.JwtAuthentication(providers={JWT_PROVIDER: _provider(options, jwks)}, rules=rules)


def jwks_cluster(options: JwtOptions, connect_timeout_s: float) -> cluster_pb2.Cluster:
    """The issuer's JWKS endpoint, for `remote_jwks` (https: its certificate must name the host)."""
    uri = urllib.parse.urlsplit(options.jwks_uri)
    host = uri.hostname or ""
    port = uri.port or (443 if uri.scheme == "https" else 80)
    cluster = fixed_address_cluster(JWKS_CLUSTER, host, port, connect_timeout_s)
    if uri.scheme == "https":
        cluster.transport_socket.CopyFrom(public_transport_socket(host, options.jwks_ca))
    return cluster


# --- rbac ----------------------------------------------------------------------------------------------------

def _claim_holds(claim: str, scope: str) -> rbac_config.Principal:
    return rbac_config.Principal(sourced_metadata=rbac_config.SourcedMetadata(
        metadata_source=rbac_config.DYNAMIC, metadata_matcher=metadata_pb2.MetadataMatcher(
            filter=JWT_FILTER,
            path=[metadata_pb2.MetadataMatcher.PathSegment(key=JWT_PAYLOAD_KEY),
                  metadata_pb2.MetadataMatcher.PathSegment(key=claim)],
            value=value_pb2.ValueMatcher(list_match=value_pb2.ListMatcher(
                one_of=value_pb2.ValueMatcher(string_match=string_pb2.StringMatcher(exact=scope)))))))


def _holds_every(scopes: frozenset[str]) -> rbac_config.Principal:
    """A verified token whose `scope` (or `scp`) holds every one of scopes."""
    return rbac_config.Principal(and_ids=rbac_config.Principal.Set(ids=[
        rbac_config.Principal(or_ids=rbac_config.Principal.Set(ids=[_claim_holds(claim, scope)
                                                                    for claim in SCOPE_CLAIMS]))
        for scope in sorted(scopes)]))


def _path_is(path: str) -> rbac_config.Permission:
    return rbac_config.Permission(url_path=path_pb2.PathMatcher(path=string_pb2.StringMatcher(exact=path)))


def _paths_of(rule: PathRule) -> rbac_config.Permission:
    """The rule's method path (without the query string); a service prefix without its methods' own paths."""
    if not rule.prefix:
        return _path_is(rule.path)
    under = rbac_config.Permission(url_path=path_pb2.PathMatcher(path=string_pb2.StringMatcher(prefix=rule.path)))
    if not rule.excluded:
        return under
    others = rbac_config.Permission(or_rules=rbac_config.Permission.Set(rules=[_path_is(p) for p in rule.excluded]))
    return rbac_config.Permission(and_rules=rbac_config.Permission.Set(rules=[
        under, rbac_config.Permission(not_rule=others)]))


def build_rbac(access: AccessRules) -> rbac_pb2.RBAC:
    """DENY a call to a scoped rpc unless the verified token holds every scope of its rule; one policy per set of
    scopes. A path of no scoped rule is left to jwt_authn (and the service, which checks again)."""
    by_scopes: dict[frozenset[str], list[PathRule]] = {}
    for rule in access.scoped():
        by_scopes.setdefault(rule.rule.scopes, []).append(rule)
    policies = {
        "needs " + " ".join(sorted(scopes)): rbac_config.Policy(
            permissions=[rbac_config.Permission(or_rules=rbac_config.Permission.Set(
                rules=[_paths_of(rule) for rule in rules]))],
            principals=[rbac_config.Principal(not_id=_holds_every(scopes))])
        for scopes, rules in sorted(by_scopes.items(), key=lambda item: sorted(item[0]))
    }
    return rbac_pb2.RBAC(rules=rbac_config.RBAC(action=rbac_config.RBAC.DENY, policies=policies))


# --- local_ratelimit -----------------------------------------------------------------------------------------

def _all_of_them(runtime_key: str) -> base_pb2.RuntimeFractionalPercent:
    return base_pb2.RuntimeFractionalPercent(runtime_key=runtime_key, default_value=percent_pb2.FractionalPercent(
        numerator=100, denominator=percent_pb2.FractionalPercent.HUNDRED))


def _method_of_route() -> route_components_pb2.RateLimit:
    """The descriptor {protomesh_method: <path>} from the metadata of the route a call matched; none for a route
    without it. A route, not the :path header: a query string (`/pkg.Svc/Method?x`) changes the header, never
    the route."""
    namespace, key = RATE_LIMIT_METADATA
    return route_components_pb2.RateLimit(actions=[route_components_pb2.RateLimit.Action(
        metadata=route_components_pb2.RateLimit.Action.MetaData(
            descriptor_key=RATE_LIMIT_DESCRIPTOR, skip_if_absent=True,
            source=route_components_pb2.RateLimit.Action.MetaData.ROUTE_ENTRY,
            metadata_key=metadata_key_pb2.MetadataKey(key=namespace, path=[
                metadata_key_pb2.MetadataKey.PathSegment(key=key)])))])


def build_rate_limit(access: AccessRules) -> local_ratelimit.LocalRateLimit:
    """One token bucket per limited method, keyed by the method path its routes carry (routes.py): both of a
    method's routes (with and without a deadline) and REST and gRPC callers share it; being the filter's, not a
    route's, it lasts across route updates. No default bucket, so an unlimited method costs nothing.

    Enabled and enforced for 100 % of requests: without both the filter only counts. gRPC callers get
    RESOURCE_EXHAUSTED (Envoy's default for a 429 is UNAVAILABLE, which clients retry). The 429 says when to come
    back (Retry-After, errors.py) from the route's metadata (routes.py)."""
    descriptors = [ratelimit_pb2.LocalRateLimitDescriptor(
        entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key=RATE_LIMIT_DESCRIPTOR, value=path)],
        token_bucket=token_bucket_pb2.TokenBucket(max_tokens=limit.requests,
                                                  tokens_per_fill=UInt32Value(value=limit.requests),
                                                  fill_interval=_duration(limit.per_s)))
        for path, limit in access.rate_limits]
    return local_ratelimit.LocalRateLimit(
        stat_prefix="protomesh_rate_limit", descriptors=descriptors, rate_limits=[_method_of_route()],
        always_consume_default_token_bucket=BoolValue(value=False),
        filter_enabled=_all_of_them(RATE_LIMIT_ENABLED_KEY), filter_enforced=_all_of_them(RATE_LIMIT_ENFORCED_KEY),
        rate_limited_as_resource_exhausted=True)
