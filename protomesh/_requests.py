"""Request messages as a wrapped handler reads them: one that does not parse ends the call as INVALID_ARGUMENT."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc


class UnparsableRequest(Exception):
    """The request bytes are not a message of the method's type."""


# What a request that does not parse becomes (grpc.aio's own answer would leak the parser's exception type).
_UNPARSABLE = object()
UNPARSABLE_STATUS = grpc.StatusCode.INVALID_ARGUMENT, "the request message could not be parsed"
# A caller that cancels a streaming call first ends its request stream, then the call; a handler that returns
# at that end waits this long for the cancellation, so the access log says CANCELLED rather than OK.
CANCEL_SETTLE_S = 0.002


def lenient(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def parse(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except Exception:  # any parser failure: the client sent something that is not this message
            return _UNPARSABLE

    return parse


class RequestStream:
    """The request messages of a streaming call as its handler reads them: stops at one that does not
    parse, and notes a clean end of the stream."""

    __slots__ = ("_messages", "ended")

    def __init__(self, messages: AsyncIterator[Any]) -> None:
        self._messages = messages.__aiter__()
        self.ended = False

    def __aiter__(self) -> RequestStream:
        return self

    async def __anext__(self) -> Any:
        try:
            message = await self._messages.__anext__()
        except StopAsyncIteration:
            self.ended = True
            raise
        if message is _UNPARSABLE:
            raise UnparsableRequest
        return message


def prepared(request: Any, streamed: bool) -> Any:
    if streamed:
        return RequestStream(request)
    if request is _UNPARSABLE:
        raise UnparsableRequest
    return request


async def settle_if_ended(request: Any) -> None:
    if isinstance(request, RequestStream) and request.ended:
        await asyncio.sleep(CANCEL_SETTLE_S)
