"""A complete, versioned xDS configuration: built from catalog + descriptor, versioned by content hash."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.message import Message

from gateway_envoy.catalog import Catalog, routable
from gateway_envoy.clusters import build_cluster, build_load_assignment
from gateway_envoy.descriptor import Descriptor
from gateway_envoy.docs import DOCS_CLUSTER, docs_cluster, docs_routes
from gateway_envoy.listener import LISTENER_NAME, build_listener, build_transcoder
from gateway_envoy.options import GatewayOptions
from gateway_envoy.routes import ROUTE_CONFIG_NAME, MethodKinds, build_route_config, service_routes
from gateway_envoy.tracing import COLLECTOR_CLUSTER, build_collector_cluster

_TYPE_PREFIX = "type.googleapis.com/"
CLUSTER_TYPE = _TYPE_PREFIX + "envoy.config.cluster.v3.Cluster"
ENDPOINT_TYPE = _TYPE_PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER_TYPE = _TYPE_PREFIX + "envoy.config.listener.v3.Listener"
ROUTE_TYPE = _TYPE_PREFIX + "envoy.config.route.v3.RouteConfiguration"
# Order in which a change is pushed: make before break (new clusters and their endpoints exist before
# a route points at them). Envoy itself asks for CDS and LDS first, then EDS and RDS while warming.
PUSH_ORDER = (CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE)


@dataclass(frozen=True)
class Snapshot:
    """Resources per type URL (name -> packed resource) and a content-hash version per type.

    Versions are hashes, not counters: a restarted control plane computes the same versions for the same
    state, so Envoy sees nothing new and changes nothing.
    """

    resources: Mapping[str, Mapping[str, AnyProto]]
    versions: Mapping[str, str]
    transcoded: tuple[str, ...]
    # What each resource was built from ("<type url>/<name>" -> input): the next build reuses a resource whose
    # input did not change, so one instance more costs one load assignment, not 1,000 clusters and routes.
    inputs: Mapping[str, object] = field(default_factory=dict, compare=False, repr=False)

    @property
    def version(self) -> str:
        return _digest(self.versions[t].encode() for t in PUSH_ORDER)


def _digest(chunks: Iterable[bytes]) -> str:
    hasher = hashlib.sha256()
    for chunk in chunks:
        hasher.update(len(chunk).to_bytes(8, "big"))
        hasher.update(chunk)
    return hasher.hexdigest()[:16]


def _by_name(packed: Mapping[str, AnyProto]) -> tuple[dict[str, AnyProto], str]:
    ordered = {name: packed[name] for name in sorted(packed)}
    version = _digest(chunk for name, res in ordered.items() for chunk in (name.encode(), res.value))
    return ordered, version


class _Packer:
    """Packs resources, reusing the previous snapshot's when built from an equal input."""

    def __init__(self, previous: Snapshot | None) -> None:
        self._previous = previous
        self.inputs: dict[str, object] = {}

    def get(self, type_url: str, name: str, key: object, build: Callable[[], Message]) -> AnyProto:
        self.inputs[f"{type_url}/{name}"] = key
        previous = self._previous
        if previous is not None and previous.inputs.get(f"{type_url}/{name}") == key:
            return previous.resources[type_url][name]
        resource = AnyProto()
        resource.Pack(build(), deterministic=True)
        return resource


def transcoded_services(descriptor: Descriptor, catalog: Catalog, previous: Sequence[str]) -> tuple[str, ...]:
    """Every service of the descriptor, plus any previously transcoded service still announced in Consul.

    The second part makes Envoy reject (NACK) a descriptor that lost a deployed service, so the gateway
    keeps its working configuration instead of silently dropping that service's REST API.
    """
    announced = {s for service in catalog.values() for s in service.grpc_services}
    kept = {s for s in previous if s in announced}
    return tuple(sorted(s for s in set(descriptor.services) | kept if routable(s)))


def build_snapshot(catalog: Catalog, descriptor: Descriptor, transcoded: Sequence[str],
                   options: GatewayOptions, previous: Snapshot | None = None,
                   expected: Collection[str] = ()) -> Snapshot:
    """Pure: the same inputs always give the same resources and versions; `previous` only saves work.

    `expected` names the gRPC services the mesh expects though none may be announced now (see routes.py).
    """
    packer, transcoded, expected = _Packer(previous), tuple(transcoded), tuple(sorted(expected))
    listener = packer.get(LISTENER_TYPE, LISTENER_NAME, options, lambda: build_listener(options))
    owners = tuple(sorted(service_routes(catalog).items()))
    routes = packer.get(ROUTE_TYPE, ROUTE_CONFIG_NAME, (owners, transcoded, options, descriptor.digest, expected),
                        lambda: build_route_config(catalog, transcoded, options, MethodKinds(
                                                       frozenset(descriptor.retry_safe_methods),
                                                       frozenset(descriptor.streaming_methods)),
                                                   build_transcoder(descriptor.data, transcoded, options),
                                                   expected, docs_routes(options)))
    docs = {DOCS_CLUSTER: packer.get(CLUSTER_TYPE, DOCS_CLUSTER, options, lambda: docs_cluster(options))
            } if options.docs_address else {}
    collector = build_collector_cluster(options)
    if collector is not None:
        docs[COLLECTOR_CLUSTER] = packer.get(CLUSTER_TYPE, COLLECTOR_CLUSTER, options, lambda: collector)
    parts = {
        CLUSTER_TYPE: _by_name({name: packer.get(CLUSTER_TYPE, name, (svc, options),
                                                 functools.partial(build_cluster, svc, options))
                                for name, svc in catalog.items()} | docs),
        ENDPOINT_TYPE: _by_name({name: packer.get(ENDPOINT_TYPE, name, svc,
                                                  functools.partial(build_load_assignment, svc))
                                 for name, svc in catalog.items()}),
        LISTENER_TYPE: _by_name({LISTENER_NAME: listener}),
        ROUTE_TYPE: _by_name({ROUTE_CONFIG_NAME: routes}),
    }
    return Snapshot(
        resources={type_url: packed for type_url, (packed, _) in parts.items()},
        versions={type_url: version for type_url, (_, version) in parts.items()},
        transcoded=transcoded, inputs=packer.inputs,
    )
