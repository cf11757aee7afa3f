"""Prometheus metrics of a service process: gRPC calls served and made, events, the outbox, and /metrics."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, start_http_server

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


class CallMetrics:
    """The grpc_{server,client}_* families of go-grpc-prometheus, plus in-flight calls, on one registry."""

    def __init__(self, side: str, registry: CollectorRegistry) -> None:
        what = "served by this process" if side == "server" else "made by this process"
        self.started = Counter(f"grpc_{side}_started_total", f"RPCs {what}, started", CALL_LABELS,
                               registry=registry)
        self.handled = Counter(f"grpc_{side}_handled_total", f"RPCs {what}, completed, by status code",
                               (*CALL_LABELS, "grpc_code"), registry=registry)
        self.handling = Histogram(f"grpc_{side}_handling_seconds", f"Latency of RPCs {what}", CALL_LABELS,
                                  buckets=LATENCY_BUCKETS, registry=registry)
        self.received = Counter(f"grpc_{side}_msg_received_total", "Stream messages received", CALL_LABELS,
                                registry=registry)
        self.sent = Counter(f"grpc_{side}_msg_sent_total", "Stream messages sent", CALL_LABELS, registry=registry)
        self.in_flight = Gauge(f"grpc_{side}_in_flight", f"RPCs {what}, still running", CALL_LABELS[1:],
                               registry=registry)
        self._methods: dict[str, MethodMetrics] = {}

    def method(self, full_method: str, kind: str) -> MethodMetrics:
        """The label children of one method (`/pkg.Service/Method`), made once: a call only increments."""
        found = self._methods.get(full_method)
        if found is None:
            service, _, name = full_method.lstrip("/").partition("/")
            found = self._methods[full_method] = MethodMetrics(self, kind, service, name)
        return found


class MethodMetrics:
    """One method's prebound children; `handled(code)` binds a code's child on its first use."""

    __slots__ = ("_codes", "_family", "_labels", "handling", "in_flight", "received", "sent", "started")

    def __init__(self, family: CallMetrics, kind: str, service: str, method: str) -> None:
        self._family = family
        self._labels = (kind, service, method)
        self.started = family.started.labels(*self._labels)
        self.handling = family.handling.labels(*self._labels)
        self.received = family.received.labels(*self._labels)
        self.sent = family.sent.labels(*self._labels)
        self.in_flight = family.in_flight.labels(service, method)
        self._codes: dict[grpc.StatusCode, Counter] = {}

    def handled(self, code: grpc.StatusCode) -> Counter:
        child = self._codes.get(code)
        if child is None:
            child = self._codes[code] = self._family.handled.labels(*self._labels, GO_CODE_NAMES[code])
        return child


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
