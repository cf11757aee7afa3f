"""The asyncio mechanics every part of protomesh shares: background tasks, backoff between retries, polling.

    tasks = BackgroundTasks()
    tasks.start(self._follow(), name="config-users")   # runs until stop()
    backoff = Backoff(initial_s=0.1, max_s=2.0)
    await asyncio.sleep(backoff.next_delay())          # 0.08-0.12 s, then 0.16-0.24 s, ... capped at max_s
    await poll_until(lambda: port_open(8080), timeout=30, what="the gateway listening")
    await tasks.stop()
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

log = logging.getLogger("protomesh.aio")

T = TypeVar("T")

# Jitter on every backoff delay: a fleet restarted at once does not retry in lockstep.
BACKOFF_JITTER = 0.2
# Polling interval: fast enough that a check which becomes true is seen within a few tens of milliseconds.
DEFAULT_POLL_INTERVAL_S = 0.02
# How long a poll waits by default: generous, as readiness on a loaded 2-core machine can take seconds.
DEFAULT_POLL_TIMEOUT_S = 30.0


class Backoff:
    """Exponential backoff with +-20 % jitter: initial_s, 2x, 4x, ... capped at max_s; reset() after a success."""

    def __init__(self, *, initial_s: float, max_s: float) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.failures = 0

    def delay(self, failures: int) -> float:
        """The pause after the given number of consecutive failures (1 = the first), with jitter."""
        base: float = min(self.max_s, self.initial_s * 2 ** min(max(failures - 1, 0), 32))
        return base * random.uniform(1 - BACKOFF_JITTER, 1 + BACKOFF_JITTER)

    def next_delay(self) -> float:
        """Count one more failure and return the pause before the next attempt."""
        self.failures += 1
        return self.delay(self.failures)

    def reset(self) -> None:
        self.failures = 0


class BackgroundTasks:
    """Tasks that run until their owner stops: started by name, then cancelled and awaited together.

    A task that fails is logged with its traceback when it ends, so a crash never goes unseen.
    """

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def start(self, coroutine: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    @property
    def running(self) -> bool:
        return bool(self._tasks)

    async def join(self) -> None:
        """Wait until every task running now has ended, without cancelling any."""
        await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def stop(self) -> None:
        """Cancel every task still running and wait until each has ended (idempotent)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def with_heartbeats(items: AsyncIterator[T], every_s: float) -> AsyncIterator[T | None]:
    """items as they come, and None after each `every_s` seconds without one: the heartbeat of a long stream,
    so that its client and every proxy on the way can tell a quiet stream from a dead one.

        async for item in with_heartbeats(watch, 20.0):
            yield Response() if item is None else Response(notification=to_message(item))
    """
    iterator = items.__aiter__()
    # The pending read is kept across heartbeats, never cancelled by one: cancelling it would end an async
    # generator for good.
    pending: asyncio.Future[T] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(iterator))
            done, _ = await asyncio.wait({pending}, timeout=every_s)
            if not done:
                yield None
                continue
            read, pending = pending, None
            try:
                item = read.result()
            except StopAsyncIteration:
                return
            yield item
    finally:
        if pending is not None:
            pending.cancel()


async def poll_until(check: Callable[[], object], *, timeout: float = DEFAULT_POLL_TIMEOUT_S, what: str,
                     interval: float = DEFAULT_POLL_INTERVAL_S) -> float:
    """Await until check() (sync or async) is truthy; returns the seconds it took, TimeoutError naming `what`."""
    started = time.monotonic()
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{what} did not happen within {timeout:.1f}s")
        await asyncio.sleep(interval)


__all__ = ["BackgroundTasks", "Backoff", "poll_until", "with_heartbeats"]
