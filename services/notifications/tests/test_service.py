"""NotificationService over real gRPC on port 0: listing, and watching from the moment a watch starts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc
import grpc.aio
import pytest
from acme.notifications.v1 import notifications_service_pb2 as pb
from acme.notifications.v1 import notifications_service_pb2_grpc

from app.broadcast import Broadcaster
from app.domain import Notification, Notifications, OrderCancelled, OrderPlaced
from app.main import binding
from protomesh import ServerSettings
from protomesh.aio import poll_until
from protomesh.testing import serve_bindings


@dataclass
class Served:
    stub: notifications_service_pb2_grpc.NotificationServiceStub
    notifications: Notifications
    broadcaster: Broadcaster[Notification]


@pytest.fixture
async def served(notifications: Notifications, broadcaster: Broadcaster[Notification]) -> AsyncIterator[Served]:
    async with serve_bindings(binding(notifications), settings=ServerSettings(port=0, grace_s=1.0)) as served:
        try:
            yield Served(notifications_service_pb2_grpc.NotificationServiceStub(served.channel), notifications,
                         broadcaster)
        finally:
            broadcaster.close()


def _placed(event_id: str, user_id: str = "u-1") -> OrderPlaced:
    return OrderPlaced(event_id=event_id, user_id=user_id, order_id="o-1", item_count=2, total_cents=2500)


async def test_list_notifications_returns_a_users_notifications_oldest_first(served: Served) -> None:
    await served.notifications.record(_placed("e-1"))
    await served.notifications.record(OrderCancelled("e-2", "u-1", "o-1", "too late"))

    response = await served.stub.ListNotifications(pb.ListNotificationsRequest(user_id="u-1"))

    assert [n.text for n in response.notifications] == ["Order o-1 placed: 2 items, total 25.00",
                                                        "Order o-1 cancelled: too late"]
    assert response.notifications[0].create_time.seconds > 0
    assert response.next_page_token == ""


async def test_a_watch_receives_a_notification_created_after_it_started(served: Served) -> None:
    await served.notifications.record(_placed("before"))
    call = served.stub.WatchNotifications(pb.WatchNotificationsRequest(user_id="u-1"))
    await call.initial_metadata()  # the watch is subscribed from here on

    await served.notifications.record(_placed("after"))
    response = await asyncio.wait_for(call.read(), 5.0)

    assert response.notification.event_id == "after"
    assert response.notification.text == "Order o-1 placed: 2 items, total 25.00"
    call.cancel()


async def test_a_cancelled_watch_unsubscribes(served: Served) -> None:
    call = served.stub.WatchNotifications(pb.WatchNotificationsRequest(user_id="u-1"))
    await call.initial_metadata()
    assert served.broadcaster.watcher_count == 1

    call.cancel()

    await poll_until(lambda: served.broadcaster.watcher_count == 0, timeout=5, what="watcher removed")


async def test_a_watch_ends_with_ok_when_the_service_shuts_down(served: Served) -> None:
    call = served.stub.WatchNotifications(pb.WatchNotificationsRequest(user_id="u-1"))
    await call.initial_metadata()

    served.broadcaster.close()

    assert [response async for response in call] == []
    assert await call.code() == grpc.StatusCode.OK


async def test_a_watcher_that_falls_behind_ends_with_resource_exhausted(served: Served) -> None:
    call = served.stub.WatchNotifications(pb.WatchNotificationsRequest(user_id="u-1"))
    await call.initial_metadata()

    # The servicer's queue holds 4; publishing synchronously gives the stream no chance to drain it.
    for n in range(5):
        served.broadcaster.publish("u-1", Notification(f"n-{n}", "u-1", f"e-{n}", "text", _now()))

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in call:
            pass
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "ListNotifications" in (raised.value.details() or "")


async def test_a_quiet_watch_gets_heartbeats_between_notifications(
        notifications: Notifications, broadcaster: Broadcaster[Notification]) -> None:
    async with serve_bindings(binding(notifications, heartbeat_s=0.05)) as served:
        stub = notifications_service_pb2_grpc.NotificationServiceStub(served.channel)
        call = stub.WatchNotifications(pb.WatchNotificationsRequest(user_id="u-1"))
        await call.initial_metadata()
        heartbeat = await asyncio.wait_for(call.read(), 5.0)
        await notifications.record(_placed("after"))
        responses = [await asyncio.wait_for(call.read(), 5.0) for _ in range(3)]
        call.cancel()
        broadcaster.close()
    assert not heartbeat.HasField("notification")
    assert "after" in [r.notification.event_id for r in responses if r.HasField("notification")]


async def test_a_watch_without_a_user_is_invalid(served: Served) -> None:
    call = served.stub.WatchNotifications(pb.WatchNotificationsRequest(user_id=""))

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call.read()

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def _now() -> datetime:
    return datetime.now(UTC)
