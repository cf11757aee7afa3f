"""The notifications use cases over a real SQLite store: one notification per event, texts, paging, watching."""

from __future__ import annotations

import asyncio

import pytest

from app.broadcast import Broadcaster
from app.domain import Notification, Notifications, OrderCancelled, OrderPlaced, format_cents
from protomesh.errors import InvalidArgument


def _placed(event_id: str = "e-1", user_id: str = "u-1", items: int = 2, total: int = 2500) -> OrderPlaced:
    return OrderPlaced(event_id=event_id, user_id=user_id, order_id="o-1", item_count=items, total_cents=total)


async def _texts(notifications: Notifications, user_id: str = "u-1") -> list[str]:
    page = await notifications.list(user_id=user_id, page_size=0, page_token="")
    return [n.text for n in page.items]


async def test_a_placed_order_reads_with_its_item_count_and_total(notifications: Notifications) -> None:
    notification = await notifications.record(_placed())

    assert notification is not None
    assert notification.text == "Order o-1 placed: 2 items, total 25.00"
    assert notification.event_id == "e-1"
    assert notification.notification_id.startswith("n-")


async def test_a_single_item_is_not_called_items(notifications: Notifications) -> None:
    await notifications.record(_placed(items=1, total=5))

    assert await _texts(notifications) == ["Order o-1 placed: 1 item, total 0.05"]


async def test_a_cancelled_order_reads_with_its_reason(notifications: Notifications) -> None:
    await notifications.record(OrderCancelled("e-2", "u-1", "o-1", "changed my mind"))

    assert await _texts(notifications) == ["Order o-1 cancelled: changed my mind"]


def test_cents_are_formatted_exactly() -> None:
    assert [format_cents(c) for c in (0, 7, 2500, 123456789, -150)] == [
        "0.00", "0.07", "25.00", "1234567.89", "-1.50"]


async def test_the_same_event_twice_makes_one_notification(notifications: Notifications) -> None:
    first = await notifications.record(_placed())
    second = await notifications.record(_placed())

    assert first is not None
    assert second is None
    assert len(await _texts(notifications)) == 1


async def test_the_same_event_recorded_concurrently_makes_one_notification(notifications: Notifications) -> None:
    results = await asyncio.gather(*(notifications.record(_placed()) for _ in range(10)))

    assert sum(result is not None for result in results) == 1
    assert len(await _texts(notifications)) == 1


async def test_an_event_without_an_id_is_refused(notifications: Notifications) -> None:
    with pytest.raises(ValueError, match="lacks an event or user id"):
        await notifications.record(_placed(event_id=""))


async def test_list_pages_through_a_users_notifications_oldest_first(notifications: Notifications) -> None:
    for n in range(5):
        await notifications.record(_placed(event_id=f"e-{n}", total=n * 100))
    await notifications.record(_placed(event_id="e-other", user_id="u-2"))

    seen: list[Notification] = []
    token = ""
    while True:
        page = await notifications.list(user_id="u-1", page_size=2, page_token=token)
        seen.extend(page.items)
        token = page.next_page_token
        if not token:
            break

    assert [n.event_id for n in seen] == [f"e-{n}" for n in range(5)]


async def test_list_needs_a_user(notifications: Notifications) -> None:
    with pytest.raises(InvalidArgument) as raised:
        await notifications.list(user_id="", page_size=0, page_token="")

    assert [v.field for v in raised.value.violations] == ["user_id"]


async def test_a_watch_gets_what_is_recorded_after_it_started_and_only_for_its_user(
    notifications: Notifications,
) -> None:
    await notifications.record(_placed(event_id="before"))
    with notifications.watch("u-1") as watch:
        await notifications.record(_placed(event_id="other-user", user_id="u-2"))
        await notifications.record(_placed(event_id="after"))
        await notifications.record(_placed(event_id="after"))  # a redelivery: not shown twice

        first = await anext(watch)

        assert first.event_id == "after"
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(watch), 0.05)


async def test_a_watch_needs_a_user(notifications: Notifications) -> None:
    with pytest.raises(InvalidArgument), notifications.watch(""):
        pass


async def test_a_watch_ends_when_the_broadcaster_closes(notifications: Notifications,
                                                        broadcaster: Broadcaster[Notification]) -> None:
    with notifications.watch("u-1") as watch:
        broadcaster.close()

        assert [n async for n in watch] == []
