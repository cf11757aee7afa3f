"""Publishing protobuf events with publisher confirms: publish() returns only once the broker has the event."""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType
from typing import TYPE_CHECKING, cast

import aiormq
from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from aio_pika.exceptions import CONNECTION_EXCEPTIONS, DeliveryError
from google.protobuf.message import Message

from protomesh.errors import Unavailable
from protomesh.events._connect import connect, safe_url
from protomesh.events._envelope import DEFAULT_EXCHANGE, AmqpEvent, event_type, to_amqp
from protomesh.events._telemetry import EventTelemetry
from protomesh.events._topology import declare_exchange

if TYPE_CHECKING:
    from protomesh._observability import Observability

logger = logging.getLogger("protomesh.events")

# Wait for the broker's confirm at most this long: a healthy broker confirms a persistent message in
# milliseconds (one fsync), while a broker that is down would otherwise hold the caller until reconnection.
DEFAULT_PUBLISH_TIMEOUT_S = 5.0


class PublishError(Unavailable):
    """The broker did not confirm the event (down, unreachable, or it refused it); the caller may retry."""


class Unroutable(PublishError):
    """No queue is bound to the event's type (no consumer group declared one yet): nobody would get it."""


class Publisher:
    """Publishes protobuf events to the topic exchange, routing key = the event's full proto name.

        async with Publisher(settings.amqp_url, app_id="orders") as publisher:
            await publisher.publish(stamp_event(OrderCreated(order=order)))   # returns once confirmed

    The connection opens on first use (a broker that is down fails that publish, not the service) and is
    restored in the background after a drop. An event nobody subscribes to is dropped by the broker, with a
    warning: subscribers declare their queues, so start consumers before relying on delivery. Concurrent
    publish() calls share one confirming channel and are pipelined, in the order they were called: each waits
    for its own confirm only, so many publishing tasks (or an outbox batch) cost one broker round trip together.

    With `observability=ctx.observability`, each publish is a PRODUCER span whose context travels in the
    message's headers (traceparent), and is counted in protomesh_events_{published,confirmed}_total.
    """

    def __init__(self, url: str, *, exchange: str = DEFAULT_EXCHANGE, app_id: str | None = None,
                 timeout_s: float = DEFAULT_PUBLISH_TIMEOUT_S, observability: Observability | None = None) -> None:
        self._url = url
        self.exchange_name = exchange
        self.app_id = app_id
        self.timeout_s = timeout_s
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._lock = asyncio.Lock()
        self.telemetry = EventTelemetry.of(observability)

    async def __aenter__(self) -> Publisher:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def publish(self, event: Message, *, require_route: bool = False, trace_parent: str = "") -> None:
        """Publish the event (stamping event_id/event_time if unset) and wait for the broker's confirm.

        With require_route, an event no queue is bound to raises Unroutable instead of being dropped.
        trace_parent (a traceparent, e.g. kept in an outbox row) is the publish span's parent instead of the
        current span.
        """
        name = event_type(event)
        message = to_amqp(event, app_id=self.app_id)
        with self.telemetry.publishing(self.exchange_name, name, message.properties, trace_parent) as outcome:
            confirm = await self._publish(message, name)
            if isinstance(confirm, aiormq.abc.DeliveredMessage):
                # Returned as unroutable: no queue is bound to this type (no consumer group has declared one).
                outcome.dropped = True
                if require_route:
                    raise Unroutable(f"{name}: no queue is bound to it on {self.exchange_name} yet")
                logger.warning("event %s (%s) dropped: no queue is bound to it on %s", name,
                               message.properties.message_id, self.exchange_name)
            else:
                outcome.confirmed = True

    async def _publish(self, message: AmqpEvent, name: str) -> object:
        try:
            # Connecting has its own timeout: cancelling aio-pika's connect midway would leave its retry task.
            channel = self._channel if self._channel is not None else await self._ready_channel()
            async with asyncio.timeout(self.timeout_s):
                # aio-pika's Exchange.publish holds the channel's lock until the frame is written out, so
                # concurrent publishes go one per event-loop round trip; wait=False releases it once the frame
                # is queued (the connection's bounded write queue still pushes back), so publishes pipeline and
                # their confirms arrive together. Each caller still waits for its own confirm.
                underlay = cast(aiormq.Channel, await channel.get_underlay_channel())  # wait= is not on its ABC
                confirm = await underlay.basic_publish(message.body, exchange=self.exchange_name, routing_key=name,
                                                       properties=message.properties, mandatory=True, wait=False)
        except TimeoutError as error:
            raise PublishError(f"{name} not confirmed by the event broker within {self.timeout_s:g}s") from error
        except DeliveryError as error:
            raise PublishError(f"the event broker refused {name}") from error
        except (*CONNECTION_EXCEPTIONS, aiormq.exceptions.AMQPError) as error:
            raise PublishError(f"the event broker is unavailable for {name}") from error
        return confirm

    async def close(self) -> None:
        async with self._lock:
            if self._connection is not None:
                await self._connection.close()
            self._connection = None
            self._channel = None

    async def _ready_channel(self) -> AbstractChannel:
        """The confirming channel, once the exchange is declared on it (connects on first use)."""
        async with self._lock:
            if self._channel is not None:
                return self._channel
            connection = await connect(self._url, name=f"{self.app_id or 'protomesh'} publisher")
            try:
                channel = await connection.channel(publisher_confirms=True)
                await declare_exchange(channel, self.exchange_name)
            except BaseException:
                await connection.close()
                raise
            self._connection, self._channel = connection, channel
            logger.info("publishing events to %s on %s", self.exchange_name, safe_url(self._url))
            return channel
