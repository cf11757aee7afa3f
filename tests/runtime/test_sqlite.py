"""The services' SQLite database: WAL, schema on open, serialized transactions, isolated reads."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from protomesh.sqlite import MEMORY, Database, Repository, database_file, from_micros, to_micros

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
                assert row is not None
                await asyncio.sleep(0)
                await tx.execute("UPDATE t SET v = ? WHERE k = 'n'", (row[0] + 1,))

        await asyncio.gather(*(increment() for _ in range(25)))

        row = await db.fetch_one("SELECT v FROM t WHERE k = 'n'")
        assert row is not None
        assert row["v"] == 25


async def test_write_commits_one_statement_and_returns_its_returning_rows(tmp_path: Path) -> None:
    async with Database.open(tmp_path / "db", SCHEMA) as db:
        assert await db.write("INSERT INTO t VALUES ('a', 1)") == []

        changed = await db.write("UPDATE t SET v = v + 1 WHERE k = ? RETURNING k, v", ("a",))
        unchanged = await db.write("DELETE FROM t WHERE k = ? RETURNING k", ("missing",))

        assert [tuple(row) for row in changed] == [("a", 2)]
        assert unchanged == []
        assert [tuple(row) for row in await db.fetch_all("SELECT k, v FROM t")] == [("a", 2)]


async def test_a_memory_database_is_one_database_for_writer_and_reader_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    async with Database.open(MEMORY, SCHEMA) as db:
        await db.write("INSERT INTO t VALUES ('a', 1)")
        assert [tuple(row) for row in await db.fetch_all("SELECT k, v FROM t")] == [("a", 1)]
        assert await asyncio.to_thread(os.listdir, tmp_path)

    assert await asyncio.to_thread(os.listdir, tmp_path) == []
    async with Database.open(MEMORY, SCHEMA) as fresh:
        assert await fresh.fetch_all("SELECT * FROM t") == []


class Counters(Repository):
    SCHEMA = SCHEMA

    async def bump(self, key: str) -> int:
        rows = await self._db.write("INSERT INTO t VALUES (?, 1) ON CONFLICT (k) DO UPDATE SET v = v + 1 "
                                    "RETURNING v", (key,))
        return int(rows[0]["v"])


async def test_a_repository_opens_its_schema_and_keeps_its_data_across_a_reopen(tmp_path: Path) -> None:
    async with Counters.open(tmp_path / "a" / "counters.sqlite3") as counters:
        assert await counters.bump("x") == 1

    async with Counters.open(tmp_path / "a" / "counters.sqlite3") as reopened:
        assert await reopened.bump("x") == 2


def test_micros_round_trip_exactly() -> None:
    moment = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)

    assert from_micros(to_micros(moment)) == moment


def test_a_relative_database_path_lands_in_the_state_folder_and_nowhere_else(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROTOMESH_STATE_DIR", str(tmp_path / "state"))

    assert database_file("var/x.db") == tmp_path / "state" / "var" / "x.db"
    assert database_file("var/x.db", base=tmp_path) == tmp_path / "var" / "x.db"
    assert database_file("/abs/x.db") == Path("/abs/x.db")
    assert str(database_file(MEMORY)) == MEMORY


async def test_writes_cancelled_while_they_begin_leave_the_database_writable(tmp_path: Path) -> None:
    # aiosqlite still runs a statement whose await was cancelled: a BEGIN left open would make every
    # later write fail with "cannot start a transaction within a transaction" (a gRPC client giving up,
    # a broker channel closing under a consumer).
    async with Database.open(tmp_path / "db", SCHEMA) as db:
        for delay in (0, 0.0001, 0.001):
            writes = [asyncio.create_task(db.write("INSERT INTO t VALUES (?, 1)", (f"{delay}-{n}",)))
                      for n in range(4)]
            await asyncio.sleep(delay)
            for write in writes:
                write.cancel()
            await asyncio.gather(*writes, return_exceptions=True)

        await db.write("INSERT INTO t VALUES ('after', 2)")
        assert await db.fetch_one("SELECT v FROM t WHERE k = 'after'") is not None
