"""Steady, paced client load through the gateway (REST and gRPC on its one port), counting every failed request."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import aiohttp
import grpc
from acme.users.v1 import users_service_pb2, users_service_pb2_grpc

from bench.chaos.model import Failure, Tally, Timing
from localmesh.testing import GatewayClient

# Users created before any load: GetUser and CreateOrder pick among them, so no call depends on a write
# made during a fault.
SEEDED_USERS = 8
# Operation mixes. Every call goes through the gateway; each worker cycles through its mix.
USERS_MIX = ("get_user", "list_users", "create_user", "grpc_get_user")
MESH_MIX = (*USERS_MIX, "create_order", "list_notifications")
ORDERS_MIX = ("create_order", "get_user")


class CallFailed(Exception):
    """A call answered, but not with success (non-200 REST status, unexpected body)."""


@dataclass
class Workload:
    """The clients every load worker shares, plus what the load created (for the event checks)."""

    gateway: str                   # the gateway's URL: https://127.0.0.1:PORT
    http: aiohttp.ClientSession
    users: users_service_pb2_grpc.UserServiceStub  # over a channel to the gateway
    user_ids: list[str] = field(default_factory=list)
    # order id -> (user id, wall-clock time the client got the answer) of every CreateOrder that succeeded:
    # each must become exactly one notification.
    orders: dict[str, tuple[str, float]] = field(default_factory=dict)

    async def rest(self, method: str, path: str, body: object | None = None) -> dict[str, Any]:
        async with self.http.request(method, f"{self.gateway}{path}", json=body) as response:
            text = await response.text()
            if response.status != 200:
                raise CallFailed(f"HTTP {response.status}: {text[:300].strip()}")
        try:
            decoded = json.loads(text)
        except ValueError:
            decoded = None
        if not isinstance(decoded, dict):
            raise CallFailed(f"HTTP 200 with a body that is not a JSON object: {text[:300]}")
        return decoded

    async def create_user(self) -> str:
        body = await self.rest("POST", "/v1/users", {"email": f"{uuid.uuid4().hex[:12]}@chaos.example",
                                                     "displayName": "Chaos"})
        return str(body["user"]["userId"])


async def _get_user(work: Workload, n: int) -> None:
    await work.rest("GET", f"/v1/users/{work.user_ids[n % len(work.user_ids)]}")


async def _list_users(work: Workload, n: int) -> None:
    await work.rest("GET", "/v1/users?pageSize=10")


async def _create_user(work: Workload, n: int) -> None:
    await work.create_user()


async def _grpc_get_user(work: Workload, n: int) -> None:
    request = users_service_pb2.GetUserRequest(user_id=work.user_ids[n % len(work.user_ids)])
    await work.users.GetUser(request)


async def _create_order(work: Workload, n: int) -> None:
    user_id = work.user_ids[n % len(work.user_ids)]
    body = await work.rest("POST", "/v1/orders", {
        "userId": user_id, "lineItems": [{"sku": "chaos", "quantity": 1 + n % 3, "unitPriceCents": 999}]})
    work.orders[str(body["order"]["orderId"])] = (user_id, time.time())


async def _list_notifications(work: Workload, n: int) -> None:
    await work.rest("GET", f"/v1/users/{work.user_ids[n % len(work.user_ids)]}/notifications?pageSize=5")


OPS: dict[str, Callable[[Workload, int], Awaitable[None]]] = {
    "get_user": _get_user, "list_users": _list_users, "create_user": _create_user,
    "grpc_get_user": _grpc_get_user, "create_order": _create_order, "list_notifications": _list_notifications,
}


@contextlib.asynccontextmanager
async def open_workload(client: GatewayClient) -> AsyncIterator[Workload]:
    """REST session and gRPC channel to the gateway (its CA trusted, a token holding every scope), and the seeded
    users (the mesh must be up)."""
    token = client.token(subject="chaos", all_scopes=True)
    async with client.session(token, limit=64) as http, client.channel(token) as channel:
        work = Workload(client.url, http, users_service_pb2_grpc.UserServiceStub(channel))
        work.user_ids = [await work.create_user() for _ in range(SEEDED_USERS)]
        yield work


class Load:
    """`async with Load(work, mix, timing) as load:` runs paced workers until the block ends; `load.tally`.

    `load.mark("...")` stamps the timeline with the seconds since the load started, so failures (also
    stamped) can be read against the faults.
    """

    def __init__(self, work: Workload, mix: Sequence[str], timing: Timing) -> None:
        self.work = work
        self.mix = tuple(mix)
        self.timing = timing
        self.tally = Tally()
        self.events: list[str] = []
        self.started = 0.0
        # Calls sent and not yet answered: what a fault can catch mid-way.
        self.in_flight = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def mark(self, what: str) -> None:
        self.events.append(f"{self.elapsed():7.3f}s {what}")

    async def __aenter__(self) -> Load:
        self.started = time.monotonic()
        self._tasks = [asyncio.create_task(self._worker(i), name=f"chaos-load-{i}")
                       for i in range(self.timing.workers)]
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        self.mark(f"load stopped: {self.tally.failed} failed of {self.tally.total}")

    async def _worker(self, index: int) -> None:
        interval = 1.0 / self.timing.rate_per_worker
        next_at = time.monotonic()
        calls = 0
        while not self._stop.is_set() and self.tally.total < self.timing.max_requests:
            op = self.mix[(index + calls) % len(self.mix)]
            self.tally.add(op, await self._call(op, index + calls * self.timing.workers))
            calls += 1
            # Paced, never bursting to catch up: a slow answer lowers the rate instead of piling up calls.
            next_at = max(next_at + interval, time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), next_at - time.monotonic())

    async def _call(self, op: str, n: int) -> Failure | None:
        began = time.monotonic()
        self.in_flight += 1
        try:
            await asyncio.wait_for(OPS[op](self.work, n), self.timing.request_timeout_s)
        except CallFailed as exc:
            detail = str(exc)
        except TimeoutError:
            detail = f"no answer within {self.timing.request_timeout_s:.0f}s"
        except grpc.aio.AioRpcError as exc:
            detail = f"gRPC {exc.code().name}: {exc.details()}"
        except (aiohttp.ClientError, OSError, KeyError, ValueError) as exc:
            detail = repr(exc)
        else:
            return None
        finally:
            self.in_flight -= 1
        return Failure(round(began - self.started, 3), op, detail)


async def notifications_by_order(work: Workload, user_ids: set[str]) -> dict[str, list[float]]:
    """The creation times (Unix seconds) of each order's notifications, read through the gateway
    (ListNotifications, every page of every given user)."""
    found: dict[str, list[float]] = collections.defaultdict(list)
    for user_id in sorted(user_ids):
        token = ""
        while True:
            body = await work.rest("GET", f"/v1/users/{user_id}/notifications?pageSize=100&pageToken={token}")
            for notification in body.get("notifications", []):
                # The text is "Order <order id> placed: ..." (or "cancelled: ..."); only placements count here.
                words = str(notification.get("text", "")).split()
                if len(words) > 2 and words[2] == "placed:":
                    created = datetime.datetime.fromisoformat(str(notification["createTime"]))
                    found[words[1]].append(created.timestamp())
            token = str(body.get("nextPageToken", ""))
            if not token:
                break
    return found
