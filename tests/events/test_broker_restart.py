"""Events across a RabbitMQ restart: persistence, consumer reconnection, and the outbox relay catching up."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Sequence

import pytest
from acme.orders.v1 import events_pb2, orders_pb2

from localmesh.testing import RabbitMQNode
from protomesh.aio import poll_until
from protomesh.events import EventHandlers, OutboxRelay, Publisher, Subscriber, event_type, stamp_event

# Reconnection is ~1 s after the node is back, the relay's backoff at most 0.5 s: this leaves honest slack.
CATCH_UP_S = 20.0


def _created(order_id: str) -> events_pb2.OrderCreated:
    return stamp_event(events_pb2.OrderCreated(order=orders_pb2.Order(order_id=order_id, user_id="u-1")))


class Recorder:
    """A consumer group's handlers that record the event ids they were given, duplicates included."""

    def __init__(self) -> None:
        self.event_ids: list[str] = []
        self.handlers = EventHandlers().add(events_pb2.OrderCreated, self.on_created)

    async def on_created(self, event: events_pb2.OrderCreated) -> None:
        self.event_ids.append(event.event_id)


class MemoryOutbox:
    """The OutboxStorage protocol over a dict, as the orders service implements it over SQLite."""

    def __init__(self) -> None:
        self.rows: dict[int, tuple[bytes, str]] = {}
        self.published: set[int] = set()

    def add(self, event: events_pb2.OrderCreated) -> None:
        self.rows[len(self.rows) + 1] = (event.SerializeToString(), event_type(event))

    def pending(self) -> list[int]:
        return [row_id for row_id in sorted(self.rows) if row_id not in self.published]

    async def fetch_unpublished(self, limit: int) -> list[tuple[int, bytes, str]]:
        return [(row_id, *self.rows[row_id]) for row_id in self.pending()[:limit]]

    async def mark_published(self, ids: Sequence[int]) -> None:
        self.published.update(ids)


async def test_persistent_events_published_with_no_consumer_survive_a_broker_restart(
    rabbitmq_node: RabbitMQNode, exchange: str
) -> None:
    recorder = Recorder()
    subscriber = Subscriber(rabbitmq_node.url, group="g-durable", handlers=recorder.handlers, exchange=exchange)
    async with subscriber:
        await subscriber.wait_ready()  # declares the group's durable queue, then goes away
    events = [_created(f"o-{n}") for n in range(3)]
    async with Publisher(rabbitmq_node.url, exchange=exchange) as publisher:
        for event in events:
            await publisher.publish(event)
    await asyncio.to_thread(rabbitmq_node.restart)
    async with Subscriber(rabbitmq_node.url, group="g-durable", handlers=recorder.handlers, exchange=exchange):
        await poll_until(lambda: len(recorder.event_ids) == 3, timeout=10, what="3 events after restart")
    assert recorder.event_ids == [event.event_id for event in events]


async def test_consumers_keep_going_after_a_broker_restart_and_one_started_during_it_joins_in(
    rabbitmq_node: RabbitMQNode, exchange: str
) -> None:
    running, late = Recorder(), Recorder()
    async with (
        Subscriber(rabbitmq_node.url, group="g-running", handlers=running.handlers, exchange=exchange) as subscriber,
        Publisher(rabbitmq_node.url, exchange=exchange) as publisher,
    ):
        await subscriber.wait_ready()
        before, after = _created("before"), _created("after")
        await publisher.publish(before)
        await poll_until(lambda: running.event_ids, timeout=5, what="the first event handled")
        await asyncio.to_thread(rabbitmq_node.stop)
        async with Subscriber(rabbitmq_node.url, group="g-late", handlers=late.handlers, exchange=exchange) as joiner:
            await asyncio.to_thread(rabbitmq_node.start)
            await joiner.wait_ready(timeout=CATCH_UP_S)
            # The publisher reconnects on its own too; give it the time a reconnect takes.
            await poll_until(lambda: _published(publisher, after), timeout=CATCH_UP_S, interval=0.5,
                             what="publish after the restart")
            await poll_until(lambda: late.event_ids and len(running.event_ids) == 2, timeout=CATCH_UP_S,
                             what="the event after the restart handled by both groups")
    assert running.event_ids == [before.event_id, after.event_id]
    assert late.event_ids == [after.event_id]


async def _published(publisher: Publisher, event: events_pb2.OrderCreated) -> bool:
    try:
        await publisher.publish(event)
    except Exception:
        return False
    return True


async def test_the_outbox_relay_delivers_events_stored_while_the_broker_was_down_exactly_once(
    rabbitmq_node: RabbitMQNode, exchange: str
) -> None:
    recorder, outbox = Recorder(), MemoryOutbox()
    async with (
        Subscriber(rabbitmq_node.url, group="g-outbox", handlers=recorder.handlers, exchange=exchange) as subscriber,
        Publisher(rabbitmq_node.url, exchange=exchange) as publisher,
        OutboxRelay(outbox, publisher, poll_interval_s=0.2) as relay,
    ):
        await subscriber.wait_ready()
        outbox.add(_created("while-up"))
        relay.notify()
        await poll_until(lambda: recorder.event_ids, timeout=5, what="the first event relayed")
        await asyncio.to_thread(rabbitmq_node.stop)
        stored_while_down = [_created(f"while-down-{n}") for n in range(5)]
        for event in stored_while_down:
            outbox.add(event)
            relay.notify()
        await asyncio.sleep(1.0)
        assert len(outbox.pending()) == 5, "nothing is marked published while the broker is down"
        await asyncio.to_thread(rabbitmq_node.start)
        await poll_until(lambda: len(recorder.event_ids) >= 6, timeout=CATCH_UP_S, what="the backlog relayed")
        await asyncio.sleep(0.5)  # room for a duplicate to show up
    assert outbox.pending() == []
    counts = collections.Counter(recorder.event_ids)
    assert set(counts) == {event_id_of_row for event_id_of_row in _ids(outbox)}
    assert set(counts.values()) == {1}, f"duplicates: {counts}"


def _ids(outbox: MemoryOutbox) -> list[str]:
    return [events_pb2.OrderCreated.FromString(payload).event_id for payload, _ in outbox.rows.values()]


async def test_a_subscriber_started_before_its_broker_consumes_within_a_second_of_the_broker_answering(
    tmp_path_factory: pytest.TempPathFactory, exchange: str
) -> None:
    """What the local mesh does at `up`: services boot beside the broker, so "healthy" soon means "consuming"."""
    node = RabbitMQNode(tmp_path_factory.mktemp("late-rabbitmq"))
    recorder = Recorder()
    subscriber = Subscriber(node.url, group="g-early", handlers=recorder.handlers, exchange=exchange)
    async with subscriber:
        await asyncio.sleep(3.0)  # refused attempts until the backoff has grown to its longest pause
        await asyncio.to_thread(node.start)
        answering = asyncio.get_running_loop().time()
        try:
            await subscriber.wait_ready(timeout=CATCH_UP_S)
            took = asyncio.get_running_loop().time() - answering
        finally:
            await subscriber.close()
            await asyncio.to_thread(node.stop)
    assert took < 0.5 + 1.5  # the longest pause between attempts, plus a generous margin for connect + declare
