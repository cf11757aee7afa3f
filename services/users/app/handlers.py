"""The acme.users.v1.UserService servicer: maps messages to use cases and their results back to messages."""

from __future__ import annotations

from typing import Any, TypeAlias

import grpc.aio
from acme.users.v1 import users_pb2, users_service_pb2

from app.domain import User, UserFields, Users
from protomesh.convert import timestamp

# Domain errors raised below become gRPC statuses (with BadRequest field violations) in the runtime's
# interceptor, so no handler catches anything.
_Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


class UserHandlers:
    """Servicer of acme.users.v1.UserService; register it with add_UserServiceServicer_to_server."""

    def __init__(self, users: Users) -> None:
        self._users = users

    async def CreateUser(
        self, request: users_service_pb2.CreateUserRequest, context: _Context
    ) -> users_service_pb2.CreateUserResponse:
        user = await self._users.create(_fields(request.user))
        return users_service_pb2.CreateUserResponse(user=to_message(user))

    async def GetUser(
        self, request: users_service_pb2.GetUserRequest, context: _Context
    ) -> users_service_pb2.GetUserResponse:
        user = await self._users.get(request.user_id)
        return users_service_pb2.GetUserResponse(user=to_message(user))

    async def ListUsers(
        self, request: users_service_pb2.ListUsersRequest, context: _Context
    ) -> users_service_pb2.ListUsersResponse:
        page = await self._users.list(request.page_size, request.page_token)
        return users_service_pb2.ListUsersResponse(
            users=[to_message(user) for user in page.items], next_page_token=page.next_page_token
        )

    async def UpdateUser(
        self, request: users_service_pb2.UpdateUserRequest, context: _Context
    ) -> users_service_pb2.UpdateUserResponse:
        user = await self._users.update(request.user.user_id, _fields(request.user), request.update_mask.paths)
        return users_service_pb2.UpdateUserResponse(user=to_message(user))

    async def DeleteUser(
        self, request: users_service_pb2.DeleteUserRequest, context: _Context
    ) -> users_service_pb2.DeleteUserResponse:
        await self._users.delete(request.user_id)
        return users_service_pb2.DeleteUserResponse()


def to_message(user: User) -> users_pb2.User:
    return users_pb2.User(
        user_id=user.user_id,
        email=user.email,
        display_name=user.display_name,
        create_time=timestamp(user.create_time),
        update_time=timestamp(user.update_time),
    )


def _fields(message: users_pb2.User) -> UserFields:
    """The client-settable values of a User message; ids and times are output only and ignored here."""
    return UserFields(email=message.email, display_name=message.display_name)
