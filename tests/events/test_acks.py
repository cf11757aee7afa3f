"""Acks of finished deliveries leave together, and never cover a delivery still running or being retried."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, cast

from aio_pika.abc import AbstractIncomingMessage

from protomesh.events._acks import Acks


@dataclass
class _Channel:
    frames: list[tuple[int, bool]] = field(default_factory=list)

    async def basic_ack(self, delivery_tag: int, multiple: bool = False) -> None:
        self.frames.append((delivery_tag, multiple))

    def __hash__(self) -> int:
        return id(self)


@dataclass
class _Message:
    channel: _Channel
    delivery_tag: int


def _messages(channel: _Channel, count: int) -> list[AbstractIncomingMessage]:
    return [cast(AbstractIncomingMessage, _Message(channel, tag)) for tag in range(1, count + 1)]


async def test_deliveries_done_in_one_loop_turn_are_acked_by_one_multiple_ack() -> None:
    acks, channel = Acks(), _Channel()
    messages = _messages(channel, 5)
    for message in messages:
        acks.track(message)
    await asyncio.gather(*(acks.ack(message) for message in messages))
    assert channel.frames == [(5, True)]


async def test_a_delivery_still_running_is_never_covered_and_those_done_behind_it_are_acked_alone() -> None:
    acks, channel = Acks(), _Channel()
    messages = _messages(channel, 4)
    for message in messages:
        acks.track(message)
    await asyncio.gather(acks.ack(messages[0]), acks.ack(messages[2]), acks.ack(messages[3]))
    assert channel.frames == [(1, False), (3, False), (4, False)]  # 2 runs on: no multiple ack reaches it
    await acks.ack(messages[1])
    assert channel.frames[-1] == (2, False)


async def test_a_delivery_settled_otherwise_stops_blocking_the_run_behind_it() -> None:
    acks, channel = Acks(), _Channel()
    messages = _messages(channel, 3)
    for message in messages:
        acks.track(message)
    acked = asyncio.gather(acks.ack(messages[1]), acks.ack(messages[2]))
    await asyncio.sleep(0)
    acks.forget(messages[0])  # nacked for a retry: the broker no longer counts it as unacked
    await acked
    assert channel.frames == [(3, True)]  # covers 1 too, which the broker no longer holds as unacked


async def test_an_ack_that_cannot_be_sent_raises_in_every_handler_it_covered() -> None:
    class _Gone(_Channel):
        async def basic_ack(self, delivery_tag: int, multiple: bool = False) -> None:
            raise RuntimeError("channel closed")

    acks, channel = Acks(), _Gone()
    messages = _messages(channel, 2)
    for message in messages:
        acks.track(message)
    results: list[Any] = await asyncio.gather(*(acks.ack(m) for m in messages), return_exceptions=True)
    assert [str(result) for result in results] == ["channel closed", "channel closed"]
