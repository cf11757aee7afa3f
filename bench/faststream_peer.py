"""p7's peer: the same OrderCreated events through FastStream (confirms, persistent, durable quorum queue).

    PYTHONPATH=gen/python .tools/bench-venv/bin/python -m bench.faststream_peer --url amqp://... \
        --latency 1000 --throughput 20000 --prefetch 64 --broker-pid PID

Runs from the bench venv (.tools/bench-venv, requirements-bench.txt), never from the project venv, against
the broker node p7 started. What a Python team would write with FastStream: one RabbitBroker (its default
channel has publisher confirms), a durable topic exchange and a durable quorum queue bound to the event's
full name, `broker.publish(..., persist=True)` awaited per event (it returns once confirmed), and a
subscriber acking after its handler returns (FastStream's default ack policy). The same phases as protomesh's
side (bench._event_phases); prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from acme.orders.v1 import events_pb2
from faststream.rabbit import Channel, ExchangeType, QueueType, RabbitBroker, RabbitExchange, RabbitQueue

from bench._event_phases import Arrivals, both_phases

CONTENT_TYPE = "application/x-protobuf"
EVENT_TYPE = events_pb2.OrderCreated.DESCRIPTOR.full_name


async def exchange(url: str, latency_count: int, throughput_count: int, prefetch: int,
                   broker_pid: int) -> dict[str, Any]:
    arrivals = Arrivals()
    # logger=None: no per-message access log, as the protomesh side writes none (p2 runs uvicorn the same way).
    broker = RabbitBroker(url, logger=None, app_id="bench")
    events = RabbitExchange("bench.faststream", type=ExchangeType.TOPIC, durable=True)
    queue = RabbitQueue("bench-p7-faststream", queue_type=QueueType.QUORUM, durable=True, routing_key=EVENT_TYPE)

    @broker.subscriber(queue, events, channel=Channel(prefetch_count=prefetch))
    async def on_order_created(body: bytes) -> None:
        await arrivals.handle(events_pb2.OrderCreated.FromString(body))

    async def publish(event: events_pb2.OrderCreated) -> None:
        await broker.publish(event.SerializeToString(), exchange=events, routing_key=EVENT_TYPE, persist=True,
                             message_id=event.event_id, message_type=EVENT_TYPE, content_type=CONTENT_TYPE,
                             timestamp=event.event_time.ToDatetime())

    async with broker:
        await broker.start()
        return await both_phases(publish, arrivals, latency_count, throughput_count, broker_pid)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the broker's AMQP URL")
    parser.add_argument("--latency", type=int, default=1000, help="events of the one-at-a-time phase")
    parser.add_argument("--throughput", type=int, default=20_000, help="events of the IN_FLIGHT phase")
    parser.add_argument("--prefetch", type=int, default=64,
                        help="the subscriber channel's prefetch count (p7 passes protomesh's DEFAULT_PREFETCH)")
    parser.add_argument("--broker-pid", type=int, default=0, help="the broker's OS pid, for its CPU per event")
    args = parser.parse_args(argv)
    # On uvloop, as `faststream run` runs an app whenever uvloop is installed (it is, in the bench venv).
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(exchange(args.url, args.latency, args.throughput, args.prefetch, args.broker_pid))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
