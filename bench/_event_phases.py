"""p7's two phases, shared by protomesh's side and FastStream's: one event at a time, then IN_FLIGHT publishers.

Imports only the generated stubs (no protomesh), so the FastStream peer runs it from the bench venv.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from acme.orders.v1 import events_pb2, orders_pb2

# Concurrent publishers in the throughput phase (each waits for its own confirm before its next publish).
IN_FLIGHT = 64
PHASE_TIMEOUT_S = 180.0
# Events published one at a time before the latency phase: connections, channels, first confirms.
WARM_UP = 10

Publish = Callable[[events_pb2.OrderCreated], Awaitable[Any]]
_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of a process (0 for pid 0); bench._proc's twin, which the bench venv cannot import."""
    if not pid:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S


def order_created() -> events_pb2.OrderCreated:
    """The event both sides publish, stamped as protomesh.events.stamp_event does (uuid4 id, current time)."""
    items = [orders_pb2.LineItem(sku=f"sku-{n}", quantity=n, unit_price_cents=1250) for n in range(1, 3)]
    order = orders_pb2.Order(order_id="o-1", user_id="u-1", line_items=items, total_cents=3750,
                             state=orders_pb2.ORDER_STATE_CREATED)
    event = events_pb2.OrderCreated(order=order, event_id=str(uuid.uuid4()))
    event.event_time.GetCurrentTime()
    return event


class Arrivals:
    """When each event id reached the handler; wakes whoever waits for an id or for a count."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self.changed = asyncio.Event()

    async def handle(self, event: events_pb2.OrderCreated) -> None:
        self.at.setdefault(event.event_id, time.perf_counter())
        self.changed.set()

    async def seen(self, event_id: str) -> float:
        """When the handler got `event_id` (waits for it)."""
        await self.until(lambda: event_id in self.at)
        return self.at[event_id]

    async def until(self, check: Callable[[], bool]) -> None:
        while not check():
            self.changed.clear()
            await self.changed.wait()


async def latency(publish: Publish, arrivals: Arrivals, count: int) -> list[float]:
    """Milliseconds from publish() called to the handler running, one event at a time."""
    took = []
    for _ in range(count):
        event = order_created()
        began = time.perf_counter()
        await publish(event)
        took.append((await arrivals.seen(event.event_id) - began) * 1e3)
    return took


async def throughput(publish: Publish, arrivals: Arrivals, count: int) -> tuple[float, list[float]]:
    """Events per second from the first publish to the last handler call, and each event's latency (ms)."""
    queue: asyncio.Queue[events_pb2.OrderCreated] = asyncio.Queue()
    for _ in range(count):
        queue.put_nowait(order_created())
    sent: dict[str, float] = {}

    async def worker() -> None:
        while not queue.empty():
            event = queue.get_nowait()
            sent[event.event_id] = time.perf_counter()
            await publish(event)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    await arrivals.until(lambda: len(arrivals.at) >= count)
    last = max(arrivals.at[event_id] for event_id in sent)
    return count / (last - began), [(arrivals.at[i] - t) * 1e3 for i, t in sent.items()]


async def both_phases(publish: Publish, arrivals: Arrivals, latency_count: int, throughput_count: int,
                      broker_pid: int = 0) -> dict[str, Any]:
    """Warm up, then the latency phase, then the throughput phase, with this process's and the broker's CPU."""
    await latency(publish, arrivals, WARM_UP)
    async with asyncio.timeout(PHASE_TIMEOUT_S):
        took = await latency(publish, arrivals, latency_count)
        arrivals.at.clear()
        before = time.process_time(), cpu_seconds(broker_pid)
        per_s, loaded = await throughput(publish, arrivals, throughput_count)
        after = time.process_time(), cpu_seconds(broker_pid)
    client, broker = ((b - a) / throughput_count * 1e6 for a, b in zip(before, after, strict=True))
    return {"latency_ms": took, "per_s": per_s, "loaded_latency_ms": loaded,
            "client_cpu_us_per_event": round(client, 1), "broker_cpu_us_per_event": round(broker, 1)}
