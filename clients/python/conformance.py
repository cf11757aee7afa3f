"""The protomesh conformance scenario over native gRPC (grpc.aio) through the gateway.

    TOKEN=$(.venv/bin/protomesh token --sub ada --scope users:read --scope orders:write --scope notifications:read)
    CA=var/mesh/pki/ca.pem
    .venv/bin/python clients/python/conformance.py --target 127.0.0.1:8080 --ca-file "$CA" --token "$TOKEN"

It speaks TLS (trusting --ca-file, else the system's roots), sends the token on every call, prints one line per
step and exits 1 on the first step that does not get what it expects.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeAlias, TypeVar

import grpc
from acme.notifications.v1 import notifications_service_pb2 as notifications_pb
from acme.notifications.v1 import notifications_service_pb2_grpc as notifications_grpc
from acme.orders.v1 import orders_pb2
from acme.orders.v1 import orders_service_pb2 as orders_pb
from acme.orders.v1 import orders_service_pb2_grpc as orders_grpc
from acme.users.v1 import users_pb2
from acme.users.v1 import users_service_pb2 as users_pb
from acme.users.v1 import users_service_pb2_grpc as users_grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

# Every unary call gets this deadline; a healthy local mesh answers in milliseconds.
CALL_TIMEOUT_S = 5.0
# How long the watch may take to deliver the order's notification (the gateway cuts streams at 15 s).
WATCH_TIMEOUT_S = 5.0

_Watch: TypeAlias = (
    "grpc.aio.UnaryStreamCall[notifications_pb.WatchNotificationsRequest, notifications_pb.WatchNotificationsResponse]")
T = TypeVar("T")


class StepFailed(Exception):
    """What a step expected and what came back instead."""


class Scenario:
    """The steps, in order, and what they hand on to each other: the user, its watch and its order."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._users = users_grpc.UserServiceStub(channel)
        self._orders = orders_grpc.OrderServiceStub(channel)
        self._notifications = notifications_grpc.NotificationServiceStub(channel)
        self._email = f"conformance-py-{uuid.uuid4().hex[:12]}@example.com"
        self._user_id = ""
        self._order_id = ""
        self._watch: _Watch | None = None

    def steps(self) -> list[tuple[str, Callable[[], Awaitable[str]]]]:
        return [
            ("create user", self.create_user),
            ("duplicate email", self.duplicate_email),
            ("unknown id", self.unknown_id),
            ("invalid email", self.invalid_email),
            ("watch notifications", self.open_watch),
            ("place order", self.place_order),
            ("receive notification", self.receive_notification),
            ("cancel order", self.cancel_order),
            ("1 ms deadline on a watch", self.tiny_deadline),
        ]

    async def run(self) -> bool:
        try:
            for name, step in self.steps():
                try:
                    detail = await step()
                except StepFailed as failed:
                    print(f"FAIL {name}: {failed}")
                    return False
                print(f"ok   {name} {detail}")
            return True
        finally:
            if self._watch is not None:
                self._watch.cancel()

    async def create_user(self) -> str:
        reply = await _expect_ok(self._users.CreateUser(users_pb.CreateUserRequest(
            user=users_pb2.User(email=self._email, display_name="Ada")), timeout=CALL_TIMEOUT_S))
        if not reply.user.user_id:
            raise StepFailed("expected a user id, got an empty one")
        self._user_id = reply.user.user_id
        return f"{self._user_id} ({self._email})"

    async def duplicate_email(self) -> str:
        await _expect_code(self._users.CreateUser(users_pb.CreateUserRequest(
            user=users_pb2.User(email=self._email, display_name="Ada again")), timeout=CALL_TIMEOUT_S),
            grpc.StatusCode.ALREADY_EXISTS)
        return "-> ALREADY_EXISTS"

    async def unknown_id(self) -> str:
        await _expect_code(self._users.GetUser(users_pb.GetUserRequest(user_id=f"no-such-user-{uuid.uuid4().hex}"),
                                               timeout=CALL_TIMEOUT_S), grpc.StatusCode.NOT_FOUND)
        return "-> NOT_FOUND"

    async def invalid_email(self) -> str:
        error = await _expect_code(self._users.CreateUser(users_pb.CreateUserRequest(
            user=users_pb2.User(email="not-an-email", display_name="Ada")), timeout=CALL_TIMEOUT_S),
            grpc.StatusCode.INVALID_ARGUMENT)
        # The field violations travel in grpc-status-details-bin; rpc_status decodes google.rpc.Status.
        status = rpc_status.from_call(error)
        details = list(status.details) if status is not None else []
        for detail in details:
            bad_request = error_details_pb2.BadRequest()
            if detail.Unpack(bad_request):
                for violation in bad_request.field_violations:
                    if violation.field == "user.email":
                        return f"-> INVALID_ARGUMENT, BadRequest {violation.field}: {violation.description}"
        raise StepFailed(f"expected a BadRequest field violation for user.email, got {len(details)} detail(s)")

    async def open_watch(self) -> str:
        self._watch = self._notifications.WatchNotifications(
            notifications_pb.WatchNotificationsRequest(user_id=self._user_id), timeout=WATCH_TIMEOUT_S)
        # The server sends headers once the watch is subscribed: anything recorded from then on reaches us.
        await self._watch.initial_metadata()
        if self._watch.done():
            raise StepFailed(f"expected the stream's headers, got {await _describe_call(self._watch)}")
        return f"for {self._user_id}"

    async def place_order(self) -> str:
        reply = await _expect_ok(self._orders.CreateOrder(orders_pb.CreateOrderRequest(order=orders_pb2.Order(
            user_id=self._user_id, line_items=[orders_pb2.LineItem(sku="book", quantity=2, unit_price_cents=1250)])),
            timeout=CALL_TIMEOUT_S))
        order = reply.order
        if order.total_cents != 2500 or order.state != orders_pb2.ORDER_STATE_CREATED:
            raise StepFailed(f"expected total 2500 in ORDER_STATE_CREATED, got {order.total_cents} in "
                             f"{orders_pb2.OrderState.Name(order.state)}")
        self._order_id = order.order_id
        return f"{self._order_id} (total {order.total_cents} cents)"

    async def receive_notification(self) -> str:
        assert self._watch is not None
        try:
            async for reply in self._watch:
                if self._order_id in reply.notification.text:
                    self._watch.cancel()
                    return f'"{reply.notification.text}"'
        except grpc.aio.AioRpcError as error:
            raise StepFailed(f"expected a notification naming {self._order_id} within {WATCH_TIMEOUT_S:g} s, "
                             f"got {_describe(error)}") from None
        raise StepFailed(f"expected a notification naming {self._order_id}, got the end of the stream")

    async def cancel_order(self) -> str:
        reply = await _expect_ok(self._orders.CancelOrder(
            orders_pb.CancelOrderRequest(order_id=self._order_id, reason="conformance run"),
            timeout=CALL_TIMEOUT_S))
        state = orders_pb2.OrderState.Name(reply.order.state)
        if reply.order.state != orders_pb2.ORDER_STATE_CANCELLED:
            raise StepFailed(f"expected ORDER_STATE_CANCELLED, got {state}")
        return f"{self._order_id} -> {state}"

    async def tiny_deadline(self) -> str:
        """A unary GetUser through a local gateway can answer within 1 ms, so the call held to a 1 ms deadline
        is a watch, which only ends when its deadline does."""
        watch = self._notifications.WatchNotifications(
            notifications_pb.WatchNotificationsRequest(user_id=self._user_id), timeout=0.001)

        async def drain() -> None:
            async for _ in watch:
                pass  # notifications may arrive before the deadline; only the way the stream ends matters

        await _expect_code(drain(), grpc.StatusCode.DEADLINE_EXCEEDED)
        return "-> DEADLINE_EXCEEDED"


