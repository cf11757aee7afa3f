"""The users service as the domain's UserDirectory, over a gRPC channel (a DiscoveryChannel in production)."""

from __future__ import annotations

import logging

import grpc
import grpc.aio
from acme.users.v1 import users_service_pb2, users_service_pb2_grpc

from app.settings import DEFAULT_USERS_TIMEOUT_S
from protomesh.errors import Unavailable

log = logging.getLogger(__name__)

# Codes that answer the question: the user is not there (an id users cannot even parse names nobody).
_NO_SUCH_USER = frozenset({grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT})


class GrpcUserDirectory:
    """UserDirectory over acme.users.v1.UserService.GetUser; anything but an answer becomes Unavailable.

        users = GrpcUserDirectory(await ctx.channel("users"), timeout_s=2.0)
        await users.exists("u-1")
    """

    def __init__(self, channel: grpc.aio.Channel, *, timeout_s: float = DEFAULT_USERS_TIMEOUT_S) -> None:
        self._stub = users_service_pb2_grpc.UserServiceStub(channel)
        self.timeout_s = timeout_s

    async def exists(self, user_id: str) -> bool:
        request = users_service_pb2.GetUserRequest(user_id=user_id)
        try:
            # The channel caps this timeout by what is left of the incoming call's deadline.
            await self._stub.GetUser(request, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as error:
            if error.code() in _NO_SUCH_USER:
                return False
            log.warning("users.GetUser failed: %s %s", error.code().name, error.details())
            raise Unavailable("the users service is unavailable, so the order's user cannot be checked; "
                              "try again") from None
        return True
