"""OpenTelemetry tracing of a service: its tracer provider, W3C trace context in and out, and ids for log lines."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterable, Mapping, MutableMapping

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

log = logging.getLogger("protomesh.tracing")

TRACEPARENT, TRACESTATE = "traceparent", "tracestate"
_CONTEXT_KEYS = (TRACEPARENT, TRACESTATE)
INSTRUMENTATION = "protomesh"
# Spans wait in memory for the exporter thread; past this many (a collector that is down) new ones are dropped,
# so a trace backend outage costs spans, never memory or a request.
MAX_QUEUED_SPANS = 2048
# One export (and its retries) gives up after this long: the exporter thread must not hang on a dead collector,
# and shutdown flushes within it.
EXPORT_TIMEOUT_S = 2.0
# Spans are sent in batches this often: few round trips, and a trace shows up in the backend within seconds.
EXPORT_DELAY_MS = 500

_PROPAGATOR = TraceContextTextMapPropagator()
# The SDK logs every failed export (twice a second while the collector is down) and every dropped span: one line of
# each kind per minute says as much without flooding a service's log.
QUIET_LOGGERS = ("opentelemetry.exporter.otlp.proto.grpc.exporter", "opentelemetry.sdk._shared_internal")
QUIET_INTERVAL_S = 60.0


class OncePerInterval(logging.Filter):
    """Passes a record only when no record of the same message template passed within the interval."""

    def __init__(self, interval_s: float = QUIET_INTERVAL_S) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._last: dict[object, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        last = self._last.get(record.msg)
        if last is not None and now - last < self.interval_s:
            return False
        self._last[record.msg] = now
        return True


def quiet_exporter_logs() -> None:
    """Install OncePerInterval on the SDK's export loggers (once per process)."""
    for name in QUIET_LOGGERS:
        target = logging.getLogger(name)
        if not any(isinstance(f, OncePerInterval) for f in target.filters):
            target.addFilter(OncePerInterval())


class RootSampling:
    """Whether a new trace (a span without a parent) is recorded: `ratio` of them, decided by protomesh itself.

    The SDK's provider follows parents and records every root it is asked to start (ParentBased(ALWAYS_ON)); the
    runtime asks only for sampled ones and gives the others a bare, non-recording span that still carries the
    "not sampled" decision downstream. That skips the SDK (ids, sampler, span object) on the unsampled path.
    """

    __slots__ = ("ratio",)

    def __init__(self, ratio: float) -> None:
        self.ratio = ratio

    def sampled(self) -> bool:
        return self.ratio >= 1.0 or (self.ratio > 0.0 and random.random() < self.ratio)

    @staticmethod
    def unsampled_span() -> trace.Span:
        return trace.NonRecordingSpan(trace.SpanContext(
            trace_id=random.getrandbits(128) or 1, span_id=random.getrandbits(64) or 1, is_remote=False,
            trace_flags=trace.TraceFlags(trace.TraceFlags.DEFAULT)))


def is_root(parent: otel_context.Context | None) -> bool:
    """Whether a span started in `parent` (None: the current context) starts a new trace."""
    return not trace.get_current_span(parent).get_span_context().is_valid


def tracer_provider(service: str, *, endpoint: str, sampling_ratio: float, instance: str = "") -> TracerProvider:
    """A provider for one service, batched OTLP/gRPC export when endpoint is set; it follows a parent's sampling
    decision, and protomesh decides new traces with RootSampling(sampling_ratio).

    Not installed globally: several services may run in one process (tests), each with its own provider.
    """
    resource = Resource.create({"service.name": service, **({"service.instance.id": instance} if instance else {})})
    provider = TracerProvider(resource=resource, sampler=ParentBased(ALWAYS_ON))
    if endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        quiet_exporter_logs()
        exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True, timeout=EXPORT_TIMEOUT_S)
        provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=MAX_QUEUED_SPANS,
                                                       schedule_delay_millis=EXPORT_DELAY_MS,
                                                       export_timeout_millis=int(EXPORT_TIMEOUT_S * 1000)))
        log.info("exporting %s spans to %s (OTLP/gRPC, sampling %.0f%% of new traces)", service, endpoint,
                 sampling_ratio * 100)
    return provider


def context_from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> otel_context.Context | None:
    """The caller's trace context from gRPC metadata; None without a traceparent (a new trace starts).

    An invalid traceparent yields an empty context, which also starts a new trace: never an error.
    """
    carrier: dict[str, str] | None = None
    for key, value in metadata or ():
        if key in _CONTEXT_KEYS and isinstance(value, str):
            if carrier is None:
                carrier = {}
            carrier[key] = value
    return None if carrier is None else _PROPAGATOR.extract(carrier)


def context_from_headers(headers: Mapping[str, object]) -> otel_context.Context | None:
    """The trace context carried in message headers (AMQP), like context_from_metadata."""
    parent = headers.get(TRACEPARENT)
    if not isinstance(parent, str):
        return None
    state = headers.get(TRACESTATE)
    carrier = {TRACEPARENT: parent, **({TRACESTATE: state} if isinstance(state, str) else {})}
    return _PROPAGATOR.extract(carrier)


def inject(carrier: MutableMapping[str, str], context: otel_context.Context | None = None) -> None:
    """Write the (current) span's context into carrier as traceparent/tracestate."""
    _PROPAGATOR.inject(carrier, context=context)


def current_traceparent() -> str:
    """The traceparent of the current span ("" outside one): what an outbox row keeps for its relay."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get(TRACEPARENT, "")


def log_ids() -> tuple[str, str] | None:
    """(trace_id, span_id) in hex of the current span, for log lines; None outside a valid span."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None
    return f"{span_context.trace_id:032x}", f"{span_context.span_id:016x}"
