"""One incremental (delta) ADS stream: what Envoy subscribed to and holds, and the responses that bring it up to date.

In the state-of-the-world protocol every push of a type carries all its resources: one instance more at 1,000
services sends 1,000 load assignments, and Envoy re-applies each (tens of milliseconds). The delta protocol
sends only the resources whose version differs from what this Envoy holds, and the names it must drop.
A resource's version is its content digest (Snapshot.digests), so a reconnecting Envoy that reports the
versions it holds (initial_resource_versions) is sent nothing it already has.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from envoy.service.discovery.v3 import discovery_pb2

from gateway_envoy.snapshot import PUSH_ORDER, Snapshot

# Subscribing to this name means "every resource of the type" (the xDS protocol's explicit wildcard).
WILDCARD = "*"
# Responses per type awaiting Envoy's answer; Envoy answers each, so more only means a lost answer.
MAX_WAITING = 64


@dataclass
class _TypeState:
    """What one Envoy subscribed to of one type, the versions it holds (or was sent), and unanswered responses."""

    wildcard: bool = False
    names: set[str] = field(default_factory=set)
    known: dict[str, str] = field(default_factory=dict)  # name -> version sent (a NACKed one is not sent again)
    force: bool = True                                   # a new subscription is answered even if nothing is new
    current: str | None = None                           # the type version this stream was brought up to
    waiting: dict[str, tuple[str, float | None]] = field(default_factory=dict)  # nonce -> (type version, sent at)


@dataclass(frozen=True)
class Answer:
    """Envoy's reply to one response: an ACK, or a NACK (has_error) with Envoy's message."""

    type_url: str
    version: str
    sent_at: float | None
    error: str
    has_error: bool


class DeltaStream:
    """The server's side of one DeltaAggregatedResources stream; `pushed` stamps each response sent (metrics)."""

    def __init__(self, peer: str, pushed: Callable[[str], float | None], nonces: Callable[[], str]) -> None:
        self.peer = peer
        self.types: dict[str, _TypeState] = {}
        self._pushed = pushed
        self._nonces = nonces

    def on_request(self, request: discovery_pb2.DeltaDiscoveryRequest) -> Answer | None:
        """Apply a request's subscription changes; returns the ACK/NACK it carries, if it answers a response."""
        new = request.type_url not in self.types
        state = self.types.setdefault(request.type_url, _TypeState())
        subscribe = set(request.resource_names_subscribe)
        if new and not subscribe:  # the legacy wildcard: a first request naming nothing (CDS, LDS)
            state.wildcard = True
        if WILDCARD in subscribe:
            state.wildcard = True
        added = subscribe - {WILDCARD} - state.names
        state.names |= added
        for name in request.resource_names_unsubscribe:
            if name == WILDCARD:
                state.wildcard = False
            else:
                state.names.discard(name)
                state.known.pop(name, None)
        if new:
            state.known.update(request.initial_resource_versions)
        if new or added or WILDCARD in subscribe:
            state.force = True
        if state.force or request.resource_names_unsubscribe:
            state.current = None  # the subscription changed: compare every resource again
        if not request.response_nonce:
            return None
        sent = state.waiting.pop(request.response_nonce, None)
        if sent is None:  # an answer to a response this stream no longer tracks
            return None
        return Answer(request.type_url, sent[0], sent[1], request.error_detail.message,
                      request.HasField("error_detail"))

    def due(self, snapshot: Snapshot | None) -> list[discovery_pb2.DeltaDiscoveryResponse]:
        """Responses, in push order, for every type where this Envoy lacks a resource version or holds a removed one."""
        if snapshot is None:
            return []
        responses = []
        for type_url in PUSH_ORDER:
            state = self.types.get(type_url)
            if state is not None and (response := self._response(type_url, state, snapshot)) is not None:
                responses.append(response)
        return responses

    def _response(self, type_url: str, state: _TypeState,
                  snapshot: Snapshot) -> discovery_pb2.DeltaDiscoveryResponse | None:
        if not state.force and state.current == snapshot.versions[type_url]:
            return None  # an ACK or a push of other types: nothing of this type changed (no 1,000-name walk)
        state.current = snapshot.versions[type_url]
        resources = snapshot.resources[type_url]
        wanted = resources.keys() if state.wildcard else state.names & resources.keys()
        updates = []
        for name in sorted(wanted):
            version = snapshot.digests[type_url, name].hex()
            if state.known.get(name) != version:
                updates.append(discovery_pb2.Resource(name=name, version=version, resource=resources[name]))
                state.known[name] = version
        removed = sorted(name for name in state.known if name not in resources)
        for name in removed:
            del state.known[name]
        if not (updates or removed or state.force):
            return None
        state.force = False
        nonce = self._nonces()
        state.waiting[nonce] = (snapshot.versions[type_url], self._pushed(type_url))
        while len(state.waiting) > MAX_WAITING:
            del state.waiting[next(iter(state.waiting))]
        return discovery_pb2.DeltaDiscoveryResponse(system_version_info=snapshot.versions[type_url],
                                                    type_url=type_url, nonce=nonce, resources=updates,
                                                    removed_resources=removed)
