"""Fixtures of the users service's tests: a real SQLite store, the use cases over it, a served UserService."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc.aio
import pytest
from acme.users.v1 import users_service_pb2_grpc

from app.domain import Users
from app.main import binding
from app.repo import SqliteUserRepository
from protomesh import Server, ServerSettings


class SteppingClock:
    """A clock that moves 1 ms per reading, so creation order is the list order in every test."""

    def __init__(self, start: datetime = datetime(2030, 1, 1, tzinfo=UTC)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now


@pytest.fixture
def clock() -> SteppingClock:
    return SteppingClock()


@pytest.fixture
async def repo(tmp_path: Path) -> AsyncIterator[SqliteUserRepository]:
    async with SqliteUserRepository.open(tmp_path / "db" / "users.db") as opened:
        yield opened


@pytest.fixture
def users(repo: SqliteUserRepository, clock: SteppingClock) -> Users:
    return Users(repo, clock=clock)


@pytest.fixture
async def stub(users: Users) -> AsyncIterator[users_service_pb2_grpc.UserServiceStub]:
    """A UserService client talking to the real servicer, served with the runtime's interceptor on port 0."""
    server = Server(ServerSettings(port=0), [binding(users)])
    port = await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield users_service_pb2_grpc.UserServiceStub(channel)
    finally:
        await server.stop(0)

