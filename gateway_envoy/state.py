"""The control plane's state: inputs (catalog, descriptor), the snapshot built from them, and ACK/NACK outcomes."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway_envoy.ads import AdsServer
from gateway_envoy.catalog import ConsulService, merge_last_known_good, package_owner
from gateway_envoy.descriptor import Descriptor
from gateway_envoy.metrics import ControlPlaneMetrics
from gateway_envoy.options import GatewayOptions
from gateway_envoy.pushes import PushLog
from gateway_envoy.snapshot import ROUTE_TYPE, EdgeInputs, Snapshot, build_snapshot, transcoded_services

log = logging.getLogger("gateway_envoy.state")

# A change goes out at once; the changes that arrive within this window after a push go out together in the
# next one: a dev-agent restart re-registers every instance in a burst, and becomes a push per window at most.
COALESCE_S = 0.02
# Route table builds remembered to match late ACKs/NACKs to the descriptor they carried.
MAX_REMEMBERED_BUILDS = 16


@dataclass(frozen=True)
class _Build:
    descriptor: Descriptor
    transcoded: tuple[str, ...]


class ControlPlane:
    """Rebuilds the snapshot when an input changes and publishes it to the ADS server.

    The descriptor used is the newest one unless Envoy rejected the route table built from it; then the last
    accepted descriptor keeps serving until the file changes again.
    """

    def __init__(self, options: GatewayOptions, descriptor: Descriptor, edge: EdgeInputs | None = None) -> None:
        self.options = options
        self.metrics = ControlPlaneMetrics()
        self.edge = edge or EdgeInputs()
        self.ads = AdsServer(on_ack=self.on_ack, on_nack=self.on_nack, metrics=self.metrics)
        self.candidate = descriptor
        self.accepted: _Build | None = None
        self.rejected: set[str] = set()
        self.raw_catalog: Mapping[str, ConsulService] = {}
        self.catalog: dict[str, ConsulService] = {}
        self.snapshot: Snapshot | None = None
        # Every gRPC service an instance announced since this control plane started: the mesh expects it back.
        self.announced: set[str] = set()
        self._builds: dict[str, _Build] = {}
        # Called with each descriptor Envoy starts serving (reflection answers from it).
        self.on_accepted: list[Callable[[Descriptor], None]] = []
        self._dirty = asyncio.Event()
        self.pushes = PushLog()
        self.metrics.follow(envoys=lambda: self.ads.streams, services=lambda: len(self.catalog),
                            endpoints=lambda: sum(len(svc.endpoints) for svc in self.catalog.values()))

    def _descriptor(self) -> Descriptor:
        if self.candidate.digest in self.rejected and self.accepted is not None:
            return self.accepted.descriptor
        return self.candidate

    def rebuild(self) -> None:
        """Merge the catalog with last-known-good, build, and publish when anything changed."""
        self.catalog = merge_last_known_good(self.catalog, self.raw_catalog)
        descriptor = self._descriptor()
        previous = self.accepted.transcoded if self.accepted else ()
        transcoded = transcoded_services(descriptor, self.catalog, previous)
        self.announced.update(s for service in self.catalog.values() for s in service.grpc_services)
        expected = {s for s in descriptor.services
                    if s in self.announced or package_owner(s) in self.options.expected_services}
        snapshot = build_snapshot(self.catalog, descriptor, transcoded, self.options, self.snapshot, expected,
                                  self.edge)
        self._remember(snapshot.versions[ROUTE_TYPE], _Build(descriptor, transcoded))
        if self.snapshot is None or snapshot.versions != self.snapshot.versions:
            log.info("snapshot %s: %d cluster(s), descriptor %s, %d transcoded service(s)", snapshot.version,
                     len(self.catalog), descriptor.digest, len(transcoded))
            self.pushes.published(self.snapshot, snapshot)
            self.snapshot = snapshot
            self.metrics.served(snapshot.version)
            self.ads.publish(snapshot)
        else:
            self.pushes.unchanged()

    def _remember(self, route_version: str, build: _Build) -> None:
        self._builds.pop(route_version, None)  # re-inserted last: the newest builds are the ones kept
        self._builds[route_version] = build
        while len(self._builds) > MAX_REMEMBERED_BUILDS:
            del self._builds[next(iter(self._builds))]

    def set_catalog(self, catalog: Mapping[str, ConsulService], *, caused_at: float | None = None,
                    index: int | None = None) -> None:
        """New raw Consul state (from the answer that arrived at `caused_at`, time.time(), with X-Consul-Index
        `index`); the coalescer pushes it (see run_coalescer)."""
        self.raw_catalog = dict(catalog)
        if caused_at is not None:
            self.pushes.caused(caused_at, index=index)
        self._dirty.set()

    def set_edge(self, **changes: Any) -> None:
        """New edge inputs (certificates, JWKS, policy: EdgeInputs' fields), pushed by the coalescer."""
        self.edge = dataclasses.replace(self.edge, **changes)
        self._dirty.set()

    async def set_descriptor(self, descriptor: Descriptor) -> None:
        self.candidate = descriptor
        self.rebuild()

    async def run_coalescer(self) -> None:
        """Push each change at once, then gather what arrives during COALESCE_S into the next push."""
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            self.rebuild()
            await asyncio.sleep(COALESCE_S)

    def on_ack(self, type_url: str, version: str) -> None:
        self.pushes.acked(type_url, version)
        build = self._builds.get(version)
        if type_url == ROUTE_TYPE and build is not None and build != self.accepted:
            previous, self.accepted = self.accepted, build
            log.info("Envoy accepted the routes of descriptor %s", build.descriptor.digest)
            if previous is None or previous.descriptor != build.descriptor:
                for callback in self.on_accepted:
                    callback(build.descriptor)

    def on_nack(self, type_url: str, version: str, message: str) -> None:
        build = self._builds.get(version)
        if type_url != ROUTE_TYPE or build is None or build.descriptor.digest in self.rejected:
            return
        self.rejected.add(build.descriptor.digest)
        kept = self.accepted.descriptor.digest if self.accepted else "none"
        log.error("descriptor %s rejected by Envoy; keeping descriptor %s until the file changes",
                  build.descriptor.digest, kept)
        self.rebuild()

    def status(self) -> dict[str, object]:
        """What `protomesh status` and tests read from the status endpoint."""
        return {
            "ready": self.snapshot is not None,
            "version": self.snapshot.version if self.snapshot else None,
            "streams": self.ads.streams,
            "nacks_total": self.ads.nacks_total,
            "last_nack": self.ads.last_nack,
            "descriptor": {"candidate": self.candidate.digest, "rejected": sorted(self.rejected),
                           "accepted": self.accepted.descriptor.digest if self.accepted else None},
            "transcoded": list(self.snapshot.transcoded) if self.snapshot else [],
            "security": {"edge_tls": self.options.edge_tls, "mesh_tls": self.options.mesh_tls,
                         "tokens": self.options.jwt is not None,
                         "policy": {"rules": len(self.edge.policy.rules),
                                    "rate_limits": len(self.edge.policy.rate_limits)}},
            "pushes": self.pushes.recent(),
            "services": {name: {"grpc_services": list(svc.grpc_services),
                                "endpoints": [f"{e.address}:{e.port}" for e in svc.endpoints]}
                         for name, svc in sorted(self.catalog.items())},
        }
