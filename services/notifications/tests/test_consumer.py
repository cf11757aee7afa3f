"""The order-event consumer against a real RabbitMQ node: idempotent, acked after commit, feeding watchers."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from acme.orders.v1 import events_pb2, orders_pb2

from app.consumer import CONSUMER_GROUP, event_handlers
from app.domain import Notifications
from localmesh.testing import RabbitMQNode
from protomesh.aio import poll_until
from protomesh.events import Publisher, Subscriber

# After the last expected notification, wait this long for a duplicate that must not come.
QUIET_S = 1.0

pytestmark = pytest.mark.slow


def _order(user_id: str = "u-1") -> orders_pb2.Order:
    items = [orders_pb2.LineItem(sku="a", quantity=1, unit_price_cents=1000),
             orders_pb2.LineItem(sku="b", quantity=1, unit_price_cents=1500)]
    return orders_pb2.Order(order_id="o-7", user_id=user_id, line_items=items, total_cents=2500)


async def _count(notifications: Notifications, user_id: str = "u-1") -> int:
    return len((await notifications.list(user_id=user_id, page_size=100, page_token="")).items)


async def test_an_event_delivered_twice_makes_one_notification(rabbitmq_node: RabbitMQNode,
                                                               notifications: Notifications) -> None:
    event = events_pb2.OrderCreated(event_id=str(uuid.uuid4()), order=_order())
    handlers = event_handlers(notifications)
    async with Subscriber(rabbitmq_node.url, group=CONSUMER_GROUP, handlers=handlers) as subscriber, \
            Publisher(rabbitmq_node.url, app_id="orders-test") as publisher:
        await subscriber.wait_ready()

        await publisher.publish(event)
        await publisher.publish(event)  # what a relay crash between publish and mark would do

        await poll_until(lambda: _count(notifications), timeout=10, what="notification stored")
        await asyncio.sleep(QUIET_S)

    page = await notifications.list(user_id="u-1", page_size=100, page_token="")
    assert [n.text for n in page.items] == ["Order o-7 placed: 2 items, total 25.00"]
    assert page.items[0].event_id == event.event_id


async def test_a_cancelled_order_event_reaches_a_watcher_of_its_user(rabbitmq_node: RabbitMQNode,
                                                                    notifications: Notifications) -> None:
    event = events_pb2.OrderCancelled(event_id=str(uuid.uuid4()), order=_order("u-9"), reason="out of stock")
    async with Subscriber(rabbitmq_node.url, group="notifications-test-watch",
                          handlers=event_handlers(notifications)) as subscriber, \
            Publisher(rabbitmq_node.url, app_id="orders-test") as publisher:
        await subscriber.wait_ready()
        with notifications.watch("u-9") as watch:
            await publisher.publish(event)

            notification = await asyncio.wait_for(anext(watch), 10.0)

    assert notification.text == "Order o-7 cancelled: out of stock"
    assert await _count(notifications, "u-9") == 1
