"""The services' SQLite database: WAL, schema on open, serialized transactions, isolated reads."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from protomesh.sqlite import Database, database_file, from_micros, to_micros

SCHEMA = "CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v INTEGER NOT NULL);"


async def test_open_creates_folders_schema_and_a_wal_file(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "db.sqlite3"
    async with Database.open(path, SCHEMA) as db:
        assert await db.fetch_all("SELECT * FROM t") == []
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def _insert_then_fail(db: Database) -> None:
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO t VALUES ('a', 1)")
        raise RuntimeError("boom")


async def test_a_transaction_that_raises_leaves_nothing_behind(tmp_path: Path) -> None:
    async with Database.open(tmp_path / "db", SCHEMA) as db:
        with pytest.raises(RuntimeError):
            await _insert_then_fail(db)

        assert await db.fetch_one("SELECT v FROM t WHERE k = 'a'") is None


async def test_reads_see_only_committed_writes(tmp_path: Path) -> None:
    async with Database.open(tmp_path / "db", SCHEMA) as db:
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO t VALUES ('a', 1)")
            assert await db.fetch_one("SELECT v FROM t") is None
        row = await db.fetch_one("SELECT v FROM t")
        assert row is not None
        assert row["v"] == 1


async def test_concurrent_read_modify_write_transactions_do_not_lose_updates(tmp_path: Path) -> None:
    async with Database.open(tmp_path / "db", SCHEMA) as db:
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO t VALUES ('n', 0)")

        async def increment() -> None:
            async with db.transaction() as tx:
                async with tx.execute("SELECT v FROM t WHERE k = 'n'") as cursor:
                    row = await cursor.fetchone()
                await asyncio.sleep(0)
                await tx.execute("UPDATE t SET v = ? WHERE k = 'n'", (row[0] + 1,))

        await asyncio.gather(*(increment() for _ in range(25)))

        row = await db.fetch_one("SELECT v FROM t WHERE k = 'n'")
        assert row is not None
        assert row["v"] == 25


def test_micros_round_trip_exactly() -> None:
    moment = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)

    assert from_micros(to_micros(moment)) == moment


def test_a_relative_database_path_lands_in_the_checkout(tmp_path: Path) -> None:
    (tmp_path / "protos").mkdir()
    (tmp_path / "Makefile").touch()
    (tmp_path / "services" / "x").mkdir(parents=True)

    assert database_file("var/x.db", cwd=tmp_path / "services" / "x") == tmp_path / "var" / "x.db"
    assert database_file("/abs/x.db") == Path("/abs/x.db")
