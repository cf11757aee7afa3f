"""Typed settings of the users service (values: config/users.yaml, Consul KV, USERS_* environment variables)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from protomesh import ServiceSettings
from protomesh.paging import PageSettings
from protomesh.sqlite import database_file

# Relative paths are resolved against PROTOMESH_STATE_DIR (else the working directory), see database_file.
DEFAULT_DATABASE_PATH = "var/users/users.db"


@dataclass(frozen=True)
class UsersSettings(PageSettings, ServiceSettings):
    """What the users service needs beyond every service's server/consul/log settings."""

    database_path: str = DEFAULT_DATABASE_PATH

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.database_path:
            raise ValueError("database_path: must not be empty")

    def database_file(self, base: Path | None = None) -> str:
        """database_path made absolute (see protomesh.sqlite.database_file); ":memory:" stays as it is."""
        return str(database_file(self.database_path, base=base))
