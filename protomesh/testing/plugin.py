"""pytest plugin (auto-loaded through the `pytest11` entry point): fixtures for real components."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from protomesh._mesh.consul import ConsulAgent
from protomesh._mesh.rabbitmq import RabbitMQNode, rabbitmq_node_fixture


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
    yield from rabbitmq_node_fixture(tmp_path_factory.mktemp("rabbitmq"))
