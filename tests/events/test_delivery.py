"""Publishing and consuming through a real RabbitMQ node: confirms, decoding, prefetch, dead-lettering."""

from __future__ import annotations

import asyncio
import logging
import time

import aio_pika
import pytest
from acme.orders.v1 import events_pb2, orders_pb2
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from localmesh.testing import RabbitMQNode, free_port
from protomesh.aio import poll_until
from protomesh.events import (
    CONTENT_TYPE,
    Delivery,
    EventHandlers,
    Publisher,
    PublishError,
    Subscriber,
    current_delivery,
)


def _created(order_id: str) -> events_pb2.OrderCreated:
    return events_pb2.OrderCreated(order=orders_pb2.Order(order_id=order_id, user_id="u-1", total_cents=1500))


async def _take_all(channel: AbstractChannel, queue: str) -> list[AbstractIncomingMessage]:
    """Every message now in `queue`, acked (they leave it)."""
    declared = await channel.declare_queue(queue, passive=True)
    taken = []
    while (message := await declared.get(fail=False, timeout=5)) is not None:
        await message.ack()
        taken.append(message)
    return taken


async def test_a_published_event_is_confirmed_and_reaches_the_handler_decoded(
    rabbitmq_node: RabbitMQNode, exchange: str
) -> None:
    received: list[tuple[events_pb2.OrderCreated, Delivery | None]] = []

    async def on_created(event: events_pb2.OrderCreated) -> None:
        received.append((event, current_delivery()))

    handlers = EventHandlers().add(events_pb2.OrderCreated, on_created)
    async with Subscriber(rabbitmq_node.url, group="g-basic", handlers=handlers, exchange=exchange) as subscriber:
        await subscriber.wait_ready()
        async with Publisher(rabbitmq_node.url, exchange=exchange, app_id="orders") as publisher:
            event = _created("o-1")
            await publisher.publish(event)
        await poll_until(lambda: received, timeout=5, what="OrderCreated handled")
    decoded, delivery = received[0]
    assert decoded == event
    assert event.event_id, "publish stamps an event id on the event it sends"
    assert delivery == Delivery(event_id=event.event_id, event_type="acme.orders.v1.OrderCreated", attempt=1,
                                redelivered=False, correlation_id=None)


async def test_a_handler_failing_every_time_sends_its_event_to_the_dlq_and_later_events_still_flow(
    rabbitmq_node: RabbitMQNode, exchange: str, amqp_channel: AbstractChannel
) -> None:
    attempts: list[int] = []
    handled: list[str] = []

    async def on_created(event: events_pb2.OrderCreated) -> None:
        if event.order.order_id == "poison":
            delivery = current_delivery()
            assert delivery is not None
            attempts.append(delivery.attempt)
            raise RuntimeError("handler bug")
        handled.append(event.order.order_id)

    handlers = EventHandlers().add(events_pb2.OrderCreated, on_created)
    async with Subscriber(rabbitmq_node.url, group="g-poison", handlers=handlers, exchange=exchange,
                          delivery_limit=3, retry_delay_s=0.01) as subscriber:
        await subscriber.wait_ready()
        async with Publisher(rabbitmq_node.url, exchange=exchange) as publisher:
            poison = _created("poison")
            await publisher.publish(poison)
            await publisher.publish(_created("good-1"))
            await poll_until(lambda: len(attempts) == 3 and handled, timeout=10, what="poison retried")
            await publisher.publish(_created("good-2"))
            await poll_until(lambda: len(handled) == 2, timeout=5, what="a later event handled")
    assert attempts == [1, 2, 3]
    assert handled == ["good-1", "good-2"]
    [dead] = await _take_all(amqp_channel, "g-poison.dlq")
    assert dead.message_id == poison.event_id
    assert dead.headers["x-first-death-reason"] == "delivery_limit"
    assert await _take_all(amqp_channel, "g-poison") == []


async def test_an_undecodable_body_or_unknown_type_goes_to_the_dlq_without_a_retry(
    rabbitmq_node: RabbitMQNode, exchange: str, amqp_channel: AbstractChannel
) -> None:
    handled: list[str] = []

    async def on_created(event: events_pb2.OrderCreated) -> None:
        handled.append(event.order.order_id)

    handlers = EventHandlers().add(events_pb2.OrderCreated, on_created)
    async with Subscriber(rabbitmq_node.url, group="g-garbage", handlers=handlers, exchange=exchange) as subscriber:
        await subscriber.wait_ready()
        events = await amqp_channel.get_exchange(exchange)
        routing_key = "acme.orders.v1.OrderCreated"
        await events.publish(aio_pika.Message(b"\xff\xff\xff", type=routing_key, content_type=CONTENT_TYPE,
                                              message_id="corrupt"), routing_key=routing_key)
        await events.publish(aio_pika.Message(b"", type="acme.orders.v1.OrderShipped", message_id="unknown"),
                             routing_key=routing_key)
        async with Publisher(rabbitmq_node.url, exchange=exchange) as publisher:
            await publisher.publish(_created("good"))
        await poll_until(lambda: handled, timeout=5, what="the good event handled")
        dead = []
        await poll_until(lambda: _collect(dead, amqp_channel, "g-garbage.dlq", 2), timeout=5,
                         what="two dead letters")
    assert handled == ["good"]
    assert sorted(str(m.message_id) for m in dead) == ["corrupt", "unknown"]
    assert {m.headers["x-first-death-reason"] for m in dead} == {"rejected"}


