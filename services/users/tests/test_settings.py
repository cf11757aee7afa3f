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


def test_a_relative_database_path_lands_in_the_state_folder_the_runner_names(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROTOMESH_STATE_DIR", str(tmp_path))

    assert UsersSettings().database_file() == str(tmp_path.resolve() / "var" / "users" / "users.db")


def test_without_a_state_folder_a_relative_database_path_is_relative_to_cwd(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROTOMESH_STATE_DIR", raising=False)
    monkeypatch.chdir(tmp_path)

    assert UsersSettings().database_file() == str(tmp_path.resolve() / "var" / "users" / "users.db")


@pytest.mark.parametrize("path", ["/data/users.db", ":memory:"])
def test_absolute_and_in_memory_database_paths_are_kept(path: str) -> None:
    assert UsersSettings(database_path=path).database_file(base=SERVICE_DIR) == path
