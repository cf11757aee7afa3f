"""A side-probe for p10: a few keep-alive GETs in a loop beside wrk, timing each and reading its status and body.

    python -m bench._httpprobe http://127.0.0.1:8080/v1/users/u1 --duration 5 --connections 8

wrk reports one latency distribution over every answer (fast 503s included) and never reads a body; this
prints JSON with the p50/p99 of the 200s alone and every other answer by HTTP status and google.rpc code.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import math
import re
import sys
import time
from typing import Any
from urllib.parse import urlsplit

_CODE = re.compile(rb'"code"\s*:\s*(\d+)')
# A probe connection that the gateway closed (connection limit) waits this long before it reconnects.
RECONNECT_PAUSE_S = 0.05


def kind(status: int, body: bytes) -> str:
    """`503/14`: the HTTP status and the google.rpc code of a JSON google.rpc.Status body (`-` without one)."""
    found = _CODE.search(body)
    return f"{status}/{found.group(1).decode() if found else '-'}"


def nearest_rank(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile (p99 of 200 samples is the 198th smallest); NaN without samples."""
    if not values:
        return math.nan
    return sorted(values)[max(1, math.ceil(len(values) * fraction)) - 1]


async def _connection(host: str, port: int, request: bytes, window: tuple[float, float], ok: list[float],
                      kinds: collections.Counter[str]) -> None:
    start_at, stop_at = window
    while time.perf_counter() < stop_at:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            kinds["socket"] += 1
            await asyncio.sleep(RECONNECT_PAUSE_S)
            continue
        try:
            while (began := time.perf_counter()) < stop_at:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                body = await reader.readexactly(length)
                status = int(head[9:12])
                if began < start_at:
                    continue
                if status == 200:
                    ok.append((time.perf_counter() - began) * 1e3)
                else:
                    kinds[kind(status, body)] += 1
        except (OSError, asyncio.IncompleteReadError):
            kinds["socket"] += 1
        finally:
            writer.close()


async def probe(url: str, duration: float, connections: int, warmup: float = 0.0) -> dict[str, Any]:
    """`connections` keep-alive connections asking in a loop for `duration` s; the first `warmup` s are not counted
    (the connections open before the load does, so they are ones the gateway accepted)."""
    parts = urlsplit(url)
    request = f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode()
    ok: list[float] = []
    kinds: collections.Counter[str] = collections.Counter()
    started = time.perf_counter()
    await asyncio.gather(*(_connection(parts.hostname or "127.0.0.1", parts.port or 80, request,
                                       (started + warmup, started + duration), ok, kinds)
                         for _ in range(connections)))
    return {"ok": len(ok), "p50_ms": round(nearest_rank(ok, 0.5), 2), "p99_ms": round(nearest_rank(ok, 0.99), 2),
            "kinds": dict(kinds), "seconds": round(time.perf_counter() - started - warmup, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--warmup", type=float, default=0.0, help="seconds not counted at the start")
    args = parser.parse_args()
    json.dump(asyncio.run(probe(args.url, args.duration, args.connections, args.warmup)), sys.stdout)


if __name__ == "__main__":
    main()
