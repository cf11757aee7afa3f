"""Servicers behind a real protomesh Server in the test's own loop, and what a failed call's status says."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import grpc
import grpc.aio
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from protomesh._server import Binding, Server
from protomesh._settings import ServerSettings


@dataclass(frozen=True)
class ServedBindings:
    """A started Server (a test may stop it early: stop is idempotent) and a channel to it."""

    server: Server
    channel: grpc.aio.Channel


@asynccontextmanager
async def serve_bindings(*bindings: Binding, settings: ServerSettings | None = None) -> AsyncIterator[ServedBindings]:
    """Serve the bindings with the runtime's default interceptors on a free port of 127.0.0.1; on exit the
    channel closes, then the server stops without grace.

        async with serve_bindings(binding(users)) as served:
            stub = UserServiceStub(served.channel)
    """
    server = Server(settings or ServerSettings(port=0), bindings)
    port = await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield ServedBindings(server, channel)
    finally:
        await server.stop(0)


def field_violations(error: grpc.aio.AioRpcError) -> list[str]:
    """The google.rpc.BadRequest field paths in a failed call's rich status, in order."""
    status = rpc_status.from_call(error)
    if status is None:
        raise AssertionError(f"the error carries no rich status: {error!r}")
    paths: list[str] = []
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            paths.extend(violation.field for violation in bad_request.field_violations)
    return paths
