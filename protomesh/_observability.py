"""A service's observability, built from its settings: /metrics, its tracer, and the interceptors that use them."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import grpc
import grpc.aio
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from protomesh._authz import CallGuard
from protomesh._interceptors import ProtomeshInterceptor
from protomesh._metrics import CallMetrics, EventMetrics, MethodMetrics, grpc_type, process_metrics, serve_metrics
from protomesh._settings import ObservabilitySettings
from protomesh._telemetry import TelemetryInterceptor
from protomesh._tracing import INSTRUMENTATION, RootSampling, tracer_provider

log = logging.getLogger("protomesh.observability")


class Observability:
    """What one service instance measures and traces, per its `observability` settings.

        observability = Observability("users", settings.observability)
        port = observability.start_metrics("127.0.0.1")          # registered in Consul as meta metrics_port
        server = Server(settings.server, bindings, interceptors=observability.server_interceptors())
        ...
        await observability.close()                              # flushes spans, stops /metrics
    """

    def __init__(self, service: str, settings: ObservabilitySettings, *, instance: str = "") -> None:
        self.service = service
        self.settings = settings
        metrics = process_metrics() if settings.metrics else None
        self.server_metrics: CallMetrics | None = metrics.server if metrics else None
        self.client_metrics: CallMetrics | None = metrics.client if metrics else None
        self.event_metrics: EventMetrics | None = metrics.events if metrics else None
        self.provider: TracerProvider | None = None
        if settings.tracing:
            self.provider = tracer_provider(service, endpoint=settings.tracing_endpoint,
                                            sampling_ratio=settings.sampling_ratio, instance=instance)
        self.tracer: trace.Tracer | None = self.provider.get_tracer(INSTRUMENTATION) if self.provider else None
        self.sampling = RootSampling(settings.sampling_ratio)
        self.metrics_port = 0
        self._stop_metrics: Callable[[], None] | None = None

    def start_metrics(self, host: str) -> int:
        """Serve /metrics on host (port: settings.metrics_port, 0 = free); the bound port (0 = metrics off)."""
        if self.settings.metrics and self._stop_metrics is None:
            self.metrics_port, self._stop_metrics = serve_metrics(host, self.settings.metrics_port)
        return self.metrics_port

    def server_interceptors(self, guard: CallGuard | None = None) -> list[grpc.aio.ServerInterceptor]:
        """The server's interceptors: telemetry outside (denied calls are counted and traced too), then
        ProtomeshInterceptor, innermost (see its docstring), with the call guard that authorizes each call."""
        if self.server_metrics is None and self.tracer is None:
            return [ProtomeshInterceptor(guard=guard)]
        return [TelemetryInterceptor(metrics=self.server_metrics, tracer=self.tracer, sampling=self.sampling),
                ProtomeshInterceptor(guard=guard)]

    def client_interceptors(self) -> list[grpc.aio.ClientInterceptor]:
        """For DiscoveryChannel's per-instance channels: grpc_client_* metrics, then OpenTelemetry's CLIENT spans
        (opentelemetry-instrumentation-grpc), which inject the trace context into the call's metadata."""
        interceptors: list[grpc.aio.ClientInterceptor] = []
        if self.client_metrics is not None:
            interceptors += client_metrics_interceptors(self.client_metrics)
        if self.provider is not None:
            from opentelemetry.instrumentation.grpc import aio_client_interceptors

            interceptors += aio_client_interceptors(  # type: ignore[no-untyped-call]  # the package has no hints
                tracer_provider=self.provider, request_hook=_span_name)
        return interceptors

    async def close(self) -> None:
        """Stop /metrics and flush what spans are queued (bounded by the export timeout)."""
        if self._stop_metrics is not None:
            await asyncio.to_thread(self._stop_metrics)
            self._stop_metrics = None
        if self.provider is not None:
            await asyncio.to_thread(self.provider.shutdown)


