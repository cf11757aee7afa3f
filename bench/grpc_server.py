"""The gRPC side of p1-p4: a users-style servicer served bare (grpc.aio) or by protomesh.Server, optionally registered.

    python -m bench.grpc_server --mode protomesh --port 50051 [--consul 127.0.0.1:8500]

Runs until SIGTERM/SIGINT. `bare` is what a team writes without protomesh: the same servicer on a
grpc.aio server with the same options, no interceptor, no health, no reflection.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable
from typing import Any

import grpc.aio
from acme.users.v1 import users_pb2, users_service_pb2, users_service_pb2_grpc

from bench._proc import python_argv
from bench._rows import BY_ID, ROWS, Row
from protomesh.convert import timestamp
from protomesh.errors import NotFound

MODES = ("bare", "protomesh")
SERVICE = "users"
# ghz's --call and the Python client's method names.
GET_USER = "acme.users.v1.UserService.GetUser"
LIST_USERS = "acme.users.v1.UserService.ListUsers"
_DESCRIPTOR = users_service_pb2.DESCRIPTOR.services_by_name["UserService"]


def to_message(row: Row) -> users_pb2.User:
    """As services/users/app/handlers.to_message: Timestamps from protomesh.convert.timestamp."""
    return users_pb2.User(user_id=row.user_id, email=row.email, display_name=row.display_name,
                          create_time=timestamp(row.create_time), update_time=timestamp(row.update_time))


def to_message_datetime(row: Row) -> users_pb2.User:
    """The users service before protomesh.convert: datetimes converted by protobuf in the constructor."""
    return users_pb2.User(user_id=row.user_id, email=row.email, display_name=row.display_name,
                          create_time=row.create_time, update_time=row.update_time)


class Users(users_service_pb2_grpc.UserServiceServicer):
    """GetUser and ListUsers over the in-memory rows; what a users service's handlers do minus storage."""

    def __init__(self, convert: Callable[[Row], users_pb2.User] = to_message) -> None:
        self._convert = convert

    async def GetUser(self, request: Any, context: Any) -> users_service_pb2.GetUserResponse:
        row = BY_ID.get(request.user_id)
        if row is None:
            raise NotFound(f"user {request.user_id} not found")
        return users_service_pb2.GetUserResponse(user=self._convert(row))

    async def ListUsers(self, request: Any, context: Any) -> users_service_pb2.ListUsersResponse:
        rows = ROWS[: request.page_size or 20]
        return users_service_pb2.ListUsersResponse(users=[self._convert(row) for row in rows], next_page_token="")


async def _start(mode: str, port: int, echo: str, servicer: Users, otlp: str | None = None,
                 observe: str = "all", sampling: float | None = None) -> tuple[int, Any]:
    from protomesh import Binding, ProtomeshInterceptor, Server, ServerSettings
    from protomesh._observability import Observability
    from protomesh._server import SERVER_OPTIONS
    from protomesh._settings import ObservabilitySettings

    if mode == "bare":
        server = grpc.aio.server(options=SERVER_OPTIONS)
        users_service_pb2_grpc.add_UserServiceServicer_to_server(servicer, server)
        bound = server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        return bound, server
    binding = Binding(_DESCRIPTOR, servicer, users_service_pb2_grpc.add_UserServiceServicer_to_server)
    # None = the runtime's default interceptors, exactly what protomesh.run() serves with.
    interceptors: list[grpc.aio.ServerInterceptor] | None = (
        None if echo == "default" else [ProtomeshInterceptor(echo=echo)])  # type: ignore[arg-type]
    if otlp is not None:
        # What protomesh.run() serves with by default: metrics (and /metrics), every call traced, spans exported.
        observability = Observability(SERVICE, ObservabilitySettings(
            tracing_endpoint=otlp, metrics=observe in ("all", "metrics"), tracing=observe in ("all", "tracing"),
            **({"sampling_ratio": sampling} if sampling is not None else {})))
        observability.start_metrics("127.0.0.1")
        interceptors = observability.server_interceptors()
    protomesh_server = Server(ServerSettings(port=port), [binding], interceptors=interceptors)
    return await protomesh_server.start(), protomesh_server


async def serve(args: argparse.Namespace) -> None:
    from protomesh import ConsulClient, ConsulSettings, Registration

    servicer = Users(to_message_datetime if args.datetime_timestamps else to_message)
    port, server = await _start(args.mode, args.port, args.echo, servicer, args.otlp, args.observe, args.sampling)
    async with contextlib.AsyncExitStack() as stack:
        if args.consul:
            consul = await stack.enter_async_context(ConsulClient.from_settings(ConsulSettings(address=args.consul)))
            registration = Registration(consul, service=SERVICE, address="127.0.0.1", port=port,
                                        grpc_services=[_DESCRIPTOR.full_name], version="bench")
            await registration.start()
            stack.push_async_callback(registration.deregister)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await stop.wait()
    await server.stop(0)


def argv(mode: str, port: int, *, consul: str = "", otlp: str | None = None) -> list[str]:
    """The command line that serves `mode` on `port` (registered in `consul` when given; observed, exporting spans
    to `otlp`, when given)."""
    return python_argv("bench.grpc_server", "--mode", mode, "--port", str(port),
                       *(["--consul", consul] if consul else []), *(["--otlp", otlp] if otlp is not None else []))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=MODES, default="protomesh")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--consul", default="", help="register in this Consul agent (host:port) as 'users'")
    parser.add_argument("--echo", choices=("default", "trailing", "initial"), default="default",
                        help="protomesh mode: ProtomeshInterceptor(echo=...) instead of the default interceptors")
    parser.add_argument("--otlp", metavar="HOST:PORT",
                        help="protomesh mode: observability on as services run it (metrics, tracing every call, "
                             "spans exported over OTLP to HOST:PORT; empty: made but not exported)")
    parser.add_argument("--observe", choices=("all", "metrics", "tracing"), default="all",
                        help="with --otlp: which half of observability runs (A/B of their costs)")
    parser.add_argument("--sampling", type=float, help="with --otlp: the sampling ratio (default: the runtime's)")
    parser.add_argument("--access-log", action="store_true", help="log every call at INFO (to /dev/null)")
    parser.add_argument("--datetime-timestamps", action="store_true",
                        help="datetimes converted by protobuf (the users service before protomesh.convert)")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio",
                        help="event loop (uvloop must be importable: an experiment, not what services run on)")
    args = parser.parse_args()
    if args.access_log:  # what a service at log_level INFO does: one line per call
        logging.basicConfig(level=logging.INFO, stream=open(os.devnull, "w"))  # noqa: SIM115
    loop_factory = None
    if args.loop == "uvloop":
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(args))


if __name__ == "__main__":
    main()
