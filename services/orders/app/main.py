"""Composition root of the orders service: storage, users client, outbox relay and servicer for the runtime."""

from __future__ import annotations

import logging

from acme.orders.v1 import orders_service_pb2, orders_service_pb2_grpc

from app.clients import GrpcUserDirectory
from app.domain import Orders
from app.handlers import OrderHandlers
from app.repo import SqliteOrderRepository
from app.settings import OrdersSettings
from protomesh import Binding, Context, run
from protomesh.events import OutboxRelay, Publisher

log = logging.getLogger(__name__)

SERVICE = "orders"
USERS_SERVICE = "users"


def main() -> None:
    run(SERVICE, OrdersSettings, build)


async def build(ctx: Context[OrdersSettings]) -> list[Binding]:
    """Open the store, the publisher and its relay (closed by the runtime in reverse), reach users via Consul."""
    settings = ctx.settings
    repo = await ctx.enter(SqliteOrderRepository.open(settings.database_file()))
    publisher = await ctx.enter(Publisher(settings.amqp_url, app_id=SERVICE,
                                                observability=ctx.observability))
    relay = await ctx.enter(OutboxRelay(repo, publisher))
    users = GrpcUserDirectory(await ctx.channel(USERS_SERVICE), timeout_s=settings.users_timeout_s)
    orders = Orders(repo, users, limits=settings.page_limits, events_committed=relay.notify)

    def follow(current: OrdersSettings) -> None:
        if current.page_limits != orders.limits or current.users_timeout_s != users.timeout_s:
            orders.limits = current.page_limits
            users.timeout_s = current.users_timeout_s
            log.info("page sizes now default %d, max %d; users timeout %gs", current.default_page_size,
                     current.max_page_size, current.users_timeout_s)

    ctx.config.subscribe(follow)
    return [binding(orders)]


def binding(orders: Orders) -> Binding:
    """The OrderService servicer over these use cases, ready for protomesh.Server (tests use it too)."""
    return Binding(
        orders_service_pb2.DESCRIPTOR.services_by_name["OrderService"],
        OrderHandlers(orders),
        orders_service_pb2_grpc.add_OrderServiceServicer_to_server,
    )