def _span_name(span: trace.Span, _request: object) -> None:
    # The instrumentation names client spans after the path ("/pkg.Service/Method"); OpenTelemetry's gRPC
    # conventions, and the server spans, use `pkg.Service/Method`.
    name = getattr(span, "name", "")
    if isinstance(name, str) and name.startswith("/"):
        span.update_name(name[1:])


class _ClientMetrics:
    """Records one call made through a channel: started, then handled/latency once its status is known."""

    def __init__(self, metrics: CallMetrics, request_streaming: bool, response_streaming: bool) -> None:
        self._metrics = metrics
        self._kind = grpc_type(request_streaming, response_streaming)

    def _method(self, details: grpc.aio.ClientCallDetails) -> MethodMetrics:
        method = details.method.decode() if isinstance(details.method, bytes) else str(details.method)
        return self._metrics.method(method, self._kind)

    def _finish(self, bound: MethodMetrics, started: float, code: grpc.StatusCode) -> None:
        bound.finish(code, time.perf_counter() - started)


class _UnaryUnaryMetrics(_ClientMetrics, grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, metrics: CallMetrics) -> None:
        super().__init__(metrics, False, False)

    async def intercept_unary_unary(self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails,
                                    request: Any) -> Any:
        bound = self._method(client_call_details)
        bound.begin()
        started = time.perf_counter()
        code = grpc.StatusCode.UNKNOWN
        try:
            call = await continuation(client_call_details, request)
            code = await call.code()
            return call
        except grpc.aio.AioRpcError as error:
            code = error.code()
            raise
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            self._finish(bound, started, code)


class _StreamingMetrics(_ClientMetrics):
    """Streaming calls: counted when started, finished from the call's done callback."""

    def __init__(self, metrics: CallMetrics, request_streaming: bool, response_streaming: bool) -> None:
        super().__init__(metrics, request_streaming, response_streaming)
        self._recording: set[asyncio.Task[None]] = set()

    def _track(self, details: grpc.aio.ClientCallDetails, call: Any) -> Any:
        bound = self._method(details)
        bound.begin()
        started = time.perf_counter()

        def done(finished: Any) -> None:
            # The call is done, so its code() coroutine completes at once; a task reads it off the callback.
            async def record() -> None:
                try:
                    code = await finished.code()
                except Exception:
                    code = grpc.StatusCode.UNKNOWN
                self._finish(bound, started, code)

            task = asyncio.ensure_future(record())
            self._recording.add(task)
            task.add_done_callback(self._recording.discard)

        call.add_done_callback(done)
        return call


class _UnaryStreamMetrics(_StreamingMetrics, grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, metrics: CallMetrics) -> None:
        super().__init__(metrics, False, True)

    async def intercept_unary_stream(self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails,
                                     request: Any) -> Any:
        return self._track(client_call_details, await continuation(client_call_details, request))


class _StreamUnaryMetrics(_StreamingMetrics, grpc.aio.StreamUnaryClientInterceptor):
    def __init__(self, metrics: CallMetrics) -> None:
        super().__init__(metrics, True, False)

    async def intercept_stream_unary(self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails,
                                     request_iterator: Any) -> Any:
        return self._track(client_call_details, await continuation(client_call_details, request_iterator))


class _StreamStreamMetrics(_StreamingMetrics, grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, metrics: CallMetrics) -> None:
        super().__init__(metrics, True, True)

    async def intercept_stream_stream(self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails,
                                      request_iterator: Any) -> Any:
        return self._track(client_call_details, await continuation(client_call_details, request_iterator))


def client_metrics_interceptors(metrics: CallMetrics) -> list[grpc.aio.ClientInterceptor]:
    """grpc_client_* for every kind of call a channel makes."""
    return [_UnaryUnaryMetrics(metrics), _UnaryStreamMetrics(metrics), _StreamUnaryMetrics(metrics),
            _StreamStreamMetrics(metrics)]


__all__ = ["Observability", "client_metrics_interceptors"]
