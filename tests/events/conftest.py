"""Fixtures of the events tests: one real RabbitMQ node per test module, and a channel to look into it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel

from protomesh.testing._rabbitmq import RabbitMQNode, rabbitmq_node_fixture


@pytest.fixture(scope="module")
def rabbitmq_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMQNode]:
    """A real RabbitMQ node shared by one test module (a boot costs ~8 s); fails when RabbitMQ is missing."""
    yield from rabbitmq_node_fixture(tmp_path_factory.mktemp("rabbitmq"))


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
