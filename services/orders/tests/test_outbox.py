"""The outbox against a real RabbitMQ node: events reach the broker once, even when it was down at commit."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from acme.orders.v1 import events_pb2
from conftest import KNOWN_USER, FakeUsers

from app.domain import LineItem, OrderDraft, Orders
from app.repo import SqliteOrderRepository
from localmesh.testing import RabbitMQNode
from protomesh.aio import poll_until
from protomesh.events import EventHandlers, OutboxRelay, Publisher, Subscriber

DRAFT = OrderDraft(KNOWN_USER, (LineItem("sku-1", 1, 100),))
# Long enough that only relay.notify() can explain a prompt publish.
SLOW_POLL_S = 30.0
# After the last expected event, wait this long for a duplicate that must not come.
QUIET_S = 1.0

pytestmark = pytest.mark.slow


class Received:
    """Collects the OrderCreated events a consumer group gets."""

    def __init__(self) -> None:
        self.events: list[events_pb2.OrderCreated] = []

    async def __call__(self, event: events_pb2.OrderCreated) -> None:
        self.events.append(event)

    def handlers(self) -> EventHandlers:
        return EventHandlers().add(events_pb2.OrderCreated, self)


async def _pending(repo: SqliteOrderRepository) -> int:
    return len(await repo.fetch_unpublished(100))


async def test_a_committed_order_is_published_at_once_and_marked(
    rabbitmq_node: RabbitMQNode, repo: SqliteOrderRepository, users: FakeUsers,
) -> None:
    received = Received()
    async with Subscriber(rabbitmq_node.url, group="orders-test-prompt", handlers=received.handlers()) as subscriber:
        await subscriber.wait_ready()
        async with Publisher(rabbitmq_node.url, app_id="orders") as publisher, \
                OutboxRelay(repo, publisher, poll_interval_s=SLOW_POLL_S) as relay:
            orders = Orders(repo, users, events_committed=relay.notify)
            order = await orders.create(DRAFT)

            await poll_until(lambda: len(received.events) == 1, timeout=5, what="OrderCreated delivered")
            await poll_until(lambda: _no_pending(repo), timeout=5, what="outbox row marked published")

    assert received.events[0].order.order_id == order.order_id


async def _no_pending(repo: SqliteOrderRepository) -> bool:
    return await _pending(repo) == 0


async def test_an_order_placed_while_the_broker_is_down_succeeds_and_its_event_is_delivered_once_it_is_back(
    rabbitmq_node: RabbitMQNode, repo: SqliteOrderRepository, users: FakeUsers,
) -> None:
    received = Received()
    async with Subscriber(rabbitmq_node.url, group="orders-test-outage", handlers=received.handlers()) as subscriber:
        await subscriber.wait_ready()  # declares the durable queue the event will wait in
        await asyncio.to_thread(rabbitmq_node.stop)
        async with Publisher(rabbitmq_node.url, app_id="orders", timeout_s=1.0) as publisher, \
                OutboxRelay(repo, publisher, poll_interval_s=0.2) as relay:
            orders = Orders(repo, users, events_committed=relay.notify)

            order = await orders.create(DRAFT)
            await asyncio.sleep(0.5)  # the relay has tried (and failed) to publish by now
            assert await _pending(repo) == 1

            await asyncio.to_thread(rabbitmq_node.start)
            await poll_until(lambda: _no_pending(repo), timeout=30, what="outbox drained after the outage")
            await poll_until(lambda: len(received.events) >= 1, timeout=30, what="OrderCreated delivered")
            await asyncio.sleep(QUIET_S)

    assert [event.order.order_id for event in received.events] == [order.order_id]


async def test_an_order_placed_before_any_consumer_subscribed_is_delivered_once_one_does(
    rabbitmq_node: RabbitMQNode, repo: SqliteOrderRepository, users: FakeUsers,
) -> None:
    exchange = f"test.{uuid.uuid4().hex[:8]}"  # no queue of earlier tests is bound to it
    received = Received()
    async with Publisher(rabbitmq_node.url, exchange=exchange, app_id="orders") as publisher, \
            OutboxRelay(repo, publisher, poll_interval_s=0.2) as relay:
        order = await Orders(repo, users, events_committed=relay.notify).create(DRAFT)
        await asyncio.sleep(1.0)  # the relay has tried to publish while nobody subscribes

        async with Subscriber(rabbitmq_node.url, group="orders-test-late", exchange=exchange,
                              handlers=received.handlers()) as subscriber:
            await subscriber.wait_ready()
            await poll_until(lambda: len(received.events) == 1, timeout=15, what="OrderCreated delivered")

    assert received.events[0].order.order_id == order.order_id
