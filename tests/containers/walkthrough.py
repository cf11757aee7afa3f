"""The README walkthrough against a secured gateway: REST through the transcoder and native gRPC on the same port, over
TLS with the mesh's CA and with a token of its issuer."""

from __future__ import annotations

import logging
import ssl
import uuid
from dataclasses import dataclass
from pathlib import Path
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
# What the walkthrough's calls need (each rpc's `(protomesh.v1.auth)` option); signing up is public.
WALKTHROUGH_SCOPES = ("users:read", "orders:write", "notifications:read")


@dataclass(frozen=True)
class Gateway:
    """REST and gRPC calls to one TLS gateway address ("127.0.0.1:port"), trusting ca and sending token."""

    address: str
    http: aiohttp.ClientSession
    ca: Path
    token: str

    @property
    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    async def call(self, method: str, path: str, body: object | None = None, *,
                   token: str | None = None) -> tuple[int, dict[str, Any]]:
        """One REST call with the walkthrough's token (or the token given; "" sends none)."""
        timeout = aiohttp.ClientTimeout(total=CALL_TIMEOUT_S)
        sent = self.token if token is None else token
        headers = {"authorization": f"Bearer {sent}"} if sent else {}
        async with self.http.request(method, f"https://{self.address}{path}", json=body, timeout=timeout,
                                     headers=headers, ssl=self.tls) as response:
            return response.status, await response.json(content_type=None)

    def channel(self) -> grpc.aio.Channel:
        """A gRPC channel over TLS with the token on every call."""
        credentials = grpc.composite_channel_credentials(grpc.ssl_channel_credentials(self.ca.read_bytes()),
                                                         grpc.access_token_call_credentials(self.token))
        return grpc.aio.secure_channel(self.address, credentials)


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
        if status == 503 and body.get("code") == 14:
            return []  # declared, no instance passing yet: a container is healthy before Consul's check of it
        assert status == 200, body
        return list(body.get("notifications", []))

    took = await poll_until(notified, timeout=NOTIFICATION_TIMEOUT_S, what="the order's notification",
                            interval=0.2)
    assert order_id in str((await notified())[0]["text"])
    log.info("step: notification readable over REST after %.2fs", took)
    async with gateway.channel() as channel:
        reply = await users_grpc.UserServiceStub(channel).GetUser(users_pb.GetUserRequest(user_id=user_id),
                                                                  timeout=CALL_TIMEOUT_S)
    assert reply.user.display_name == "Ada"
    log.info("step: the same user read with native gRPC over TLS through the gateway port")
    return user_id


# Targets are found through Consul, then scraped every 2 s; spans go through two batches (service, collector).
OBSERVED_TIMEOUT_S = 60.0
TRACED_SERVICES = {"gateway", "orders", "users", "notifications"}


async def observed(http: aiohttp.ClientSession, prometheus: str, zipkin: str, replicas: dict[str, int]) -> None:
    """After the walkthrough, in containers: Prometheus scrapes every instance, Envoy and the control plane it found
    through consul:8500, and Zipkin holds spans of the four processes the order went through."""

    async def get(url: str, **params: str) -> Any:
        async with http.get(url, params=params, timeout=aiohttp.ClientTimeout(total=CALL_TIMEOUT_S)) as response:
            return await response.json(content_type=None) if response.status == 200 else None

    async def targets_up() -> bool:
        body = await get(f"http://{prometheus}/api/v1/query", query='count by (service) (up{job="protomesh"} == 1)')
        found = {r["metric"]["service"]: int(r["value"][1]) for r in (body or {}).get("data", {}).get("result", [])}
        wanted = {**{name: count for name, count in replicas.items() if name in ("users", "orders", "notifications")},
                  "controlplane": 1, "gateway": 1}
        return all(found.get(name) == count for name, count in wanted.items())

    took = await poll_until(targets_up, timeout=OBSERVED_TIMEOUT_S, what="every target up in Prometheus", interval=1)
    log.info("step: Prometheus scrapes every instance, Envoy and the control plane (found in Consul) after %.1fs", took)

    async def traced() -> bool:
        return set(await get(f"http://{zipkin}/api/v2/services") or []) >= TRACED_SERVICES

    took = await poll_until(traced, timeout=OBSERVED_TIMEOUT_S, what="spans of every service in Zipkin", interval=1)
    log.info("step: Zipkin has spans from %s after %.1fs", ", ".join(sorted(TRACED_SERVICES)), took)
