"""A thin ADS server (state-of-the-world and delta): pushes the current snapshot, tracks nonces, ACKs and NACKs."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from gateway_envoy.ads_delta import Answer, DeltaStream
from gateway_envoy.metrics import ControlPlaneMetrics
from gateway_envoy.snapshot import PUSH_ORDER, Snapshot

# A response of either protocol (DiscoveryResponse, DeltaDiscoveryResponse).
R = TypeVar("R")
log = logging.getLogger("gateway_envoy.ads")

AckCallback = Callable[[str, str], None]          # (type_url, version)
NackCallback = Callable[[str, str, str], None]    # (type_url, version, Envoy's error message)


@dataclass
class _TypeState:
    """What one stream was sent for one resource type, and what it asked for."""

    names: frozenset[str] = frozenset()   # empty = wildcard (CDS, LDS)
    sent_version: str | None = None
    nonce: str = ""
    force: bool = True                    # a new subscription must be answered even if nothing changed
    sent_at: float | None = None          # when the unanswered response went out (push latency)


@dataclass(eq=False)  # identity: one per open stream
class _Stream:
    peer: str
    types: dict[str, _TypeState] = field(default_factory=dict)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)


class AdsServer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    """Serves one Snapshot to every connected Envoy; publish() pushes a new one to all streams.

    Both protocols are served: the bootstrap asks for delta (only changed resources go out, see ads_delta.py);
    a state-of-the-world stream gets every resource of each changed type.

    Nothing is sent before the first snapshot, so a restarted control plane never answers with an
    empty configuration. A NACK is logged with Envoy's message, counted, and reported to on_nack; the
    same version is never re-sent on that stream (Envoy keeps its last accepted config meanwhile).
    """

    def __init__(self, *, on_ack: AckCallback | None = None, on_nack: NackCallback | None = None,
                 metrics: ControlPlaneMetrics | None = None) -> None:
        self._snapshot: Snapshot | None = None
        self._metrics = metrics
        self._wakeups: set[asyncio.Event] = set()  # one per open stream, of either protocol
        self._nonces = itertools.count(1)
        self._on_ack = on_ack
        self._on_nack = on_nack
        self.nacks_total = 0
        self.acked: dict[str, str] = {}        # type_url -> last version any Envoy accepted
        self.last_nack: dict[str, str] = {}    # type_url -> Envoy's message for the last rejection

    @property
    def streams(self) -> int:
        return len(self._wakeups)

    def publish(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot
        for wakeup in self._wakeups:
            wakeup.set()

    async def _serve(self, kind: str, peer: str, reader: asyncio.Task[None], wakeup: asyncio.Event,
                     due: Callable[[], Iterable[R]]) -> AsyncIterator[R]:
        """One stream's writer, either protocol: `due()` after every wake-up (a request read, a new snapshot)
        until the reader ends; then the reader is cancelled and the stream forgotten."""
        self._wakeups.add(wakeup)
        log.info("%s stream opened by %s", kind, peer)
        try:
            while not reader.done():
                await wakeup.wait()
                wakeup.clear()
                for response in due():
                    yield response
        finally:
            self._wakeups.discard(wakeup)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.RpcError):
                await reader
            log.info("%s stream from %s closed", kind, peer)

    async def DeltaAggregatedResources(
        self, request_iterator: AsyncIterator[discovery_pb2.DeltaDiscoveryRequest],
        context: grpc.aio.ServicerContext[discovery_pb2.DeltaDiscoveryRequest,
                                          discovery_pb2.DeltaDiscoveryResponse],
    ) -> AsyncIterator[discovery_pb2.DeltaDiscoveryResponse]:
        stream = DeltaStream(context.peer(), self._pushed, lambda: str(next(self._nonces)))
        wakeup = asyncio.Event()
        reader = asyncio.create_task(self._read_delta(request_iterator, stream, wakeup))
        async for response in self._serve("delta ADS", stream.peer, reader, wakeup,
                                          lambda: stream.due(self._snapshot)):
            yield response

    async def _read_delta(self, requests: AsyncIterator[discovery_pb2.DeltaDiscoveryRequest], stream: DeltaStream,
                          wakeup: asyncio.Event) -> None:
        try:
            async for request in requests:
                answer = stream.on_request(request)
                if answer is not None:
                    self._answered(stream.peer, answer)
                wakeup.set()
        finally:
            wakeup.set()  # lets the writer loop see that the stream ended

    def _pushed(self, type_url: str) -> float | None:
        return self._metrics.pushed(type_url) if self._metrics is not None else None

    async def StreamAggregatedResources(
        self, request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest],
        context: grpc.aio.ServicerContext[discovery_pb2.DiscoveryRequest, discovery_pb2.DiscoveryResponse],
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        stream = _Stream(peer=context.peer())
        reader = asyncio.create_task(self._read(request_iterator, stream))
        async for response in self._serve("ADS", stream.peer, reader, stream.wakeup, lambda: self._due(stream)):
            yield response

    async def _read(self, requests: AsyncIterator[discovery_pb2.DiscoveryRequest], stream: _Stream) -> None:
        try:
            async for request in requests:
                self._on_request(stream, request)
        finally:
            stream.wakeup.set()  # lets the writer loop see that the stream ended

    def _on_request(self, stream: _Stream, request: discovery_pb2.DiscoveryRequest) -> None:
        state = stream.types.setdefault(request.type_url, _TypeState())
        if request.response_nonce and request.response_nonce != state.nonce:
            log.debug("stale %s request (nonce %s, current %s) ignored", request.type_url,
                      request.response_nonce, state.nonce)
            return
        if request.response_nonce:
            self._ack_or_nack(stream, request, state)
        names = frozenset(request.resource_names)
        if not request.response_nonce or names != state.names:
            state.names, state.force = names, True
            stream.wakeup.set()

    def _ack_or_nack(self, stream: _Stream, request: discovery_pb2.DiscoveryRequest, state: _TypeState) -> None:
        nack = request.HasField("error_detail")
        # An ACK names the version Envoy now holds; a NACK the one it kept, so the rejected one is what was sent.
        version = (state.sent_version or "") if nack else request.version_info
        self._answered(stream.peer, Answer(request.type_url, version, state.sent_at, request.error_detail.message,
                                           nack))
        state.sent_at = None

    def _answered(self, peer: str, answer: Answer) -> None:
        """An ACK or NACK of either protocol: metrics, counters, logs and the callbacks."""
        if self._metrics is not None and answer.sent_at is not None:
            self._metrics.answered(answer.type_url, answer.sent_at, nack=answer.has_error)
        if answer.has_error:
            self.nacks_total += 1
            self.last_nack[answer.type_url] = answer.error
            log.error("NACK from %s for %s version %s (nacks_total=%d): %s", peer,
                      answer.type_url.rsplit(".", 1)[-1], answer.version, self.nacks_total, answer.error)
            if self._on_nack:
                self._on_nack(answer.type_url, answer.version, answer.error)
            return
        self.acked[answer.type_url] = answer.version
        log.debug("ACK from %s for %s version %s", peer, answer.type_url, answer.version)
        if self._on_ack:
            self._on_ack(answer.type_url, answer.version)

    def _due(self, stream: _Stream) -> list[discovery_pb2.DiscoveryResponse]:
        """Responses for every subscribed type whose snapshot version differs from what was sent."""
        snapshot = self._snapshot
        if snapshot is None:
            return []
        responses = []
        for type_url in PUSH_ORDER:
            state = stream.types.get(type_url)
            version = snapshot.versions[type_url]
            if state is None or (not state.force and state.sent_version == version):
                continue
            resources = snapshot.resources[type_url]
            wanted = [res for name, res in resources.items() if not state.names or name in state.names]
            state.nonce, state.sent_version, state.force = str(next(self._nonces)), version, False
            if self._metrics is not None:
                state.sent_at = self._metrics.pushed(type_url)
            responses.append(discovery_pb2.DiscoveryResponse(
                version_info=version, type_url=type_url, nonce=state.nonce, resources=wanted))
        return responses
