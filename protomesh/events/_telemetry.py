"""Spans and metrics of events: PRODUCER at publish (context in the message headers), CONSUMER at process."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiormq import spec
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from protomesh._metrics import EventMetrics
from protomesh._tracing import RootSampling, context_from_headers, current_traceparent, inject, is_root

if TYPE_CHECKING:
    from protomesh._observability import Observability

MESSAGING_SYSTEM = "rabbitmq"


def current_trace_parent() -> str:
    """The traceparent of the call being served ("" outside a traced call).

    An outbox stores it with the event, so that the relay, which publishes later from a task of its own,
    publishes it inside the trace of the request that committed it:

        await conn.execute("INSERT INTO outbox_trace (seq, trace_parent) VALUES (?, ?)",
                           (seq, current_trace_parent()))
    """
    return current_traceparent()


@dataclass
class PublishOutcome:
    """What happened to one publish, filled in by the publisher inside EventTelemetry.publishing()."""

    confirmed: bool = False
    dropped: bool = False


@dataclass(frozen=True)
class EventTelemetry:
    """The tracer and event metrics a publisher or subscriber reports to (either may be absent: off)."""

    tracer: trace.Tracer | None = None
    metrics: EventMetrics | None = None
    sampling: RootSampling = field(default_factory=lambda: RootSampling(1.0))

    @classmethod
    def of(cls, observability: Observability | None) -> EventTelemetry:
        if observability is None:
            return cls()
        return cls(observability.tracer, observability.event_metrics, observability.sampling)

    @contextmanager
    def publishing(self, exchange: str, event_type: str, properties: spec.Basic.Properties,
                   trace_parent: str = "") -> Iterator[PublishOutcome]:
        """A PRODUCER span around one publish whose context travels in the message's headers.

        trace_parent (an outbox row's) is the parent; else the current span is.
        """
        outcome = PublishOutcome()
        if self.metrics is not None:
            self.metrics.published.labels(event_type).inc()
        span = None
        parent = context_from_headers({"traceparent": trace_parent}) if trace_parent else None
        if self.tracer is not None and (not is_root(parent) or self.sampling.sampled()):
            span = self.tracer.start_span(f"publish {exchange}", parent, kind=SpanKind.PRODUCER, attributes={
                "messaging.system": MESSAGING_SYSTEM, "messaging.destination.name": exchange,
                "messaging.operation": "publish", "messaging.rabbitmq.destination.routing_key": event_type,
                "messaging.message.id": properties.message_id or ""})
            headers: dict[str, str] = {}
            inject(headers, trace.set_span_in_context(span))
            properties.headers = {**(properties.headers or {}), **headers}
        try:
            yield outcome
        except BaseException as error:
            self._failed(event_type, span, error)
            raise
        else:
            if outcome.dropped:
                self._failed(event_type, span, None)
        finally:
            if outcome.confirmed and self.metrics is not None:
                self.metrics.confirmed.labels(event_type).inc()
            if span is not None:
                span.end()

    def _failed(self, event_type: str, span: trace.Span | None, error: BaseException | None) -> None:
        if self.metrics is not None:
            self.metrics.publish_failed.labels(event_type).inc()
        if span is not None:
            span.set_status(Status(StatusCode.ERROR, type(error).__name__ if error else "unroutable"))

    @contextmanager
    def consuming(self, group: str, queue: str, event_type: str, message_id: str, headers: dict[str, object],
                  redelivered: bool) -> Iterator[None]:
        """A CONSUMER span for processing one message: a child of the context the message carries, and linked
        to it (the conventions' single-message form), current while the handler runs."""
        started = time.perf_counter()
        if self.metrics is not None and redelivered:
            self.metrics.redelivered.labels(group, event_type).inc()
        span = token = None
        parent = context_from_headers(headers)
        if self.tracer is not None and (parent is not None or self.sampling.sampled()):
            producer = trace.get_current_span(parent).get_span_context() if parent is not None else None
            links = [Link(producer)] if producer is not None and producer.is_valid else []
            span = self.tracer.start_span(f"process {queue}", parent, kind=SpanKind.CONSUMER, links=links, attributes={
                "messaging.system": MESSAGING_SYSTEM, "messaging.destination.name": queue,
                "messaging.operation": "process", "messaging.consumer.group.name": group,
                "messaging.rabbitmq.destination.routing_key": event_type, "messaging.message.id": message_id})
            token = otel_context.attach(trace.set_span_in_context(span, parent))
        try:
            yield
        except BaseException as error:
            if self.metrics is not None:
                self.metrics.failed.labels(group, event_type).inc()
            if span is not None:
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            raise
        else:
            if self.metrics is not None:
                self.metrics.consumed.labels(group, event_type).inc()
        finally:
            if self.metrics is not None:
                self.metrics.handling.labels(group, event_type).observe(time.perf_counter() - started)
            if span is not None:
                span.end()
            if token is not None:
                otel_context.detach(token)

    def dead_lettered(self, group: str, event_type: str, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.dead_lettered.labels(group, event_type, reason).inc()

    def outbox(self, backlog: int, oldest_age_s: float) -> None:
        if self.metrics is not None:
            self.metrics.outbox_backlog.set(backlog)
            self.metrics.outbox_oldest_age.set(oldest_age_s)
