"""The broker objects of events: the topic exchange, a consumer group's quorum queue, its dead-letter path."""

from __future__ import annotations

from collections.abc import Sequence

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

# Deliveries of one message before it is dead-lettered. Quorum queues count every delivery on the broker
# (x-delivery-count), including ones lost with a crashed consumer, so a poison message that kills its
# consumer is caught too; classic queues count nothing and would loop forever.
DEFAULT_DELIVERY_LIMIT = 5


def dead_letter_exchange(exchange: str) -> str:
    """Where every group's rejected or exhausted messages go (direct, routed by the group's queue name)."""
    return f"{exchange}.dlx"


def dead_letter_queue(queue: str) -> str:
    """Where one group's dead letters wait for an operator (inspect, fix, shovel back)."""
    return f"{queue}.dlq"


async def declare_exchange(channel: AbstractChannel, exchange: str) -> AbstractExchange:
    """The durable topic exchange events are published to (idempotent)."""
    return await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)


def queue_arguments(*, exchange: str, queue: str, delivery_limit: int) -> dict[str, str | int]:
    """Arguments of a group's queue. Changing them later needs the queue deleted (the broker refuses)."""
    return {
        "x-queue-type": "quorum",
        # The broker dead-letters a message delivered more than this many times, after the last nack.
        "x-delivery-limit": delivery_limit - 1,
        "x-dead-letter-exchange": dead_letter_exchange(exchange),
        "x-dead-letter-routing-key": queue,
        # At-least-once dead-lettering (RabbitMQ >= 3.10): a message leaves the queue only once the DLQ has
        # confirmed it, so a poison message is never lost on the way. It requires reject-publish overflow.
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


async def declare_group_queue(channel: AbstractChannel, *, exchange: str, queue: str,
                              event_types: Sequence[str], delivery_limit: int) -> AbstractQueue:
    """Declare the group's DLX, DLQ and quorum queue, and bind the queue to each event type (idempotent)."""
    if delivery_limit < 1:
        raise ValueError(f"delivery_limit must be at least 1, got {delivery_limit}")
    events = await declare_exchange(channel, exchange)
    dlx = await channel.declare_exchange(dead_letter_exchange(exchange), aio_pika.ExchangeType.DIRECT, durable=True)
    dlq = await channel.declare_queue(dead_letter_queue(queue), durable=True)
    await dlq.bind(dlx, routing_key=queue)
    arguments = queue_arguments(exchange=exchange, queue=queue, delivery_limit=delivery_limit)
    declared = await channel.declare_queue(queue, durable=True, arguments=dict(arguments))
    for name in event_types:
        await declared.bind(events, routing_key=name)
    return declared
