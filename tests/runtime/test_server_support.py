"""Test servicers and helpers shared by the runtime's server, interceptor and app tests (no tests here)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
from acme.notifications.v1 import notifications_pb2, notifications_service_pb2, notifications_service_pb2_grpc
from acme.users.v1 import users_pb2, users_service_pb2, users_service_pb2_grpc

from protomesh import _context
from protomesh._server import Binding, Server
from protomesh.auth import caller
from protomesh.errors import FieldViolation, InvalidArgument, NotFound

SECRET = "secret db password"


class ScriptedUsers(users_service_pb2_grpc.UserServiceServicer):
    """GetUser does what its user_id names, so each test picks a behavior with one request field."""

    async def GetUser(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        match request.user_id:
            case "crash":
                raise RuntimeError(SECRET)
            case "invalid":
                raise InvalidArgument([FieldViolation("user_id", "must start with 'u-'")])
            case "missing":
                raise NotFound("user missing does not exist")
            case "deny":
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, "not yours")
            case "caller":  # who the runtime says is calling: "service|subject|scopes" and the SPIFFE id
                who = caller()
                if who is None:
                    return _reply(user_id="", display_name="no caller")
                return _reply(user_id=who.spiffe_id or "",
                              display_name=f"{who.service}|{who.subject}|{' '.join(sorted(who.scopes))}")
            case "context":  # what the handler sees of the call context, for assertions on the client
                remaining = _context.time_remaining()
                # Microseconds: a downstream deadline a few hundred µs shorter must not round up to the caller's.
                name = "none" if remaining is None else f"{remaining:.6f}"
                return _reply(user_id=_context.correlation_id() or "", display_name=name)
        return _reply(user_id=request.user_id, display_name="Ada")


def _reply(*, user_id: str, display_name: str) -> Any:
    return users_service_pb2.GetUserResponse(user=users_pb2.User(user_id=user_id, display_name=display_name))


class ScriptedNotifications(notifications_service_pb2_grpc.NotificationServiceServicer):
    """WatchNotifications streams two notifications, then fails when the user id says so."""

    async def WatchNotifications(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        for number in range(2):
            notification = notifications_pb2.Notification(notification_id=f"n-{number}", user_id=request.user_id)
            yield notifications_service_pb2.WatchNotificationsResponse(notification=notification)
        if request.user_id == "crash":
            raise RuntimeError(SECRET)
        if request.user_id == "invalid":
            raise InvalidArgument([FieldViolation("user_id", "unknown user")])


def bindings() -> list[Binding]:
    return [
        Binding(users_service_pb2.DESCRIPTOR.services_by_name["UserService"], ScriptedUsers(),
                users_service_pb2_grpc.add_UserServiceServicer_to_server),
        Binding(notifications_service_pb2.DESCRIPTOR.services_by_name["NotificationService"],
                ScriptedNotifications(), notifications_service_pb2_grpc.add_NotificationServiceServicer_to_server),
    ]


@dataclass
class Served:
    """A started server and a client channel to it."""

    server: Server
    channel: grpc.aio.Channel

    @property
    def users(self) -> Any:
        return users_service_pb2_grpc.UserServiceStub(self.channel)

    @property
    def notifications(self) -> Any:
        return notifications_service_pb2_grpc.NotificationServiceStub(self.channel)
