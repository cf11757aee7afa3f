"""Runs the local mesh: starts each component in order, waits until it is healthy, stops all in reverse."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

from protomesh._mesh.component import Component
from protomesh._mesh.stack import mesh_components
from protomesh._mesh.topology import MeshPlan

log = logging.getLogger("protomesh.mesh")


class Mesh:
    """The running local mesh; `async with Mesh(plan)` starts it, leaving the block stops it."""

    def __init__(self, plan: MeshPlan) -> None:
        self.plan = plan
        self.started: list[Component] = []
        self.timings: dict[str, float] = {}
        # Components starting in the background, by the name of the first component that needs them.
        self._pending: dict[str, list[asyncio.Task[float]]] = {}

    async def __aenter__(self) -> Mesh:
        try:
            for group in mesh_components(self.plan):
                await self._start_group(group)
            await self._await_pending(list(self._pending))
        except BaseException:
            for task in (t for tasks in self._pending.values() for t in tasks):
                task.cancel()
            await self.stop()
            raise
        self._write_state("ready")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _start_group(self, group: list[Component]) -> None:
        """Components in one group start concurrently (e.g. the instances of a service); one with
        `needed_by` starts in the background and is waited for just before the component that needs it."""
        await self._await_pending([c.name for c in group])
        self.started.extend(group)
        for component in (c for c in group if c.needed_by):
            task = asyncio.create_task(self._timed(component))
            self._pending.setdefault(component.needed_by, []).append(task)
        await asyncio.gather(*(self._timed(c) for c in group if not c.needed_by))

    async def _await_pending(self, names: list[str]) -> None:
        tasks = [task for name in names for task in self._pending.pop(name, [])]
        await asyncio.gather(*tasks)

    async def _timed(self, component: Component) -> float:
        seconds = await component.start()
        self.timings[component.name] = seconds
        print(f"    {component.name:<16} healthy after {seconds:5.1f}s", flush=True)
        return seconds

    async def stop(self) -> None:
        """Stop every started component, newest first; a failing stop does not keep others running."""
        while self.started:
            component = self.started.pop()
            try:
                await component.stop()
            except Exception:
                log.exception("stopping %s failed", component.name)
        self._write_state("stopped")

    def dead(self) -> list[str]:
        return [c.name for c in self.started if c.process is not None and not c.process.running()]

    def component(self, name: str) -> Component:
        return next(c for c in self.started if c.name == name)

    def _write_state(self, status: str) -> None:
        state = {
            "status": status,
            "supervisor_pid": os.getpid(),
            "ports": vars(self.plan.ports),
            "processes": {c.name: c.pid for c in self.started if c.pid is not None},
        }
        path = self.plan.state_dir / "state.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(path)

    def table(self) -> str:
        rows = [f"  {c.name:<16} {c.url}" for c in self.started if c.url]
        return "\n".join(["protomesh is up:", *rows])


def examples(plan: MeshPlan) -> str:
    """Three copy-paste calls: REST through the gateway, and native gRPC on the same port."""
    gateway = f"127.0.0.1:{plan.ports.gateway}"
    return f"""Try it (REST and gRPC share the gateway port):
  curl -s -X POST http://{gateway}/v1/users -d '{{"email": "ada@example.com", "displayName": "Ada"}}'
  curl -s -X POST http://{gateway}/v1/orders \\
       -d '{{"userId": "<userId>", "lineItems": [{{"sku": "book", "quantity": 2, "unitPriceCents": 1250}}]}}'
  .tools/bin/grpcurl -plaintext -protoset gen/descriptors/protomesh.binpb -d '{{"user_id": "<userId>"}}' \\
       {gateway} acme.notifications.v1.NotificationService/ListNotifications
"""


async def run_foreground(plan: MeshPlan) -> int:
    """`protomesh up`: start the mesh, print where it is, run until Ctrl-C/SIGTERM or a component dies."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    started = time.monotonic()
    print(f"==> starting the local mesh (state and logs in {plan.shown(plan.state_dir)})", flush=True)
    try:
        return await _supervise(plan, stop, started)
    except (RuntimeError, TimeoutError, OSError) as exc:
        print(f"protomesh: the mesh did not start: {exc}", file=sys.stderr)
        print(f"protomesh: every component was stopped; logs in {plan.shown(plan.state_dir / 'logs')}", file=sys.stderr)
        return 1


async def _supervise(plan: MeshPlan, stop: asyncio.Event, started: float) -> int:
    async with Mesh(plan) as mesh:
        print(f"\n{mesh.table()}\n\n(up in {time.monotonic() - started:.1f}s; Ctrl-C stops everything)\n")
        print(examples(plan), flush=True)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)
            if dead := mesh.dead():
                print(f"protomesh: {', '.join(dead)} exited; stopping the mesh", file=sys.stderr)
                return 1
        print("==> stopping (reverse order)", flush=True)
    print("==> stopped", flush=True)
    return 0


def state(plan: MeshPlan) -> dict[str, object] | None:
    path: Path = plan.state_dir / "state.json"
    try:
        loaded = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return loaded if isinstance(loaded, dict) else None
