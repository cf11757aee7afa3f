"""The README walkthrough through the gateway: users, orders and notifications over REST and gRPC."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid

import aio_pika
import grpc
import pytest
from acme.notifications.v1 import notifications_service_pb2 as notifications_pb
from acme.notifications.v1 import notifications_service_pb2_grpc as notifications_grpc

from protomesh.aio import poll_until
from tests.e2e.conftest import RunningMesh

pytestmark = pytest.mark.asyncio(loop_scope="module")
log = logging.getLogger("e2e")


async def create_user(mesh: RunningMesh) -> str:
    status, body = await mesh.call("POST", "/v1/users", {"email": f"{uuid.uuid4().hex[:10]}@example.com",
                                                         "displayName": "Ada"})
    assert status == 200, body
    return str(body["user"]["userId"])  # type: ignore[index]


async def place_order(mesh: RunningMesh, user_id: str, quantity: int = 2) -> str:
    status, body = await mesh.call("POST", "/v1/orders", {
        "userId": user_id, "lineItems": [{"sku": "book", "quantity": quantity, "unitPriceCents": 1250}]})
    assert status == 200, body
    return str(body["order"]["orderId"])  # type: ignore[index]


async def notifications(mesh: RunningMesh, user_id: str) -> list[dict[str, object]]:
    status, body = await mesh.call("GET", f"/v1/users/{user_id}/notifications?pageSize=100")
    assert status == 200, body
    return list(body.get("notifications", []))  # type: ignore[arg-type]


async def test_a_placed_order_is_a_readable_notification_within_2_seconds(running_mesh: RunningMesh) -> None:
    user_id = await create_user(running_mesh)
    log.info("step: user %s created over REST", user_id)
    order_id = await place_order(running_mesh, user_id)
    log.info("step: order %s placed over REST", order_id)

    async def one_notification() -> bool:
        return len(await notifications(running_mesh, user_id)) == 1

    took = await poll_until(one_notification, timeout=2.0, what="the order's notification")
    log.info("step: notification readable after %.3fs", took)
    assert order_id in str((await notifications(running_mesh, user_id))[0]["text"])


async def test_cancelling_an_order_adds_a_second_notification(running_mesh: RunningMesh) -> None:
    user_id = await create_user(running_mesh)
    order_id = await place_order(running_mesh, user_id)
    status, body = await running_mesh.call("POST", f"/v1/orders/{order_id}:cancel", {"reason": "changed my mind"})
    assert status == 200, body
    assert body["order"]["state"] == "ORDER_STATE_CANCELLED"  # type: ignore[index]

    async def two_notifications() -> bool:
        return len(await notifications(running_mesh, user_id)) == 2

    await poll_until(two_notifications, timeout=2.0, what="the cancellation's notification")
    assert "changed my mind" in str((await notifications(running_mesh, user_id))[1]["text"])


async def test_an_order_for_an_unknown_user_is_a_400_json_status_with_the_reason(running_mesh: RunningMesh) -> None:
    status, body = await running_mesh.call("POST", "/v1/orders", {
        "userId": "nobody", "lineItems": [{"sku": "book", "quantity": 1, "unitPriceCents": 100}]})
    assert status == 400
    assert body["code"] == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert body["message"] == "user 'nobody' does not exist"


async def test_watch_streams_a_new_notification_to_a_rest_client(running_mesh: RunningMesh) -> None:
    user_id = await create_user(running_mesh)
    url = f"http://{running_mesh.gateway}/v1/users/{user_id}/notifications:watch"
    async with running_mesh.http.get(url, timeout=None) as response:
        assert response.status == 200
        # The stream's headers arrive once the watch is subscribed: an order placed now is seen.
        order_id = await place_order(running_mesh, user_id)
        line = await asyncio.wait_for(response.content.readline(), timeout=5)
    # Newline-delimited JSON: one whole document per line, as each message arrives.
    first = json.loads(line)
    assert order_id in first["notification"]["text"]


async def test_watch_streams_a_new_notification_to_a_grpc_client_through_the_gateway(
    running_mesh: RunningMesh,
) -> None:
    user_id = await create_user(running_mesh)
    async with grpc.aio.insecure_channel(running_mesh.gateway) as channel:
        call = notifications_grpc.NotificationServiceStub(channel).WatchNotifications(
            notifications_pb.WatchNotificationsRequest(user_id=user_id), timeout=10)
        await call.initial_metadata()
        order_id = await place_order(running_mesh, user_id)
        reply = await asyncio.wait_for(call.read(), timeout=5)
        call.cancel()
    assert order_id in reply.notification.text


async def test_orders_placed_while_the_broker_is_down_are_notified_exactly_once_after_it_returns(
    running_mesh: RunningMesh,
) -> None:
    user_id = await create_user(running_mesh)
    broker = running_mesh.mesh.instance("rabbitmq")
    await broker.stop()  # a stop on purpose: the supervisor does not restart it
    log.info("step: RabbitMQ stopped")
    try:
        orders = [await place_order(running_mesh, user_id, quantity=n) for n in range(1, 6)]
        log.info("step: %d orders placed while the broker was down", len(orders))
    finally:
        await broker.start()
    log.info("step: RabbitMQ started again")

    async def all_delivered() -> bool:
        return len(await notifications(running_mesh, user_id)) >= len(orders)

    await poll_until(all_delivered, timeout=30, what="every order's notification after the outage")
    await asyncio.sleep(1.0)  # a late duplicate would show up here
    delivered = await notifications(running_mesh, user_id)
    assert sorted(str(n["text"]).split()[1] for n in delivered) == sorted(orders)
    assert len({n["eventId"] for n in delivered}) == len(delivered) == len(orders)


async def test_a_poison_message_does_not_stop_the_consumer(running_mesh: RunningMesh) -> None:
    url = running_mesh.amqp_url
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        exchange = await channel.get_exchange("protomesh.events")
        poison = aio_pika.Message(b"\xff not a protobuf", message_id=uuid.uuid4().hex,
                                  type="acme.orders.v1.OrderCreated")
        await exchange.publish(poison, routing_key="acme.orders.v1.OrderCreated")
        log.info("step: poison message published")

        async def dead_lettered() -> bool:
            queue = await channel.declare_queue("notifications.dlq", passive=True)
            return bool(queue.declaration_result.message_count)

        await poll_until(dead_lettered, timeout=10, what="the poison message in notifications.dlq")
    finally:
        await connection.close()
    started = time.monotonic()
    await test_a_placed_order_is_a_readable_notification_within_2_seconds(running_mesh)
    log.info("step: the consumer kept going (%.2fs)", time.monotonic() - started)
