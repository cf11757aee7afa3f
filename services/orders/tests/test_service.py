"""OrderService over real gRPC: orders served on port 0, the users service a real gRPC server it calls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import grpc.aio
import pytest
from acme.orders.v1 import orders_pb2, orders_service_pb2, orders_service_pb2_grpc
from conftest import KNOWN_USER, UsersServicer

from app.clients import GrpcUserDirectory
from app.domain import Orders
from app.main import binding
from app.repo import SqliteOrderRepository
from protomesh import Server
from protomesh.testing import field_violations, serve_bindings


@dataclass
class Served:
    stub: orders_service_pb2_grpc.OrderServiceStub
    users: UsersServicer
    users_server: Server


@pytest.fixture
async def served(repo: SqliteOrderRepository) -> AsyncIterator[Served]:
    users = UsersServicer(KNOWN_USER)
    async with serve_bindings(users.binding()) as users_served:
        orders = Orders(repo, GrpcUserDirectory(users_served.channel, timeout_s=0.5))
        async with serve_bindings(binding(orders)) as orders_served:
            yield Served(orders_service_pb2_grpc.OrderServiceStub(orders_served.channel), users, users_served.server)


def _create_request(user_id: str = KNOWN_USER, quantity: int = 2) -> orders_service_pb2.CreateOrderRequest:
    items = [orders_pb2.LineItem(sku="sku-1", quantity=quantity, unit_price_cents=1000),
             orders_pb2.LineItem(sku="sku-2", quantity=1, unit_price_cents=500)]
    return orders_service_pb2.CreateOrderRequest(order=orders_pb2.Order(user_id=user_id, line_items=items))


async def test_create_order_returns_the_placed_order_with_its_total(served: Served) -> None:
    response = await served.stub.CreateOrder(_create_request())

    order = response.order
    assert order.order_id.startswith("o-")
    assert order.total_cents == 2 * 1000 + 500
    assert order.state == orders_pb2.ORDER_STATE_CREATED
    assert order.create_time.seconds > 0
    fetched = await served.stub.GetOrder(orders_service_pb2.GetOrderRequest(order_id=order.order_id))
    assert fetched.order == order


async def test_an_order_for_an_unknown_user_fails_the_precondition_with_a_clear_message(served: Served) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await served.stub.CreateOrder(_create_request(user_id="u-123"))

    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert raised.value.details() == "user 'u-123' does not exist"


async def test_an_invalid_order_names_each_bad_field_in_the_rich_status(served: Served) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await served.stub.CreateOrder(_create_request(quantity=0))

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(raised.value) == ["order.line_items[0].quantity"]


async def test_an_order_while_users_is_down_is_unavailable(served: Served) -> None:
    await served.users_server.stop(0)

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await served.stub.CreateOrder(_create_request())

    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "users service is unavailable" in (raised.value.details() or "")


async def test_an_order_while_users_is_too_slow_is_unavailable_within_the_users_timeout(served: Served) -> None:
    served.users.delay_s = 5.0

    started = asyncio.get_running_loop().time()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await served.stub.CreateOrder(_create_request(), timeout=4.0)

    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert asyncio.get_running_loop().time() - started < 3.0


async def test_get_order_of_an_unknown_id_is_not_found(served: Served) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await served.stub.GetOrder(orders_service_pb2.GetOrderRequest(order_id="o-missing"))

    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_cancel_order_twice_fails_the_precondition_the_second_time(served: Served) -> None:
    order = (await served.stub.CreateOrder(_create_request())).order
    cancel = orders_service_pb2.CancelOrderRequest(order_id=order.order_id, reason="too slow")

    cancelled = await served.stub.CancelOrder(cancel)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await served.stub.CancelOrder(cancel)

    assert cancelled.order.state == orders_pb2.ORDER_STATE_CANCELLED
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_list_orders_pages_with_opaque_tokens_in_a_stable_order(served: Served) -> None:
    placed = [(await served.stub.CreateOrder(_create_request())).order.order_id for _ in range(3)]

    first = await served.stub.ListOrders(orders_service_pb2.ListOrdersRequest(user_id=KNOWN_USER, page_size=2))
    second = await served.stub.ListOrders(orders_service_pb2.ListOrdersRequest(
        user_id=KNOWN_USER, page_size=2, page_token=first.next_page_token))

    assert [o.order_id for o in [*first.orders, *second.orders]] == placed
    assert first.next_page_token
    assert second.next_page_token == ""


async def test_list_orders_with_a_bad_token_names_the_field(served: Served) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await served.stub.ListOrders(orders_service_pb2.ListOrdersRequest(page_token="garbage"))

    assert field_violations(raised.value) == ["page_token"]
