"""The outbox relay publishes a batch with its confirms awaited together, and marks only what was confirmed."""

from __future__ import annotations

import collections
from collections.abc import Sequence

import pytest
from acme.orders.v1 import events_pb2, orders_pb2
from google.protobuf.message import Message

from localmesh.testing import RabbitMQNode
from protomesh.aio import poll_until
from protomesh.events import EventHandlers, OutboxRelay, Publisher, Subscriber, Unroutable, event_type, stamp_event


class _Outbox:
    """The OutboxStorage protocol over a dict, recording each mark_published call."""

    def __init__(self, events: Sequence[Message]) -> None:
        self.rows = {n: (event.SerializeToString(), event_type(event)) for n, event in enumerate(events, start=1)}
        self.marks: list[list[int]] = []

    def pending(self) -> list[int]:
        marked = {row_id for mark in self.marks for row_id in mark}
        return [row_id for row_id in sorted(self.rows) if row_id not in marked]

    async def fetch_unpublished(self, limit: int) -> list[tuple[int, bytes, str]]:
        return [(row_id, *self.rows[row_id]) for row_id in self.pending()[:limit]]

    async def mark_published(self, ids: Sequence[int]) -> None:
        self.marks.append(list(ids))


def _created(order_id: str) -> events_pb2.OrderCreated:
    return stamp_event(events_pb2.OrderCreated(order=orders_pb2.Order(order_id=order_id, user_id="u-1")))


async def test_a_batch_goes_out_together_and_is_marked_once_every_event_was_confirmed(
    rabbitmq_node: RabbitMQNode, exchange: str
) -> None:
    arrived: list[str] = []

    async def on_created(event: events_pb2.OrderCreated) -> None:
        arrived.append(event.order.order_id)

    events = [_created(f"o-{n}") for n in range(250)]
    outbox = _Outbox(events)
    handlers = EventHandlers().add(events_pb2.OrderCreated, on_created)
    async with Subscriber(rabbitmq_node.url, group="g-batches", handlers=handlers, exchange=exchange,
                          prefetch=1) as subscriber:
        await subscriber.wait_ready()
        async with Publisher(rabbitmq_node.url, exchange=exchange) as publisher:
            assert await OutboxRelay(outbox, publisher, batch_size=100).publish_pending() == 250
        await poll_until(lambda: len(arrived) >= 250, timeout=10, what="250 relayed events handled")
    assert [len(mark) for mark in outbox.marks] == [100, 100, 50]  # one mark per batch
    assert arrived == [event.order.order_id for event in events]  # in outbox order
    assert set(collections.Counter(arrived).values()) == {1}


async def test_an_event_nobody_subscribes_to_stays_pending_while_the_rest_of_its_batch_is_marked(
    rabbitmq_node: RabbitMQNode, exchange: str
) -> None:
    async def on_created(event: events_pb2.OrderCreated) -> None:
        return None

    nobody = stamp_event(events_pb2.OrderCancelled())
    outbox = _Outbox([_created("o-1"), nobody, _created("o-2")])
    handlers = EventHandlers().add(events_pb2.OrderCreated, on_created)
    async with Subscriber(rabbitmq_node.url, group="g-unroutable", handlers=handlers, exchange=exchange) as subscriber:
        await subscriber.wait_ready()
        async with Publisher(rabbitmq_node.url, exchange=exchange) as publisher:
            with pytest.raises(Unroutable):
                await OutboxRelay(outbox, publisher).publish_pending()
    assert outbox.marks == [[1, 3]]
    assert outbox.pending() == [2]


async def test_rows_before_an_undecodable_one_are_still_published_and_marked(
    rabbitmq_node: RabbitMQNode, exchange: str
) -> None:
    outbox = _Outbox([_created("o-1"), _created("o-2")])
    outbox.rows[3] = (b"\xff\xff", "acme.orders.v1.OrderCreated")
    outbox.rows[4] = outbox.rows[1]
    async with Publisher(rabbitmq_node.url, exchange=exchange) as publisher:
        with pytest.raises(ValueError, match=r"not a valid acme\.orders\.v1\.OrderCreated"):
            await OutboxRelay(outbox, publisher, require_route=False).publish_pending()
    assert outbox.marks == [[1, 2]]
