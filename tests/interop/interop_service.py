"""grpc.testing.TestService and ORCA's OpenRcaService on the protomesh runtime, behaving as grpc-go's interop server."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
from interop.grpc_testing import empty_pb2, messages_pb2, test_pb2, test_pb2_grpc
from xds.data.orca.v3 import orca_load_report_pb2
from xds.service.orca.v3 import orca_pb2

import protomesh

# The Consul service the gateway suite registers (its cluster in Envoy has this name too).
SERVICE = "interop"
# Metadata the client asks to have echoed (grpc/doc/interop-test-descriptions.md, custom_metadata).
ECHO_INITIAL_KEY = "x-grpc-test-echo-initial"
ECHO_TRAILING_KEY = "x-grpc-test-echo-trailing-bin"
# ORCA's per-call report travels in this trailer as a serialized xds.data.orca.v3.OrcaLoadReport.
ORCA_TRAILER_KEY = "endpoint-load-metrics-bin"
# grpc-go's interop server reports OOB load at most once a second (its MinReportingInterval); the client
# asks for exactly that.
MIN_REPORT_INTERVAL_S = 1.0

_Context = grpc.aio.ServicerContext[Any, Any]
_CODES = {code.value[0]: code for code in grpc.StatusCode}


class ServerLoad:
    """The server-wide ORCA load that FullDuplexCall's orca_oob_report sets and StreamCoreMetrics reports."""

    def __init__(self) -> None:
        self.report = orca_load_report_pb2.OrcaLoadReport()
        # Held by the one stream that is setting OOB reports, for its whole life, as grpc-go's server does:
        # two orca_oob clients at once would otherwise see each other's numbers.
        self.lock = asyncio.Lock()

    def update(self, test_report: messages_pb2.TestOrcaReport) -> None:
        self.report.cpu_utilization = test_report.cpu_utilization
        self.report.mem_utilization = test_report.memory_utilization
        self.report.utilization.update(test_report.utilization)


class InteropTestService(test_pb2_grpc.TestServiceServicer):
    """Every TestService method the interop cases call; UnimplementedCall stays unimplemented on purpose."""

    def __init__(self, load: ServerLoad, server_id: str) -> None:
        self.load = load
        self.server_id = server_id

    async def EmptyCall(self, request: empty_pb2.Empty, context: _Context) -> empty_pb2.Empty:
        return empty_pb2.Empty()

    async def UnaryCall(self, request: messages_pb2.SimpleRequest, context: _Context) -> messages_pb2.SimpleResponse:
        await _echo_metadata(context)
        await _abort_if_asked(request.response_status, context)
        response = messages_pb2.SimpleResponse(payload=await _payload(request.response_type, request.response_size,
                                                                      context))
        if request.fill_server_id:
            response.server_id = self.server_id
        if request.HasField("orca_per_query_report"):
            _add_trailing(context, ORCA_TRAILER_KEY, _per_call_report(request.orca_per_query_report))
        return response

    async def StreamingOutputCall(self, request: messages_pb2.StreamingOutputCallRequest,
                                  context: _Context) -> AsyncIterator[messages_pb2.StreamingOutputCallResponse]:
        async for response in _responses(request, context):
            yield response

    async def StreamingInputCall(self, request_iterator: AsyncIterator[messages_pb2.StreamingInputCallRequest],
                                 context: _Context) -> messages_pb2.StreamingInputCallResponse:
        total = 0
        async for request in request_iterator:
            total += len(request.payload.body)
        return messages_pb2.StreamingInputCallResponse(aggregated_payload_size=total)

    async def FullDuplexCall(self, request_iterator: AsyncIterator[messages_pb2.StreamingOutputCallRequest],
                             context: _Context) -> AsyncIterator[messages_pb2.StreamingOutputCallResponse]:
        await _echo_metadata(context)
        holding_load = False
        try:
            async for request in request_iterator:
                await _abort_if_asked(request.response_status, context)
                if request.HasField("orca_oob_report"):
                    if not holding_load:
                        await self.load.lock.acquire()
                        holding_load = True
                    self.load.update(request.orca_oob_report)
                async for response in _responses(request, context):
                    yield response
        finally:
            if holding_load:
                self.load.lock.release()

    async def HalfDuplexCall(self, request_iterator: AsyncIterator[messages_pb2.StreamingOutputCallRequest],
                             context: _Context) -> AsyncIterator[messages_pb2.StreamingOutputCallResponse]:
        requests = [request async for request in request_iterator]
        for request in requests:
            async for response in _responses(request, context):
                yield response

    async def UnimplementedCall(self, request: empty_pb2.Empty, context: _Context) -> empty_pb2.Empty:
        # The contract says a test server does not implement this method (case unimplemented_method).
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "UnimplementedCall is not implemented")
        raise AssertionError("context.abort() returned")


