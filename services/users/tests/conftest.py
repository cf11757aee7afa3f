"""Fixtures of the users service's tests: a real SQLite store, the use cases over it, a served UserService."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from acme.users.v1 import users_service_pb2_grpc

from app.domain import Users
from app.main import binding
from app.repo import SqliteUserRepository
from protomesh.testing import SteppingClock, serve_bindings


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
    async with serve_bindings(binding(users)) as served:
        yield users_service_pb2_grpc.UserServiceStub(served.channel)
