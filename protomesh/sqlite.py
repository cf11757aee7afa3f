"""A service's SQLite database: WAL file, schema on open, one serialized writer and a separate reader.

    class OrderRepository(Repository):
        SCHEMA = "CREATE TABLE IF NOT EXISTS orders (order_id TEXT PRIMARY KEY, state TEXT NOT NULL)"

        async def cancel(self, order_id: str) -> bool:     # several statements: self._db.transaction()
            sql = "UPDATE orders SET state = 'CANCELLED' WHERE order_id = ? RETURNING order_id"
            return bool(await self._db.write(sql, (order_id,)))

    async with OrderRepository.open("var/orders.sqlite3") as orders:
        await orders.cancel("o-1")
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import sqlite3
import tempfile
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Self

import aiosqlite

from protomesh._config import default_state_dir

log = logging.getLogger(__name__)

# A writer waits this long for a lock held by another process (e.g. a second instance on the same file)
# before SQLite raises "database is locked".
DEFAULT_BUSY_TIMEOUT_MS = 5000
# SQLite's name for a private in-memory database. Two connections to it would be two databases, so
# Database.open gives it a throwaway file instead (deleted on close): same behaviour, nothing kept.
MEMORY = ":memory:"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def to_micros(moment: datetime) -> int:
    """An aware datetime as integer microseconds since the epoch (exact, sortable, SQLite INTEGER)."""
    return (moment - _EPOCH) // _MICROSECOND


def from_micros(micros: int) -> datetime:
    """The aware UTC datetime of integer microseconds since the epoch."""
    return _EPOCH + timedelta(microseconds=micros)


def database_file(path: str | Path, *, base: Path | None = None) -> Path:
    """A settings' database path made absolute: a relative one is resolved against base (default:
    PROTOMESH_STATE_DIR, else the working directory); MEMORY stays as it is."""
    target = Path(path).expanduser()
    if target.is_absolute() or str(path) == MEMORY:
        return target
    return ((base or default_state_dir()) / target).resolve()


async def _connect(path: Path) -> aiosqlite.Connection:
    # isolation_level=None: no implicit BEGIN; transactions are explicit (BEGIN IMMEDIATE) so that a
    # writer takes the write lock up front instead of failing on lock upgrade.
    conn = await aiosqlite.connect(path, isolation_level=None)
    conn.row_factory = sqlite3.Row
    # WAL lets the reader connection see the last commit while the writer holds a transaction;
    # synchronous=NORMAL is crash-safe in WAL (a power cut may lose the last commits, never consistency).
    async with conn.execute("PRAGMA journal_mode=WAL") as cursor:
        mode = await cursor.fetchone()
    if mode is None or str(mode[0]).lower() != "wal":
        log.warning("sqlite kept journal mode %s for %s: the reader will wait for writers", mode, path)
    for pragma in ("synchronous=NORMAL", "foreign_keys=ON", f"busy_timeout={DEFAULT_BUSY_TIMEOUT_MS}"):
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
        if str(path) == MEMORY:
            folder = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="protomesh-sqlite-"))
            try:
                async with cls.open(folder / "memory.sqlite3", schema) as db:
                    yield db
            finally:
                await asyncio.to_thread(shutil.rmtree, folder, ignore_errors=True)
            return
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
        """One write transaction: committed when the block ends, rolled back if it raises or is cancelled."""
        async with self._write_lock:
            try:
                # aiosqlite runs each statement on its own thread, and a cancelled await does not stop it:
                # BEGIN (or COMMIT) may still run after the caller was cancelled (a gRPC client gone, a
                # consumer's channel closed). Left open, every later BEGIN fails "cannot start a transaction
                # within a transaction". So everything from BEGIN on is covered by the rollback.
                await self._writer.execute("BEGIN IMMEDIATE")
                yield self._writer
                await self._writer.execute("COMMIT")
            except BaseException:
                await self._rollback_if_open()
                raise

    async def _rollback_if_open(self) -> None:
        """ROLLBACK, queued behind any BEGIN/COMMIT still running, so the next writer never finds one open."""
        # "no transaction is active" when BEGIN failed or COMMIT went through: nothing to undo.
        with contextlib.suppress(sqlite3.OperationalError):
            await self._writer.execute("ROLLBACK")

    async def write(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        """One write statement in a transaction of its own; the rows of its RETURNING clause (none without)."""
        async with self.transaction() as tx, tx.execute(sql, tuple(params)) as cursor:
            return list(await cursor.fetchall())

    async def fetch_all(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        """Rows of a read-only query, from the last committed state."""
        return list(await self._reader.execute_fetchall(sql, tuple(params)))

    async def fetch_one(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Row | None:
        """The first row of a read-only query, or None."""
        async with self._reader.execute(sql, tuple(params)) as cursor:
            row: sqlite3.Row | None = await cursor.fetchone()
            return row


class Repository:
    """Base of a service's repository over one Database: a subclass sets SCHEMA and queries self._db."""

    SCHEMA: ClassVar[str]

    def __init__(self, db: Database) -> None:
        self._db = db

    @classmethod
    @asynccontextmanager
    async def open(cls, path: str | Path) -> AsyncIterator[Self]:
        """Open (creating folders and schema as needed) and close on exit; MEMORY for a throwaway store."""
        async with Database.open(path, cls.SCHEMA) as db:
            yield cls(db)


__all__ = ["DEFAULT_BUSY_TIMEOUT_MS", "MEMORY", "Database", "Repository", "database_file", "from_micros", "to_micros"]
