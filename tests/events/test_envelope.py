"""Event envelopes and the handler registry: what every message carries, without a broker."""

from __future__ import annotations

import datetime
import uuid

import aio_pika
import pytest
from acme.orders.v1 import events_pb2, orders_pb2

from protomesh import _context
from protomesh.events import (
    CONTENT_TYPE,
    EventHandlers,
    UndeliverableEvent,
    decode_event,
    event_id_of,
    event_type,
    stamp_event,
)
from protomesh.events._envelope import to_amqp


def _created() -> events_pb2.OrderCreated:
    return events_pb2.OrderCreated(order=orders_pb2.Order(order_id="o-1", user_id="u-1", total_cents=1500))


async def _ignore(event: events_pb2.OrderCreated) -> None:
    return None


def test_stamping_gives_an_event_a_uuid4_id_and_the_current_time() -> None:
    before = datetime.datetime.now(datetime.UTC)
    event = stamp_event(_created())
    assert uuid.UUID(event.event_id).version == 4
    assert event.event_time.ToDatetime(tzinfo=datetime.UTC) >= before.replace(microsecond=0)


def test_stamping_keeps_an_id_and_time_already_set_so_retries_carry_the_same_id() -> None:
    event = _created()
    event.event_id = "evt-1"
    event.event_time.FromSeconds(1_700_000_000)
    stamp_event(event)
    assert (event.event_id, event.event_time.seconds) == ("evt-1", 1_700_000_000)


def test_stamping_a_message_without_event_fields_changes_nothing() -> None:
    order = orders_pb2.Order(order_id="o-1")
    assert stamp_event(order) == orders_pb2.Order(order_id="o-1")
    assert event_id_of(order) == ""


def test_the_amqp_message_carries_id_type_time_and_persistence() -> None:
    event = _created()
    event.event_time.FromSeconds(1_700_000_000)
    body, properties = to_amqp(event, app_id="orders")
    assert properties.message_id == event.event_id != ""
    assert properties.message_type == event_type(event) == "acme.orders.v1.OrderCreated"
    assert properties.content_type == CONTENT_TYPE
    assert properties.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert properties.timestamp == datetime.datetime.fromtimestamp(1_700_000_000, datetime.UTC)
    assert properties.app_id == "orders"
    assert events_pb2.OrderCreated.FromString(body) == event


def test_the_amqp_message_carries_the_correlation_id_of_the_call_being_served() -> None:
    tokens = _context.bind_call("cid-42", None)
    try:
        assert to_amqp(_created()).properties.correlation_id == "cid-42"
    finally:
        _context.reset_call(tokens)


def test_the_registry_decodes_a_known_type_for_its_handler() -> None:
    handlers = EventHandlers().add(events_pb2.OrderCreated, _ignore)
    event, handler = handlers.resolve("acme.orders.v1.OrderCreated", _created().SerializeToString())
    assert (event, handler) == (_created(), _ignore)
    assert handlers.event_types == ("acme.orders.v1.OrderCreated",)


def test_an_unknown_type_or_a_corrupt_body_is_undeliverable() -> None:
    handlers = EventHandlers().add(events_pb2.OrderCreated, _ignore)
    with pytest.raises(UndeliverableEvent, match="no handler"):
        handlers.resolve("acme.orders.v1.OrderShipped", b"")
    with pytest.raises(UndeliverableEvent, match="not a valid"):
        handlers.resolve("acme.orders.v1.OrderCreated", b"\xff\xff\xff")


def test_a_type_cannot_have_two_handlers_in_one_group() -> None:
    handlers = EventHandlers().add(events_pb2.OrderCreated, _ignore)
    with pytest.raises(ValueError, match="registered already"):
        handlers.on(events_pb2.OrderCreated)(_ignore)


def test_a_stored_event_decodes_by_its_full_name() -> None:
    event = stamp_event(events_pb2.OrderCancelled(reason="changed my mind"))
    assert decode_event("acme.orders.v1.OrderCancelled", event.SerializeToString()) == event
    with pytest.raises(ValueError, match="unknown"):
        decode_event("acme.nothing.v1.Nope", b"")
