"""Users stored in SQLite through aiosqlite (WAL), implementing the domain's UserRepository."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime
from pathlib import Path

import aiosqlite

from app.domain import EmailTaken, PageKey, User, UserChanges, from_micros, to_micros

log = logging.getLogger(__name__)

# Times are integer microseconds since the epoch: exact, and they sort the way the list order needs.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    user_id      TEXT PRIMARY KEY,
    email        TEXT NOT NULL,
    display_name TEXT NOT NULL,
    create_us    INTEGER NOT NULL,
    update_us    INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS users_email ON users (email);
CREATE INDEX IF NOT EXISTS users_list_order ON users (create_us, user_id);
"""
_COLUMNS = "user_id, email, display_name, create_us, update_us"
# Domain field -> column; the only names ever formatted into SQL, so requests cannot inject any.
_MUTABLE_COLUMNS = {"email": "email", "display_name": "display_name"}
# Wait this long for another connection's write lock (a second process on the same file) before failing.
_BUSY_TIMEOUT_MS = 5000
_EMAIL_CONSTRAINT = "users.email"


class SqliteUserRepository:
    """UserRepository over one aiosqlite connection; get one with `async with SqliteUserRepository.open(path)`."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    @classmethod
    @asynccontextmanager
    async def open(cls, path: str | Path) -> AsyncIterator[SqliteUserRepository]:
        """Open (creating folders and schema as needed) and close on exit; ":memory:" for a throwaway store."""
        target = str(path)
        if target != ":memory:":
            Path(target).parent.mkdir(parents=True, exist_ok=True)
        # Autocommit: every write is one statement, and the one connection is shared by concurrent calls,
        # so an implicit transaction would mix statements of different calls.
        db = await aiosqlite.connect(target, isolation_level=None)
        try:
            await _prepare(db, target)
            yield cls(db)
        finally:
            await db.close()

    async def journal_mode(self) -> str:
        async with self._db.execute("PRAGMA journal_mode") as cursor:
            row = await cursor.fetchone()
        return str(row[0]) if row else ""

    async def add(self, user: User) -> None:
        values = (user.user_id, user.email, user.display_name, to_micros(user.create_time),
                  to_micros(user.update_time))
        with _unique_email():
            await self._db.execute_insert(f"INSERT INTO users ({_COLUMNS}) VALUES (?, ?, ?, ?, ?)", values)

    async def get(self, user_id: str) -> User | None:
        async with self._db.execute(f"SELECT {_COLUMNS} FROM users WHERE user_id = ?", (user_id,)) as cursor:
            row = await cursor.fetchone()
        return None if row is None else _user(row)

    async def update(self, user_id: str, changes: UserChanges, update_time: datetime) -> User | None:
        new_values = {column: getattr(changes, name) for name, column in _MUTABLE_COLUMNS.items()
                      if getattr(changes, name) is not None}
        assignments = ", ".join(f"{column} = ?" for column in [*new_values, "update_us"])
        sql = f"UPDATE users SET {assignments} WHERE user_id = ? RETURNING {_COLUMNS}"
        with _unique_email():
            async with self._db.execute(sql, (*new_values.values(), to_micros(update_time), user_id)) as cursor:
                row = await cursor.fetchone()
        return None if row is None else _user(row)

    async def delete(self, user_id: str) -> bool:
        async with self._db.execute("DELETE FROM users WHERE user_id = ?", (user_id,)) as cursor:
            return cursor.rowcount > 0

    async def list_after(self, after: PageKey | None, limit: int) -> Sequence[User]:
        """Up to limit users after the key, oldest first; ties in time are ordered by id, so pages never overlap."""
        params: tuple[object, ...]
        if after is None:
            sql, params = f"SELECT {_COLUMNS} FROM users ORDER BY create_us, user_id LIMIT ?", (limit,)
        else:
            sql = (f"SELECT {_COLUMNS} FROM users WHERE (create_us, user_id) > (?, ?) "
                   "ORDER BY create_us, user_id LIMIT ?")
            params = (to_micros(after.create_time), after.user_id, limit)
        async with self._db.execute(sql, params) as cursor:
            rows = await cursor.fetchall()
        return [_user(row) for row in rows]


async def _prepare(db: aiosqlite.Connection, target: str) -> None:
    async with db.execute("PRAGMA journal_mode = WAL") as cursor:
        row = await cursor.fetchone()
    if target != ":memory:" and (row is None or str(row[0]).lower() != "wal"):
        log.warning("sqlite kept journal mode %s for %s: concurrent readers will wait for writers", row, target)
    # NORMAL is durable enough in WAL mode (a power cut may lose the last commits, never corrupts the file).
    await db.execute("PRAGMA synchronous = NORMAL")
    await db.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
    await db.executescript(_SCHEMA)


def _user(row: sqlite3.Row) -> User:
    user_id, email, display_name, create_us, update_us = row
    return User(str(user_id), str(email), str(display_name), from_micros(int(create_us)), from_micros(int(update_us)))


@contextmanager
def _unique_email() -> Iterator[None]:
    """Turn the broken unique email index into the domain's error; other integrity errors are bugs, kept."""
    try:
        yield
    except sqlite3.IntegrityError as exc:
        if _EMAIL_CONSTRAINT in str(exc):
            raise EmailTaken() from exc
        raise
