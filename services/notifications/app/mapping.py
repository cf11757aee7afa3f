"""Conversions from order events to the domain and from notifications to acme.notifications.v1 messages."""

from __future__ import annotations

from acme.notifications.v1 import notifications_pb2
from acme.orders.v1 import events_pb2

from app.domain import Notification, OrderCancelled, OrderPlaced
from protomesh.convert import timestamp


def placed_from_proto(event: events_pb2.OrderCreated) -> OrderPlaced:
    order = event.order
    return OrderPlaced(event_id=event.event_id, user_id=order.user_id, order_id=order.order_id,
                       item_count=sum(item.quantity for item in order.line_items), total_cents=order.total_cents)


def cancelled_from_proto(event: events_pb2.OrderCancelled) -> OrderCancelled:
    order = event.order
    return OrderCancelled(event_id=event.event_id, user_id=order.user_id, order_id=order.order_id,
                          reason=event.reason)


def notification_to_proto(notification: Notification) -> notifications_pb2.Notification:
    return notifications_pb2.Notification(
        notification_id=notification.notification_id,
        user_id=notification.user_id,
        event_id=notification.event_id,
        text=notification.text,
        create_time=timestamp(notification.create_time),
    )
