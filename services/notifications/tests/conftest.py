"""Fixtures of the notifications service's tests: a real SQLite store, a broadcaster, the use cases over them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app.broadcast import Broadcaster
from app.domain import Notification, Notifications
from app.repo import SqliteNotificationRepository


class TickingClock:
    """Moves 1 ms per reading, so creation order is the list order in every test."""

    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now


@pytest.fixture
async def repo(tmp_path: Path) -> AsyncIterator[SqliteNotificationRepository]:
    async with SqliteNotificationRepository.open(tmp_path / "db" / "notifications.sqlite3") as opened:
        yield opened


@pytest.fixture
def broadcaster() -> Broadcaster[Notification]:
    return Broadcaster(queue_size=4)


@pytest.fixture
def notifications(repo: SqliteNotificationRepository, broadcaster: Broadcaster[Notification]) -> Notifications:
    return Notifications(repo, broadcaster, clock=TickingClock())

