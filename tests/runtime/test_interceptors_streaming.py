"""The default interceptor on client-streaming and bidirectional handlers (raw bytes, no contract needed)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf import wrappers_pb2

from protomesh._context import CORRELATION_ID_KEY, correlation_id
from protomesh._interceptors import ProtomeshInterceptor
from protomesh.aio import poll_until
from protomesh.errors import FieldViolation, InvalidArgument

SECRET = "secret db password"


async def _count(requests: AsyncIterator[bytes], context: Any) -> bytes:
    count = 0
    async for request in requests:
        if not request:
            raise InvalidArgument([FieldViolation("chunk", "must not be empty")])
        count += 1
    return str(count).encode()


async def _echo(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
    async for request in requests:
        if request == b"crash":
            raise RuntimeError(SECRET)
        yield request + b" " + (correlation_id() or "").encode()


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    handlers = {"Count": grpc.stream_unary_rpc_method_handler(_count),
                "Echo": grpc.stream_stream_rpc_method_handler(_echo)}
    server = grpc.aio.server(interceptors=[ProtomeshInterceptor()])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.Streams", handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as opened:
        yield opened
    await server.stop(0)


async def test_a_client_streaming_handler_runs_wrapped_and_maps_domain_errors(channel: grpc.aio.Channel) -> None:
    count = channel.stream_unary("/test.Streams/Count")

    assert await count(iter([b"a", b"b", b"c"])) == b"3"
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await count(iter([b"a", b""]))
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.value.details() == "chunk: must not be empty"


async def test_a_bidirectional_handler_sees_the_correlation_id_and_hides_crashes(channel: grpc.aio.Channel) -> None:
    echo = channel.stream_stream("/test.Streams/Echo")
    call = echo(iter([b"hi", b"crash"]), metadata=((CORRELATION_ID_KEY, "cid-bidi"),))

    assert await call.read() == b"hi cid-bidi"
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await call.read()
    assert failure.value.code() == grpc.StatusCode.INTERNAL
    assert failure.value.details() == "internal error (correlation id: cid-bidi)"


async def _slow(request: bytes, context: Any) -> bytes:
    await asyncio.sleep(5)
    return request


@pytest.fixture
async def slow_channel() -> AsyncIterator[grpc.aio.Channel]:
    handlers = {"Slow": grpc.unary_unary_rpc_method_handler(_slow),
                "Echo": grpc.stream_stream_rpc_method_handler(_echo)}
    server = grpc.aio.server(interceptors=[ProtomeshInterceptor()])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.Outcomes", handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as opened:
        yield opened
    await server.stop(0)


def _access_lines(caplog: pytest.LogCaptureFixture, method: str) -> list[str]:
    lines = [record.getMessage() for record in caplog.records if record.name == "protomesh.access"]
    return [line for line in lines if line.startswith(method)]


async def test_the_access_log_records_a_bidi_call_the_client_cancelled_as_cancelled(
        slow_channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="protomesh.access")
    call = slow_channel.stream_stream("/test.Outcomes/Echo")(metadata=((CORRELATION_ID_KEY, "cid-gone"),))
    await call.write(b"hi")
    assert await call.read() == b"hi cid-gone"
    call.cancel()

    await poll_until(lambda: _access_lines(caplog, "/test.Outcomes/Echo"), timeout=5, what="the access log line")
    [line] = _access_lines(caplog, "/test.Outcomes/Echo")
    assert " CANCELLED " in line


async def test_the_access_log_records_a_call_past_its_deadline_as_deadline_exceeded(
        slow_channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="protomesh.access")
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await slow_channel.unary_unary("/test.Outcomes/Slow")(b"x", timeout=0.2)
    assert failure.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    await poll_until(lambda: _access_lines(caplog, "/test.Outcomes/Slow"), timeout=5, what="the access log line")
    [line] = _access_lines(caplog, "/test.Outcomes/Slow")
    assert " DEADLINE_EXCEEDED " in line


async def _upper(request: wrappers_pb2.StringValue, context: Any) -> wrappers_pb2.StringValue:
    return wrappers_pb2.StringValue(value=request.value.upper())


async def _join(requests: AsyncIterator[wrappers_pb2.StringValue], context: Any) -> wrappers_pb2.StringValue:
    return wrappers_pb2.StringValue(value="".join([r.value async for r in requests]))


@pytest.fixture
async def typed_channel() -> AsyncIterator[grpc.aio.Channel]:
    parse, dump = wrappers_pb2.StringValue.FromString, wrappers_pb2.StringValue.SerializeToString
    handlers = {"Upper": grpc.unary_unary_rpc_method_handler(_upper, parse, dump),
                "Join": grpc.stream_unary_rpc_method_handler(_join, parse, dump)}
    server = grpc.aio.server(interceptors=[ProtomeshInterceptor()])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.Typed", handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as opened:
        yield opened
    await server.stop(0)


# Field 1 announced as a string of 10 bytes, with 1 byte following: not a StringValue (nor any message).
CORRUPT = b"\x0a\x0ax"


async def test_corrupt_request_bytes_are_invalid_argument_with_no_internal_text(
        typed_channel: grpc.aio.Channel) -> None:
    upper = typed_channel.unary_unary("/test.Typed/Upper")
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await upper(CORRUPT, timeout=5)

    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.value.details() == "the request message could not be parsed"
    # and the service keeps serving
    reply = await upper(wrappers_pb2.StringValue(value="ok").SerializeToString(), timeout=5)
    assert wrappers_pb2.StringValue.FromString(reply).value == "OK"


async def test_a_corrupt_message_in_a_request_stream_is_invalid_argument_too(typed_channel: grpc.aio.Channel) -> None:
    join = typed_channel.stream_unary("/test.Typed/Join")
    good = wrappers_pb2.StringValue(value="a").SerializeToString()
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await join(iter([good, CORRUPT]), timeout=5)

    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "DecodeError" not in (failure.value.details() or "")


async def _tagged(request: wrappers_pb2.StringValue, context: Any) -> wrappers_pb2.StringValue:
    context.set_trailing_metadata((("x-handler", "own"),))
    return request


async def test_a_handler_that_sets_its_own_trailers_keeps_the_correlation_id_beside_them() -> None:
    parse, dump = wrappers_pb2.StringValue.FromString, wrappers_pb2.StringValue.SerializeToString
    server = grpc.aio.server(interceptors=[ProtomeshInterceptor()])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "test.Tagged", {"Tag": grpc.unary_unary_rpc_method_handler(_tagged, parse, dump)})])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary("/test.Tagged/Tag")(b"", metadata=((CORRELATION_ID_KEY, "cid-kept"),))
            await call
            trailing = dict(await call.trailing_metadata())
    finally:
        await server.stop(0)
    assert (trailing["x-handler"], trailing[CORRELATION_ID_KEY]) == ("own", "cid-kept")
