"""The default interceptor, seen from a real client: correlation ids, call context, errors and access log."""

from __future__ import annotations

import logging
import re
from typing import Any

import grpc
import grpc.aio
import pytest
from acme.notifications.v1 import notifications_service_pb2
from acme.users.v1 import users_service_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from test_server_support import SECRET, Served

from protomesh import _interceptors
from protomesh._context import CORRELATION_ID_KEY
from protomesh._server import Server
from protomesh._settings import ServerSettings
from protomesh.aio import poll_until

CID_IN_MESSAGE = re.compile(r"^internal error \(correlation id: ([0-9a-f]{16})\)$")


def _get(user_id: str) -> Any:
    return users_service_pb2.GetUserRequest(user_id=user_id)


async def _failed_call(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await call
    return failure.value


async def _collect(call: Any, into: list[str]) -> None:
    async for message in call:
        into.append(message.notification.notification_id)


def _metadata_value(metadata: Any, key: str) -> str | None:
    return next((value for name, value in metadata or () if name == key), None)


async def test_a_crashing_handler_gives_internal_with_a_correlation_id_and_never_the_exception_text(
        served: Served, caplog: pytest.LogCaptureFixture) -> None:
    error = await _failed_call(served.users.GetUser(_get("crash")))

    assert error.code() == grpc.StatusCode.INTERNAL
    assert SECRET not in (error.details() or "")
    assert SECRET not in str(error.trailing_metadata())
    match = CID_IN_MESSAGE.match(error.details() or "")
    assert match, error.details()
    assert _metadata_value(error.trailing_metadata(), CORRELATION_ID_KEY) == match.group(1)
    logged = [r for r in caplog.records if r.name == "protomesh.server" and r.exc_info]
    assert len(logged) == 1
    assert match.group(1) in logged[0].getMessage()
    assert SECRET in str(logged[0].exc_info[1])  # type: ignore[index]


async def test_the_client_correlation_id_is_echoed_and_seen_by_the_handler(served: Served) -> None:
    call = served.users.GetUser(_get("context"), metadata=((CORRELATION_ID_KEY, "client-cid-42"),))

    reply = await call

    assert reply.user.user_id == "client-cid-42"
    assert _metadata_value(await call.trailing_metadata(), CORRELATION_ID_KEY) == "client-cid-42"


async def test_a_fresh_correlation_id_is_minted_per_call_when_the_client_sends_none(served: Served) -> None:
    first, second = served.users.GetUser(_get("context")), served.users.GetUser(_get("context"))

    seen = [(await call).user.user_id for call in (first, second)]
    echoed = [_metadata_value(await call.trailing_metadata(), CORRELATION_ID_KEY) for call in (first, second)]

    assert seen == echoed
    assert all(re.fullmatch(r"[0-9a-f]{16}", cid or "") for cid in seen)
    assert seen[0] != seen[1]


async def test_an_oversized_client_correlation_id_is_replaced(served: Served) -> None:
    reply = await served.users.GetUser(_get("context"), metadata=((CORRELATION_ID_KEY, "x" * 500),))

    assert re.fullmatch(r"[0-9a-f]{16}", reply.user.user_id)


async def test_invalid_argument_carries_bad_request_field_violations_in_the_rich_status(served: Served) -> None:
    call = served.users.GetUser(_get("invalid"))
    error = await _failed_call(call)

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "user_id: must start with 'u-'"
    status = await rpc_status.aio.from_call(call)
    assert status is not None
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    assert [(v.field, v.description) for v in bad_request.field_violations] == [("user_id", "must start with 'u-'")]


async def test_not_found_maps_to_not_found_with_its_message(served: Served) -> None:
    error = await _failed_call(served.users.GetUser(_get("missing")))

    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "user missing does not exist"


async def test_a_handler_that_aborts_keeps_its_own_status_and_still_echoes_the_correlation_id(served: Served) -> None:
    error = await _failed_call(served.users.GetUser(_get("deny"), metadata=((CORRELATION_ID_KEY, "cid-deny"),)))

    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error.details() == "not yours"
    assert _metadata_value(error.trailing_metadata(), CORRELATION_ID_KEY) == "cid-deny"


async def test_the_handler_sees_the_deadline_of_the_incoming_call(served: Served) -> None:
    with_deadline = await served.users.GetUser(_get("context"), timeout=7.0)
    without = await served.users.GetUser(_get("context"))

    # grpc rounds the timeout up to its wire unit and the server starts its clock on receipt: allow 50 ms.
    assert 5.0 < float(with_deadline.user.display_name) <= 7.05
    assert without.user.display_name == "none"


async def test_a_server_streaming_error_after_some_messages_is_mapped_too(served: Served) -> None:
    call = served.notifications.WatchNotifications(notifications_service_pb2.WatchNotificationsRequest(user_id="crash"))
    received: list[str] = []
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await _collect(call, received)

    assert received == ["n-0", "n-1"]
    assert failure.value.code() == grpc.StatusCode.INTERNAL
    assert CID_IN_MESSAGE.match(failure.value.details() or "")
    assert SECRET not in (failure.value.details() or "")


async def test_a_server_streaming_invalid_argument_keeps_its_field_violations(served: Served) -> None:
    call = served.notifications.WatchNotifications(
        notifications_service_pb2.WatchNotificationsRequest(user_id="invalid"))
    with pytest.raises(grpc.aio.AioRpcError):
        await _collect(call, [])

    status = await rpc_status.aio.from_call(call)
    assert status is not None
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    assert bad_request.field_violations[0].field == "user_id"


async def test_the_access_log_has_one_line_per_call_with_method_code_and_correlation_id(
        served: Served, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="protomesh.access")
    await served.users.GetUser(_get("u-1"), metadata=((CORRELATION_ID_KEY, "cid-ok"),))
    await _failed_call(served.users.GetUser(_get("missing"), metadata=((CORRELATION_ID_KEY, "cid-missing"),)))

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "protomesh.access"]

    # A failed call's line is written once its status is sent, so it may land just after the client has it.
    await poll_until(lambda: len(lines()) >= 2, timeout=2, what="the failed call's access log line")
    assert len(lines()) == 2
    assert re.fullmatch(r"/acme\.users\.v1\.UserService/GetUser OK \d+\.\d\dms cid=cid-ok", lines()[0])
    assert re.fullmatch(r"/acme\.users\.v1\.UserService/GetUser NOT_FOUND \d+\.\d\dms cid=cid-missing", lines()[1])


