"""The shared asyncio mechanics: backoff, background tasks, polling and heartbeats."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from protomesh.aio import BackgroundTasks, Backoff, poll_until, with_heartbeats


def test_backoff_doubles_with_jitter_up_to_its_cap_and_starts_over_after_reset() -> None:
    backoff = Backoff(initial_s=0.1, max_s=1.0)
    delays = [backoff.next_delay() for _ in range(8)]
    assert 0.08 <= delays[0] <= 0.12
    assert 0.16 <= delays[1] <= 0.24
    assert all(0.8 <= delay <= 1.2 for delay in delays[4:])
    assert backoff.failures == 8
    backoff.reset()
    assert backoff.next_delay() <= 0.12


async def test_background_tasks_are_cancelled_and_awaited_together_on_stop() -> None:
    tasks = BackgroundTasks()
    forever = [tasks.start(asyncio.sleep(3600), name=f"sleeper-{n}") for n in range(3)]
    assert tasks.running
    await tasks.stop()
    assert all(task.cancelled() for task in forever)
    assert not tasks.running
    await tasks.stop()  # idempotent


async def test_a_background_task_that_fails_is_logged_with_its_name(caplog: pytest.LogCaptureFixture) -> None:
    async def crash() -> None:
        raise RuntimeError("boom")

    tasks = BackgroundTasks()
    task = tasks.start(crash(), name="crasher")
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.sleep(0)
    assert "background task crasher failed" in caplog.text
    assert caplog.records[-1].levelno == logging.ERROR


async def test_poll_until_returns_once_an_async_check_holds_and_names_what_timed_out() -> None:
    calls = 0

    async def third_time() -> bool:
        nonlocal calls
        calls += 1
        return calls >= 3

    assert await poll_until(third_time, timeout=5, what="three calls", interval=0.001) >= 0
    assert calls == 3
    with pytest.raises(TimeoutError, match=r"never did not happen within 0\.1s"):
        await poll_until(lambda: False, timeout=0.1, what="never")


async def test_a_quiet_stream_gets_a_heartbeat_and_items_pass_as_they_come() -> None:
    queue: asyncio.Queue[int | None] = asyncio.Queue()

    async def items() -> AsyncIterator[int]:
        while (item := await queue.get()) is not None:
            yield item

    seen: list[int | None] = []

    async def read() -> None:
        async for item in with_heartbeats(items(), 0.05):
            seen.append(item)

    reader = asyncio.create_task(read())
    await queue.put(1)
    await poll_until(lambda: seen == [1], timeout=2, what="the item", interval=0.001)
    await poll_until(lambda: len(seen) >= 2, timeout=2, what="a heartbeat", interval=0.005)
    await queue.put(2)
    await queue.put(None)
    await asyncio.wait_for(reader, 2)
    assert (seen[0], seen[-1]) == (1, 2)
    assert None in seen[1:-1]
