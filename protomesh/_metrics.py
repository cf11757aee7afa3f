"""Prometheus metrics of a service process: gRPC calls served and made, events, the outbox, and /metrics."""

from __future__ import annotations

import bisect
import functools
import logging
import math
import threading
from collections.abc import Callable, Iterator
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger("protomesh.metrics")

# Call latency buckets from 100 µs: a local unary call takes a few hundred µs, and the grpc ecosystem's
# default buckets (from 5 ms) would put every call of this mesh in the first one.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0)
CALL_LABELS = ("grpc_type", "grpc_service", "grpc_method")
# go-grpc-prometheus writes codes as Go's codes.Code names ("NotFound", "Canceled"); dashboards match them.
GO_CODE_NAMES: dict[grpc.StatusCode, str] = {
    code: "".join(part.capitalize() for part in code.name.split("_")) for code in grpc.StatusCode}
GO_CODE_NAMES[grpc.StatusCode.OK] = "OK"
GO_CODE_NAMES[grpc.StatusCode.CANCELLED] = "Canceled"
UNARY, CLIENT_STREAM, SERVER_STREAM, BIDI_STREAM = "unary", "client_stream", "server_stream", "bidi_stream"


def grpc_type(request_streaming: bool, response_streaming: bool) -> str:
    """The grpc_type label of a method: unary, client_stream, server_stream or bidi_stream."""
    if request_streaming:
        return BIDI_STREAM if response_streaming else CLIENT_STREAM
    return SERVER_STREAM if response_streaming else UNARY


class CallMetrics(Collector):
    """The grpc_{server,client}_* families of go-grpc-prometheus, plus in-flight calls, on one registry.

    A call only adds to plain numbers of its method (MethodMetrics, made once per method): no lock, no label lookup.
    The families are built from those numbers when Prometheus scrapes, on the /metrics thread; reading a number
    another thread is adding to is safe under the GIL, and a scrape at worst misses the call being counted.
    """

    def __init__(self, side: str, registry: CollectorRegistry) -> None:
        self.side = side
        self._what = "served by this process" if side == "server" else "made by this process"
        self._methods: dict[str, MethodMetrics] = {}
        registry.register(self)

    def method(self, full_method: str, kind: str) -> MethodMetrics:
        """The numbers of one method (`/pkg.Service/Method`), made on its first call."""
        found = self._methods.get(full_method)
        if found is None:
            service, _, name = full_method.lstrip("/").partition("/")
            found = self._methods[full_method] = MethodMetrics(kind, service, name)
        return found

    def describe(self) -> list[Metric]:
        return []  # families are only known once methods were called: nothing to check against at registration

    def collect(self) -> Iterator[Metric]:
        side, what = self.side, self._what
        started = CounterMetricFamily(f"grpc_{side}_started", f"RPCs {what}, started", labels=CALL_LABELS)
        handled = CounterMetricFamily(f"grpc_{side}_handled", f"RPCs {what}, completed, by status code",
                                      labels=(*CALL_LABELS, "grpc_code"))
        handling = HistogramMetricFamily(f"grpc_{side}_handling_seconds", f"Latency of RPCs {what}",
                                         labels=CALL_LABELS)
        received = CounterMetricFamily(f"grpc_{side}_msg_received", "Stream messages received", labels=CALL_LABELS)
        sent = CounterMetricFamily(f"grpc_{side}_msg_sent", "Stream messages sent", labels=CALL_LABELS)
        in_flight = GaugeMetricFamily(f"grpc_{side}_in_flight", f"RPCs {what}, still running",
                                      labels=CALL_LABELS[1:])
        for bound in list(self._methods.values()):
            labels = list(bound.labels)
            started.add_metric(labels, bound.started)
            for code, count in list(bound.codes.items()):
                handled.add_metric([*labels, GO_CODE_NAMES[code]], count)
            counts = list(bound.buckets)
            cumulative, buckets = 0, []
            for upper, count in zip((*LATENCY_BUCKETS, math.inf), counts, strict=True):
                cumulative += count
                buckets.append(("+Inf" if upper == math.inf else repr(upper), cumulative))
            handling.add_metric(labels, buckets, bound.seconds)
            if bound.streaming:
                received.add_metric(labels, bound.received)
                sent.add_metric(labels, bound.sent)
            in_flight.add_metric(labels[1:], bound.in_flight)
        yield from (started, handled, handling, received, sent, in_flight)