class OpenRcaService:
    """xds.service.orca.v3.OpenRcaService: the server's load now, then again every report interval."""

    def __init__(self, load: ServerLoad) -> None:
        self.load = load

    async def StreamCoreMetrics(self, request: orca_pb2.OrcaLoadReportRequest,
                                context: _Context) -> AsyncIterator[orca_load_report_pb2.OrcaLoadReport]:
        interval = max(request.report_interval.ToTimedelta().total_seconds(), MIN_REPORT_INTERVAL_S)
        while True:
            yield self.load.report  # serialized as it is sent, before the next update can land
            await asyncio.sleep(interval)


def add_open_rca_service_to_server(servicer: OpenRcaService, server: grpc.aio.Server) -> None:
    """What a generated `add_OpenRcaServiceServicer_to_server` does (xds-protos ships messages, not stubs)."""
    handler = grpc.unary_stream_rpc_method_handler(
        servicer.StreamCoreMetrics, request_deserializer=orca_pb2.OrcaLoadReportRequest.FromString,
        response_serializer=orca_load_report_pb2.OrcaLoadReport.SerializeToString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(ORCA_SERVICE.full_name,
                                                                          {"StreamCoreMetrics": handler}),))


TEST_SERVICE = test_pb2.DESCRIPTOR.services_by_name["TestService"]
ORCA_SERVICE = orca_pb2.DESCRIPTOR.services_by_name["OpenRcaService"]


def bindings(server_id: str = "") -> list[protomesh.Binding]:
    """TestService and OpenRcaService sharing one ServerLoad; server_id answers fill_server_id."""
    load = ServerLoad()
    return [
        protomesh.Binding(TEST_SERVICE, InteropTestService(load, server_id or f"interop-{os.getpid()}"),
                          test_pb2_grpc.add_TestServiceServicer_to_server),
        protomesh.Binding(ORCA_SERVICE, OpenRcaService(load), add_open_rca_service_to_server),
    ]


async def _echo_metadata(context: _Context) -> None:
    """grpc-go's server echoes the first value of each echo key: initial at once, trailing with the status."""
    received = dict(reversed(tuple(context.invocation_metadata() or ())))
    if ECHO_INITIAL_KEY in received:
        await context.send_initial_metadata(((ECHO_INITIAL_KEY, received[ECHO_INITIAL_KEY]),))
    if ECHO_TRAILING_KEY in received:
        _add_trailing(context, ECHO_TRAILING_KEY, received[ECHO_TRAILING_KEY])


def _add_trailing(context: _Context, key: str, value: str | bytes) -> None:
    # Added to, not replacing, what the protomesh interceptor already set (the correlation id).
    context.set_trailing_metadata((*(context.trailing_metadata() or ()), (key, value)))


async def _abort_if_asked(status: messages_pb2.EchoStatus, context: _Context) -> None:
    if status.code != 0:
        await context.abort(_CODES.get(status.code, grpc.StatusCode.UNKNOWN), status.message)


async def _payload(payload_type: int, size: int, context: _Context) -> messages_pb2.Payload:
    if payload_type != messages_pb2.COMPRESSABLE or size < 0:
        # grpc-go's server answers a plain error (UNKNOWN) for both.
        await context.abort(grpc.StatusCode.UNKNOWN, f"cannot make a payload of type {payload_type}, size {size}")
    return messages_pb2.Payload(type=messages_pb2.COMPRESSABLE, body=bytes(size))


async def _responses(request: messages_pb2.StreamingOutputCallRequest,
                     context: _Context) -> AsyncIterator[messages_pb2.StreamingOutputCallResponse]:
    for parameters in request.response_parameters:
        if parameters.interval_us > 0:
            await asyncio.sleep(parameters.interval_us / 1e6)
        payload = await _payload(request.response_type, parameters.size, context)
        yield messages_pb2.StreamingOutputCallResponse(payload=payload)


def _per_call_report(report: messages_pb2.TestOrcaReport) -> bytes:
    data: bytes = orca_load_report_pb2.OrcaLoadReport(
        cpu_utilization=report.cpu_utilization, mem_utilization=report.memory_utilization,
        request_cost=report.request_cost, utilization=report.utilization).SerializeToString()
    return data


async def build(ctx: protomesh.Context[protomesh.ServiceSettings]) -> list[protomesh.Binding]:
    return bindings(f"{SERVICE}-{ctx.settings.server.host}-{os.getpid()}")


if __name__ == "__main__":
    # The gateway suite runs this as a separate process, the way any protomesh service is run.
    protomesh.run(SERVICE, protomesh.ServiceSettings, build)