async def test_nothing_is_logged_or_formatted_for_access_below_info(
        served: Served, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.WARNING, logger="protomesh.access")
    formatted: list[str] = []
    monkeypatch.setattr(_interceptors, "_log_access", lambda *args: formatted.append(str(args)))

    await served.users.GetUser(_get("u-1"))

    assert formatted == []
    assert not [r for r in caplog.records if r.name == "protomesh.access"]


async def test_each_method_is_wrapped_once_however_many_calls_it_serves(
        served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    wrapped: list[str] = []
    real_wrap = _interceptors.wrap_handler

    def counting_wrap(method: str, handler: Any, **options: Any) -> Any:
        wrapped.append(method)
        return real_wrap(method, handler, **options)

    monkeypatch.setattr(_interceptors, "wrap_handler", counting_wrap)
    server = Server(ServerSettings(port=0), served.server.bindings)
    port = await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = type(served.users)(channel)
            for _ in range(5):
                await stub.GetUser(_get("u-1"))
    finally:
        await server.stop(0)

    assert wrapped == ["/acme.users.v1.UserService/GetUser"]


async def test_initial_echo_sends_the_correlation_id_as_initial_metadata(served: Served) -> None:
    interceptor = _interceptors.ProtomeshInterceptor(echo="initial")
    server = Server(ServerSettings(port=0), served.server.bindings, interceptors=[interceptor])
    port = await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = type(served.users)(channel).GetUser(_get("u-1"), metadata=((CORRELATION_ID_KEY, "cid-initial"),))
            await call
            assert _metadata_value(await call.initial_metadata(), CORRELATION_ID_KEY) == "cid-initial"
    finally:
        await server.stop(0)


async def test_a_method_the_servicer_does_not_implement_stays_unimplemented(served: Served) -> None:
    error = await _failed_call(served.users.CreateUser(users_service_pb2.CreateUserRequest()))

    assert error.code() == grpc.StatusCode.UNIMPLEMENTED
