"""Fixtures of the runtime's server tests: a real protomesh Server on port 0 with scripted test servicers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc.aio
import pytest
from test_server_support import Served, bindings

from protomesh._server import Server
from protomesh._settings import ServerSettings


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    """The scripted users + notifications servicers behind a protomesh Server on a free port."""
    server = Server(ServerSettings(port=0, grace_s=1.0), bindings())
    port = await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield Served(server, channel)
    await server.stop()