async def _expect_ok(call: Awaitable[T]) -> T:
    try:
        return await call
    except grpc.aio.AioRpcError as error:
        raise StepFailed(f"expected OK, got {_describe(error)}") from None


async def _expect_code(call: Awaitable[object], want: grpc.StatusCode) -> grpc.aio.AioRpcError:
    """Awaits a call that must fail with want, and returns its error."""
    try:
        await call
    except grpc.aio.AioRpcError as error:
        if error.code() == want:
            return error
        raise StepFailed(f"expected {want.name}, got {_describe(error)}") from None
    raise StepFailed(f"expected {want.name}, got OK")


def _describe(error: grpc.aio.AioRpcError) -> str:
    return f'{error.code().name} ("{error.details()}")'


async def _describe_call(call: _Watch) -> str:
    return f'{(await call.code()).name} ("{await call.details()}")'


def _channel(target: str, ca_file: Path | None, token: str | None) -> grpc.aio.Channel:
    """TLS trusting ca_file (None: the system's roots), and the token as `authorization: Bearer` on every call."""
    credentials = grpc.ssl_channel_credentials(root_certificates=ca_file.read_bytes() if ca_file else None)
    if token:
        credentials = grpc.composite_channel_credentials(credentials, grpc.access_token_call_credentials(token))
    return grpc.aio.secure_channel(target, credentials)


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--target", default="127.0.0.1:8080", help="gateway address host:port")
    parser.add_argument("--ca-file", type=Path, help="PEM file of the CA to trust (default: the system's roots)")
    parser.add_argument("--token", help="token sent as 'authorization: Bearer TOKEN' on every call")
    args = parser.parse_args(argv)
    async with _channel(args.target, args.ca_file, args.token) as channel:
        scenario = Scenario(channel)
        if not await scenario.run():
            return 1
    print(f"all {len(scenario.steps())} steps ok")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
