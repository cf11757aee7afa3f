"""pytest plugin (auto-loaded through the `pytest11` entry point): fixtures for real components."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from protomesh._mesh.consul import ConsulAgent


@pytest.fixture
def consul_agent(tmp_path: Path) -> Iterator[ConsulAgent]:
    """A fresh Consul dev agent on free ports; fails (never skips) when consul is not installed."""
    agent = ConsulAgent(tmp_path / "logs")
    agent.start()
    try:
        yield agent
    finally:
        agent.stop()
