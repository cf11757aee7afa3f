"""The delta ADS stream: only resources an Envoy lacks go out, removals are named, NACKed versions are not re-sent."""

from __future__ import annotations

import itertools

import pytest
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2

from gateway_envoy.ads_delta import DeltaStream
from gateway_envoy.catalog import ConsulService, Endpoint
from gateway_envoy.descriptor import Descriptor, read_descriptor
from gateway_envoy.options import GatewayOptions
from gateway_envoy.snapshot import CLUSTER_TYPE, ENDPOINT_TYPE, Snapshot, build_snapshot
from localmesh.testing import project_root


@pytest.fixture
def descriptor() -> Descriptor:
    return read_descriptor(project_root() / "gen" / "descriptors" / "protomesh.binpb")


def snapshot(descriptor: Descriptor, services: int, *, extra: int | None = None,
             previous: Snapshot | None = None) -> Snapshot:
    catalog = {f"svc{n}": ConsulService(f"svc{n}", (f"bench.svc{n}.v1.Service",), tuple(
        Endpoint("127.0.0.1", 20_000 + 3 * n + k) for k in range(2 if n == extra else 1))) for n in range(services)}
    return build_snapshot(catalog, descriptor, descriptor.services, GatewayOptions(), previous)


def stream() -> DeltaStream:
    nonces = itertools.count(1)
    return DeltaStream("test", lambda type_url: None, lambda: str(next(nonces)))


def request(type_url: str, *, subscribe: tuple[str, ...] = (), unsubscribe: tuple[str, ...] = (), nonce: str = "",
            error: str = "", initial: dict[str, str] | None = None) -> discovery_pb2.DeltaDiscoveryRequest:
    message = discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, resource_names_subscribe=subscribe,
                                                  resource_names_unsubscribe=unsubscribe, response_nonce=nonce,
                                                  initial_resource_versions=initial or {})
    if error:
        message.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
    return message


def names(response: discovery_pb2.DeltaDiscoveryResponse) -> list[str]:
    return [resource.name for resource in response.resources]


def test_after_the_first_answer_only_the_changed_load_assignment_and_the_removed_names_go_out(
        descriptor: Descriptor) -> None:
    envoy = stream()
    first = snapshot(descriptor, 20)
    assert envoy.on_request(request(CLUSTER_TYPE)) is None  # the legacy wildcard: a first request naming nothing
    assert envoy.on_request(request(ENDPOINT_TYPE, subscribe=tuple(f"svc{n}" for n in range(20)))) is None
    clusters, endpoints = envoy.due(first)
    assert len(clusters.resources) == len(first.resources[CLUSTER_TYPE])
    assert len(endpoints.resources) == 20
    acked = envoy.on_request(request(ENDPOINT_TYPE, nonce=endpoints.nonce))
    assert acked is not None
    assert not acked.has_error
    assert acked.version == first.versions[ENDPOINT_TYPE]
    second = snapshot(descriptor, 20, extra=7, previous=first)
    (change,) = envoy.due(second)
    assert (change.type_url, names(change), change.system_version_info) == (
        ENDPOINT_TYPE, ["svc7"], second.versions[ENDPOINT_TYPE])
    assert envoy.due(second) == []
    third = snapshot(descriptor, 19, extra=7, previous=second)
    removed = envoy.due(third)
    assert [(r.type_url, names(r), list(r.removed_resources)) for r in removed] == [
        (CLUSTER_TYPE, [], ["svc19"]), (ENDPOINT_TYPE, [], ["svc19"])]


def test_a_reconnecting_envoy_that_holds_the_current_versions_is_sent_nothing_new(descriptor: Descriptor) -> None:
    current = snapshot(descriptor, 5)
    held = {name: current.digests[CLUSTER_TYPE, name].hex() for name in current.resources[CLUSTER_TYPE]}
    envoy = stream()
    envoy.on_request(request(CLUSTER_TYPE, subscribe=("*",), initial=held))
    (answer,) = envoy.due(current)  # a new subscription is answered, with nothing it lacks
    assert names(answer) == []
    assert list(answer.removed_resources) == []


def test_a_nacked_version_is_reported_with_envoys_message_and_not_sent_again(descriptor: Descriptor) -> None:
    envoy = stream()
    first = snapshot(descriptor, 3)
    envoy.on_request(request(ENDPOINT_TYPE, subscribe=("svc0", "svc1")))
    (response,) = envoy.due(first)
    nack = envoy.on_request(request(ENDPOINT_TYPE, nonce=response.nonce, error="bad endpoints"))
    assert nack is not None
    assert nack.has_error
    assert nack.error == "bad endpoints"
    assert nack.version == first.versions[ENDPOINT_TYPE]
    assert envoy.due(first) == []
    assert envoy.on_request(request(ENDPOINT_TYPE, nonce=response.nonce)) is None  # answered already


def test_an_unsubscribed_name_is_no_longer_sent_and_a_new_one_is(descriptor: Descriptor) -> None:
    envoy = stream()
    first = snapshot(descriptor, 3)
    envoy.on_request(request(ENDPOINT_TYPE, subscribe=("svc0",)))
    (response,) = envoy.due(first)
    assert names(response) == ["svc0"]
    envoy.on_request(request(ENDPOINT_TYPE, subscribe=("svc2",), unsubscribe=("svc0",), nonce=response.nonce))
    (response,) = envoy.due(snapshot(descriptor, 3, extra=0, previous=first))
    assert names(response) == ["svc2"]
