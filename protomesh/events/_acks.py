"""Acking a consumer's finished deliveries together: one basic.ack(multiple) for a run of consecutive tags."""

from __future__ import annotations

import asyncio

import aiormq
from aio_pika.abc import AbstractIncomingMessage


class Acks:
    """The deliveries of each channel not settled yet, in delivery order; acks those whose handlers returned.

        acks.track(message)        # on arrival, before the first await (deliveries start in tag order)
        await acks.ack(message)    # the handler returned: acked together with others done in this loop turn
        acks.forget(message)       # settled some other way (nack, reject) or given up

    Acks wanted within one turn of the event loop leave as one frame: `basic.ack(tag, multiple=True)` for the
    run of consecutive tags at the head of the channel's unsettled deliveries, all of whose handlers returned
    (a delivery still running or being retried ends the run, so it is never acked by accident). Done
    deliveries behind such a one are acked one by one, as before. ack() returns once its frame was written,
    and raises what sending it raised (the channel went away: the broker redelivers).
    """

    def __init__(self) -> None:
        # channel -> delivery tag -> None while its handler runs, then the future its ack() waits on.
        self._unsettled: dict[aiormq.abc.AbstractChannel, dict[int, asyncio.Future[None] | None]] = {}
        self._flushing: set[asyncio.Task[None]] = set()
        self._flush_soon = False
        # One flush at a time, so frames leave in the order computed: a multiple ack written before an earlier
        # flush's single ack of a lower tag would cover it, and the broker closes a channel acking a tag twice.
        self._one_flush = asyncio.Lock()

    def track(self, message: AbstractIncomingMessage) -> None:
        if message.delivery_tag is not None:
            self._unsettled.setdefault(message.channel, {})[message.delivery_tag] = None

    def forget(self, message: AbstractIncomingMessage) -> None:
        """Call once the message was settled otherwise (its nack or reject written): it no longer blocks a run."""
        pending = self._unsettled.get(message.channel)
        if pending is None or message.delivery_tag not in pending:
            return
        del pending[message.delivery_tag]
        if not pending:
            del self._unsettled[message.channel]
        else:
            self._schedule()  # done deliveries waiting behind this one can go now

    async def ack(self, message: AbstractIncomingMessage) -> None:
        pending = self._unsettled.get(message.channel)
        tag = message.delivery_tag
        if pending is None or tag not in pending:
            await message.ack()
            return
        pending[tag] = done = asyncio.get_running_loop().create_future()
        self._schedule()
        await done

    def _schedule(self) -> None:
        if not self._flush_soon:
            self._flush_soon = True
            asyncio.get_running_loop().call_soon(self._start_flush)

    def _start_flush(self) -> None:
        self._flush_soon = False
        task = asyncio.get_running_loop().create_task(self._flush())
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def _flush(self) -> None:
        async with self._one_flush:
            for channel in list(self._unsettled):
                await self._flush_channel(channel)

    async def _flush_channel(self, channel: aiormq.abc.AbstractChannel) -> None:
        pending = self._unsettled.get(channel, {})
        run, alone = _split(pending)
        for tag, _ in (*run, *alone):
            del pending[tag]
        if not pending:
            self._unsettled.pop(channel, None)
        if run:
            await _send(channel, run[-1][0], [done for _, done in run], multiple=len(run) > 1)
        for tag, done in alone:
            await _send(channel, tag, [done], multiple=False)


def _split(pending: dict[int, asyncio.Future[None] | None]) -> tuple[list[tuple[int, asyncio.Future[None]]],
                                                                     list[tuple[int, asyncio.Future[None]]]]:
    """The done run of consecutive tags at the head, and the done ones after it (acked one by one)."""
    run: list[tuple[int, asyncio.Future[None]]] = []
    alone: list[tuple[int, asyncio.Future[None]]] = []
    blocked = False
    for tag, done in pending.items():
        if done is None:
            blocked = True
        elif not blocked and (not run or tag == run[-1][0] + 1):
            run.append((tag, done))
        else:
            blocked = True
            alone.append((tag, done))
    return run, alone


async def _send(channel: aiormq.abc.AbstractChannel, tag: int, waiting: list[asyncio.Future[None]], *,
                multiple: bool) -> None:
    try:
        await channel.basic_ack(tag, multiple=multiple)
    except Exception as error:  # handed to every ack() waiting on this frame
        for done in waiting:
            if not done.done():
                done.set_exception(error)
        return
    for done in waiting:
        if not done.done():
            done.set_result(None)
