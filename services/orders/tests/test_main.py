"""The orders service as build() wires it, served by the runtime with real Consul: users found by discovery."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio
import pytest
from acme.orders.v1 import orders_pb2, orders_service_pb2, orders_service_pb2_grpc
from conftest import KNOWN_USER, UsersServicer

from app.main import SERVICE, build
from app.settings import OrdersSettings
from localmesh.testing import ConsulAgent, free_port, project_root
from protomesh import Binding, Context, RunningService, ServiceSettings, serve
from protomesh.aio import poll_until


@dataclass
class Mesh:
    stub: orders_service_pb2_grpc.OrderServiceStub
    users: UsersServicer
    database: Path


@pytest.fixture
async def mesh(consul_agent: ConsulAgent, tmp_path: Path) -> AsyncIterator[Mesh]:
    servicer = UsersServicer(KNOWN_USER)

    async def build_users(ctx: Context[ServiceSettings]) -> list[Binding]:
        return [servicer.binding()]

    # Plaintext on purpose: these are about discovery, deadlines and the outbox (test_secured.py: mTLS).
    consul = {"CONSUL_HTTP_ADDR": consul_agent.address, "USERS_SECURITY__MODE": "off",
              "ORDERS_SECURITY__MODE": "off"}
    database = tmp_path / "orders.sqlite3"
    # Nothing listens on this port: the broker is down for the whole test.
    env = {**consul, "ORDERS_DATABASE_PATH": str(database),
           "ORDERS_AMQP_URL": f"amqp://guest:guest@127.0.0.1:{free_port()}/"}
    users = await serve("users", ServiceSettings, build_users, env=consul, config_dir=tmp_path / "no-config")
    orders: RunningService[OrdersSettings] | None = None
    try:
        await poll_until(lambda: consul_agent.passing_instances("users"), timeout=15, what="users passing")
        orders = await serve(SERVICE, OrdersSettings, build, env=env, config_dir=project_root() / "config")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{orders.port}") as channel:
            yield Mesh(orders_service_pb2_grpc.OrderServiceStub(channel), servicer, database)
    finally:
        if orders is not None:
            await orders.stop()
        await users.stop()


def _request(user_id: str = KNOWN_USER) -> orders_service_pb2.CreateOrderRequest:
    item = orders_pb2.LineItem(sku="sku-1", quantity=1, unit_price_cents=100)
    return orders_service_pb2.CreateOrderRequest(order=orders_pb2.Order(user_id=user_id, line_items=[item]))


def _unpublished(database: Path) -> int:
    with sqlite3.connect(database) as conn:
        return int(conn.execute("SELECT count(*) FROM outbox WHERE publish_us IS NULL").fetchone()[0])


async def test_an_order_is_placed_for_a_user_found_through_consul_while_the_broker_is_down(mesh: Mesh) -> None:
    response = await mesh.stub.CreateOrder(_request(), timeout=10)

    assert response.order.state == orders_pb2.ORDER_STATE_CREATED
    assert _unpublished(mesh.database) == 1


async def test_an_order_for_a_user_unknown_to_the_users_service_fails_its_precondition(mesh: Mesh) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await mesh.stub.CreateOrder(_request(user_id="u-123"), timeout=10)

    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert raised.value.details() == "user 'u-123' does not exist"


async def test_the_callers_deadline_is_propagated_to_the_users_call(mesh: Mesh) -> None:
    mesh.users.delay_s = 2.0

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await mesh.stub.CreateOrder(_request(), timeout=0.5)

    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    [remaining] = mesh.users.time_remaining
    assert remaining is not None
    assert remaining <= 0.5, "users got the configured 2 s timeout instead of the caller's deadline"
