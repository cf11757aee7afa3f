"""The orders use cases over a real SQLite store, with the users service replaced by the domain's Protocol."""

from __future__ import annotations

import pytest
from acme.orders.v1 import events_pb2
from conftest import KNOWN_USER, OTHER_USER, FakeUsers

from app.domain import MAX_TOTAL_CENTS, LineItem, Order, OrderDraft, Orders, OrderState
from app.repo import SqliteOrderRepository
from protomesh.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from protomesh.events import OutboxRecord

TWO_LINES = (LineItem("sku-1", 2, 500), LineItem("sku-2", 1, 1500))


def _draft(user_id: str = KNOWN_USER, items: tuple[LineItem, ...] = TWO_LINES) -> OrderDraft:
    return OrderDraft(user_id, items)


async def _pending(repo: SqliteOrderRepository) -> list[OutboxRecord]:
    return [OutboxRecord(*row) for row in await repo.fetch_unpublished(10)]


def _fields(error: InvalidArgument) -> list[str]:
    return [violation.field for violation in error.violations]


async def test_create_computes_the_total_and_stores_the_order(orders: Orders) -> None:
    order = await orders.create(_draft())

    assert order.total_cents == 2 * 500 + 1500
    assert order.state is OrderState.CREATED
    assert order.order_id.startswith("o-")
    assert await orders.get(order.order_id) == order


async def test_create_writes_an_order_created_event_to_the_outbox(orders: Orders,
                                                                  repo: SqliteOrderRepository) -> None:
    order = await orders.create(_draft())

    [record] = await _pending(repo)
    assert record.event_type == "acme.orders.v1.OrderCreated"
    event = events_pb2.OrderCreated.FromString(record.payload)
    assert event.event_id
    assert event.order.order_id == order.order_id
    assert event.order.total_cents == order.total_cents
    assert event.event_time.ToDatetime().year == 2030


async def test_create_and_cancel_each_wake_the_relay_once_and_failures_never(repo: SqliteOrderRepository,
                                                                              users: FakeUsers) -> None:
    wakes: list[str] = []
    orders = Orders(repo, users, events_committed=lambda: wakes.append("wake"))

    order = await orders.create(_draft())
    await orders.cancel(order.order_id, "")
    with pytest.raises(FailedPrecondition):
        await orders.cancel(order.order_id, "")
    with pytest.raises(FailedPrecondition):
        await orders.create(_draft(user_id="u-404"))

    assert wakes == ["wake", "wake"]


async def test_create_for_an_unknown_user_is_a_failed_precondition_naming_the_user(orders: Orders,
                                                                                  repo: SqliteOrderRepository) -> None:
    with pytest.raises(FailedPrecondition, match="user 'u-404' does not exist"):
        await orders.create(_draft(user_id="u-404"))

    assert await _pending(repo) == []


async def test_create_while_users_is_unavailable_fails_with_unavailable(orders: Orders, users: FakeUsers) -> None:
    users.down = True

    with pytest.raises(Unavailable):
        await orders.create(_draft())


async def test_create_rejects_every_bad_field_with_its_path(orders: Orders, users: FakeUsers) -> None:
    items = (LineItem("", 1, 100), LineItem("sku", 0, -1))

    with pytest.raises(InvalidArgument) as raised:
        await orders.create(_draft(user_id="", items=items))

    assert _fields(raised.value) == [
        "order.user_id",
        "order.line_items[0].sku",
        "order.line_items[1].quantity",
        "order.line_items[1].unit_price_cents",
    ]
    assert users.asked == [], "an invalid order must not cost a call to the users service"


async def test_create_needs_at_least_one_line_item(orders: Orders) -> None:
    with pytest.raises(InvalidArgument) as raised:
        await orders.create(_draft(items=()))

    assert _fields(raised.value) == ["order.line_items"]


