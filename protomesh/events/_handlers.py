"""The handler registry of a consumer group: event full name -> protobuf class -> async handler."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic

from google.protobuf.message import DecodeError, Message

from protomesh.events._envelope import M, event_type

Handler = Callable[[M], Awaitable[None]]


class UndeliverableEvent(Exception):
    """A message no handler can ever process (unknown type, undecodable body): it goes to the DLQ at once."""


@dataclass(frozen=True, slots=True)
class _Entry(Generic[M]):
    message_class: type[M]
    handler: Handler[M]


class EventHandlers:
    """Which handler runs for which event type; a Subscriber binds its queue to exactly these types.

        handlers = EventHandlers()
        handlers.add(OrderCreated, on_order_created)      # async def on_order_created(e: OrderCreated)

        @handlers.on(OrderCancelled)
        async def on_order_cancelled(event: OrderCancelled) -> None: ...

    A handler commits its work before it returns: the message is acked only then. Deliveries are
    at-least-once, so a handler must be idempotent: dedupe on `event.event_id`.
    """

    def __init__(self) -> None:
        self._entries: dict[str, _Entry[Any]] = {}

    def add(self, message_class: type[M], handler: Handler[M]) -> EventHandlers:
        name = event_type(message_class)
        if name in self._entries:
            raise ValueError(f"a handler for {name} is registered already")
        self._entries[name] = _Entry(message_class, handler)
        return self

    def on(self, message_class: type[M]) -> Callable[[Handler[M]], Handler[M]]:
        """Decorator form of add()."""

        def register(handler: Handler[M]) -> Handler[M]:
            self.add(message_class, handler)
            return handler

        return register

    @property
    def event_types(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def resolve(self, type_name: str, body: bytes) -> tuple[Message, Handler[Any]]:
        """The decoded event and its handler; UndeliverableEvent when neither can be had."""
        entry = self._entries.get(type_name)
        if entry is None:
            raise UndeliverableEvent(f"no handler for event type {type_name!r}")
        try:
            event = entry.message_class.FromString(body)
        except DecodeError as error:
            raise UndeliverableEvent(f"body is not a valid {type_name}: {error}") from error
        return event, entry.handler
