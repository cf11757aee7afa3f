"""Fixtures of the events tests (the module-scoped `rabbitmq_node` comes from localmesh.testing.plugin)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel

from localmesh.testing import RabbitMQNode


@pytest.fixture
def exchange() -> str:
    """An exchange of the test's own, so that tests sharing a node never see each other's events."""
    return f"test.{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def amqp_channel(rabbitmq_node: RabbitMQNode) -> AsyncIterator[AbstractChannel]:
    """A plain channel on the node, to read queues the way an operator would."""
    connection = await aio_pika.connect(rabbitmq_node.url)
    try:
        yield await connection.channel()
    finally:
        await connection.close()
