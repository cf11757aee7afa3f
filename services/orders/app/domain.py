"""Orders' rules and use cases (place, read, list, cancel), free of gRPC, SQL and the broker."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Protocol

from protomesh import paging
from protomesh.errors import FailedPrecondition, FieldViolation, NotFound
from protomesh.paging import Cursor, Page, PageLimits
from protomesh.validation import id_problems, raise_if, text_problems

# total_cents is an int64 on the wire; a sum beyond it cannot be represented, so it is refused up front.
MAX_TOTAL_CENTS = 2**63 - 1
MAX_SKU_LENGTH = 64
MAX_REASON_LENGTH = 500
NO_REASON = "no reason given"


class OrderState(enum.Enum):
    """Where an order is in its life (mirrors acme.orders.v1.OrderState without its UNSPECIFIED zero)."""

    CREATED = "CREATED"
    CANCELLED = "CANCELLED"


@dataclass(frozen=True, slots=True)
class LineItem:
    """One product line: sku, how many units and the price of one unit in cents."""

    sku: str
    quantity: int
    unit_price_cents: int


@dataclass(frozen=True, slots=True)
class Order:
    """A customer's order as stored."""

    order_id: str
    user_id: str
    line_items: tuple[LineItem, ...]
    total_cents: int
    state: OrderState
    create_time: datetime


@dataclass(frozen=True, slots=True)
class OrderDraft:
    """What a client sends to place an order, not validated yet."""

    user_id: str
    line_items: Sequence[LineItem]


@dataclass(frozen=True, slots=True)
class OrderCreated:
    """Event: an order has been placed (published as acme.orders.v1.OrderCreated)."""

    event_id: str
    event_time: datetime
    order: Order


@dataclass(frozen=True, slots=True)
class OrderCancelled:
    """Event: an order has been cancelled (published as acme.orders.v1.OrderCancelled)."""

    event_id: str
    event_time: datetime
    order: Order
    reason: str


OrderEvent = OrderCreated | OrderCancelled


class UserDirectory(Protocol):
    """Who may place orders; implementations raise protomesh.errors.Unavailable when they cannot tell."""

    async def exists(self, user_id: str) -> bool: ...


class OrderWriter(Protocol):
    """The writes of one transaction: an order change and its event commit together or not at all."""

    async def get(self, order_id: str) -> Order | None: ...

    async def insert(self, order: Order) -> None: ...

    async def set_state(self, order_id: str, state: OrderState) -> None: ...

    async def add_event(self, event: OrderEvent) -> None: ...


class OrderRepository(Protocol):
    """Storage of orders and of the outbox their events leave through."""

    def transaction(self) -> AbstractAsyncContextManager[OrderWriter]: ...

    async def get(self, order_id: str) -> Order | None: ...

    async def list_after(self, after: Cursor | None, *, user_id: str, limit: int) -> Sequence[Order]: ...


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _new_order_id() -> str:
    return f"o-{uuid.uuid4().hex[:16]}"


def _new_event_id() -> str:
    return str(uuid.uuid4())


@dataclass(slots=True)
class Orders:
    """The use cases; events_committed is called after a transaction that added events (wakes the relay)."""

    repo: OrderRepository
    users: UserDirectory
    limits: PageLimits = field(default_factory=PageLimits)
    events_committed: Callable[[], None] = lambda: None
    clock: Callable[[], datetime] = _utc_now
    new_order_id: Callable[[], str] = _new_order_id
    new_event_id: Callable[[], str] = _new_event_id

    async def create(self, draft: OrderDraft) -> Order:
        items = validate_draft(draft)
        if not await self.users.exists(draft.user_id):
            raise FailedPrecondition(f"user {draft.user_id!r} does not exist")
        now = self.clock()
        total = sum(item.quantity * item.unit_price_cents for item in items)
        order = Order(self.new_order_id(), draft.user_id, items, total, OrderState.CREATED, now)
        async with self.repo.transaction() as tx:
            await tx.insert(order)
            await tx.add_event(OrderCreated(self.new_event_id(), now, order))
        self.events_committed()
        return order

    async def get(self, order_id: str) -> Order:
        raise_if(id_problems(order_id, "order_id"))
        order = await self.repo.get(order_id)
        if order is None:
            raise _not_found(order_id)
        return order

    async def list(self, *, user_id: str, page_size: int, page_token: str) -> Page[Order]:
        """Orders oldest first (of one user when user_id is set); the token is bound to that filter."""
        raise_if(id_problems(user_id, "user_id", required=False))
        return await paging.list_page(
            lambda after, limit: self.repo.list_after(after, user_id=user_id, limit=limit), limits=self.limits,
            page_size=page_size, page_token=page_token, key=_cursor, scope=user_id)

    async def cancel(self, order_id: str, reason: str) -> Order:
        reason = reason.strip()
        raise_if([*id_problems(order_id, "order_id"),
                  *text_problems(reason, "reason", max_length=MAX_REASON_LENGTH)])
        async with self.repo.transaction() as tx:
            order = await tx.get(order_id)
            if order is None:
                raise _not_found(order_id)
            if order.state is OrderState.CANCELLED:
                raise FailedPrecondition(f"order {order_id!r} is already cancelled")
            cancelled = replace(order, state=OrderState.CANCELLED)
            await tx.set_state(order_id, OrderState.CANCELLED)
            await tx.add_event(OrderCancelled(self.new_event_id(), self.clock(), cancelled, reason or NO_REASON))
        self.events_committed()
        return cancelled


def validate_draft(draft: OrderDraft) -> tuple[LineItem, ...]:
    """The draft's line items when every field is valid; else InvalidArgument listing each bad field."""
    violations = id_problems(draft.user_id, "order.user_id")
    if not draft.line_items:
        violations.append(FieldViolation("order.line_items", "must have at least one line item"))
    for index, item in enumerate(draft.line_items):
        violations.extend(_item_violations(item, f"order.line_items[{index}]"))
    if not violations and sum(i.quantity * i.unit_price_cents for i in draft.line_items) > MAX_TOTAL_CENTS:
        violations.append(FieldViolation("order.line_items", "the order total is too large"))
    raise_if(violations)
    return tuple(draft.line_items)


def _item_violations(item: LineItem, path: str) -> list[FieldViolation]:
    sku = item.sku if item.sku.strip() else ""  # a blank sku counts as missing
    violations = text_problems(sku, f"{path}.sku", max_length=MAX_SKU_LENGTH, required=True)
    if item.quantity < 1:
        violations.append(FieldViolation(f"{path}.quantity", "must be at least 1"))
    if item.unit_price_cents < 0:
        violations.append(FieldViolation(f"{path}.unit_price_cents", "must not be negative"))
    return violations


def _cursor(order: Order) -> Cursor:
    return Cursor(order.create_time, order.order_id)


def _not_found(order_id: str) -> NotFound:
    return NotFound(f"order {order_id!r} does not exist")
