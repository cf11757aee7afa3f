"""A complete, versioned xDS configuration: built from catalog + descriptor, versioned by content hash."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.message import Message

from gateway_envoy.access import AccessRules, access_rules
from gateway_envoy.catalog import Catalog, routable
from gateway_envoy.clusters import build_cluster, build_load_assignment
from gateway_envoy.descriptor import Descriptor
from gateway_envoy.docs import DOCS_CLUSTER, docs_cluster, docs_routes
from gateway_envoy.edge_filters import (
    JWKS_CLUSTER,
    JWT_FILTER,
    RATE_LIMIT_FILTER,
    RBAC_FILTER,
    build_jwt_authn,
    build_rate_limit,
    build_rbac,
    extension_config,
    jwks_cluster,
)
from gateway_envoy.listener import LISTENER_NAME, build_listener, build_transcoder
from gateway_envoy.options import GatewayOptions
from gateway_envoy.routes import ROUTE_CONFIG_NAME, MethodKinds, build_route_config, service_routes
from gateway_envoy.tls import build_secrets
from gateway_envoy.tracing import COLLECTOR_CLUSTER, build_collector_cluster
from protomesh.auth import Policy
from protomesh.identity import Credentials

_TYPE_PREFIX = "type.googleapis.com/"
CLUSTER_TYPE = _TYPE_PREFIX + "envoy.config.cluster.v3.Cluster"
ENDPOINT_TYPE = _TYPE_PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER_TYPE = _TYPE_PREFIX + "envoy.config.listener.v3.Listener"
ROUTE_TYPE = _TYPE_PREFIX + "envoy.config.route.v3.RouteConfiguration"
SECRET_TYPE = _TYPE_PREFIX + "envoy.extensions.transport_sockets.tls.v3.Secret"
EXTENSION_CONFIG_TYPE = _TYPE_PREFIX + "envoy.config.core.v3.TypedExtensionConfig"
# Order in which a change is pushed: make before break (secrets before what presents them, new clusters and their
# endpoints before a route points at them, a filter's new rules before the routes that name new buckets). Envoy
# itself asks for CDS and LDS first, then SDS, EDS, ECDS and RDS while warming.
PUSH_ORDER = (SECRET_TYPE, CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, EXTENSION_CONFIG_TYPE, ROUTE_TYPE)


@dataclass(frozen=True)
class EdgeInputs:
    """What the edge's TLS and security filters are built from besides the contracts: the certificates read
    from the identity folders, the JWKS read from its file, and the policy read from Consul."""

    edge: Credentials | None = None
    mesh: Credentials | None = None
    jwks: str = ""
    policy: Policy = field(default_factory=Policy)


@dataclass(frozen=True)
class Snapshot:
    """Resources per type URL (name -> packed resource) and a content-hash version per type.

    Versions are hashes, not counters: a restarted control plane computes the same versions for the same
    state, so Envoy sees nothing new and changes nothing.
    """

    resources: Mapping[str, Mapping[str, AnyProto]]
    versions: Mapping[str, str]
    transcoded: tuple[str, ...]
    # What each resource was built from ((type url, name) -> input): the next build reuses a resource whose
    # input did not change, so one instance more costs one load assignment, not 1,000 clusters and routes.
    inputs: Mapping[tuple[str, str], object] = field(default_factory=dict, compare=False, repr=False)
    # Each resource's own content hash ((type url, name) -> digest), reused with the resource: a type's version
    # hashes these, not every resource's bytes again.
    digests: Mapping[tuple[str, str], bytes] = field(default_factory=dict, compare=False, repr=False)

    @property
    def version(self) -> str:
        return _digest(self.versions[t].encode() for t in PUSH_ORDER)


def _digest(chunks: Iterable[bytes]) -> str:
    hasher = hashlib.sha256()
    for chunk in chunks:
        hasher.update(len(chunk).to_bytes(8, "big"))
        hasher.update(chunk)
    return hasher.hexdigest()[:16]


def _resource_digest(resource: AnyProto) -> bytes:
    return hashlib.sha256(resource.value).digest()[:16]


class _Packer:
    """Packs resources, reusing the previous snapshot's (and their digests) when built from an equal input."""

    def __init__(self, previous: Snapshot | None) -> None:
        self._previous = previous
        self.inputs: dict[tuple[str, str], object] = {}
        self.digests: dict[tuple[str, str], bytes] = {}

    def get(self, type_url: str, name: str, key: object, build: Callable[[], Message]) -> AnyProto:
        self.inputs[type_url, name] = key
        previous = self._previous
        if previous is not None and (type_url, name) in previous.digests:
            known = previous.inputs.get((type_url, name))
            if known is key or known == key:
                self.digests[type_url, name] = previous.digests[type_url, name]
                return previous.resources[type_url][name]
        resource = AnyProto()
        resource.Pack(build(), deterministic=True)
        self.digests[type_url, name] = _resource_digest(resource)
        return resource

    def by_name(self, type_url: str, packed: Mapping[str, AnyProto]) -> tuple[dict[str, AnyProto], str]:
        """The resources in name order and the type's version: a hash of each one's name and digest."""
        ordered = {name: packed[name] for name in sorted(packed)}
        digests = self.digests
        version = hashlib.sha256(b"".join(b"%d:%s%s" % (len(name), name.encode(), digests[type_url, name])
                                          for name in ordered)).hexdigest()[:16]
        return ordered, version

    def built(self, type_url: str, name: str, message: Message) -> AnyProto:
        """A resource that is cheap to build (its own input): packed again only when it changed."""
        return self.get(type_url, name, message, lambda: message)


