"""The gRPC side of p1-p4: a users-style servicer served bare (grpc.aio) or by protomesh.Server, optionally registered.

    python -m bench.grpc_server --mode protomesh --port 50051 [--consul 127.0.0.1:8500]
    python -m bench.grpc_server --mode protomesh --port 50051 --identity-dir DIR --allow gateway   # mTLS

Runs until SIGTERM/SIGINT. `bare` is what a team writes without protomesh: the same servicer on a
grpc.aio server with the same options, no interceptor, no health, no reflection, on the standard asyncio
loop. `protomesh` runs as protomesh.run() does: on uvloop with start-up's heap frozen (`--loop`, `--gc-freeze`
set either side by hand for A/B runs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc.aio
from acme.users.v1 import users_pb2, users_service_pb2, users_service_pb2_grpc

from bench._proc import python_argv
from bench._rows import BY_ID, ROWS, Row
from protomesh._process import freeze_startup_heap, loop_factory
from protomesh._settings import ServerSettings
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


def _binding(servicer: Users) -> Any:
    from protomesh import Binding

    return Binding(_DESCRIPTOR, servicer, users_service_pb2_grpc.add_UserServiceServicer_to_server)


async def _security(stack: contextlib.AsyncExitStack, identity_dir: Path, binding: Any, consul: Any,
                    allow: Sequence[str]) -> tuple[Any, Any]:
    """The identity (followed for rotation) and the call guard that serve() wires for security.mode mtls: with
    `consul` the intentions and policy are Consul's, as a service follows them; without it, `allow` are the
    sources intentions admit (the same Authorizer on every call, no Consul to run)."""
    from protomesh._authz import Authorizer
    from protomesh._security import start_security
    from protomesh._server import declared_rules
    from protomesh._settings import SecuritySettings
    from protomesh.identity import IdentityFolder
    from protomesh.intentions import Intention, Intentions

    identity = IdentityFolder.open(identity_dir)
    if consul is not None:
        security = await start_security(stack, identity, SecuritySettings(identity_dir=identity_dir), consul)
        assert security is not None
        return identity, security.guard(SERVICE, [binding])
    await identity.start()
    stack.push_async_callback(identity.stop)
    intentions = Intentions.of([Intention(source, SERVICE) for source in allow])
    return identity, Authorizer(SERVICE, declared=declared_rules([binding]), intentions=intentions)


async def _start(mode: str, port: int, echo: str, servicer: Users, otlp: str | None = None,
                 observe: str = "all", sampling: float | None = None, *, binding: Any = None,
                 security: tuple[Any, Any] | None = None, max_concurrent_rpcs: int | None = None) -> tuple[int, Any]:
    from protomesh import ProtomeshInterceptor, Server, ServerSettings
    from protomesh._observability import Observability
    from protomesh._server import SERVER_OPTIONS
    from protomesh._settings import ObservabilitySettings

    identity, guard = security if security is not None else (None, None)
    if mode == "bare":
        server = grpc.aio.server(options=SERVER_OPTIONS)
        users_service_pb2_grpc.add_UserServiceServicer_to_server(servicer, server)
        bound = server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        return bound, server
    binding = binding or _binding(servicer)
    # None = the runtime's default interceptors, exactly what protomesh.run() serves with.
    interceptors: list[grpc.aio.ServerInterceptor] | None = (
        None if echo == "default" else [ProtomeshInterceptor(echo=echo, guard=guard)])  # type: ignore[arg-type]
    if otlp is not None:
        # What protomesh.run() serves with by default: metrics (and /metrics), every call traced, spans exported.
        observability = Observability(SERVICE, ObservabilitySettings(
            tracing_endpoint=otlp, metrics=observe in ("all", "metrics"), tracing=observe in ("all", "tracing"),
            **({"sampling_ratio": sampling} if sampling is not None else {})))
        observability.start_metrics("127.0.0.1")
        interceptors = observability.server_interceptors(guard=guard)
    bound = {} if max_concurrent_rpcs is None else {"max_concurrent_rpcs": max_concurrent_rpcs}
    protomesh_server = Server(ServerSettings(port=port, **bound), [binding], interceptors=interceptors,
                              identity=identity, guard=guard if interceptors is None else None)
    return await protomesh_server.start(), protomesh_server


async def serve(args: argparse.Namespace) -> None:
    from protomesh import ConsulClient, ConsulSettings, Registration

    servicer = Users(to_message_datetime if args.datetime_timestamps else to_message)
    binding = _binding(servicer)
    async with contextlib.AsyncExitStack() as stack:
        consul = None
        if args.consul:
            # As a service reads it: the token from the environment (Consul with ACLs), none without.
            settings = ConsulSettings(address=args.consul, token=os.environ.get("CONSUL_HTTP_TOKEN", ""))
            consul = await stack.enter_async_context(ConsulClient.from_settings(settings))
        security = None
        if args.identity_dir is not None:
            security = await _security(stack, args.identity_dir, binding, consul, args.allow)
        port, server = await _start(args.mode, args.port, args.echo, servicer, args.otlp, args.observe, args.sampling,
                                    binding=binding, security=security,
                                    max_concurrent_rpcs=args.max_concurrent_rpcs)
        stack.push_async_callback(server.stop, 0)
        if consul is not None:
            registration = Registration(consul, service=SERVICE, address="127.0.0.1", port=port,
                                        grpc_services=[_DESCRIPTOR.full_name], version="bench",
                                        tls=security is not None)
            await registration.start()
            stack.push_async_callback(registration.deregister)
        if args.gc_freeze == "on":
            freeze_startup_heap()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await stop.wait()


def argv(mode: str, port: int, *, consul: str = "", otlp: str | None = None,
         identity_dir: Path | None = None, max_concurrent_rpcs: int | None = None) -> list[str]:
    """The command line that serves `mode` on `port` (registered in `consul` when given; observed, exporting spans
    to `otlp`, when given; mTLS with the identity in `identity_dir`, when given)."""
    return python_argv("bench.grpc_server", "--mode", mode, "--port", str(port),
                       *(["--consul", consul] if consul else []), *(["--otlp", otlp] if otlp is not None else []),
                       *(["--identity-dir", str(identity_dir)] if identity_dir is not None else []),
                       *([] if max_concurrent_rpcs is None else ["--max-concurrent-rpcs", str(max_concurrent_rpcs)]))


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
    parser.add_argument("--identity-dir", type=Path,
                        help="protomesh mode: mTLS with this identity folder and every call authorized, as "
                             "security.mode mtls serves (intentions from --consul, else --allow)")
    parser.add_argument("--allow", action="append", default=[], metavar="SERVICE",
                        help="with --identity-dir and no --consul: a service an intention lets call (repeat)")
    parser.add_argument("--max-concurrent-rpcs", type=int, metavar="N",
                        help="protomesh mode: server.max_concurrent_rpcs (default: the runtime's; 0: unbounded)")
    parser.add_argument("--access-log", action="store_true", help="log every call at INFO (to /dev/null)")
    parser.add_argument("--datetime-timestamps", action="store_true",
                        help="datetimes converted by protobuf (the users service before protomesh.convert)")
    parser.add_argument("--loop", choices=("runtime", "asyncio", "uvloop"), default="runtime",
                        help="event loop; runtime (default): what protomesh.run() picks in protomesh mode (uvloop), "
                             "the standard library's in bare mode (what a team writes without protomesh)")
    parser.add_argument("--gc-freeze", choices=("runtime", "on", "off"), default="runtime",
                        help="freeze start-up's heap once serving; runtime (default): as protomesh.run() does in "
                             "protomesh mode (on), off in bare mode")
    args = parser.parse_args()
    if args.identity_dir is not None and args.mode == "bare":
        parser.error("--identity-dir is the runtime's mTLS: use it with --mode protomesh")
    if args.access_log:  # what a service at log_level INFO does: one line per call
        logging.basicConfig(level=logging.INFO, stream=open(os.devnull, "w"))  # noqa: SIM115
    runtime = ServerSettings()
    if args.loop == "runtime":
        args.loop = runtime.event_loop if args.mode == "protomesh" else "asyncio"
    if args.gc_freeze == "runtime":
        args.gc_freeze = "on" if args.mode == "protomesh" and runtime.gc_freeze else "off"
    with asyncio.Runner(loop_factory=loop_factory(args.loop)) as runner:
        runner.run(serve(args))


if __name__ == "__main__":
    main()
