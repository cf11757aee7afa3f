"""Fixtures of the notifications service's tests: a real SQLite store, a broadcaster, the use cases over them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.broadcast import Broadcaster
from app.domain import Notification, Notifications
from app.repo import SqliteNotificationRepository
from protomesh.testing import SteppingClock


@pytest.fixture
async def repo(tmp_path: Path) -> AsyncIterator[SqliteNotificationRepository]:
    async with SqliteNotificationRepository.open(tmp_path / "db" / "notifications.sqlite3") as opened:
        yield opened


@pytest.fixture
def broadcaster() -> Broadcaster[Notification]:
    return Broadcaster(queue_size=4)


@pytest.fixture
def notifications(repo: SqliteNotificationRepository, broadcaster: Broadcaster[Notification]) -> Notifications:
    return Notifications(repo, broadcaster, clock=SteppingClock())

