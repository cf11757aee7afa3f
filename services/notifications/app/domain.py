"""Notifications' rules and use cases (record an order event once, list, watch), free of gRPC, SQL and AMQP."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from app.broadcast import Broadcaster, Watch
from protomesh import paging
from protomesh.paging import Cursor, Page, PageLimits
from protomesh.validation import id_problems, raise_if

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Notification:
    """A message for a user, created from exactly one event."""

    notification_id: str
    user_id: str
    event_id: str
    text: str
    create_time: datetime


@dataclass(frozen=True, slots=True)
class OrderPlaced:
    """What a notification needs from acme.orders.v1.OrderCreated."""

    event_id: str
    user_id: str
    order_id: str
    item_count: int
    total_cents: int


@dataclass(frozen=True, slots=True)
class OrderCancelled:
    """What a notification needs from acme.orders.v1.OrderCancelled."""

    event_id: str
    user_id: str
    order_id: str
    reason: str


OrderEvent = OrderPlaced | OrderCancelled


class NotificationRepository(Protocol):
    """Storage of notifications; at most one per event_id."""

    async def add(self, notification: Notification) -> bool:
        """Store it and return True, or return False when its event has a notification already."""
        ...

    async def list_after(self, after: Cursor | None, *, user_id: str, limit: int) -> Sequence[Notification]: ...


def describe(event: OrderEvent) -> str:
    """The text a user reads, e.g. "Order o-1 placed: 2 items, total 25.00"."""
    if isinstance(event, OrderPlaced):
        items = "1 item" if event.item_count == 1 else f"{event.item_count} items"
        return f"Order {event.order_id} placed: {items}, total {format_cents(event.total_cents)}"
    return f"Order {event.order_id} cancelled: {event.reason}"


def format_cents(cents: int) -> str:
    """2500 -> "25.00" (exact integer arithmetic, no float rounding)."""
    sign = "-" if cents < 0 else ""
    whole, fraction = divmod(abs(cents), 100)
    return f"{sign}{whole}.{fraction:02d}"


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _new_id() -> str:
    return f"n-{uuid.uuid4().hex[:16]}"


@dataclass(slots=True)
class Notifications:
    """The use cases; watchers get each notification after it is committed, through the broadcaster."""

    repo: NotificationRepository
    broadcaster: Broadcaster[Notification]
    limits: PageLimits = field(default_factory=PageLimits)
    clock: Callable[[], datetime] = _utc_now
    new_id: Callable[[], str] = _new_id

    async def record(self, event: OrderEvent) -> Notification | None:
        """Store the event's notification and tell watchers; None when the event was recorded before."""
        if not event.event_id or not event.user_id:
            # Without an id a redelivery cannot be recognised; without a user nobody can read it. Failing
            # sends the message to the dead-letter queue after its retries, where an operator sees it.
            raise ValueError(f"order event {event.event_id!r} for {event.order_id!r} lacks an event or user id")
        notification = Notification(self.new_id(), event.user_id, event.event_id, describe(event), self.clock())
        if not await self.repo.add(notification):
            log.info("event %s was recorded before: no second notification", event.event_id)
            return None
        self.broadcaster.publish(notification.user_id, notification)
        return notification

    async def list(self, *, user_id: str, page_size: int, page_token: str) -> Page[Notification]:
        raise_if(id_problems(user_id, "user_id"))
        return await paging.list_page(
            lambda after, limit: self.repo.list_after(after, user_id=user_id, limit=limit), limits=self.limits,
            page_size=page_size, page_token=page_token, key=_cursor, scope=user_id)

    @contextmanager
    def watch(self, user_id: str) -> Iterator[Watch[Notification]]:
        """The user's notifications recorded from now on, until the block exits."""
        raise_if(id_problems(user_id, "user_id"))
        with self.broadcaster.watch(user_id) as watch:
            yield watch


def _cursor(notification: Notification) -> Cursor:
    return Cursor(notification.create_time, notification.notification_id)
