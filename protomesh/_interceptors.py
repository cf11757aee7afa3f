"""The default server interceptor: correlation id, call context, error mapping and access log for every call."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from random import getrandbits
from typing import Any, Literal, NoReturn

import grpc
import grpc.aio

from protomesh import _context
from protomesh._authz import CallGuard, Denied, Unchecked
from protomesh._requests import UNPARSABLE_STATUS, UnparsableRequest, lenient, prepared, settle_if_ended
from protomesh._status import plain_status, status_for
from protomesh.auth import CLAIMS_KEY, Caller, bind_caller, reset_caller

ACCESS_LOGGER = logging.getLogger("protomesh.access")
_LOG = logging.getLogger("protomesh.server")

# Health checks (Consul polls every instance every second) and reflection are plumbing: wrapping them would
# flood the access log and cost CPU on every probe, so their handlers are served untouched.
DEFAULT_PASS_THROUGH_PREFIXES: tuple[str, ...] = ("/grpc.health.v1.", "/grpc.reflection.")
# A longer incoming id is replaced by a fresh one: a client must not be able to bloat every log line.
MAX_CORRELATION_ID_LENGTH = 128


_Behavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Any]


class HandlerWrapping(grpc.aio.ServerInterceptor):
    """Wraps each method's handler once, on its first call (`wrap`), and serves the wrapped one from then on.

    grpc.aio asks every interceptor for the handler on every call, so the wrapped handler is built once per
    method and then served from a dict. An unknown method is not cached, so probing names cannot grow it.
    """

    def __init__(self) -> None:
        self._handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method: str = handler_call_details.method
        handler = self._handlers.get(method)
        if handler is None:
            found = await continuation(handler_call_details)
            if found is None:
                return None
            handler = self._handlers[method] = self.wrap(method, found)
        return handler

    def wrap(self, method: str, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
        raise NotImplementedError


class ProtomeshInterceptor(HandlerWrapping):
    """Correlation id, call context (`protomesh._context`), the caller (`protomesh.caller()`) and its
    authorization, DomainError -> status and access log per call.

    grpc.aio asks every interceptor for the handler on every call, so the wrapped handler is built once per
    method and then served from a dict. That cache makes this interceptor the innermost one: place it last
    in the server's interceptor list (interceptors after it would only see the first call of each method).

        server = grpc.aio.server(interceptors=[ProtomeshInterceptor()])

    `echo` says where the correlation id goes back to the client. "trailing" (default) rides on the
    status batch grpc sends anyway; "initial" costs grpc.aio one more batch per call (about a fifth of a
    tiny call's server CPU, see bench/runtime_overhead.py) but reaches REST clients as a response header.
    Errors always carry it in trailing metadata (an error answered before any message is sent as a gRPC
    "trailers-only" response, i.e. in the HTTP response headers).

    `guard` authorizes each call before its request is read (`protomesh._authz.Authorizer` with mTLS); the
    default trusts everyone and reports any claims a call carries. Plumbing (health, reflection) is served
    untouched unless the guard gates it (with mTLS, Consul's agent may call health only).
    """

    def __init__(self, *, echo: Literal["trailing", "initial"] = "trailing",
                 pass_through_prefixes: Sequence[str] = DEFAULT_PASS_THROUGH_PREFIXES,
                 guard: CallGuard | None = None) -> None:
        self._echo_initial = echo == "initial"
        self._pass_through = tuple(pass_through_prefixes)
        self._guard: CallGuard = guard or Unchecked()
        super().__init__()

    def wrap(self, method: str, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
        if not method.startswith(self._pass_through):
            return wrap_handler(method, handler, echo_initial=self._echo_initial, guard=self._guard)
        if self._guard.gates_plumbing(method):
            return _gated(method, handler, self._guard)
        return handler


def default_interceptors(*, guard: CallGuard | None = None) -> list[grpc.aio.ServerInterceptor]:
    """The interceptors a protomesh Server uses when it is given none (guard: see ProtomeshInterceptor)."""
    return [ProtomeshInterceptor(guard=guard)]


def behavior_of(handler: grpc.RpcMethodHandler[Any, Any]) -> tuple[Any, Callable[..., Any]]:
    """The handler's behavior and the grpc factory that makes a handler of the same kind."""
    if handler.request_streaming and handler.response_streaming:
        return handler.stream_stream, grpc.stream_stream_rpc_method_handler
    if handler.request_streaming:
        return handler.stream_unary, grpc.stream_unary_rpc_method_handler
    if handler.response_streaming:
        return handler.unary_stream, grpc.unary_stream_rpc_method_handler
    return handler.unary_unary, grpc.unary_unary_rpc_method_handler


def wrap_handler(method: str, handler: grpc.RpcMethodHandler[Any, Any], *, echo_initial: bool = False,
                 guard: CallGuard | None = None) -> grpc.RpcMethodHandler[Any, Any]:
    """The same handler with its behavior run inside the protomesh call wrapper (sync ones are left alone)."""
    deserializer, serializer = handler.request_deserializer, handler.response_serializer
    behavior, factory = behavior_of(handler)
    guard = guard or Unchecked()
    # grpc.aio picks how to drive a handler by inspecting it (coroutine function, async generator
    # function, or plain function run in a thread), so the wrapper must be of the same kind.
    if inspect.isasyncgenfunction(behavior):
        wrapped = _wrap_async_generator(method, behavior, echo_initial, handler.request_streaming, guard)
    elif inspect.iscoroutinefunction(behavior):
        wrapped = _wrap_coroutine(method, behavior, echo_initial, handler.request_streaming, guard)
    else:
        # Typically a method the servicer does not implement (the generated base class's sync stub): served
        # without the call wrapper, never without the guard.
        _LOG.warning("%s is served by a sync function, without the protomesh interceptor", method)

        def authorize(context: Any) -> contextvars.Token[Caller | None]:
            return bind_caller(guard.authorize(context, method, _incoming(context.invocation_metadata())[1]))

        wrapped = _guarded_sync(behavior, authorize)
        deserializer = handler.request_deserializer
    result: grpc.RpcMethodHandler[Any, Any] = factory(wrapped, lenient(deserializer), serializer)
    return result


def _guarded_sync(behavior: _Behavior, check: Callable[[Any], contextvars.Token[Caller | None] | None]) -> _Behavior:
    """A sync behavior (grpc runs it on a thread of its executor) that first passes check, or is aborted."""
    def guarded(request: Any, context: Any) -> Any:
        try:
            token = check(context)
        except Denied as denied:
            context.abort(denied.code, denied.message)  # the sync context's abort raises
            raise AssertionError("context.abort() returned") from None
        try:
            return behavior(request, context)
        finally:
            if token is not None:  # the executor's thread serves other calls next
                reset_caller(token)

    return guarded


def _wrap_coroutine(method: str, behavior: _Behavior, echo_initial: bool, streamed: bool,
                    guard: CallGuard) -> _Behavior:
    async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        started = time.perf_counter()
        cid, claims = _begin(context, echo_initial)
        code: grpc.StatusCode | None = None
        try:
            bind_caller(guard.authorize(context, method, claims))
            request = prepared(request, streamed)
            if echo_initial:
                await context.send_initial_metadata(((_context.CORRELATION_ID_KEY, cid),))
            response = await behavior(request, context)
            await settle_if_ended(request)
            _keep_correlation_id(context, cid, echo_initial)
            return response
        except grpc.aio.AbortError:  # the handler aborted itself: its status stands
            raise
        except asyncio.CancelledError:
            code = _ended_early(context)
            raise
        except Exception as error:
            status = _failure_status(error, method, cid)
            code = status.code
            await _abort(context, status, cid)
        finally:
            if ACCESS_LOGGER.isEnabledFor(logging.INFO):
                _log_access(method, code or _outcome(context), started, cid)

    return handle


def _wrap_async_generator(method: str, behavior: _Behavior, echo_initial: bool, streamed: bool,
                          guard: CallGuard) -> _Behavior:
    async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        started = time.perf_counter()
        cid, claims = _begin(context, echo_initial)
        code: grpc.StatusCode | None = None
        try:
            bind_caller(guard.authorize(context, method, claims))
            request = prepared(request, streamed)
            if echo_initial:
                await context.send_initial_metadata(((_context.CORRELATION_ID_KEY, cid),))
            async for response in behavior(request, context):
                yield response
            await settle_if_ended(request)
            _keep_correlation_id(context, cid, echo_initial)
        except grpc.aio.AbortError:
            raise
        except (asyncio.CancelledError, GeneratorExit):  # GeneratorExit: the client went away mid-stream
            code = _ended_early(context)
            raise
        except Exception as error:
            status = _failure_status(error, method, cid)
            code = status.code
            await _abort(context, status, cid)
        finally:
            if ACCESS_LOGGER.isEnabledFor(logging.INFO):
                _log_access(method, code or _outcome(context), started, cid)

    return handle


def _ended_early(context: grpc.aio.ServicerContext[Any, Any]) -> grpc.StatusCode:
    """Why a call ended before its handler did: the caller's deadline passed, or the caller went away."""
    remaining = context.time_remaining()
    return grpc.StatusCode.DEADLINE_EXCEEDED if remaining is not None and remaining <= 0 else grpc.StatusCode.CANCELLED


def _outcome(context: grpc.aio.ServicerContext[Any, Any]) -> grpc.StatusCode | None:
    """The status of a call whose handler returned: what it set, or why the call ended under it (a bidi
    handler whose caller cancelled sees its request stream end and returns normally)."""
    code = context.code()
    if code is None and context.cancelled():
        return _ended_early(context)
    return code


def _begin(context: grpc.aio.ServicerContext[Any, Any], echo_initial: bool) -> tuple[str, str | None]:
    """Adopt or mint the correlation id and bind the call context (`protomesh._context`) for the handler;
    returns it with the call's claims as they came (checked by the guard next).

    No reset afterwards: grpc.aio runs every call in its own asyncio task, whose context copy ends with it.
    """
    incoming, claims = _incoming(context.invocation_metadata())
    # 64 random bits as 16 hex digits: unique, not secret, so the module's generator (no getrandom syscall per
    # call, which py-spy showed at 1 % of a tiny call's samples).
    cid = incoming or f"{getrandbits(64):016x}"
    if not echo_initial:
        context.set_trailing_metadata(((_context.CORRELATION_ID_KEY, cid),))
    _context.bind_call(cid, context.time_remaining())
    return cid, claims


def _keep_correlation_id(context: grpc.aio.ServicerContext[Any, Any], cid: str, echo_initial: bool) -> None:
    """A handler that set trailing metadata of its own replaced the correlation id there: add it back."""
    if echo_initial:
        return
    trailing = tuple(context.trailing_metadata())
    ours = (_context.CORRELATION_ID_KEY, cid)
    if trailing[:1] != (ours,) and ours not in trailing:
        context.set_trailing_metadata((*trailing, ours))


def _failure_status(error: Exception, method: str, cid: str) -> grpc.Status:
    """What a call that raised answers: a denial or an unparsable request plainly, anything else by status_for."""
    if isinstance(error, Denied):
        return plain_status(error.code, error.message)
    if isinstance(error, UnparsableRequest):
        return plain_status(*UNPARSABLE_STATUS)
    return status_for(error, method, cid)


async def _abort(context: grpc.aio.ServicerContext[Any, Any], status: grpc.Status, cid: str) -> NoReturn:
    trailing = (*status.trailing_metadata, (_context.CORRELATION_ID_KEY, cid))
    await context.abort(status.code, status.details, trailing)
    raise AssertionError("context.abort() returned")  # grpc raises AbortError; keeps the types honest


def _incoming(metadata: Iterable[tuple[str, str | bytes]] | None) -> tuple[str | None, str | None]:
    """The call's correlation id (when usable) and claims value, each the first of its key, in one pass."""
    cid: str | None = None
    claims: str | None = None
    seen_cid = seen_claims = False
    for key, value in metadata or ():
        if key == _context.CORRELATION_ID_KEY and not seen_cid:
            seen_cid = True
            if isinstance(value, str) and 0 < len(value) <= MAX_CORRELATION_ID_LENGTH:
                cid = value
        elif key == CLAIMS_KEY and not seen_claims:
            seen_claims = True
            claims = value if isinstance(value, str) else None
        if seen_cid and seen_claims:
            break
    return cid, claims


def _gated(method: str, handler: grpc.RpcMethodHandler[Any, Any], guard: CallGuard) -> grpc.RpcMethodHandler[Any, Any]:
    """A plumbing handler (reflection) behind guard.admits_plumbing, otherwise untouched."""
    behavior, factory = behavior_of(handler)

    async def admit(context: grpc.aio.ServicerContext[Any, Any]) -> None:
        try:
            guard.admits_plumbing(context, method)
        except Denied as denied:
            await context.abort(denied.code, denied.message)

    if inspect.isasyncgenfunction(behavior):
        async def gated_stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            await admit(context)
            async for response in behavior(request, context):
                yield response

        gated: _Behavior = gated_stream
    elif inspect.iscoroutinefunction(behavior):
        async def gated_call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            await admit(context)
            return await behavior(request, context)

        gated = gated_call
    else:
        def admit_sync(context: Any) -> None:
            guard.admits_plumbing(context, method)

        gated = _guarded_sync(behavior, admit_sync)
    result: grpc.RpcMethodHandler[Any, Any] = factory(gated, handler.request_deserializer,
                                                      handler.response_serializer)
    return result


def _log_access(method: str, code: grpc.StatusCode | None, started: float, cid: str) -> None:
    elapsed_ms = (time.perf_counter() - started) * 1000.0
    ACCESS_LOGGER.info("%s %s %.2fms cid=%s", method, (code or grpc.StatusCode.OK).name, elapsed_ms, cid)
