"""Fixtures of the runtime's tests: a real protomesh Server on port 0 with scripted test servicers, and for the
secured ones a development CA and a Consul with ACLs (one per module; a module may define its own)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import grpc.aio
import pytest
from mtls_support import Pki, SecureConsul, secure_consul
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


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.create(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def consul(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[SecureConsul]:
    with secure_consul(tmp_path_factory.mktemp("consul"), pki) as agent:
        yield agent
