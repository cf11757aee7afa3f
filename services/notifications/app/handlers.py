"""The acme.notifications.v1.NotificationService servicer: maps messages to use cases and results back."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc.aio
from acme.notifications.v1 import notifications_service_pb2 as pb

from app.broadcast import DEFAULT_WATCH_HEARTBEAT_S
from app.domain import Notifications
from app.mapping import notification_to_proto
from protomesh.aio import with_heartbeats

# Domain errors raised below (including WatchTooSlow -> RESOURCE_EXHAUSTED) become gRPC statuses in the
# runtime's interceptor, so no handler catches anything.
_Context = grpc.aio.ServicerContext[Any, Any]


class NotificationHandlers:
    """Servicer of acme.notifications.v1.NotificationService (add_NotificationServiceServicer_to_server)."""

    def __init__(self, notifications: Notifications, *, heartbeat_s: float = DEFAULT_WATCH_HEARTBEAT_S) -> None:
        self._notifications = notifications
        self._heartbeat_s = heartbeat_s

    async def ListNotifications(self, request: pb.ListNotificationsRequest,
                                context: _Context) -> pb.ListNotificationsResponse:
        page = await self._notifications.list(user_id=request.user_id, page_size=request.page_size,
                                              page_token=request.page_token)
        return pb.ListNotificationsResponse(notifications=[notification_to_proto(n) for n in page.items],
                                            next_page_token=page.next_page_token)

    async def WatchNotifications(self, request: pb.WatchNotificationsRequest,
                                 context: _Context) -> AsyncIterator[pb.WatchNotificationsResponse]:
        """Streams the user's notifications recorded after the call started, and a heartbeat (a response with no
        notification) after each `heartbeat_s` without one; ends when the server stops."""
        with self._notifications.watch(request.user_id) as watch:
            # Headers go out now, not with the first notification: a client awaiting initial_metadata()
            # knows that everything recorded from then on reaches it.
            with contextlib.suppress(grpc.aio.UsageError):  # an interceptor already sent them
                await context.send_initial_metadata(())
            async for notification in with_heartbeats(watch, self._heartbeat_s):
                if notification is None:
                    yield pb.WatchNotificationsResponse()
                else:
                    yield pb.WatchNotificationsResponse(notification=notification_to_proto(notification))

