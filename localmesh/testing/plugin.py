"""pytest plugin (auto-loaded through the `pytest11` entry point): fixtures that start real components."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from localmesh.consul import ConsulAgent
from localmesh.rabbitmq import RabbitMQNode


@pytest.fixture
def consul_agent(tmp_path: Path) -> Iterator[ConsulAgent]:
    """A fresh Consul dev agent on free ports; fails (never skips) when consul is not installed."""
    agent = ConsulAgent(tmp_path / "logs")
    agent.start()
    try:
        yield agent
    finally:
        agent.stop()


@pytest.fixture(scope="module")
def rabbitmq_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMQNode]:
    """A real RabbitMQ node shared by one test module (a boot costs ~8 s); fails when RabbitMQ is missing."""
    node = RabbitMQNode(tmp_path_factory.mktemp("rabbitmq"))
    node.start()
    try:
        yield node
    finally:
        node.stop()
