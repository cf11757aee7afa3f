"""Throughput and server CPU per call of a bare grpc.aio servicer vs the same servicer behind protomesh.Server.

    .venv/bin/python bench/runtime_overhead.py                  # 3 paired rounds, 5 s per mode, 64 in flight
    .venv/bin/python bench/runtime_overhead.py --duration 3 --rounds 2 --access-log --echo initial

Each server runs in its own subprocess and is loaded by the same client subprocess (grpc.aio, loopback);
the ratios are medians over paired rounds (both modes back to back), which cancels drifting machine load.
Two numbers per mode: req/s (bounded by whichever side saturates first on a shared machine) and server
CPU microseconds per call (read from /proc, independent of the client's speed): the second is the one to
trust when the client is the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from acme.users.v1 import users_pb2, users_service_pb2, users_service_pb2_grpc

MODES = ("bare", "protomesh")
_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


class _Users(users_service_pb2_grpc.UserServiceServicer):
    """GetUser-style work: read the id, build a small response."""

    async def GetUser(self, request: Any, context: Any) -> Any:
        user = users_pb2.User(user_id=request.user_id, email="ada@example.com", display_name="Ada")
        return users_service_pb2.GetUserResponse(user=user)


async def _serve(mode: str, echo: str) -> None:
    from protomesh._interceptors import ProtomeshInterceptor
    from protomesh._server import SERVER_OPTIONS, Binding, Server
    from protomesh._settings import ServerSettings

    if mode == "bare":
        server = grpc.aio.server(options=SERVER_OPTIONS)
        users_service_pb2_grpc.add_UserServiceServicer_to_server(_Users(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
    else:
        binding = Binding(users_service_pb2.DESCRIPTOR.services_by_name["UserService"], _Users(),
                          users_service_pb2_grpc.add_UserServiceServicer_to_server)
        interceptor = ProtomeshInterceptor(echo="initial" if echo == "initial" else "trailing")
        protomesh_server = Server(ServerSettings(port=0), [binding], interceptors=[interceptor])
        port = await protomesh_server.start()
    sys.stdout.write(f"{port}\n")
    sys.stdout.flush()
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # parent closes stdin to stop


async def _load(port: int, duration: float, concurrency: int, warmup: float) -> None:
    done = 0
    measuring = False

    async def worker(stub: Any, stop_at: float) -> None:
        nonlocal done
        request = users_service_pb2.GetUserRequest(user_id="u-1")
        while time.monotonic() < stop_at:
            await stub.GetUser(request, timeout=10)
            if measuring:
                done += 1

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = users_service_pb2_grpc.UserServiceStub(channel)
        started = time.monotonic()
        stop_at = started + warmup + duration
        tasks = [asyncio.create_task(worker(stub, stop_at)) for _ in range(concurrency)]
        await asyncio.sleep(warmup)
        measuring = True
        sys.stdout.write("start\n")
        sys.stdout.flush()
        await asyncio.gather(*tasks)
    sys.stdout.write(f"{done}\n")
    sys.stdout.flush()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S  # utime + stime


def _measure(mode: str, args: argparse.Namespace) -> tuple[float, float]:
    """(req/s, server CPU µs per call) of one mode."""
    me = [sys.executable, __file__]
    serve_argv = [*me, "--serve", mode, "--echo", args.echo, *(["--access-log"] if args.access_log else [])]
    server = subprocess.Popen(serve_argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        load_argv = [*me, "--load", str(port), "--duration", str(args.duration),
                     "--concurrency", str(args.concurrency), "--warmup", str(args.warmup)]
        client = subprocess.Popen(load_argv, stdout=subprocess.PIPE, text=True)
        assert client.stdout is not None
        assert client.stdout.readline().strip() == "start"
        cpu_before, wall_before = _cpu_seconds(server.pid), time.monotonic()
        calls = int(client.stdout.readline())
        cpu_after, wall_after = _cpu_seconds(server.pid), time.monotonic()
        client.wait(timeout=30)
        return calls / (wall_after - wall_before), (cpu_after - cpu_before) / calls * 1e6
    finally:
        if server.stdin is not None:  # the server exits when its stdin closes
            server.stdin.close()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per mode and round")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each window")
    parser.add_argument("--concurrency", type=int, default=64, help="calls in flight")
    parser.add_argument("--rounds", type=int, default=3, help="paired measurements of both modes")
    parser.add_argument("--access-log", action="store_true", help="protomesh mode logs every call (INFO)")
    parser.add_argument("--echo", choices=("trailing", "initial"), default="trailing",
                        help="where protomesh mode echoes the correlation id (ProtomeshInterceptor(echo=...))")
    parser.add_argument("--serve", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--load", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        if args.access_log:  # what a service at log_level INFO does: one line per call (to /dev/null here)
            logging.basicConfig(level=logging.INFO, stream=open(os.devnull, "w"))  # noqa: SIM115
        asyncio.run(_serve(args.serve, args.echo))
        return
    if args.load:
        asyncio.run(_load(args.load, args.duration, args.concurrency, args.warmup))
        return
    _report([_paired_round(number, args) for number in range(args.rounds)])


def _paired_round(number: int, args: argparse.Namespace) -> dict[str, tuple[float, float]]:
    # Both modes back to back, in alternating order: on a shared machine the load drifts, and a ratio of
    # two neighbouring measurements cancels most of that drift.
    order = MODES if number % 2 == 0 else MODES[::-1]
    measured = {mode: _measure(mode, args) for mode in order}
    (bare_rps, bare_cpu), (pm_rps, pm_cpu) = measured["bare"], measured["protomesh"]
    sys.stdout.write(f"round {number + 1}: bare {bare_rps:6.0f} req/s {bare_cpu:5.0f} us/call | protomesh "
                     f"{pm_rps:6.0f} req/s {pm_cpu:5.0f} us/call | ratio {pm_rps / bare_rps:.3f} "
                     f"throughput {bare_cpu / pm_cpu:.3f} CPU\n")
    sys.stdout.flush()
    return measured


def _report(rounds: list[dict[str, tuple[float, float]]]) -> None:
    throughput = statistics.median(r["protomesh"][0] / r["bare"][0] for r in rounds)
    cpu = statistics.median(r["bare"][1] / r["protomesh"][1] for r in rounds)
    for mode in MODES:
        rps = statistics.median(r[mode][0] for r in rounds)
        cpu_us = statistics.median(r[mode][1] for r in rounds)
        sys.stdout.write(f"{mode:>10}: {rps:8.0f} req/s   server CPU {cpu_us:6.1f} us/call   (medians)\n")
    sys.stdout.write(f"     ratio: {throughput:.3f} throughput   {cpu:.3f} CPU efficiency   "
                     f"(median of {len(rounds)} paired rounds)\n")

if __name__ == "__main__":
    main()
