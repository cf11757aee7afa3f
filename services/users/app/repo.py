"""Users stored in SQLite (protomesh.sqlite: WAL, one serialized writer), implementing the domain's UserRepository."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime

from app.domain import EmailTaken, User, UserChanges
from protomesh.paging import Cursor
from protomesh.sqlite import Repository, from_micros, to_micros

_COLUMNS = "user_id, email, display_name, create_us, update_us"
# Domain field -> column; the only names ever formatted into SQL, so requests cannot inject any.
_MUTABLE_COLUMNS = {"email": "email", "display_name": "display_name"}
_EMAIL_CONSTRAINT = "users.email"


class SqliteUserRepository(Repository):
    """UserRepository over SQLite; get one with `async with SqliteUserRepository.open(path)` (":memory:" works)."""

    # Times are integer microseconds since the epoch: exact, and they sort the way the list order needs.
    SCHEMA = """
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

    async def journal_mode(self) -> str:
        row = await self._db.fetch_one("PRAGMA journal_mode")
        return str(row[0]) if row else ""

    async def add(self, user: User) -> None:
        values = (user.user_id, user.email, user.display_name, to_micros(user.create_time),
                  to_micros(user.update_time))
        with _unique_email():
            await self._db.write(f"INSERT INTO users ({_COLUMNS}) VALUES (?, ?, ?, ?, ?)", values)

    async def get(self, user_id: str) -> User | None:
        row = await self._db.fetch_one(f"SELECT {_COLUMNS} FROM users WHERE user_id = ?", (user_id,))
        return None if row is None else _user(row)

    async def update(self, user_id: str, changes: UserChanges, update_time: datetime) -> User | None:
        """Write the fields changes sets (None ones keep their value) and the update time."""
        new_values = {column: getattr(changes, name) for name, column in _MUTABLE_COLUMNS.items()
                      if getattr(changes, name) is not None}
        assignments = ", ".join(f"{column} = ?" for column in [*new_values, "update_us"])
        sql = f"UPDATE users SET {assignments} WHERE user_id = ? RETURNING {_COLUMNS}"
        with _unique_email():
            rows = await self._db.write(sql, (*new_values.values(), to_micros(update_time), user_id))
        return _user(rows[0]) if rows else None

    async def delete(self, user_id: str) -> bool:
        return bool(await self._db.write("DELETE FROM users WHERE user_id = ? RETURNING user_id", (user_id,)))

    async def list_after(self, after: Cursor | None, limit: int) -> Sequence[User]:
        """Up to limit users after the cursor, oldest first; ties in time are ordered by id, so pages never overlap."""
        params: tuple[object, ...]
        if after is None:
            sql, params = f"SELECT {_COLUMNS} FROM users ORDER BY create_us, user_id LIMIT ?", (limit,)
        else:
            sql = (f"SELECT {_COLUMNS} FROM users WHERE (create_us, user_id) > (?, ?) "
                   "ORDER BY create_us, user_id LIMIT ?")
            params = (to_micros(after.time), after.id, limit)
        return [_user(row) for row in await self._db.fetch_all(sql, params)]


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
