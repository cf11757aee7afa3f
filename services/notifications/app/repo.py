"""Notifications stored in SQLite, at most one per event (a UNIQUE event_id makes redeliveries no-ops)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from app.domain import Notification
from protomesh.paging import Cursor
from protomesh.sqlite import Repository, from_micros, to_micros

_COLUMNS = "notification_id, user_id, event_id, text, create_us"


class SqliteNotificationRepository(Repository):
    """NotificationRepository over SQLite; get one with `async with SqliteNotificationRepository.open(path)`."""

    # Times are integer microseconds since the epoch: exact, and they sort the way the list order needs.
    SCHEMA = """
        CREATE TABLE IF NOT EXISTS notifications (
            notification_id TEXT PRIMARY KEY,
            user_id         TEXT NOT NULL,
            event_id        TEXT NOT NULL UNIQUE,
            text            TEXT NOT NULL,
            create_us       INTEGER NOT NULL
        );
        CREATE INDEX IF NOT EXISTS notifications_user_list_order ON notifications (user_id, create_us, notification_id);
    """

    async def add(self, notification: Notification) -> bool:
        """Insert it; False when a notification for the same event exists (the insert is then a no-op)."""
        values = (notification.notification_id, notification.user_id, notification.event_id, notification.text,
                  to_micros(notification.create_time))
        inserted = await self._db.write(
            f"INSERT INTO notifications ({_COLUMNS}) VALUES (?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING "
            "RETURNING notification_id",
            values,
        )
        return bool(inserted)

    async def list_after(self, after: Cursor | None, *, user_id: str, limit: int) -> Sequence[Notification]:
        """Up to limit of the user's notifications after the cursor, oldest first; ties in time by id."""
        where = "user_id = ?"
        params: list[str | int] = [user_id]
        if after is not None:
            where += " AND (create_us, notification_id) > (?, ?)"
            params += [to_micros(after.time), after.id]
        rows = await self._db.fetch_all(
            f"SELECT {_COLUMNS} FROM notifications WHERE {where} ORDER BY create_us, notification_id LIMIT ?",
            [*params, limit],
        )
        return [_notification(row) for row in rows]


def _notification(row: sqlite3.Row) -> Notification:
    notification_id, user_id, event_id, text, create_us = row
    return Notification(str(notification_id), str(user_id), str(event_id), str(text), from_micros(int(create_us)))
