"""The in-process broadcaster: per-key fan-out, bounded queues, slow watchers dropped, clean shutdown."""

from __future__ import annotations

import asyncio

import pytest

from app.broadcast import Broadcaster, WatchTooSlow


async def test_each_watcher_of_a_key_gets_every_item_in_order() -> None:
    broadcaster: Broadcaster[int] = Broadcaster(queue_size=10)
    with broadcaster.watch("u-1") as first, broadcaster.watch("u-1") as second:
        for n in range(3):
            broadcaster.publish("u-1", n)
        broadcaster.publish("u-2", 99)
        broadcaster.close()

        assert [n async for n in first] == [0, 1, 2]
        assert [n async for n in second] == [0, 1, 2]


async def test_a_watcher_that_falls_behind_is_dropped_without_blocking_the_publisher() -> None:
    broadcaster: Broadcaster[int] = Broadcaster(queue_size=2)
    with broadcaster.watch("u-1") as slow, broadcaster.watch("u-1") as fast:
        broadcaster.publish("u-1", 1)
        assert await anext(fast) == 1
        broadcaster.publish("u-1", 2)
        assert await anext(fast) == 2
        broadcaster.publish("u-1", 3)  # slow now holds 1, 2 and cannot take 3

        assert broadcaster.watcher_count == 1
        with pytest.raises(WatchTooSlow, match="fell more than 2 notifications behind"):
            await anext(slow)
        with pytest.raises(WatchTooSlow):
            await anext(slow)
        assert await anext(fast) == 3


async def test_a_waiting_watcher_wakes_up_and_stops_when_the_broadcaster_closes() -> None:
    broadcaster: Broadcaster[int] = Broadcaster()

    async def drain() -> list[int]:
        with broadcaster.watch("u-1") as watch:
            return [n async for n in watch]

    task = asyncio.create_task(drain())
    await asyncio.sleep(0.01)
    broadcaster.close()

    assert await asyncio.wait_for(task, 1.0) == []


async def test_a_watch_opened_after_close_ends_at_once() -> None:
    broadcaster: Broadcaster[int] = Broadcaster()
    broadcaster.close()

    with broadcaster.watch("u-1") as watch:
        assert [n async for n in watch] == []


async def test_leaving_the_watch_block_unsubscribes() -> None:
    broadcaster: Broadcaster[int] = Broadcaster()
    with broadcaster.watch("u-1"):
        assert broadcaster.watcher_count == 1

    assert broadcaster.watcher_count == 0
    broadcaster.publish("u-1", 1)  # nobody to deliver to: no error


def test_a_queue_must_hold_at_least_one_item() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Broadcaster(queue_size=0)
