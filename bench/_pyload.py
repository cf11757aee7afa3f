"""The Python load generator, used only where ghz or wrk is missing; prints one JSON line of totals.

    python -m bench._pyload grpc 127.0.0.1:50051 --call acme.users.v1.UserService.GetUser --data '{"user_id": "x"}'
    python -m bench._pyload http http://127.0.0.1:8000/v1/users/x --concurrency 32

Slower than ghz/wrk, so its req/s says little once it saturates its core; server CPU per request (what p2
measures) does not depend on the client's speed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc.aio
from google.protobuf import json_format, message_factory
from google.protobuf.message import Message

# Latencies kept for the median: the first ones only, so a long run does not grow the list without end.
MAX_SAMPLES = 200_000


async def _drive(call: Callable[[], Awaitable[bool]], duration: float, concurrency: int) -> dict[str, Any]:
    ok = errors = 0
    latencies: list[float] = []
    stop_at = time.perf_counter() + duration

    async def worker() -> None:
        nonlocal ok, errors
        while (began := time.perf_counter()) < stop_at:
            if await call():
                ok += 1
            else:
                errors += 1
            if len(latencies) < MAX_SAMPLES:
                latencies.append(time.perf_counter() - began)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    p50 = statistics.median(latencies) * 1e3 if latencies else float("nan")
    return {"requests": ok, "errors": errors, "seconds": time.perf_counter() - started, "p50_ms": p50}


def _request(call: str, data: str) -> tuple[str, Message]:
    from acme.users.v1 import users_service_pb2

    service, _, method = call.rpartition(".")
    descriptor = users_service_pb2.DESCRIPTOR.pool.FindServiceByName(service).methods_by_name[method]
    request = message_factory.GetMessageClass(descriptor.input_type)()
    json_format.Parse(data, request)
    return f"/{service}/{method}", request


def _channel(args: argparse.Namespace) -> grpc.aio.Channel:
    """Plaintext, or TLS with --cacert (and --cert/--key for mTLS, --server-name for the name expected)."""
    options: list[tuple[str, Any]] = [("grpc.use_local_subchannel_pool", 1)]
    if args.cacert is None:
        return grpc.aio.insecure_channel(args.target, options=options)
    key = Path(args.key).read_bytes() if args.key else None
    cert = Path(args.cert).read_bytes() if args.cert else None
    if args.server_name:
        options.append(("grpc.ssl_target_name_override", args.server_name))
    credentials = grpc.ssl_channel_credentials(Path(args.cacert).read_bytes(), key, cert)
    return grpc.aio.secure_channel(args.target, credentials, options=options)


async def grpc_run(args: argparse.Namespace) -> dict[str, Any]:
    path, request = _request(args.call, args.data)
    channels = [_channel(args) for _ in range(args.connections)]
    serialize = type(request).SerializeToString
    methods: list[Any] = [channel.unary_unary(path, request_serializer=serialize) for channel in channels]
    metadata = tuple(json.loads(args.metadata).items()) if args.metadata else None
    turn = 0

    async def call() -> bool:
        nonlocal turn
        turn += 1
        try:
            await methods[turn % len(methods)](request, timeout=10, metadata=metadata)
        except grpc.aio.AioRpcError:
            return False
        return True

    try:
        return await _drive(call, args.duration, args.concurrency)
    finally:
        for channel in channels:
            await channel.close()


async def http_run(args: argparse.Namespace) -> dict[str, Any]:
    url = urlsplit(args.target)
    headers = "".join(f"{header}\r\n" for header in args.header)
    request = (f"GET {url.path or '/'}{'?' + url.query if url.query else ''} HTTP/1.1\r\n"
               f"Host: {url.netloc}\r\n{headers}\r\n").encode()
    context = ssl.create_default_context(cafile=args.cacert) if url.scheme == "https" else None
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(args.concurrency):
        pool.put_nowait(await asyncio.open_connection(url.hostname, url.port, ssl=context))

    async def call() -> bool:
        reader, writer = await pool.get()
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        await reader.readexactly(length)
        pool.put_nowait((reader, writer))
        return head[9:12] == b"200"

    return await _drive(call, args.duration, args.concurrency)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("grpc", "http"))
    parser.add_argument("target", help="host:port (grpc) or URL (http)")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--connections", type=int, default=1, help="grpc: channels the calls are spread over")
    parser.add_argument("--call", default="acme.users.v1.UserService.GetUser")
    parser.add_argument("--data", default="{}")
    parser.add_argument("--metadata", help="grpc: JSON object of metadata every call carries")
    parser.add_argument("-H", "--header", action="append", default=[], help="http: 'Name: value' (repeat)")
    parser.add_argument("--cacert", help="TLS: the CA bundle to trust (grpc: TLS only with it)")
    parser.add_argument("--cert", help="grpc mTLS: the client certificate (PEM)")
    parser.add_argument("--key", help="grpc mTLS: the client key (PEM)")
    parser.add_argument("--server-name", help="grpc TLS: the name expected in the server's certificate")
    args = parser.parse_args()
    result = asyncio.run(grpc_run(args) if args.kind == "grpc" else http_run(args))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
