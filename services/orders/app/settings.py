"""Typed settings of the orders service (values: config/orders.yaml, Consul KV, ORDERS_* environment variables)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from protomesh import ServiceSettings
from protomesh.paging import PageSettings
from protomesh.sqlite import database_file

# Relative paths are resolved against PROTOMESH_STATE_DIR (else the working directory), see database_file.
DEFAULT_DATABASE_PATH = "var/orders/orders.sqlite3"
# The local broker `make up` starts; the URL carries credentials, so it is read from ORDERS_AMQP_URL only.
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
# Checking the user is one cheap read; it is also capped by the caller's remaining deadline.
DEFAULT_USERS_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class OrdersSettings(PageSettings, ServiceSettings):
    """What the orders service needs beyond every service's server/consul/log settings."""

    database_path: str = DEFAULT_DATABASE_PATH
    amqp_url: str = field(default=DEFAULT_AMQP_URL, repr=False, metadata={"secret": True})
    users_timeout_s: float = DEFAULT_USERS_TIMEOUT_S

    def __post_init__(self) -> None:
        # Raised while loading (and on a hot reload, which then keeps the last good settings).
        super().__post_init__()
        if self.users_timeout_s <= 0:
            raise ValueError(f"users_timeout_s: must be positive, got {self.users_timeout_s}")
        if not self.database_path:
            raise ValueError("database_path: must not be empty")

    def database_file(self) -> Path:
        return database_file(self.database_path)
