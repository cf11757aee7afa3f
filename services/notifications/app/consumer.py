"""The order events the notifications consumer group handles, each recorded once and acked after commit."""

from __future__ import annotations

from acme.orders.v1 import events_pb2

from app.domain import Notifications
from app.mapping import cancelled_from_proto, placed_from_proto
from protomesh.events import EventHandlers

# Every instance of the service shares this queue: each event is handled by one of them.
CONSUMER_GROUP = "notifications"


def event_handlers(notifications: Notifications) -> EventHandlers:
    """Handlers for OrderCreated and OrderCancelled; the Subscriber acks a message once its handler returned."""

    async def on_created(event: events_pb2.OrderCreated) -> None:
        await notifications.record(placed_from_proto(event))

    async def on_cancelled(event: events_pb2.OrderCancelled) -> None:
        await notifications.record(cancelled_from_proto(event))

    return EventHandlers().add(events_pb2.OrderCreated, on_created).add(events_pb2.OrderCancelled, on_cancelled)
