"""One component of the local mesh: a process (or a step, or something already running) and its readiness."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from protomesh._process import ManagedProcess

# Seconds a component may take to become healthy; RabbitMQ's cold start is the slowest (~9 s here).
READY_TIMEOUT_S = 60.0


@dataclass
class Component:
    """One thing the mesh runs: a process (or an already-running external one) and its readiness check."""

    name: str
    process: ManagedProcess | None
    ready: Callable[[], Awaitable[bool]]
    url: str = ""
    stop_timeout_s: float = 15.0
    on_stop: Callable[[], Awaitable[None]] | None = None
    # Name of the first component that needs this one healthy: it then starts in the background meanwhile.
    needed_by: str = ""
    # The pid of what runs outside `process` (a detached RabbitMQ node), for the state file.
    detached_pid: Callable[[], int | None] | None = None
    started_at: float = field(default=0.0)

    @property
    def pid(self) -> int | None:
        if self.process is not None and self.process.proc is not None:
            return self.process.pid
        return self.detached_pid() if self.detached_pid is not None else None

    async def start(self) -> float:
        """Start and wait until healthy; returns the seconds it took."""
        self.started_at = time.monotonic()
        if self.process is not None:
            self.process.start()
        deadline = self.started_at + READY_TIMEOUT_S
        while not await self.ready():
            if self.process is not None and not self.process.running():
                raise RuntimeError(f"{self.name} exited while starting:\n{self.process.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} was not healthy after {READY_TIMEOUT_S:.0f}s")
            await asyncio.sleep(0.05)
        return time.monotonic() - self.started_at

    async def stop(self) -> None:
        if self.on_stop is not None:
            await self.on_stop()
        if self.process is not None:
            await asyncio.to_thread(self.process.stop, timeout=self.stop_timeout_s)


def get_json(url: str) -> object:
    """GET url and decode its JSON body; None when it cannot be reached or read."""
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return json.loads(response.read() or b"null")
    except (OSError, ValueError):
        return None


def polled(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    """A blocking readiness check run off the event loop."""

    async def ready() -> bool:
        return await asyncio.to_thread(check)

    return ready