def transcoded_services(descriptor: Descriptor, catalog: Catalog, previous: Sequence[str]) -> tuple[str, ...]:
    """Every service of the descriptor, plus any previously transcoded service still announced in Consul.

    The second part makes Envoy reject (NACK) a descriptor that lost a deployed service, so the gateway
    keeps its working configuration instead of silently dropping that service's REST API.
    """
    announced = {s for service in catalog.values() for s in service.grpc_services}
    kept = {s for s in previous if s in announced}
    return tuple(sorted(s for s in set(descriptor.services) | kept if routable(s)))


def _extension_configs(packer: _Packer, options: GatewayOptions, access: AccessRules,
                       edge: EdgeInputs) -> dict[str, AnyProto]:
    """The ECDS resources of the listener's security filters (edge_filters.py)."""
    configs = {RATE_LIMIT_FILTER: packer.get(EXTENSION_CONFIG_TYPE, RATE_LIMIT_FILTER, access.rate_limits,
                                             lambda: extension_config(RATE_LIMIT_FILTER, build_rate_limit(access)))}
    jwt = options.jwt
    if jwt is not None:
        configs[JWT_FILTER] = packer.get(EXTENSION_CONFIG_TYPE, JWT_FILTER, (jwt, edge.jwks, access.rules), lambda: (
            extension_config(JWT_FILTER, build_jwt_authn(jwt, edge.jwks, access))))
        configs[RBAC_FILTER] = packer.get(EXTENSION_CONFIG_TYPE, RBAC_FILTER, access.rules,
                                          lambda: extension_config(RBAC_FILTER, build_rbac(access)))
    return configs


def _own_clusters(packer: _Packer, options: GatewayOptions) -> dict[str, AnyProto]:
    """The clusters of the gateway's own: the docs server, the trace collector, the issuer's JWKS endpoint."""
    clusters = {}
    if options.docs_address:
        clusters[DOCS_CLUSTER] = packer.get(CLUSTER_TYPE, DOCS_CLUSTER, options, lambda: docs_cluster(options))
    collector = build_collector_cluster(options)
    if collector is not None:
        clusters[COLLECTOR_CLUSTER] = packer.get(CLUSTER_TYPE, COLLECTOR_CLUSTER, options, lambda: collector)
    jwt = options.jwt
    if jwt is not None and jwt.jwks_uri:
        clusters[JWKS_CLUSTER] = packer.get(CLUSTER_TYPE, JWKS_CLUSTER, options,
                                            lambda: jwks_cluster(jwt, options.connect_timeout_s))
    return clusters


def build_snapshot(catalog: Catalog, descriptor: Descriptor, transcoded: Sequence[str],
                   options: GatewayOptions, previous: Snapshot | None = None,
                   expected: Collection[str] = (), edge: EdgeInputs | None = None) -> Snapshot:
    """Pure: the same inputs always give the same resources and versions; `previous` only saves work.

    `expected` names the gRPC services the mesh expects though none may be announced now (see routes.py).
    """
    packer, transcoded, expected = _Packer(previous), tuple(transcoded), tuple(sorted(expected))
    edge = edge or EdgeInputs()
    access = access_rules(descriptor, edge.policy)
    listener = packer.get(LISTENER_TYPE, LISTENER_NAME, options, lambda: build_listener(options))
    owners = tuple(sorted(service_routes(catalog).items()))
    kinds = MethodKinds(frozenset(descriptor.retry_safe_methods), frozenset(descriptor.streaming_methods),
                        access.rate_limits)
    key = (owners, transcoded, options, descriptor.digest, expected, kinds)
    routes = packer.get(ROUTE_TYPE, ROUTE_CONFIG_NAME, key,
                        lambda: build_route_config(catalog, transcoded, options, kinds,
                                                   build_transcoder(descriptor.data, transcoded, options),
                                                   expected, docs_routes(options)))
    secrets = {name: packer.built(SECRET_TYPE, name, secret)
               for name, secret in build_secrets(edge.edge, edge.mesh).items()}
    parts = {
        SECRET_TYPE: packer.by_name(SECRET_TYPE, secrets),
        CLUSTER_TYPE: packer.by_name(CLUSTER_TYPE, {
            name: packer.get(CLUSTER_TYPE, name, (svc, options), functools.partial(build_cluster, svc, options))
            for name, svc in catalog.items()} | _own_clusters(packer, options)),
        ENDPOINT_TYPE: packer.by_name(ENDPOINT_TYPE, {
            name: packer.get(ENDPOINT_TYPE, name, svc, functools.partial(build_load_assignment, svc))
            for name, svc in catalog.items()}),
        LISTENER_TYPE: packer.by_name(LISTENER_TYPE, {LISTENER_NAME: listener}),
        EXTENSION_CONFIG_TYPE: packer.by_name(EXTENSION_CONFIG_TYPE, _extension_configs(packer, options, access, edge)),
        ROUTE_TYPE: packer.by_name(ROUTE_TYPE, {ROUTE_CONFIG_NAME: routes}),
    }
    return Snapshot(
        resources={type_url: packed for type_url, (packed, _) in parts.items()},
        versions={type_url: version for type_url, (_, version) in parts.items()},
        transcoded=transcoded, inputs=packer.inputs, digests=packer.digests,
    )
