"""The ADS server over a real gRPC stream: what it sends, when, and how it treats ACKs and NACKs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.rpc import status_pb2

from gateway_envoy.ads import AdsServer
from gateway_envoy.catalog import ConsulService, Endpoint
from gateway_envoy.descriptor import Descriptor, read_descriptor
from gateway_envoy.options import GatewayOptions
from gateway_envoy.snapshot import CLUSTER_TYPE, ENDPOINT_TYPE, Snapshot, build_snapshot
from localmesh.testing import project_root

# How long a test waits to be sure that nothing is sent.
QUIET_S = 0.3


def snapshot(descriptor: Descriptor, *ports: int) -> Snapshot:
    catalog = {"users": ConsulService("users", ("acme.users.v1.UserService",),
                                      tuple(Endpoint("127.0.0.1", p) for p in ports))}
    return build_snapshot(catalog, descriptor, descriptor.services, GatewayOptions())


class Envoyish:
    """One ADS stream driven by hand, the way Envoy drives it."""

    def __init__(self, stub: ads_pb2_grpc.AggregatedDiscoveryServiceStub) -> None:
        self.requests: asyncio.Queue[discovery_pb2.DiscoveryRequest] = asyncio.Queue()
        self.responses: asyncio.Queue[discovery_pb2.DiscoveryResponse] = asyncio.Queue()
        self.call = stub.StreamAggregatedResources(self._outgoing())
        # A timed-out read() would cancel the whole call: a reader task fills a queue instead.
        self.reader = asyncio.create_task(self._incoming())

    async def _incoming(self) -> None:
        async for response in self.call:
            self.responses.put_nowait(response)

    async def _outgoing(self) -> AsyncIterator[discovery_pb2.DiscoveryRequest]:
        while True:
            yield await self.requests.get()

    def send(self, type_url: str, *, nonce: str = "", version: str = "", names: tuple[str, ...] = (),
             error: str = "") -> None:
        request = discovery_pb2.DiscoveryRequest(type_url=type_url, response_nonce=nonce, version_info=version,
                                                 resource_names=names)
        if error:
            request.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        self.requests.put_nowait(request)

    async def receive(self, timeout: float = 5.0) -> discovery_pb2.DiscoveryResponse:
        return await asyncio.wait_for(self.responses.get(), timeout)


@pytest.fixture
def descriptor() -> Descriptor:
    return read_descriptor(project_root() / "gen" / "descriptors" / "protomesh.binpb")


@pytest.fixture
async def server() -> AsyncIterator[tuple[AdsServer, Envoyish, list[tuple[str, str, str]]]]:
    nacks: list[tuple[str, str, str]] = []
    ads = AdsServer(on_nack=lambda *args: nacks.append(args))
    grpc_server = grpc.aio.server()
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(ads, grpc_server)
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    await grpc_server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        envoy = Envoyish(ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel))
        yield ads, envoy, nacks
        envoy.call.cancel()
        await asyncio.gather(envoy.reader, return_exceptions=True)
    await grpc_server.stop(None)


async def test_nothing_is_sent_before_the_first_snapshot_then_the_subscribed_type_is(
        server: tuple[AdsServer, Envoyish, list[tuple[str, str, str]]], descriptor: Descriptor) -> None:
    ads, envoy, _ = server
    envoy.send(CLUSTER_TYPE)
    with pytest.raises(asyncio.TimeoutError):
        await envoy.receive(timeout=QUIET_S)
    ads.publish(snapshot(descriptor, 1))
    response = await envoy.receive()
    assert (response.type_url, len(response.resources)) == (CLUSTER_TYPE, 1)
    assert response.version_info == ads._snapshot.versions[CLUSTER_TYPE]  # type: ignore[union-attr]


async def test_an_ack_is_recorded_and_only_changed_types_are_pushed(
        server: tuple[AdsServer, Envoyish, list[tuple[str, str, str]]], descriptor: Descriptor) -> None:
    ads, envoy, _ = server
    ads.publish(snapshot(descriptor, 1))
    envoy.send(CLUSTER_TYPE)
    clusters = await envoy.receive()
    envoy.send(CLUSTER_TYPE, nonce=clusters.nonce, version=clusters.version_info)
    envoy.send(ENDPOINT_TYPE, names=("users",))
    endpoints = await envoy.receive()
    envoy.send(ENDPOINT_TYPE, nonce=endpoints.nonce, version=endpoints.version_info, names=("users",))
    await asyncio.sleep(0.1)
    assert ads.acked == {CLUSTER_TYPE: clusters.version_info, ENDPOINT_TYPE: endpoints.version_info}
    ads.publish(snapshot(descriptor, 1, 2))  # a new endpoint: EDS changes, CDS does not
    pushed = await envoy.receive()
    assert pushed.type_url == ENDPOINT_TYPE
    assert pushed.version_info != endpoints.version_info
    with pytest.raises(asyncio.TimeoutError):
        await envoy.receive(timeout=QUIET_S)


async def test_a_nack_is_counted_reported_and_the_rejected_version_is_not_resent(
        server: tuple[AdsServer, Envoyish, list[tuple[str, str, str]]], descriptor: Descriptor) -> None:
    ads, envoy, nacks = server
    ads.publish(snapshot(descriptor, 1))
    envoy.send(CLUSTER_TYPE)
    clusters = await envoy.receive()
    envoy.send(CLUSTER_TYPE, nonce=clusters.nonce, version="", error="bad cluster")
    await asyncio.sleep(0.1)
    assert ads.nacks_total == 1
    assert nacks == [(CLUSTER_TYPE, clusters.version_info, "bad cluster")]
    assert ads.last_nack == {CLUSTER_TYPE: "bad cluster"}
    ads.publish(snapshot(descriptor, 1))  # same content: nothing to send again
    with pytest.raises(asyncio.TimeoutError):
        await envoy.receive(timeout=QUIET_S)


async def test_a_stale_nonce_is_ignored(
        server: tuple[AdsServer, Envoyish, list[tuple[str, str, str]]], descriptor: Descriptor) -> None:
    ads, envoy, _ = server
    ads.publish(snapshot(descriptor, 1))
    envoy.send(CLUSTER_TYPE)
    await envoy.receive()
    envoy.send(CLUSTER_TYPE, nonce="not-the-last-one", error="old news")
    await asyncio.sleep(0.1)
    assert ads.nacks_total == 0
