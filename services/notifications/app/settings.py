"""Typed settings of the notifications service (config/notifications.yaml, Consul KV, NOTIFICATIONS_* env)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from app.broadcast import DEFAULT_WATCH_HEARTBEAT_S, DEFAULT_WATCH_QUEUE_SIZE
from protomesh import ServiceSettings
from protomesh.events import DEFAULT_PREFETCH
from protomesh.paging import PageSettings
from protomesh.sqlite import database_file

# Relative paths are resolved against PROTOMESH_STATE_DIR (else the working directory), see database_file.
DEFAULT_DATABASE_PATH = "var/notifications/notifications.sqlite3"
# The local broker `make up` starts; the URL carries credentials, so it is read from NOTIFICATIONS_AMQP_URL only.
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


@dataclass(frozen=True)
class NotificationsSettings(PageSettings, ServiceSettings):
    """What the notifications service needs beyond every service's server/consul/log settings."""

    database_path: str = DEFAULT_DATABASE_PATH
    amqp_url: str = field(default=DEFAULT_AMQP_URL, repr=False, metadata={"secret": True})
    prefetch: int = DEFAULT_PREFETCH
    watch_queue_size: int = DEFAULT_WATCH_QUEUE_SIZE
    watch_heartbeat_s: float = DEFAULT_WATCH_HEARTBEAT_S

    def __post_init__(self) -> None:
        # Raised while loading (and on a hot reload, which then keeps the last good settings).
        super().__post_init__()
        for name in ("prefetch", "watch_queue_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1, got {getattr(self, name)}")
        if not self.database_path:
            raise ValueError("database_path: must not be empty")
        if self.watch_heartbeat_s <= 0:
            raise ValueError(f"watch_heartbeat_s: must be above 0, got {self.watch_heartbeat_s}")

    def database_file(self) -> Path:
        return database_file(self.database_path)
