"""The default interceptor on client-streaming and bidirectional handlers (raw bytes, no contract needed)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest

from protomesh._context import CORRELATION_ID_KEY, correlation_id
from protomesh._interceptors import ProtomeshInterceptor
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