class MethodMetrics:
    """One method's numbers; a call adds to them (`finish(code, seconds)` once it ended)."""

    __slots__ = ("buckets", "codes", "in_flight", "labels", "received", "seconds", "sent", "started", "streaming")

    def __init__(self, kind: str, service: str, method: str) -> None:
        self.labels = (kind, service, method)
        # go-grpc-prometheus counts messages of every call; here only streams count them (a unary call is one
        # each way, which grpc_*_handled_total already says).
        self.streaming = kind != UNARY
        self.started = self.in_flight = self.received = self.sent = 0
        self.codes: dict[grpc.StatusCode, int] = {}
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)   # the last one: above the largest bound
        self.seconds = 0.0

    def begin(self) -> None:
        self.started += 1
        self.in_flight += 1

    def finish(self, code: grpc.StatusCode, seconds: float) -> None:
        self.in_flight -= 1
        self.codes[code] = self.codes.get(code, 0) + 1
        self.buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.seconds += seconds


class EventMetrics:
    """protomesh_events_*: what publishers, consumer groups and outbox relays of this process did."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.published = Counter("protomesh_events_published_total", "Events sent to the broker",
                                 ("event_type",), registry=registry)
        self.confirmed = Counter("protomesh_events_confirmed_total", "Events the broker confirmed",
                                 ("event_type",), registry=registry)
        self.publish_failed = Counter("protomesh_events_publish_failures_total",
                                      "Publishes that failed (broker down, refused, unconfirmed or unroutable)",
                                      ("event_type",), registry=registry)
        self.consumed = Counter("protomesh_events_consumed_total", "Events a handler processed and acked",
                                ("group", "event_type"), registry=registry)
        self.redelivered = Counter("protomesh_events_redelivered_total",
                                   "Deliveries of events the broker had delivered before", ("group", "event_type"),
                                   registry=registry)
        self.failed = Counter("protomesh_events_handler_failures_total", "Handler runs that raised (retried)",
                              ("group", "event_type"), registry=registry)
        self.dead_lettered = Counter("protomesh_events_dead_lettered_total",
                                     "Events sent to the group's dead-letter queue",
                                     ("group", "event_type", "reason"), registry=registry)
        self.handling = Histogram("protomesh_events_handling_seconds", "Event handler latency",
                                  ("group", "event_type"), buckets=LATENCY_BUCKETS, registry=registry)
        self.outbox_backlog = Gauge("protomesh_outbox_backlog", "Outbox events not yet confirmed by the broker",
                                    registry=registry)
        self.outbox_oldest_age = Gauge("protomesh_outbox_oldest_unpublished_age_seconds",
                                       "Age of the oldest outbox event not yet published (0 when none)",
                                       registry=registry)


class ProcessMetrics:
    """Every family of a process, on the registry that also holds Python's runtime and process collectors."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.server = CallMetrics("server", registry)
        self.client = CallMetrics("client", registry)
        self.events = EventMetrics(registry)


@functools.cache
def process_metrics() -> ProcessMetrics:
    """The process's metrics, made on first use on prometheus_client's default registry (which carries the
    process_* and python_* collectors): families are per process, so several services in one process (tests)
    share them."""
    return ProcessMetrics(REGISTRY)


def serve_metrics(host: str, port: int, registry: CollectorRegistry = REGISTRY) -> tuple[int, Callable[[], None]]:
    """/metrics (Prometheus text) on host:port from a thread (0 = a free port): the bound port, and its stop."""
    server: WSGIServer
    thread: threading.Thread
    server, thread = start_http_server(port, addr=host, registry=registry)
    bound = int(server.server_address[1])
    log.info("metrics on http://%s:%d/metrics", host, bound)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return bound, stop
