"""The README walkthrough against a gateway address: REST through the transcoder, and native gRPC on the same port."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import aiohttp
import grpc
from acme.users.v1 import users_service_pb2 as users_pb
from acme.users.v1 import users_service_pb2_grpc as users_grpc

from protomesh.aio import poll_until

log = logging.getLogger("containers")

# Per call: a healthy gateway answers in milliseconds; a call cut by a crash is failed, not waited for.
CALL_TIMEOUT_S = 5.0
# The event goes orders -> outbox -> RabbitMQ -> notifications, each in its own container.
NOTIFICATION_TIMEOUT_S = 10.0


class Gateway:
    """REST calls to one gateway address ("127.0.0.1:port"), decoding JSON bodies."""

    def __init__(self, address: str, http: aiohttp.ClientSession) -> None:
        self.address = address
        self.http = http

    async def call(self, method: str, path: str, body: object | None = None) -> tuple[int, dict[str, Any]]:
        timeout = aiohttp.ClientTimeout(total=CALL_TIMEOUT_S)
        async with self.http.request(method, f"http://{self.address}{path}", json=body, timeout=timeout) as response:
            return response.status, await response.json(content_type=None)


async def walkthrough(gateway: Gateway) -> str:
    """Create a user, place an order, read its notification (REST), get the user (gRPC); returns the user id."""
    status, body = await gateway.call("POST", "/v1/users", {"email": f"{uuid.uuid4().hex[:10]}@example.com",
                                                            "displayName": "Ada"})
    assert status == 200, body
    user_id = str(body["user"]["userId"])
    log.info("step: user %s created over REST", user_id)
    status, body = await gateway.call("POST", "/v1/orders", {
        "userId": user_id, "lineItems": [{"sku": "book", "quantity": 2, "unitPriceCents": 1250}]})
    assert status == 200, body
    order_id = str(body["order"]["orderId"])
    log.info("step: order %s placed over REST", order_id)

    async def notified() -> list[dict[str, Any]]:
        status, body = await gateway.call("GET", f"/v1/users/{user_id}/notifications?pageSize=10")
        assert status == 200, body
        return list(body.get("notifications", []))

    took = await poll_until(notified, timeout=NOTIFICATION_TIMEOUT_S, what="the order's notification",
                            interval=0.2)
    assert order_id in str((await notified())[0]["text"])
    log.info("step: notification readable over REST after %.2fs", took)
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        reply = await users_grpc.UserServiceStub(channel).GetUser(users_pb.GetUserRequest(user_id=user_id),
                                                                  timeout=CALL_TIMEOUT_S)
    assert reply.user.display_name == "Ada"
    log.info("step: the same user read with native gRPC through the gateway port")
    return user_id
