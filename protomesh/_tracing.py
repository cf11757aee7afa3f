"""OpenTelemetry tracing of a service: its tracer provider, W3C trace context in and out, and ids for log lines."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, MutableMapping

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
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


def tracer_provider(service: str, *, endpoint: str, sampling_ratio: float, instance: str = "") -> TracerProvider:
    """A provider for one service: ParentBased(ratio) sampling, batched OTLP/gRPC export when endpoint is set.

    Not installed globally: several services may run in one process (tests), each with its own provider.
    """
    resource = Resource.create({"service.name": service, **({"service.instance.id": instance} if instance else {})})
    provider = TracerProvider(resource=resource, sampler=ParentBased(TraceIdRatioBased(sampling_ratio)))
    if endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

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