async def _collect(into: list[AbstractIncomingMessage], channel: AbstractChannel, queue: str, count: int) -> bool:
    into.extend(await _take_all(channel, queue))
    return len(into) >= count


async def test_prefetch_bounds_how_many_handlers_run_at_once(rabbitmq_node: RabbitMQNode, exchange: str) -> None:
    running = peak = done = 0

    async def slow(event: events_pb2.OrderCreated) -> None:
        nonlocal running, peak, done
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.1)
        running -= 1
        done += 1

    handlers = EventHandlers().add(events_pb2.OrderCreated, slow)
    async with Subscriber(rabbitmq_node.url, group="g-prefetch", handlers=handlers, exchange=exchange,
                          prefetch=2) as subscriber:
        await subscriber.wait_ready()
        async with Publisher(rabbitmq_node.url, exchange=exchange) as publisher:
            await asyncio.gather(*(publisher.publish(_created(f"o-{n}")) for n in range(8)))
        await poll_until(lambda: done == 8, timeout=10, what="8 events handled")
    assert peak == 2


async def test_concurrent_publishes_on_one_publisher_are_each_confirmed_and_arrive_once_in_the_order_sent(
    rabbitmq_node: RabbitMQNode, exchange: str
) -> None:
    # Publishes share one confirming channel and are pipelined: none waits for another's confirm, each still
    # waits for its own; the channel keeps their order on the wire.
    arrived: list[str] = []

    async def on_created(event: events_pb2.OrderCreated) -> None:
        arrived.append(event.order.order_id)

    handlers = EventHandlers().add(events_pb2.OrderCreated, on_created)
    sent = [f"o-{n}" for n in range(300)]
    async with Subscriber(rabbitmq_node.url, group="g-pipelined", handlers=handlers, exchange=exchange,
                          prefetch=1) as subscriber:
        await subscriber.wait_ready()
        async with Publisher(rabbitmq_node.url, exchange=exchange) as publisher:
            results = await asyncio.gather(*(publisher.publish(_created(order_id), require_route=True)
                                             for order_id in sent))
        assert results == [None] * len(sent)  # no publish raised: every one was confirmed and routed
        await poll_until(lambda: len(arrived) >= len(sent), timeout=10, what="300 events handled")
        await asyncio.sleep(0.2)  # a duplicate would show up here
    assert arrived == sent


async def test_events_handled_after_one_still_running_are_acked_together_but_it_is_not_and_comes_back(
    rabbitmq_node: RabbitMQNode, exchange: str
) -> None:
    # Acks of handlers done in one loop turn leave as one multiple ack; it must never cover a delivery whose
    # handler is still running: when that consumer goes away, only that delivery is delivered again.
    release = asyncio.Event()
    handled: list[tuple[str, bool]] = []

    async def on_created(event: events_pb2.OrderCreated) -> None:
        delivery = current_delivery()
        assert delivery is not None
        if event.order.order_id == "o-slow" and not delivery.redelivered:
            await release.wait()
        handled.append((event.order.order_id, delivery.redelivered))

    handlers = EventHandlers().add(events_pb2.OrderCreated, on_created)
    try:
        async with Subscriber(rabbitmq_node.url, group="g-acks", handlers=handlers, exchange=exchange,
                              prefetch=20) as subscriber:
            await subscriber.wait_ready()
            async with Publisher(rabbitmq_node.url, exchange=exchange) as publisher:
                await publisher.publish(_created("o-slow"))
                await asyncio.gather(*(publisher.publish(_created(f"o-{n}")) for n in range(10)))
            await poll_until(lambda: len(handled) == 10, timeout=10, what="the 10 quick events handled")
            await asyncio.sleep(0.3)  # their acks are written
            await subscriber.close(grace_s=0.2)  # o-slow is still in its handler
        async with Subscriber(rabbitmq_node.url, group="g-acks", handlers=handlers, exchange=exchange) as again:
            await again.wait_ready()
            await poll_until(lambda: len(handled) == 11, timeout=10, what="o-slow delivered again")
            await asyncio.sleep(0.5)  # anything else delivered again would show up here
    finally:
        release.set()
    assert sorted(handled[:10]) == sorted((f"o-{n}", False) for n in range(10))
    assert handled[10:] == [("o-slow", True)]


async def test_an_event_no_group_subscribes_to_is_confirmed_and_dropped_with_a_warning(
    rabbitmq_node: RabbitMQNode, exchange: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with Publisher(rabbitmq_node.url, exchange=exchange) as publisher:
        with caplog.at_level(logging.WARNING, logger="protomesh.events"):
            await publisher.publish(_created("nobody-listens"))
    assert "no queue is bound" in caplog.text


async def test_publishing_while_the_broker_is_unreachable_fails_fast_with_a_clear_error() -> None:
    began = time.monotonic()
    async with Publisher(f"amqp://guest:guest@127.0.0.1:{free_port()}/") as publisher:
        with pytest.raises(PublishError, match=r"event broker is unavailable for acme\.orders\.v1\.OrderCreated"):
            await publisher.publish(_created("o-1"))
    assert time.monotonic() - began < 5
