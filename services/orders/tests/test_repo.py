"""The SQLite store of orders and its outbox: WAL, atomic transactions, serialized writers, publish marks."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.domain import LineItem, Order, OrderCreated, OrderState
from app.repo import SqliteOrderRepository
from protomesh.events import OutboxRecord

CREATED_AT = datetime(2030, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)


def _order(order_id: str = "o-1", user_id: str = "u-1") -> Order:
    items = (LineItem("sku-1", 2, 250), LineItem("sku-2", 1, 0))
    return Order(order_id, user_id, items, 500, OrderState.CREATED, CREATED_AT)


async def _place(repo: SqliteOrderRepository, order: Order) -> None:
    async with repo.transaction() as tx:
        await tx.insert(order)
        await tx.add_event(OrderCreated(f"e-{order.order_id}", order.create_time, order))


async def _pending(repo: SqliteOrderRepository) -> list[OutboxRecord]:
    return [OutboxRecord(*row) for row in await repo.fetch_unpublished(100)]


async def test_the_database_file_uses_write_ahead_logging(tmp_path: Path) -> None:
    path = tmp_path / "orders.sqlite3"
    async with SqliteOrderRepository.open(path):
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_an_order_reads_back_exactly_as_it_was_written(repo: SqliteOrderRepository) -> None:
    await _place(repo, _order())

    assert await repo.get("o-1") == _order()


async def test_orders_survive_reopening_the_file(tmp_path: Path) -> None:
    path = tmp_path / "orders.sqlite3"
    async with SqliteOrderRepository.open(path) as first:
        await _place(first, _order())
    async with SqliteOrderRepository.open(path) as second:
        assert await second.get("o-1") == _order()
        assert len(await _pending(second)) == 1


async def _place_then_fail(repo: SqliteOrderRepository) -> None:
    async with repo.transaction() as tx:
        await tx.insert(_order())
        await tx.add_event(OrderCreated("e-1", CREATED_AT, _order()))
        raise RuntimeError("boom")


async def test_a_failed_transaction_stores_neither_the_order_nor_its_event(repo: SqliteOrderRepository) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        await _place_then_fail(repo)

    assert await repo.get("o-1") is None
    assert await _pending(repo) == []


async def test_reads_never_see_a_transaction_that_has_not_committed(repo: SqliteOrderRepository) -> None:
    async with repo.transaction() as tx:
        await tx.insert(_order())
        assert await repo.get("o-1") is None

    assert await repo.get("o-1") is not None


async def test_concurrent_transactions_are_serialized_and_all_commit(repo: SqliteOrderRepository) -> None:
    await asyncio.gather(*(_place(repo, _order(f"o-{n}")) for n in range(20)))

    assert len(await repo.list_after(None, user_id="", limit=100)) == 20
    assert len(await _pending(repo)) == 20


async def test_published_events_leave_the_pending_list_and_the_rest_keep_their_order(
    repo: SqliteOrderRepository,
) -> None:
    for n in range(3):
        await _place(repo, _order(f"o-{n}"))
    first, second, third = await _pending(repo)

    await repo.mark_published([first.id, third.id])

    assert await _pending(repo) == [second]
    assert first.id < second.id < third.id