async def test_create_refuses_a_total_beyond_int64(orders: Orders) -> None:
    items = (LineItem("a", 2, MAX_TOTAL_CENTS // 2 + 1),)

    with pytest.raises(InvalidArgument, match="too large"):
        await orders.create(_draft(items=items))


async def test_a_free_line_item_is_valid(orders: Orders) -> None:
    order = await orders.create(_draft(items=(LineItem("gift", 1, 0),)))

    assert order.total_cents == 0


async def test_get_of_an_unknown_order_is_not_found(orders: Orders) -> None:
    with pytest.raises(NotFound, match="order 'o-missing' does not exist"):
        await orders.get("o-missing")


async def test_get_without_an_id_is_invalid(orders: Orders) -> None:
    with pytest.raises(InvalidArgument) as raised:
        await orders.get("")

    assert _fields(raised.value) == ["order_id"]


async def test_cancel_sets_the_state_and_writes_an_order_cancelled_event(orders: Orders,
                                                                         repo: SqliteOrderRepository) -> None:
    order = await orders.create(_draft())

    cancelled = await orders.cancel(order.order_id, "  changed my mind ")

    assert cancelled.state is OrderState.CANCELLED
    assert (await orders.get(order.order_id)).state is OrderState.CANCELLED
    created, cancel = await _pending(repo)
    assert cancel.event_type == "acme.orders.v1.OrderCancelled"
    event = events_pb2.OrderCancelled.FromString(cancel.payload)
    assert event.reason == "changed my mind"
    assert event.order.state == 2  # ORDER_STATE_CANCELLED
    assert created.id < cancel.id


async def test_cancel_without_a_reason_says_so_in_the_event(orders: Orders, repo: SqliteOrderRepository) -> None:
    order = await orders.create(_draft())

    await orders.cancel(order.order_id, "")

    event = events_pb2.OrderCancelled.FromString((await _pending(repo))[1].payload)
    assert event.reason == "no reason given"


async def test_cancelling_twice_is_a_failed_precondition_and_adds_no_event(orders: Orders,
                                                                          repo: SqliteOrderRepository) -> None:
    order = await orders.create(_draft())
    await orders.cancel(order.order_id, "first")

    with pytest.raises(FailedPrecondition, match="already cancelled"):
        await orders.cancel(order.order_id, "second")

    assert len(await _pending(repo)) == 2


async def test_cancel_of_an_unknown_order_is_not_found(orders: Orders) -> None:
    with pytest.raises(NotFound):
        await orders.cancel("o-missing", "")


async def test_list_pages_through_every_order_oldest_first_without_overlap(orders: Orders) -> None:
    placed = [await orders.create(_draft()) for _ in range(5)]

    seen: list[Order] = []
    token = ""
    for _ in range(3):
        page = await orders.list(user_id="", page_size=2, page_token=token)
        seen.extend(page.items)
        token = page.next_page_token
        if not token:
            break

    assert [o.order_id for o in seen] == [o.order_id for o in placed]
    assert token == ""


async def test_list_filters_by_user(orders: Orders) -> None:
    mine = await orders.create(_draft(user_id=KNOWN_USER))
    await orders.create(_draft(user_id=OTHER_USER))

    page = await orders.list(user_id=KNOWN_USER, page_size=0, page_token="")

    assert page.items == (mine,)
    assert page.next_page_token == ""


async def test_a_page_token_cannot_be_reused_with_another_user_filter(orders: Orders) -> None:
    for _ in range(2):
        await orders.create(_draft())
    token = (await orders.list(user_id=KNOWN_USER, page_size=1, page_token="")).next_page_token

    with pytest.raises(InvalidArgument) as raised:
        await orders.list(user_id=OTHER_USER, page_size=1, page_token=token)

    assert _fields(raised.value) == ["page_token"]


async def test_a_forged_page_token_is_invalid(orders: Orders) -> None:
    with pytest.raises(InvalidArgument) as raised:
        await orders.list(user_id="", page_size=1, page_token="not-a-token")

    assert _fields(raised.value) == ["page_token"]


async def test_a_negative_page_size_is_invalid(orders: Orders) -> None:
    with pytest.raises(InvalidArgument) as raised:
        await orders.list(user_id="", page_size=-1, page_token="")

    assert _fields(raised.value) == ["page_size"]
