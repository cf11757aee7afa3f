"""The notifications service as build() wires it, served by the runtime with real Consul and RabbitMQ."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import grpc
import grpc.aio
import pytest
from acme.notifications.v1 import notifications_service_pb2 as pb
from acme.notifications.v1 import notifications_service_pb2_grpc
from acme.orders.v1 import events_pb2, orders_pb2

from app.consumer import CONSUMER_GROUP
from app.main import SERVICE, build
from app.settings import NotificationsSettings
from localmesh.testing import ConsulAgent, RabbitMQNode, project_root
from protomesh import RunningService, serve
from protomesh.events import Publisher

# The service's shutdown grace in these tests; an open watch must end well before it runs out.
GRACE_S = 3.0

pytestmark = pytest.mark.slow


@dataclass
class Service:
    running: RunningService[NotificationsSettings]
    stub: notifications_service_pb2_grpc.NotificationServiceStub
    publisher: Publisher


@pytest.fixture
async def service(consul_agent: ConsulAgent, rabbitmq_node: RabbitMQNode, tmp_path: Path) -> AsyncIterator[Service]:
    env = {"CONSUL_HTTP_ADDR": consul_agent.address, "NOTIFICATIONS_AMQP_URL": rabbitmq_node.url,
           "NOTIFICATIONS_DATABASE_PATH": str(tmp_path / "notifications.sqlite3"),
           "NOTIFICATIONS_SERVER__GRACE_S": str(GRACE_S),
           # Plaintext on purpose: events and streams are tested here, mTLS in tests/runtime.
           "NOTIFICATIONS_SECURITY__MODE": "off"}
    running = await serve(SERVICE, NotificationsSettings, build, env=env, config_dir=project_root() / "config")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel, \
                Publisher(rabbitmq_node.url, app_id="orders-test") as publisher:
            yield Service(running, notifications_service_pb2_grpc.NotificationServiceStub(channel), publisher)
    finally:
        await running.stop()


def _created(user_id: str) -> events_pb2.OrderCreated:
    item = orders_pb2.LineItem(sku="a", quantity=3, unit_price_cents=250)
    order = orders_pb2.Order(order_id="o-1", user_id=user_id, line_items=[item], total_cents=750)
    return events_pb2.OrderCreated(event_id=str(uuid.uuid4()), order=order)


async def _wait_for_consumer(url: str, queue: str) -> None:
    """Until the service consumes its queue (it connects, declares, binds, then consumes in the background)."""
    async with await aio_pika.connect(url) as connection:
        for _ in range(200):
            channel = await connection.channel()
            try:
                declared = await channel.declare_queue(queue, passive=True)
                if declared.declaration_result.consumer_count:
                    return
            except aio_pika.exceptions.ChannelNotFoundEntity:
                pass
            await asyncio.sleep(0.05)
    raise TimeoutError(f"nobody consumes queue {queue}")


async def test_a_published_order_event_reaches_a_watcher_and_the_list(service: Service,
                                                                      rabbitmq_node: RabbitMQNode) -> None:
    await _wait_for_consumer(rabbitmq_node.url, CONSUMER_GROUP)
    user_id = f"u-{uuid.uuid4().hex[:8]}"
    call = service.stub.WatchNotifications(pb.WatchNotificationsRequest(user_id=user_id))
    await call.initial_metadata()

    await service.publisher.publish(_created(user_id))
    watched = await asyncio.wait_for(call.read(), 15.0)
    listed = await service.stub.ListNotifications(pb.ListNotificationsRequest(user_id=user_id))

    assert watched.notification.text == "Order o-1 placed: 3 items, total 7.50"
    assert list(listed.notifications) == [watched.notification]
    call.cancel()


async def test_stopping_the_service_ends_an_open_watch_before_the_grace_period_runs_out(service: Service) -> None:
    call = service.stub.WatchNotifications(pb.WatchNotificationsRequest(user_id="u-1"))
    await call.initial_metadata()

    started = time.monotonic()
    await service.running.stop()
    code = await asyncio.wait_for(call.code(), GRACE_S + 5)

    took = time.monotonic() - started
    assert code == grpc.StatusCode.OK, f"{code} after {took:.1f}s"
    assert took < GRACE_S
