"""UsersSettings: config/users.yaml loads, environment variables win, bad values fail, the database path resolves."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.settings import UsersSettings
from protomesh import ConfigError, load_settings
from protomesh.paging import PageLimits

SERVICE_DIR = Path(__file__).resolve().parents[1]
CHECKOUT = SERVICE_DIR.parents[1]


def test_the_committed_config_file_loads_with_its_values() -> None:
    settings = load_settings(UsersSettings, "users", env={}, config_dir=CHECKOUT / "config")

    assert settings.page_limits == PageLimits(default_size=20, max_size=100)
    assert settings.database_path == "var/users/users.db"
    assert settings.server.grace_s > settings.server.drain_s > 0


def test_environment_variables_override_the_file() -> None:
    env = {"USERS_MAX_PAGE_SIZE": "50", "USERS_DATABASE_PATH": "/tmp/x.db", "USERS_SERVER__PORT": "0"}

    settings = load_settings(UsersSettings, "users", env=env, config_dir=CHECKOUT / "config")

    assert (settings.max_page_size, settings.database_path) == (50, "/tmp/x.db")


@pytest.mark.parametrize("name", ["USERS_MAX_PAGE_SIZE", "USERS_DEFAULT_PAGE_SIZE"])
def test_a_page_size_below_one_is_a_config_error_naming_the_field(name: str) -> None:
    with pytest.raises(ConfigError, match=name.removeprefix("USERS_").lower()):
        load_settings(UsersSettings, "users", env={name: "0"}, config_dir=CHECKOUT / "config")


def test_a_relative_database_path_lands_in_the_checkouts_var_folder_from_the_service_folder() -> None:
    settings = UsersSettings(database_path="var/users/users.db")

    assert settings.database_file(cwd=SERVICE_DIR) == str(CHECKOUT / "var" / "users" / "users.db")


def test_outside_a_checkout_a_relative_database_path_is_relative_to_cwd(tmp_path: Path) -> None:
    assert UsersSettings().database_file(cwd=tmp_path) == str(tmp_path.resolve() / "var" / "users" / "users.db")


@pytest.mark.parametrize("path", ["/data/users.db", ":memory:"])
def test_absolute_and_in_memory_database_paths_are_kept(path: str) -> None:
    assert UsersSettings(database_path=path).database_file(cwd=SERVICE_DIR) == path
