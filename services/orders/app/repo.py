"""Orders and their outbox (a protomesh.events.OutboxStorage) in SQLite: a change and its event in one transaction."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import aiosqlite

from app.domain import LineItem, Order, OrderEvent, OrderState
from app.mapping import event_to_proto
from protomesh.events import current_trace_parent
from protomesh.paging import Cursor
from protomesh.sqlite import Database, Repository, from_micros, to_micros

_COLUMNS = "order_id, user_id, line_items, total_cents, state, create_us"


def _utc_now() -> datetime:
    return datetime.now(UTC)


class _Writer:
    """OrderWriter over the connection of an open transaction."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def get(self, order_id: str) -> Order | None:
        async with self._conn.execute(f"SELECT {_COLUMNS} FROM orders WHERE order_id = ?", (order_id,)) as cursor:
            row = await cursor.fetchone()
        return None if row is None else _order(row)

    async def insert(self, order: Order) -> None:
        items = json.dumps([[i.sku, i.quantity, i.unit_price_cents] for i in order.line_items])
        await self._conn.execute(
            f"INSERT INTO orders ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
            (order.order_id, order.user_id, items, order.total_cents, order.state.value,
             to_micros(order.create_time)),
        )

    async def set_state(self, order_id: str, state: OrderState) -> None:
        await self._conn.execute("UPDATE orders SET state = ? WHERE order_id = ?", (state.value, order_id))

    async def add_event(self, event: OrderEvent) -> None:
        message = event_to_proto(event)
        cursor = await self._conn.execute(
            "INSERT INTO outbox (event_id, event_type, payload, create_us) VALUES (?, ?, ?, ?)",
            (event.event_id, message.DESCRIPTOR.full_name, message.SerializeToString(),
             to_micros(event.event_time)),
        )
        # The trace of the call that placed the order: the relay publishes the event inside it.
        if trace_parent := current_trace_parent():
            await self._conn.execute("INSERT INTO outbox_trace (seq, trace_parent) VALUES (?, ?)",
                                     (cursor.lastrowid, trace_parent))


class SqliteOrderRepository(Repository):
    """OrderRepository plus the outbox's storage; get one with `async with SqliteOrderRepository.open(path)`."""

    # Line items are a value of their order, never queried on their own: one JSON column keeps a read one row.
    # Times are integer microseconds since the epoch: exact, and they sort the way the list order needs.
    # The outbox keeps published rows (publish_us set) as an audit trail; the partial index keeps the relay's
    # scan proportional to what is still pending. An event's trace context has a table of its own, which a
    # database made before tracing existed also gets (CREATE TABLE IF NOT EXISTS, no migration).
    SCHEMA = """
        CREATE TABLE IF NOT EXISTS orders (
            order_id    TEXT PRIMARY KEY,
            user_id     TEXT NOT NULL,
            line_items  TEXT NOT NULL,
            total_cents INTEGER NOT NULL,
            state       TEXT NOT NULL,
            create_us   INTEGER NOT NULL
        );
        CREATE INDEX IF NOT EXISTS orders_list_order ON orders (create_us, order_id);
        CREATE INDEX IF NOT EXISTS orders_user_list_order ON orders (user_id, create_us, order_id);
        CREATE TABLE IF NOT EXISTS outbox (
            seq        INTEGER PRIMARY KEY AUTOINCREMENT,
            event_id   TEXT NOT NULL UNIQUE,
            event_type TEXT NOT NULL,
            payload    BLOB NOT NULL,
            create_us  INTEGER NOT NULL,
            publish_us INTEGER
        );
        CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (seq) WHERE publish_us IS NULL;
        CREATE TABLE IF NOT EXISTS outbox_trace (
            seq          INTEGER PRIMARY KEY REFERENCES outbox (seq),
            trace_parent TEXT NOT NULL
        );
    """

    def __init__(self, db: Database, *, clock: Callable[[], datetime] = _utc_now) -> None:
        super().__init__(db)
        self._clock = clock

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_Writer]:
        async with self._db.transaction() as conn:
            yield _Writer(conn)

    async def get(self, order_id: str) -> Order | None:
        row = await self._db.fetch_one(f"SELECT {_COLUMNS} FROM orders WHERE order_id = ?", (order_id,))
        return None if row is None else _order(row)

    async def list_after(self, after: Cursor | None, *, user_id: str, limit: int) -> Sequence[Order]:
        """Up to limit orders after the cursor, oldest first; ties in time are ordered by id."""
        where: list[str] = ["1 = 1"]
        params: list[str | int] = []
        if user_id:
            where.append("user_id = ?")
            params.append(user_id)
        if after is not None:
            where.append("(create_us, order_id) > (?, ?)")
            params.extend([to_micros(after.time), after.id])
        sql = f"SELECT {_COLUMNS} FROM orders WHERE {' AND '.join(where)} ORDER BY create_us, order_id LIMIT ?"
        return [_order(row) for row in await self._db.fetch_all(sql, [*params, limit])]

    async def fetch_unpublished(self, limit: int) -> list[tuple[int, bytes, str, str]]:
        """The oldest unpublished events as (seq, payload, event_type, trace_parent), in commit order
        (OutboxStorage)."""
        rows = await self._db.fetch_all(
            "SELECT o.seq, o.payload, o.event_type, coalesce(t.trace_parent, '') FROM outbox o "
            "LEFT JOIN outbox_trace t ON t.seq = o.seq WHERE o.publish_us IS NULL ORDER BY o.seq LIMIT ?", (limit,)
        )
        return [(int(seq), bytes(payload), str(event_type), str(parent)) for seq, payload, event_type, parent in rows]

    async def count_unpublished(self) -> int:
        """How many events wait for the broker (CountingOutboxStorage: the relay exports it as a gauge)."""
        row = await self._db.fetch_one("SELECT count(*) FROM outbox WHERE publish_us IS NULL")
        return int(row[0]) if row is not None else 0

    async def mark_published(self, ids: Sequence[int]) -> None:
        """Record that the broker confirmed these events (OutboxStorage)."""
        if not ids:
            return
        marks = ", ".join("?" * len(ids))
        await self._db.write(f"UPDATE outbox SET publish_us = ? WHERE seq IN ({marks})",
                             (to_micros(self._clock()), *ids))


def _order(row: sqlite3.Row) -> Order:
    order_id, user_id, items, total_cents, state, create_us = row
    line_items = tuple(LineItem(str(sku), int(qty), int(price)) for sku, qty, price in json.loads(items))
    return Order(str(order_id), str(user_id), line_items, int(total_cents), OrderState(state),
                 from_micros(int(create_us)))
