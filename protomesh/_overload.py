"""A per-instance bound on calls in flight: past it a call is shed at once with UNAVAILABLE, never queued."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import grpc
import grpc.aio

from protomesh._interceptors import DEFAULT_PASS_THROUGH_PREFIXES, HandlerWrapping, behavior_of

# What a shed caller is told: retryable (UNAVAILABLE), when to come back, and nothing of the instance's state.
SHED_MESSAGE = "service overloaded, retry later"
RETRY_AFTER_KEY = "retry-after"
RETRY_AFTER_S = 1


class ConcurrencyLimit(HandlerWrapping):
    """At most `limit` unary-response calls run at once; one more gets UNAVAILABLE with `retry-after` metadata.

        server = grpc.aio.server(interceptors=[ConcurrencyLimit(256), ProtomeshInterceptor()])

    It goes first in the server's interceptors, so a shed call costs no access log, span or authorization.
    Health checks and reflection are never shed (an overloaded instance is busy, not unhealthy: failing its
    check would send its load to the others), nor are response streams (they live for minutes and would hold
    the slots; their count is bounded by the gateway's connections).
    """

    def __init__(self, limit: int, *, pass_through_prefixes: Sequence[str] = DEFAULT_PASS_THROUGH_PREFIXES) -> None:
        if limit < 1:
            raise ValueError(f"the concurrency limit must be at least 1, not {limit}")
        super().__init__()
        self.limit = limit
        self.in_flight = 0
        self.shed = 0
        self._pass_through = tuple(pass_through_prefixes)

    def wrap(self, method: str, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
        behavior, factory = behavior_of(handler)
        if method.startswith(self._pass_through) or handler.response_streaming \
                or not inspect.iscoroutinefunction(behavior):
            return handler

        async def bounded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if self.in_flight >= self.limit:
                self.shed += 1
                await context.abort(grpc.StatusCode.UNAVAILABLE, SHED_MESSAGE,
                                    trailing_metadata=((RETRY_AFTER_KEY, str(RETRY_AFTER_S)),))
            self.in_flight += 1
            try:
                return await behavior(request, context)
            finally:
                self.in_flight -= 1

        result: grpc.RpcMethodHandler[Any, Any] = factory(bounded, handler.request_deserializer,
                                                          handler.response_serializer)
        return result
