"""Fixtures of the orders service's tests: a real SQLite store, the use cases, a users service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc.aio
import pytest
from acme.users.v1 import users_pb2, users_service_pb2, users_service_pb2_grpc

from app.domain import Orders
from app.repo import SqliteOrderRepository
from protomesh import Binding
from protomesh.errors import NotFound, Unavailable
from protomesh.testing import SteppingClock

KNOWN_USER = "u-1"
OTHER_USER = "u-2"


class FakeUsers:
    """The domain's UserDirectory with a fixed set of users; `down` makes it fail like an unreachable service."""

    def __init__(self, *user_ids: str) -> None:
        self.user_ids = set(user_ids)
        self.down = False
        self.asked: list[str] = []

    async def exists(self, user_id: str) -> bool:
        self.asked.append(user_id)
        if self.down:
            raise Unavailable("users service unavailable")
        return user_id in self.user_ids


class UsersServicer(users_service_pb2_grpc.UserServiceServicer):
    """A real acme.users.v1.UserService answering GetUser from fixed ids; records each call's deadline."""

    def __init__(self, *user_ids: str) -> None:
        self.user_ids = set(user_ids)
        self.delay_s = 0.0
        self.time_remaining: list[float | None] = []

    async def GetUser(self, request: users_service_pb2.GetUserRequest,
                      context: grpc.aio.ServicerContext[Any, Any]) -> users_service_pb2.GetUserResponse:
        self.time_remaining.append(context.time_remaining())
        await asyncio.sleep(self.delay_s)
        if request.user_id not in self.user_ids:
            raise NotFound(f"user {request.user_id!r} does not exist")
        return users_service_pb2.GetUserResponse(user=users_pb2.User(user_id=request.user_id))

    def binding(self) -> Binding:
        return Binding(users_service_pb2.DESCRIPTOR.services_by_name["UserService"], self,
                       users_service_pb2_grpc.add_UserServiceServicer_to_server)


@pytest.fixture
async def repo(tmp_path: Path) -> AsyncIterator[SqliteOrderRepository]:
    async with SqliteOrderRepository.open(tmp_path / "db" / "orders.sqlite3") as opened:
        yield opened


@pytest.fixture
def users() -> FakeUsers:
    return FakeUsers(KNOWN_USER, OTHER_USER)


@pytest.fixture
def orders(repo: SqliteOrderRepository, users: FakeUsers) -> Orders:
    return Orders(repo, users, clock=SteppingClock())

