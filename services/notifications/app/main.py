"""Composition root of the notifications service: storage, broadcaster, event consumer and servicer."""

from __future__ import annotations

import logging

from acme.notifications.v1 import notifications_service_pb2, notifications_service_pb2_grpc

from app.broadcast import DEFAULT_WATCH_HEARTBEAT_S, Broadcaster
from app.consumer import CONSUMER_GROUP, event_handlers
from app.domain import Notification, Notifications
from app.handlers import NotificationHandlers
from app.repo import SqliteNotificationRepository
from app.settings import NotificationsSettings
from protomesh import Binding, Context, run
from protomesh.events import Subscriber

log = logging.getLogger(__name__)

SERVICE = "notifications"


def main() -> None:
    run(SERVICE, NotificationsSettings, build)


# How long start-up waits for the consumer to bind its queue before serving anyway: long enough for a broker
# that boots beside the service (the local mesh starts them together), so "healthy" then means "consuming".
STARTUP_CONSUME_WAIT_S = 10.0


async def build(ctx: Context[NotificationsSettings]) -> list[Binding]:
    """Open the store and the broadcaster, then consume: at shutdown the consumer stops first (reverse order)."""
    settings = ctx.settings
    repo = await ctx.enter(SqliteNotificationRepository.open(settings.database_file()))
    broadcaster = await ctx.enter(Broadcaster[Notification](queue_size=settings.watch_queue_size))
    # Open watches end with OK when shutdown begins, instead of being cancelled when the grace runs out.
    ctx.before_server_stop(broadcaster.close)
    notifications = Notifications(repo, broadcaster, limits=settings.page_limits)
    subscriber = await ctx.enter(Subscriber(settings.amqp_url, group=CONSUMER_GROUP,
                                            handlers=event_handlers(notifications), prefetch=settings.prefetch,
                                            observability=ctx.observability))
    try:
        # Passing in Consul then also means "consuming" whenever the broker is up; a broker that is down
        # must not keep the service from serving what it has stored, so this wait is bounded.
        await subscriber.wait_ready(timeout=STARTUP_CONSUME_WAIT_S)
    except TimeoutError as exc:
        log.warning("serving without consuming yet: %s", exc)

    def follow(current: NotificationsSettings) -> None:
        if current.page_limits != notifications.limits:
            notifications.limits = current.page_limits
            log.info("page sizes now default %d, max %d", current.default_page_size, current.max_page_size)

    ctx.config.subscribe(follow)
    return [binding(notifications, heartbeat_s=settings.watch_heartbeat_s)]


def binding(notifications: Notifications, *, heartbeat_s: float = DEFAULT_WATCH_HEARTBEAT_S) -> Binding:
    """The NotificationService servicer over these use cases, ready for protomesh.Server (tests use it too)."""
    return Binding(
        notifications_service_pb2.DESCRIPTOR.services_by_name["NotificationService"],
        NotificationHandlers(notifications, heartbeat_s=heartbeat_s),
        notifications_service_pb2_grpc.add_NotificationServiceServicer_to_server,
    )
