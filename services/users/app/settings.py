"""Typed settings of the users service (values: config/users.yaml, Consul KV, USERS_* environment variables)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from app.domain import DEFAULT_MAX_PAGE_SIZE, DEFAULT_PAGE_SIZE, PageLimits
from protomesh import ServiceSettings
from protomesh._config import default_config_dir

# Relative to the protomesh checkout when the service runs inside one (its var/ is git-ignored), so
# `python -m app` from services/users or the root uses one database; else relative to cwd.
DEFAULT_DATABASE_PATH = "var/users/users.db"


@dataclass(frozen=True)
class UsersSettings(ServiceSettings):
    """What the users service needs beyond every service's server/consul/log settings."""

    database_path: str = DEFAULT_DATABASE_PATH
    max_page_size: int = DEFAULT_MAX_PAGE_SIZE
    default_page_size: int = DEFAULT_PAGE_SIZE

    def __post_init__(self) -> None:
        # Raised while loading (and on a hot reload, which then keeps the last good settings).
        for name in ("max_page_size", "default_page_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1, got {getattr(self, name)}")
        if not self.database_path:
            raise ValueError("database_path: must not be empty")

    @property
    def page_limits(self) -> PageLimits:
        return PageLimits(default_size=self.default_page_size, max_size=self.max_page_size)

    def database_file(self, cwd: Path | None = None) -> str:
        """database_path made absolute (see DEFAULT_DATABASE_PATH); ":memory:" stays as it is."""
        if self.database_path == ":memory:":
            return self.database_path
        path = Path(self.database_path).expanduser()
        if path.is_absolute():
            return str(path)
        # The folder holding config/: the checkout found upwards from cwd, else cwd (a container's /app).
        return str(default_config_dir(cwd).parent / path)
