"""p7: OrderCreated events published with confirms to a durable quorum queue and consumed, via protomesh.events.

A RabbitMQ node of its own (fresh data dir, free ports). Two phases on one Publisher and one Subscriber
(the runtime's defaults: confirms, persistent messages, prefetch 16): latency, one event at a time from
publish() called to the handler running; then throughput, `IN_FLIGHT` concurrent publishers until every
event was consumed (msg/s = events ÷ seconds from the first publish to the last handler call).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from typing import Any

from acme.orders.v1 import events_pb2, orders_pb2

from bench._core import Figure, NotRun, Options, Outcome, Target
from bench._gateway import summary_ms
from bench._proc import cpu_seconds

TARGETS = {"p7_events_per_s": Target(">=", 5000, " msg/s"), "p7_event_p50_ms": Target("<=", 5, " ms")}
# Concurrent publish() calls in the throughput phase (each waits for its own confirm).
IN_FLIGHT = 64
PHASE_TIMEOUT_S = 180.0
GROUP = "bench-p7"


def _event() -> events_pb2.OrderCreated:
    from protomesh.events import stamp_event

    items = [orders_pb2.LineItem(sku=f"sku-{n}", quantity=n, unit_price_cents=1250) for n in range(1, 3)]
    order = orders_pb2.Order(order_id="o-1", user_id="u-1", line_items=items, total_cents=3750,
                             state=orders_pb2.ORDER_STATE_CREATED)
    return stamp_event(events_pb2.OrderCreated(order=order))


class _Arrivals:
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


async def _latency(publisher: Any, arrivals: _Arrivals, count: int) -> list[float]:
    took = []
    for _ in range(count):
        event = _event()
        began = time.perf_counter()
        await publisher.publish(event)
        took.append((await arrivals.seen(event.event_id) - began) * 1e3)
    return took


async def _throughput(publisher: Any, arrivals: _Arrivals, count: int) -> tuple[float, list[float]]:
    events = [_event() for _ in range(count)]
    sent: dict[str, float] = {}
    queue: asyncio.Queue[events_pb2.OrderCreated] = asyncio.Queue()
    for event in events:
        queue.put_nowait(event)

    async def worker() -> None:
        while not queue.empty():
            event = queue.get_nowait()
            sent[event.event_id] = time.perf_counter()
            await publisher.publish(event)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    await arrivals.until(lambda: len(arrivals.at) >= count)
    last = max(arrivals.at[event_id] for event_id in sent)
    return count / (last - began), [(arrivals.at[i] - t) * 1e3 for i, t in sent.items()]


async def exchange(url: str, latency_count: int, throughput_count: int, broker_pid: int) -> dict[str, Any]:
    from protomesh.events import EventHandlers, Publisher, Subscriber

    arrivals = _Arrivals()
    handlers = EventHandlers().add(events_pb2.OrderCreated, arrivals.handle)
    async with Subscriber(url, group=GROUP, handlers=handlers) as subscriber, Publisher(url, app_id="bench") as pub:
        await subscriber.wait_ready()
        await _latency(pub, arrivals, 10)  # warm-up: connections, channel, first confirms
        async with asyncio.timeout(PHASE_TIMEOUT_S):
            latency = await _latency(pub, arrivals, latency_count)
            arrivals.at.clear()
            cpu_before = time.process_time(), _cpu(broker_pid)
            per_s, loaded = await _throughput(pub, arrivals, throughput_count)
            cpu = [(after - before) / throughput_count * 1e6
                   for before, after in zip(cpu_before, (time.process_time(), _cpu(broker_pid)), strict=True)]
    return {"latency_ms": latency, "per_s": per_s, "loaded_latency_ms": loaded,
            "client_cpu_us_per_event": round(cpu[0], 1), "broker_cpu_us_per_event": round(cpu[1], 1)}


def _cpu(pid: int) -> float:
    return cpu_seconds(pid) if pid else 0.0


def _broker_pid(node: Any) -> int:
    """The node's OS pid from the pid file RabbitMQNode points it at (0 if unknown: no broker CPU then)."""
    try:
        return int((node.base_dir / "node.pid").read_text().strip())
    except (OSError, ValueError):
        return 0


def run(options: Options) -> Outcome:
    from localmesh.testing import MissingComponentError, RabbitMQNode

    try:
        node = RabbitMQNode(options.work_dir / "p7" / "rabbitmq")
    except MissingComponentError as error:
        raise NotRun(str(error), missing="rabbitmq-server") from error
    boot_s = node.start()
    try:
        result = asyncio.run(exchange(node.url, options.count(1000, 50), options.count(20_000, 500),
                                      _broker_pid(node)))
    finally:
        node.stop()
    values = {"p7_events_per_s": round(result["per_s"], 1),
              "p7_event_p50_ms": round(statistics.median(result["latency_ms"]), 2)}
    return Outcome(
        values=values,
        subject={"what": "protomesh.events Publisher (confirms, persistent) -> quorum queue -> Subscriber (ack)",
                 "one_at_a_time": summary_ms(result["latency_ms"]),
                 "under_load": {"events": options.count(20_000, 500), "in_flight": IN_FLIGHT,
                                **summary_ms(result["loaded_latency_ms"]),
                                "client_cpu_us_per_event": result["client_cpu_us_per_event"],
                                "broker_cpu_us_per_event": result["broker_cpu_us_per_event"]},
                 "rabbitmq_boot_s": round(boot_s, 1)},
        commands=["bench/events.py: RabbitMQNode (localmesh.testing) + Publisher/Subscriber in one process"],
        notes=["RabbitMQ and the client are not pinned: the Erlang VM schedules on both cores"],
    )


FIGURE = Figure("p7", "events publish -> consume (confirms, durable quorum queue)", TARGETS, run)
