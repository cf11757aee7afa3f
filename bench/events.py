"""p7: OrderCreated events published with confirms to a durable quorum queue and consumed, protomesh vs FastStream.

A RabbitMQ node of its own (fresh data dir, free ports), used by both sides in turn. Two phases each
(bench._event_phases): latency, one event at a time from publish called to the handler running; then
throughput, `IN_FLIGHT` concurrent publishers until every event was consumed (msg/s = events ÷ seconds
from the first publish to the last handler call). protomesh's side is one Publisher and one Subscriber in
this process (the runtime's defaults: confirms, persistent messages, uvloop); FastStream's is bench.faststream_peer,
a process of the bench venv, with the same payloads, confirms, persistence, queue type and prefetch, on uvloop
as `faststream run` runs an app.
Rounds alternate the two sides; the ratio is the median of each round's protomesh ÷ FastStream msg/s.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
from collections.abc import Coroutine
from typing import Any, TypeVar

from acme.orders.v1 import events_pb2

from bench._core import ROOT, Figure, NotRun, Options, Outcome, Target
from bench._event_phases import IN_FLIGHT, Arrivals, both_phases
from bench._gateway import summary_ms
from bench._proc import bench_venv_python

TARGETS = {"p7_events_per_s": Target(">=", 5000, " msg/s"), "p7_event_p50_ms": Target("<=", 5, " ms"),
           "p7_events_vs_faststream": Target(">=", 1.0, " (protomesh ÷ FastStream msg/s)"),
           "p7_faststream_events_per_s": None, "p7_faststream_p50_ms": None}
GROUP = "bench-p7"
T = TypeVar("T")
# One side's two phases never take this long, even on a loaded machine (the peer is killed past it).
PEER_TIMEOUT_S = 300.0


def on_runtime_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` on the loop protomesh.run() gives a service by default (uvloop), as the peer runs on FastStream's."""
    from protomesh._process import loop_factory
    from protomesh._settings import ServerSettings

    with asyncio.Runner(loop_factory=loop_factory(ServerSettings().event_loop)) as runner:
        return runner.run(main)


async def exchange(url: str, latency_count: int, throughput_count: int, broker_pid: int) -> dict[str, Any]:
    from protomesh.events import EventHandlers, Publisher, Subscriber

    arrivals = Arrivals()
    handlers = EventHandlers().add(events_pb2.OrderCreated, arrivals.handle)
    async with Subscriber(url, group=GROUP, handlers=handlers) as subscriber, Publisher(url, app_id="bench") as pub:
        await subscriber.wait_ready()
        return await both_phases(pub.publish, arrivals, latency_count, throughput_count, broker_pid)


def faststream_python() -> str:
    """The bench venv's interpreter, or NotRun when it (or FastStream) is missing."""
    return bench_venv_python("faststream.rabbit, google.protobuf", "faststream[rabbit] and protobuf")


def peer_argv(url: str, latency_count: int, throughput_count: int, broker_pid: int) -> list[str]:
    from protomesh.events import DEFAULT_PREFETCH

    return [faststream_python(), "-m", "bench.faststream_peer", "--url", url, "--latency", str(latency_count),
            "--throughput", str(throughput_count), "--prefetch", str(DEFAULT_PREFETCH),
            "--broker-pid", str(broker_pid)]


def faststream(argv: list[str]) -> dict[str, Any]:
    """Run the peer to the end; its JSON result (RuntimeError with its stderr when it fails)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "gen" / "python")}
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=PEER_TIMEOUT_S,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"bench.faststream_peer exited {done.returncode}: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _broker_pid(node: Any) -> int:
    """The node's OS pid from the pid file RabbitMQNode points it at (0 if unknown: no broker CPU then)."""
    try:
        return int((node.base_dir / "node.pid").read_text().strip())
    except (OSError, ValueError):
        return 0


def _side(rounds: list[dict[str, Any]], what: str) -> dict[str, Any]:
    middle = sorted(rounds, key=lambda result: result["per_s"])[len(rounds) // 2]
    return {"what": what, "msg_per_s_rounds": [round(result["per_s"], 1) for result in rounds],
            "one_at_a_time": summary_ms(middle["latency_ms"]),
            "under_load": {"events": len(middle["loaded_latency_ms"]), "in_flight": IN_FLIGHT,
                           **summary_ms(middle["loaded_latency_ms"]),
                           "client_cpu_us_per_event": middle["client_cpu_us_per_event"],
                           "broker_cpu_us_per_event": middle["broker_cpu_us_per_event"]}}


def _p50(rounds: list[dict[str, Any]]) -> float:
    """The median of each round's one-at-a-time p50 (ms)."""
    p50s: list[float] = [statistics.median(result["latency_ms"]) for result in rounds]
    return round(statistics.median(p50s), 2)


def run(options: Options) -> Outcome:
    from localmesh.testing import MissingComponentError, RabbitMQNode

    faststream_python()  # NotRun before the broker starts when the bench venv is missing
    try:
        node = RabbitMQNode(options.work_dir / "p7" / "rabbitmq")
    except MissingComponentError as error:
        raise NotRun(str(error), missing="rabbitmq-server") from error
    latency_count, throughput_count = options.count(1000, 50), options.count(20_000, 500)
    boot_s = node.start()
    ours: list[dict[str, Any]] = []
    theirs: list[dict[str, Any]] = []
    try:
        argv = peer_argv(node.url, latency_count, throughput_count, _broker_pid(node))
        for n in range(options.count(3, 1)):  # alternate who goes first: a shared machine drifts
            first_ours = n % 2 == 0
            if first_ours:
                ours.append(on_runtime_loop(exchange(node.url, latency_count, throughput_count, _broker_pid(node))))
            theirs.append(faststream(argv))
            if not first_ours:
                ours.append(on_runtime_loop(exchange(node.url, latency_count, throughput_count, _broker_pid(node))))
    finally:
        node.stop()
    ratio = statistics.median(a["per_s"] / b["per_s"] for a, b in zip(ours, theirs, strict=True))
    values = {"p7_events_per_s": round(statistics.median(r["per_s"] for r in ours), 1),
              "p7_event_p50_ms": _p50(ours),
              "p7_events_vs_faststream": round(ratio, 3),
              "p7_faststream_events_per_s": round(statistics.median(r["per_s"] for r in theirs), 1),
              "p7_faststream_p50_ms": _p50(theirs)}
    return Outcome(
        values=values,
        baseline={**_side(theirs, "FastStream 0.7.8 RabbitBroker (confirms, persist=True) -> quorum queue -> "
                          "subscriber (acks after the handler), no access log"), "command": " ".join(argv)},
        subject={**_side(ours, "protomesh.events Publisher (confirms, persistent) -> quorum queue -> Subscriber (ack)"),
                 "rabbitmq_boot_s": round(boot_s, 1)},
        commands=[f"PYTHONPATH=gen/python {' '.join(argv)}"],
        notes=["RabbitMQ and the clients are not pinned: the Erlang VM schedules on both cores",
               "both sides on asyncio's default event loop, the same aio-pika/aiormq/pamqp, the same prefetch"],
    )


FIGURE = Figure("p7", "events publish -> consume, protomesh vs FastStream (confirms, durable quorum queue)",
                TARGETS, run)
