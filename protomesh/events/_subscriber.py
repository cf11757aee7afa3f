"""Consuming events as a consumer group: a durable quorum queue, bounded prefetch, ack after the handler."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection
from aio_pika.exceptions import CONNECTION_EXCEPTIONS

from protomesh.aio import BackgroundTasks
from protomesh.events._acks import Acks
from protomesh.events._connect import DEFAULT_BACKOFF_MAX_S, broker_backoff, connect, safe_url, worth_logging
from protomesh.events._envelope import CONTENT_TYPE, DEFAULT_EXCHANGE, Delivery, _delivery
from protomesh.events._handlers import EventHandlers, UndeliverableEvent
from protomesh.events._telemetry import EventTelemetry
from protomesh.events._topology import DEFAULT_DELIVERY_LIMIT, dead_letter_queue, declare_group_queue

if TYPE_CHECKING:
    from protomesh._observability import Observability

logger = logging.getLogger("protomesh.events")

# Unacked messages one consumer holds at a time (aio-pika runs one handler task per delivery, so this also
# bounds concurrent handlers): enough to hide the broker round trip behind a few ms of handler work and to
# keep up with pipelined publishers (p7: 16 let the queue back up to ~0.2-1 s under load, 64 kept it at
# ~15-30 ms and gave more msg/s in each paired round), small enough that a crash redelivers little and a
# slow consumer does not hoard what other instances could take.
DEFAULT_PREFETCH = 64
# Pause before giving a failed message back, doubled per attempt: without it a quorum queue redelivers at
# once (3.10 requeues at the head), burning every attempt on a transient fault within milliseconds.
DEFAULT_RETRY_DELAY_S = 0.5
# On close, handlers already running get this long to finish (and ack) before the connection goes.
DEFAULT_CLOSE_GRACE_S = 5.0
# wait_ready()'s default: a local broker's restart (~10 s) plus the subscriber's backoff fit well inside.
DEFAULT_WAIT_READY_S = 30.0


class Subscriber:
    """Runs `handlers` for a consumer group: every instance of a group shares its one durable queue.

        handlers = EventHandlers().add(OrderCreated, on_order_created)
        async with Subscriber(settings.amqp_url, group="notifications", handlers=handlers) as subscriber:
            await subscriber.wait_ready()      # optional: start() connects in the background

    Queue `<group>` (quorum, bound to each handled type) dead-letters to `<group>.dlq` a message that is
    undecodable or of an unknown type at once, and one whose handler failed `delivery_limit` times. A
    handler's message is acked only after the handler returned, so work must be committed by then; an
    event can still arrive twice (a lost ack, a crashed consumer): handlers dedupe by event_id. Acks of
    handlers that return in the same turn of the event loop leave as one frame (never covering one still
    running). A broker
    down at start or later is retried in the background; consumption resumes on its own.

    With `observability=ctx.observability`, each handler run is a CONSUMER span, child of (and linked to) the
    publish span whose context the message carries, and consumed/redelivered/dead-lettered events are counted.
    """

    def __init__(self, url: str, *, group: str, handlers: EventHandlers, exchange: str = DEFAULT_EXCHANGE,
                 prefetch: int = DEFAULT_PREFETCH, delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
                 retry_delay_s: float = DEFAULT_RETRY_DELAY_S, observability: Observability | None = None) -> None:
        if not len(handlers):
            raise ValueError(f"consumer group {group!r} has no handlers")
        self._url = url
        self.group = group
        self.handlers = handlers
        self.exchange = exchange
        self.prefetch = prefetch
        self.delivery_limit = delivery_limit
        self.retry_delay_s = retry_delay_s
        self._connection: AbstractRobustConnection | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None
        self._starting = BackgroundTasks()
        self._ready = asyncio.Event()
        self._acks = Acks()
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.last_error: BaseException | None = None
        self.telemetry = EventTelemetry.of(observability)

    @property
    def queue_name(self) -> str:
        return self.group

    @property
    def dead_letter_queue_name(self) -> str:
        return dead_letter_queue(self.group)

    async def __aenter__(self) -> Subscriber:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def start(self) -> None:
        """Connect, declare and consume in the background (retrying with backoff); returns at once."""
        if not self._starting.running:
            self._starting.start(self._establish(), name=f"events-subscriber-{self.group}")

    async def wait_ready(self, timeout: float = DEFAULT_WAIT_READY_S) -> None:
        """Wait until the group's queue is consumed; TimeoutError naming the last connection error."""
        try:
            async with asyncio.timeout(timeout):
                await self._ready.wait()
        except TimeoutError:
            raise TimeoutError(f"consumer group {self.group} not consuming after {timeout:g}s "
                               f"(last error: {self.last_error!r})") from None

    async def close(self, *, grace_s: float = DEFAULT_CLOSE_GRACE_S) -> None:
        """Stop taking deliveries, let running handlers finish (up to grace_s), then disconnect."""
        await self._starting.stop()
        if self._queue is not None and self._consumer_tag is not None:
            try:
                await asyncio.wait_for(self._queue.cancel(self._consumer_tag), grace_s)
            except (TimeoutError, *CONNECTION_EXCEPTIONS):
                logger.debug("consumer of %s not cancelled cleanly; closing anyway", self.group)
        try:
            await asyncio.wait_for(self._idle.wait(), grace_s)
        except TimeoutError:
            logger.warning("%d %s handlers still running after %gs; their events will be redelivered",
                           self._inflight, self.group, grace_s)
        if self._connection is not None:
            await self._connection.close()
        self._connection = self._queue = self._consumer_tag = None
        self._ready.clear()

    async def _establish(self) -> None:
        backoff = broker_backoff()
        failures = 0
        while True:
            try:
                # Kept on self at once: close() must also close a connection cancelled while declaring.
                self._connection = await connect(self._url, name=f"{self.group} consumer")
                await self._consume(self._connection)
            except Exception as error:
                self.last_error = error
                if self._connection is not None:
                    await self._connection.close()
                    self._connection = None
                delay = backoff.next_delay()
                failures += 1
                logger.log(logging.WARNING if worth_logging(failures) else logging.DEBUG,
                           "consumer group %s cannot consume from %s (%s); retrying in %.1fs (attempt %d)",
                           self.group, safe_url(self._url), error, delay, failures)
                await asyncio.sleep(delay)
                continue
            self._ready.set()
            logger.info("consumer group %s consuming %s from %s", self.group, ", ".join(self.handlers),
                        safe_url(self._url))
            return

    async def _consume(self, connection: AbstractRobustConnection) -> None:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=self.prefetch)
        self._queue = await declare_group_queue(channel, exchange=self.exchange, queue=self.queue_name,
                                                event_types=self.handlers.event_types,
                                                delivery_limit=self.delivery_limit)
        self._consumer_tag = await self._queue.consume(self._on_message)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self._acks.track(message)  # before any await: deliveries are tracked in tag order
        self._inflight += 1
        self._idle.clear()
        try:
            await self._process(message)
        finally:
            self._acks.forget(message)  # settled (its nack or reject written) or given up: it blocks no run
            self._inflight -= 1
            if not self._inflight:
                self._idle.set()

    async def _process(self, message: AbstractIncomingMessage) -> None:
        type_name = message.type or message.routing_key or ""
        try:
            if message.content_type not in (None, CONTENT_TYPE):
                raise UndeliverableEvent(f"content type {message.content_type!r} is not {CONTENT_TYPE}")
            event, handler = self.handlers.resolve(type_name, message.body)
        except UndeliverableEvent as error:
            logger.error("dead-lettering %s %s from %s: %s", type_name, message.message_id, self.group, error)
            self.telemetry.dead_lettered(self.group, type_name, "undeliverable")
            await self._settle(message.reject(requeue=False), message)
            return
        delivery = _delivery_of(message, type_name)
        token = _delivery.set(delivery)
        try:
            with self.telemetry.consuming(self.group, self.queue_name, type_name, delivery.event_id,
                                          dict(message.headers or {}), delivery.redelivered):
                await handler(event)
        except Exception:
            await self._retry_later(message, delivery)
            return
        finally:
            _delivery.reset(token)
        # Acked together with the other deliveries whose handlers returned in this turn of the event loop.
        await self._settle(self._acks.ack(message), message)

    async def _retry_later(self, message: AbstractIncomingMessage, delivery: Delivery) -> None:
        last = delivery.attempt >= self.delivery_limit
        logger.exception("%s handler failed on %s %s (attempt %d of %d)%s", self.group, delivery.event_type,
                         delivery.event_id, delivery.attempt, self.delivery_limit,
                         f"; dead-lettering it to {self.dead_letter_queue_name}" if last else "")
        if last:
            self.telemetry.dead_lettered(self.group, delivery.event_type, "delivery_limit")
        else:
            await asyncio.sleep(min(self.retry_delay_s * 2 ** (delivery.attempt - 1), DEFAULT_BACKOFF_MAX_S))
        # Requeued even on the last attempt: the broker counts it and dead-letters past its delivery limit.
        await self._settle(message.nack(requeue=True), message)

    async def _settle(self, settling: Awaitable[Any], message: AbstractIncomingMessage) -> None:
        try:
            await settling
        except CONNECTION_EXCEPTIONS as error:
            # The channel went away holding the message: the broker redelivers it (handlers dedupe).
            logger.warning("could not settle %s on %s (%s); it will be redelivered", message.message_id,
                           self.group, error)


def _delivery_of(message: AbstractIncomingMessage, type_name: str) -> Delivery:
    previous = message.headers.get("x-delivery-count", 0)
    return Delivery(
        event_id=message.message_id or "",
        event_type=type_name,
        attempt=(previous if isinstance(previous, int) else 0) + 1,
        redelivered=bool(message.redelivered),
        correlation_id=message.correlation_id,
    )

