"""Conversions between acme.orders.v1 messages and the domain, shared by handlers and the outbox."""

from __future__ import annotations

from acme.orders.v1 import events_pb2, orders_pb2
from google.protobuf.message import Message

from app.domain import LineItem, Order, OrderCancelled, OrderCreated, OrderDraft, OrderEvent, OrderState
from protomesh.convert import timestamp

_STATES = {
    OrderState.CREATED: orders_pb2.ORDER_STATE_CREATED,
    OrderState.CANCELLED: orders_pb2.ORDER_STATE_CANCELLED,
}


def order_to_proto(order: Order) -> orders_pb2.Order:
    return orders_pb2.Order(
        order_id=order.order_id,
        user_id=order.user_id,
        line_items=[orders_pb2.LineItem(sku=i.sku, quantity=i.quantity, unit_price_cents=i.unit_price_cents)
                    for i in order.line_items],
        total_cents=order.total_cents,
        state=_STATES[order.state],
        create_time=timestamp(order.create_time),
    )


def draft_from_proto(order: orders_pb2.Order) -> OrderDraft:
    """The client-settable part of an Order; output-only fields are ignored, as the contract says."""
    items = [LineItem(i.sku, i.quantity, i.unit_price_cents) for i in order.line_items]
    return OrderDraft(user_id=order.user_id, line_items=items)


def event_to_proto(event: OrderEvent) -> Message:
    """The message published for an event; its full name is the routing key."""
    if isinstance(event, OrderCreated):
        return events_pb2.OrderCreated(event_id=event.event_id, event_time=timestamp(event.event_time),
                                       order=order_to_proto(event.order))
    assert isinstance(event, OrderCancelled)
    return events_pb2.OrderCancelled(event_id=event.event_id, event_time=timestamp(event.event_time),
                                     order=order_to_proto(event.order), reason=event.reason)
