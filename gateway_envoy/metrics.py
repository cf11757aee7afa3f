"""The control plane's Prometheus metrics: snapshot version, pushes and their latency to the ACK, NACKs, Envoys."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

# From a millisecond (a push on loopback) to the seconds a loaded Envoy can take to apply a large update.
PUSH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def short_type(type_url: str) -> str:
    """`type.googleapis.com/envoy.config.cluster.v3.Cluster` -> `Cluster`: a short, bounded label value."""
    return type_url.rsplit(".", 1)[-1]


class ControlPlaneMetrics:
    """One registry per control plane (tests run several in one process), with the process collectors."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        self.snapshot = Gauge("protomesh_xds_snapshot_info", "The snapshot being served (its content-hash version)",
                              ("version",), registry=registry)
        self.snapshots = Counter("protomesh_xds_snapshots_total", "Snapshots built that differed from the last",
                                 registry=registry)
        self.pushes = Counter("protomesh_xds_pushes_total", "xDS responses sent to Envoys", ("type",),
                              registry=registry)
        self.push_latency = Histogram("protomesh_xds_push_seconds", "From a response sent to Envoy's ACK or NACK",
                                      ("type",), buckets=PUSH_BUCKETS, registry=registry)
        self.nacks = Counter("protomesh_xds_nacks_total", "Responses Envoy rejected", ("type",), registry=registry)
        self.envoys = Gauge("protomesh_xds_connected_envoys", "Open ADS streams", registry=registry)
        self.services = Gauge("protomesh_xds_watched_services", "Consul services with gRPC routes", registry=registry)
        self.endpoints = Gauge("protomesh_xds_endpoints", "Passing endpoints across the watched services",
                               registry=registry)

    def follow(self, *, envoys: Callable[[], int], services: Callable[[], int], endpoints: Callable[[], int]) -> None:
        """Gauges read at scrape time from the control plane's state."""
        self.envoys.set_function(envoys)
        self.services.set_function(services)
        self.endpoints.set_function(endpoints)

    def served(self, version: str) -> None:
        self.snapshot.clear()
        self.snapshot.labels(version).set(1)
        self.snapshots.inc()

    def pushed(self, type_url: str) -> float:
        """Count a push; returns when it was sent, for answered()."""
        self.pushes.labels(short_type(type_url)).inc()
        return time.monotonic()

    def answered(self, type_url: str, sent_at: float, *, nack: bool) -> None:
        self.push_latency.labels(short_type(type_url)).observe(time.monotonic() - sent_at)
        if nack:
            self.nacks.labels(short_type(type_url)).inc()

    def text(self) -> bytes:
        return generate_latest(self.registry)
