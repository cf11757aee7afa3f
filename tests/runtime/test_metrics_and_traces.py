"""Metrics and traces of served calls: a real protomesh Server with the telemetry interceptor, spans kept in memory."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
import pytest
from acme.notifications.v1 import notifications_service_pb2
from acme.users.v1 import users_service_pb2
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import REGISTRY
from test_server_support import Served, bindings

from protomesh._logs import JsonFormatter, TextFormatter
from protomesh._observability import Observability
from protomesh._server import Server
from protomesh._settings import ObservabilitySettings, ServerSettings

GET_USER = {"grpc_type": "unary", "grpc_service": "acme.users.v1.UserService", "grpc_method": "GetUser"}
WATCH = {"grpc_type": "server_stream", "grpc_service": "acme.notifications.v1.NotificationService",
         "grpc_method": "WatchNotifications"}
PARENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"


@dataclass
class Observed(Served):
    spans: InMemorySpanExporter
    observability: Observability

    def finished(self) -> list[ReadableSpan]:
        return [span for span in self.spans.get_finished_spans() if span.kind is SpanKind.SERVER]


async def observed_server(settings: ObservabilitySettings) -> tuple[Observability, InMemorySpanExporter, Server]:
    observability = Observability("users", settings)
    exporter = InMemorySpanExporter()
    if observability.provider is not None:
        observability.provider.add_span_processor(SimpleSpanProcessor(exporter))
    server = Server(ServerSettings(port=0, grace_s=1.0), bindings(),
                    interceptors=observability.server_interceptors())
    await server.start()
    return observability, exporter, server


@pytest.fixture
async def observed() -> AsyncIterator[Observed]:
    observability, exporter, server = await observed_server(ObservabilitySettings(sampling_ratio=1.0))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield Observed(server, channel, exporter, observability)
    await server.stop()
    await observability.close()


def read_url(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def count(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def get_user(observed: Served, user_id: str, metadata: tuple[tuple[str, str], ...] = ()) -> grpc.StatusCode:
    try:
        await observed.users.GetUser(users_service_pb2.GetUserRequest(user_id=user_id), metadata=metadata)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def test_served_calls_are_counted_per_method_and_go_style_status_code(observed: Observed) -> None:
    before = {code: count("grpc_server_handled_total", **GET_USER, grpc_code=code)
              for code in ("OK", "NotFound", "PermissionDenied", "Internal")}
    for user_id in ("u-1", "u-2", "missing", "deny", "crash"):
        await get_user(observed, user_id)
    after = {code: count("grpc_server_handled_total", **GET_USER, grpc_code=code) for code in before}
    assert {code: after[code] - before[code] for code in before} == {
        "OK": 2, "NotFound": 1, "PermissionDenied": 1, "Internal": 1}
    assert count("grpc_server_in_flight", grpc_service="acme.users.v1.UserService", grpc_method="GetUser") == 0


async def test_sub_millisecond_calls_land_in_their_own_latency_buckets(observed: Observed) -> None:
    before = count("grpc_server_handling_seconds_count", **GET_USER)
    for _ in range(20):
        await get_user(observed, "u-1")
    # Every call is counted, and the histogram resolves below a millisecond, where a local call's time lies (how
    # fast each one is depends on the machine: speed is the benchmarks' business, not a test's).
    assert count("grpc_server_handling_seconds_count", **GET_USER) - before == 20
    sub_millisecond = [sample.labels["le"] for metric in REGISTRY.collect() for sample in metric.samples
                       if sample.name == "grpc_server_handling_seconds_bucket"
                       and sample.labels.get("grpc_method") == "GetUser"
                       and sample.labels["le"] != "+Inf" and float(sample.labels["le"]) < 0.001]
    assert sorted(set(sub_millisecond), key=float) == ["0.0001", "0.00025", "0.0005"]


async def test_a_server_stream_counts_each_message_sent(observed: Observed) -> None:
    before = count("grpc_server_msg_sent_total", **WATCH)
    call = observed.notifications.WatchNotifications(
        notifications_service_pb2.WatchNotificationsRequest(user_id="u-1"))
    assert len([reply async for reply in call]) == 2
    assert count("grpc_server_msg_sent_total", **WATCH) - before == 2
    assert count("grpc_server_handled_total", **WATCH, grpc_code="OK") >= 1


async def test_a_served_call_is_a_server_span_with_the_rpc_attributes(observed: Observed) -> None:
    await get_user(observed, "missing")
    [span] = observed.finished()
    assert span.name == "acme.users.v1.UserService/GetUser"
    assert span.attributes is not None
    assert dict(span.attributes) == {"rpc.system": "grpc", "rpc.service": "acme.users.v1.UserService",
                                     "rpc.method": "GetUser", "rpc.grpc.status_code": 5}
    assert span.status.is_ok  # NOT_FOUND is an answer, not a server error


async def test_a_callers_traceparent_makes_the_server_span_its_child(observed: Observed) -> None:
    traceparent = f"00-{PARENT_TRACE}-{PARENT_SPAN}-01"
    assert await get_user(observed, "u-1", (("traceparent", traceparent),)) is grpc.StatusCode.OK
    [span] = observed.finished()
    assert f"{span.context.trace_id:032x}" == PARENT_TRACE
    assert span.parent is not None
    assert f"{span.parent.span_id:016x}" == PARENT_SPAN


@pytest.mark.parametrize("traceparent", ["garbage", f"00-{'0' * 32}-{PARENT_SPAN}-01", f"zz-{PARENT_TRACE}-x-01"])
async def test_an_invalid_traceparent_starts_a_new_trace_and_the_call_succeeds(observed: Observed,
                                                                               traceparent: str) -> None:
    assert await get_user(observed, "u-1", (("traceparent", traceparent),)) is grpc.StatusCode.OK
    [span] = observed.finished()
    assert span.parent is None
    assert f"{span.context.trace_id:032x}" != PARENT_TRACE


async def test_with_sampling_at_zero_new_traces_are_not_recorded_but_a_sampled_caller_is() -> None:
    observability, exporter, server = await observed_server(ObservabilitySettings(sampling_ratio=0.0))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            served = Served(server, channel)
            await get_user(served, "u-1")
            assert exporter.get_finished_spans() == ()
            await get_user(served, "u-1", (("traceparent", f"00-{PARENT_TRACE}-{PARENT_SPAN}-01"),))
            [span] = exporter.get_finished_spans()
            assert f"{span.context.trace_id:032x}" == PARENT_TRACE
    finally:
        await server.stop()
        await observability.close()


async def test_the_access_log_line_carries_the_trace_and_span_ids(observed: Observed) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter())
    access = logging.getLogger("protomesh.access")
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    try:
        await get_user(observed, "u-1", (("traceparent", f"00-{PARENT_TRACE}-{PARENT_SPAN}-01"),))
    finally:
        access.removeHandler(handler)
        access.setLevel(logging.NOTSET)
    [span] = observed.finished()
    line = stream.getvalue().strip()
    assert "/acme.users.v1.UserService/GetUser OK" in line
    assert line.endswith(f"trace_id={PARENT_TRACE} span_id={span.context.span_id:016x}")
    assert line.count("cid=") == 1


def test_json_log_lines_are_one_object_each_with_the_message() -> None:
    record = logging.LogRecord("protomesh.app", logging.INFO, __file__, 1, "users ready on port %d", (7,), None)
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "users ready on port 7"
    assert entry["level"] == "INFO"
    assert entry["logger"] == "protomesh.app"


async def test_metrics_are_served_as_prometheus_text_on_the_metrics_port(observed: Observed) -> None:
    port = observed.observability.start_metrics("127.0.0.1")
    await get_user(observed, "u-1")
    text = await asyncio.to_thread(read_url, f"http://127.0.0.1:{port}/metrics")
    assert 'grpc_server_handled_total{grpc_code="OK",grpc_method="GetUser"' in text
    assert "process_cpu_seconds_total" in text
    assert "python_gc_collections_total" in text


async def test_with_metrics_and_tracing_off_only_the_protomesh_interceptor_runs() -> None:
    off = Observability("users", ObservabilitySettings(metrics=False, tracing=False))
    interceptors: list[Any] = off.server_interceptors()
    assert [type(i).__name__ for i in interceptors] == ["ProtomeshInterceptor"]
    assert off.start_metrics("127.0.0.1") == 0
    assert off.client_interceptors() == []


def test_repeated_export_failures_are_logged_once_per_minute() -> None:
    from protomesh._tracing import OncePerInterval

    once = OncePerInterval(interval_s=60)
    record = logging.LogRecord("opentelemetry.exporter", logging.ERROR, __file__, 1, "Failed to export %s", ("x",),
                               None)
    assert [once.filter(record) for _ in range(3)] == [True, False, False]
