"""The server interceptor that measures (Prometheus) and traces (OpenTelemetry) every call a service serves."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import grpc
import grpc.aio
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from protomesh._interceptors import DEFAULT_PASS_THROUGH_PREFIXES, HandlerWrapping, _ended_early, behavior_of
from protomesh._metrics import CallMetrics, MethodMetrics, grpc_type
from protomesh._tracing import RootSampling, context_from_metadata

_Behavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Any]
_OK = grpc.StatusCode.OK
# The codes that mark a server span as failed (OpenTelemetry's gRPC conventions): the server's own fault, not
# the caller's (NOT_FOUND or INVALID_ARGUMENT are answers, not errors of the server).
SERVER_ERROR_CODES = frozenset({grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED,
                                grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.INTERNAL,
                                grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS})


class TelemetryInterceptor(HandlerWrapping):
    """Per call: grpc_server_* metrics and a SERVER span that is current while the handler runs.

    It goes before ProtomeshInterceptor, so the access log and every log line of the handler see the span, and
    the handler's calls through DiscoveryChannel become its children. Like ProtomeshInterceptor it builds the
    wrapped handler once per method (metric children bound, span attributes made) and then serves it from a
    dict, so a call costs a few counter increments and, with tracing, one span.

        server = grpc.aio.server(interceptors=[TelemetryInterceptor(metrics=..., tracer=...),
                                               ProtomeshInterceptor()])
    """

    def __init__(self, *, metrics: CallMetrics | None, tracer: Tracer | None, sampling: RootSampling | None = None,
                 pass_through_prefixes: Sequence[str] = DEFAULT_PASS_THROUGH_PREFIXES) -> None:
        self._metrics = metrics
        self._tracer = tracer
        self._sampling = sampling or RootSampling(1.0)
        self._pass_through = tuple(pass_through_prefixes)
        super().__init__()

    def wrap(self, method: str, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
        return handler if method.startswith(self._pass_through) else self._wrap(method, handler)

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
        streaming = (handler.request_streaming, handler.response_streaming)
        behavior, factory = behavior_of(handler)
        probe = _Probe(method, grpc_type(*streaming), self._metrics, self._tracer, self._sampling,
                       handler.request_streaming)
        if inspect.isasyncgenfunction(behavior):
            wrapped = _wrap_async_generator(behavior, probe)
        elif inspect.iscoroutinefunction(behavior):
            wrapped = _wrap_coroutine(behavior, probe)
        else:  # a sync handler (a method the servicer does not implement): ProtomeshInterceptor left it too
            return handler
        result: grpc.RpcMethodHandler[Any, Any] = factory(wrapped, handler.request_deserializer,
                                                          handler.response_serializer)
        return result




class _Probe:
    """What is fixed per method: its metric children, span name and attributes."""

    __slots__ = ("attributes", "metrics", "name", "sampling", "streamed", "tracer")

    def __init__(self, method: str, kind: str, metrics: CallMetrics | None, tracer: Tracer | None,
                 sampling: RootSampling, streamed: bool) -> None:
        self.metrics: MethodMetrics | None = metrics.method(method, kind) if metrics is not None else None
        self.tracer = tracer
        self.sampling = sampling
        self.streamed = streamed
        # OpenTelemetry's gRPC span name is `package.Service/Method`, without the path's leading slash.
        self.name = method.lstrip("/")
        service, _, name = self.name.partition("/")
        self.attributes: Mapping[str, str] = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}

    def begin(self, context: grpc.aio.ServicerContext[Any, Any]) -> trace.Span | None:
        if self.metrics is not None:
            self.metrics.begin()
        if self.tracer is None:
            return None
        parent = context_from_metadata(context.invocation_metadata())
        if parent is None and not self.sampling.sampled():
            # The unsampled path: no SDK span at all, only the decision, for the calls this one makes.
            span = RootSampling.unsampled_span()
        else:
            span = self.tracer.start_span(self.name, parent, kind=SpanKind.SERVER, attributes=self.attributes)
        # Not detached afterwards: grpc.aio runs each call in its own task, whose context ends with it.
        otel_context.attach(trace.set_span_in_context(span, parent))
        return span

    def end(self, span: trace.Span | None, code: grpc.StatusCode, started: float) -> None:
        if self.metrics is not None:
            self.metrics.finish(code, time.perf_counter() - started)
        if span is not None:
            if span.is_recording():
                span.set_attribute("rpc.grpc.status_code", code.value[0])
                if code in SERVER_ERROR_CODES:
                    span.set_status(Status(StatusCode.ERROR, code.name))
            span.end()

    def requests(self, request: Any) -> Any:
        """A streamed request with every message counted (grpc_server_msg_received_total)."""
        if self.metrics is None or not self.streamed:
            return request
        return _counted(request, self.metrics)


async def _counted(messages: AsyncIterator[Any], metrics: MethodMetrics) -> AsyncIterator[Any]:
    async for message in messages:
        metrics.received += 1
        yield message


def _code_after(context: grpc.aio.ServicerContext[Any, Any], error: BaseException | None) -> grpc.StatusCode:
    """The status a call ended with: what the handler (or ProtomeshInterceptor's abort) set, else how it ended."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if error is None:
        return _ended_early(context) if context.cancelled() else _OK
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        return _ended_early(context)
    return grpc.StatusCode.UNKNOWN


def _wrap_coroutine(behavior: _Behavior, probe: _Probe) -> _Behavior:
    async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        started = time.perf_counter()
        span = probe.begin(context)
        error: BaseException | None = None
        try:
            return await behavior(probe.requests(request), context)
        except BaseException as exc:  # recorded, then raised unchanged (grpc needs AbortError/CancelledError)
            error = exc
            raise
        finally:
            probe.end(span, _code_after(context, error), started)

    return handle


def _wrap_async_generator(behavior: _Behavior, probe: _Probe) -> _Behavior:
    async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        started = time.perf_counter()
        span = probe.begin(context)
        error: BaseException | None = None
        try:
            async for response in behavior(probe.requests(request), context):
                if probe.metrics is not None:
                    probe.metrics.sent += 1
                yield response
        except BaseException as exc:  # GeneratorExit too: the client went away mid-stream
            error = exc
            raise
        finally:
            probe.end(span, _code_after(context, error), started)

    return handle
