"""A service's SQLite database: WAL file, schema on open, one serialized writer and a separate reader.

    async with Database.open("var/orders.sqlite3", SCHEMA) as db:
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO orders (order_id) VALUES (?)", ("o-1",))
        rows = await db.fetch_all("SELECT order_id FROM orders")
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiosqlite

from protomesh._config import default_config_dir

# A writer waits this long for a lock held by another process (e.g. a second instance on the same file)
# before SQLite raises "database is locked".
DEFAULT_BUSY_TIMEOUT_MS = 5000

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def to_micros(moment: datetime) -> int:
    """An aware datetime as integer microseconds since the epoch (exact, sortable, SQLite INTEGER)."""
    return (moment - _EPOCH) // _MICROSECOND


def from_micros(micros: int) -> datetime:
    """The aware UTC datetime of integer microseconds since the epoch."""
    return _EPOCH + timedelta(microseconds=micros)


def database_file(path: str | Path, *, cwd: Path | None = None) -> Path:
    """A settings' database path made absolute: a relative one is resolved against the folder holding
    config/ (the checkout, whose var/ is git-ignored, or a container's /app), as config files are."""
    target = Path(path).expanduser()
    if target.is_absolute():
        return target
    return default_config_dir(cwd).parent / target


async def _connect(path: Path) -> aiosqlite.Connection:
    # isolation_level=None: no implicit BEGIN; transactions are explicit (BEGIN IMMEDIATE) so that a
    # writer takes the write lock up front instead of failing on lock upgrade.
    conn = await aiosqlite.connect(path, isolation_level=None)
    conn.row_factory = sqlite3.Row
    # WAL lets the reader connection see the last commit while the writer holds a transaction;
    # synchronous=NORMAL is crash-safe in WAL (a power cut may lose the last commits, never consistency).
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON",
                   f"busy_timeout={DEFAULT_BUSY_TIMEOUT_MS}"):
        await conn.execute(f"PRAGMA {pragma}")
    return conn


class Database:
    """Two connections to one WAL file: writes are serialized through transaction(), reads never wait.

    A single aiosqlite connection shared by concurrent coroutines would let one coroutine's read see
    another's uncommitted transaction (and interleave BEGINs); the lock plus a separate reader prevents both.
    """

    def __init__(self, writer: aiosqlite.Connection, reader: aiosqlite.Connection) -> None:
        self._writer = writer
        self._reader = reader
        self._write_lock = asyncio.Lock()

    @classmethod
    @asynccontextmanager
    async def open(cls, path: str | Path, schema: str) -> AsyncIterator[Database]:
        """Create the file's folder and the schema (idempotent DDL), yield the database, close it."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = await _connect(path)
        try:
            await writer.executescript(schema)
            reader = await _connect(path)
            try:
                yield cls(writer, reader)
            finally:
                await reader.close()
        finally:
            await writer.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction: committed when the block ends, rolled back if it raises."""
        async with self._write_lock:
            await self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield self._writer
            except BaseException:
                await self._writer.execute("ROLLBACK")
                raise
            await self._writer.execute("COMMIT")

    async def fetch_all(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        """Rows of a read-only query, from the last committed state."""
        return list(await self._reader.execute_fetchall(sql, tuple(params)))

    async def fetch_one(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Row | None:
        """The first row of a read-only query, or None."""
        async with self._reader.execute(sql, tuple(params)) as cursor:
            row: sqlite3.Row | None = await cursor.fetchone()
            return row


__all__ = ["DEFAULT_BUSY_TIMEOUT_MS", "Database", "database_file", "from_micros", "to_micros"]
