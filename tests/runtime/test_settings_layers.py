"""load_settings: layer order, typed coercion, secrets and error messages that name the key and its layer."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from protomesh._config import load_settings, seed_plan
from protomesh._settings import ConfigError, SecuritySettings, ServerSettings, ServiceSettings


@dataclass(frozen=True)
class UsersSettings(ServiceSettings):
    max_page_size: int = 100
    database_path: str = "users.db"
    debug: bool = False
    ratio: float = 0.5
    owners: tuple[str, ...] = ()
    nickname: str | None = None


@dataclass(frozen=True)
class StrictSettings(ServiceSettings):
    api_url: str = field(default="")
    database_path: str = field(kw_only=True)


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "config"
    write(folder, "users.yaml", "max_page_size: 10\nlog_level: DEBUG\nserver:\n  grace_s: 1\n  tags: [blue]\n")
    write(folder, "users.test.yaml", "max_page_size: 20\nserver:\n  port: 7001\n")
    return folder


def test_defaults_apply_when_no_layer_sets_anything(tmp_path: Path) -> None:
    settings = load_settings(UsersSettings, "users", env={}, config_dir=tmp_path)
    assert settings == UsersSettings()
    assert settings.server == ServerSettings()


@pytest.mark.parametrize(
    ("env", "kv", "expected"),
    [
        ({}, {}, 10),
        ({"PROTOMESH_ENV": "test"}, {}, 20),
        ({"PROTOMESH_ENV": "test"}, {"max_page_size": "30"}, 30),
        ({"PROTOMESH_ENV": "test", "USERS_MAX_PAGE_SIZE": "40"}, {"max_page_size": "30"}, 40),
    ],
)
def test_each_layer_overrides_the_ones_below_it(config_dir: Path, env: dict[str, str], kv: dict[str, str],
                                                 expected: int) -> None:
    settings = load_settings(UsersSettings, "users", env=env, config_dir=config_dir, kv=kv)
    assert settings.max_page_size == expected
    assert settings.log_level == "DEBUG"
    assert settings.server.grace_s == 1.0


def test_a_nested_override_keeps_the_sibling_values_of_lower_layers(config_dir: Path) -> None:
    env = {"PROTOMESH_ENV": "test", "USERS_SERVER__GRACE_S": "2.5"}
    settings = load_settings(UsersSettings, "users", env=env, config_dir=config_dir,
                             kv={"protomesh/config/users/server/drain_s": "0.1"})
    assert settings.server == ServerSettings(grace_s=2.5, drain_s=0.1, port=7001, tags=("blue",))


def test_environment_variables_are_coerced_to_the_field_types(tmp_path: Path) -> None:
    env = {"USERS_DEBUG": "1", "USERS_RATIO": "2", "USERS_OWNERS": "ann, bob", "USERS_DATABASE_PATH": "007",
           "USERS_SERVER__TAGS": "[a, b]", "USERS_NICKNAME": "null"}
    settings = load_settings(UsersSettings, "users", env=env, config_dir=tmp_path)
    assert (settings.debug, settings.ratio, settings.owners) == (True, 2.0, ("ann", "bob"))
    assert settings.database_path == "007"
    assert settings.server.tags == ("a", "b")
    assert settings.nickname is None


def test_consul_variables_are_honoured_and_the_service_variable_wins(tmp_path: Path) -> None:
    env = {"CONSUL_HTTP_ADDR": "10.0.0.1:8500", "CONSUL_HTTP_TOKEN": "s3cret"}
    settings = load_settings(UsersSettings, "users", env=env, config_dir=tmp_path)
    assert (settings.consul.address, settings.consul.token) == ("10.0.0.1:8500", "s3cret")
    env["USERS_CONSUL__ADDRESS"] = "10.0.0.2:8500"
    assert load_settings(UsersSettings, "users", env=env, config_dir=tmp_path).consul.address == "10.0.0.2:8500"


def test_the_consul_token_comes_from_consul_http_token_file_unless_consul_http_token_is_set(tmp_path: Path) -> None:
    token_file = tmp_path / "consul-token"
    token_file.write_text("from-file\n")
    env = {"CONSUL_HTTP_TOKEN_FILE": str(token_file)}
    assert load_settings(UsersSettings, "users", env=env, config_dir=tmp_path).consul.token == "from-file"
    # As Consul's own client: the variable wins over the file, and a file that is not read cannot fail.
    env["CONSUL_HTTP_TOKEN"] = "from-env"
    assert load_settings(UsersSettings, "users", env=env, config_dir=tmp_path).consul.token == "from-env"
    missing = {"CONSUL_HTTP_TOKEN_FILE": str(tmp_path / "nowhere"), "CONSUL_HTTP_TOKEN": "from-env"}
    assert load_settings(UsersSettings, "users", env=missing, config_dir=tmp_path).consul.token == "from-env"
    env = {"CONSUL_HTTP_TOKEN_FILE": str(token_file), "USERS_CONSUL__TOKEN": "own"}
    assert load_settings(UsersSettings, "users", env=env, config_dir=tmp_path).consul.token == "own"


def test_an_unreadable_consul_token_file_fails_naming_the_variable_and_the_path(tmp_path: Path) -> None:
    env = {"CONSUL_HTTP_TOKEN_FILE": str(tmp_path / "nowhere")}
    with pytest.raises(ConfigError, match=r"env CONSUL_HTTP_TOKEN_FILE: cannot read the Consul token from .*nowhere"):
        load_settings(UsersSettings, "users", env=env, config_dir=tmp_path)


def test_the_config_dir_comes_from_protomesh_config_dir(config_dir: Path) -> None:
    settings = load_settings(UsersSettings, "users", env={"PROTOMESH_CONFIG_DIR": str(config_dir)})
    assert settings.max_page_size == 10


def test_empty_files_and_sections_change_nothing(tmp_path: Path) -> None:
    write(tmp_path, "users.yaml", "# nothing yet\n")
    write(tmp_path, "users.local.yaml", "server:\n")
    assert load_settings(UsersSettings, "users", env={}, config_dir=tmp_path) == UsersSettings()


def test_a_secret_in_yaml_is_rejected(tmp_path: Path) -> None:
    write(tmp_path, "users.yaml", "consul:\n  token: oops\n")
    with pytest.raises(ConfigError, match=r"users\.yaml: consul\.token: is a secret, set it through the environment"):
        load_settings(UsersSettings, "users", env={}, config_dir=tmp_path)


def test_a_secret_in_consul_kv_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"consul kv protomesh/config/users/consul/token: consul\.token: is a secret"):
        load_settings(UsersSettings, "users", env={}, config_dir=tmp_path, kv={"consul/token": "oops"})


def test_a_bad_yaml_type_names_the_key_and_the_file(tmp_path: Path) -> None:
    write(tmp_path, "users.yaml", "max_page_size: abc\n")
    with pytest.raises(ConfigError, match=r"users\.yaml: max_page_size: expected int, got 'abc'$"):
        load_settings(UsersSettings, "users", env={}, config_dir=tmp_path)


@pytest.mark.parametrize(
    ("env", "kv", "message"),
    [
        ({"USERS_SERVER__PORT": "eighty"}, {}, "env USERS_SERVER__PORT: server.port: expected int, got 'eighty'"),
        ({}, {"server/grace_s": "slow"},
         "consul kv protomesh/config/users/server/grace_s: server.grace_s: expected float, got 'slow'"),
        ({"USERS_DEBUG": "maybe"}, {}, "env USERS_DEBUG: debug: expected bool, got 'maybe'"),
    ],
)
def test_a_bad_text_value_names_the_key_and_its_layer(tmp_path: Path, env: dict[str, str], kv: dict[str, str],
                                                      message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(UsersSettings, "users", env=env, config_dir=tmp_path, kv=kv)
    assert str(caught.value) == message


def test_a_yaml_bool_is_not_accepted_as_an_int(tmp_path: Path) -> None:
    write(tmp_path, "users.yaml", "max_page_size: true\n")
    with pytest.raises(ConfigError, match="max_page_size: expected int, got True"):
        load_settings(UsersSettings, "users", env={}, config_dir=tmp_path)


@pytest.mark.parametrize(
    ("yaml_text", "env", "message"),
    [
        ("max_pagesize: 5\n", {}, r"users\.yaml: max_pagesize: unknown key"),
        ("server:\n  prot: 1\n", {}, r"users\.yaml: server\.prot: unknown key"),
        ("server: 5\n", {}, r"users\.yaml: server: expected a mapping, got 5"),
        ("", {"USERS_MAX_PAGESIZE": "5"}, r"env USERS_MAX_PAGESIZE: max_pagesize: unknown key"),
        ("", {"USERS_SERVER": "x"}, r"env USERS_SERVER: server: is a section"),
    ],
)
def test_unknown_or_misplaced_keys_are_rejected(tmp_path: Path, yaml_text: str, env: dict[str, str],
                                                message: str) -> None:
    write(tmp_path, "users.yaml", yaml_text)
    with pytest.raises(ConfigError, match=message):
        load_settings(UsersSettings, "users", env=env, config_dir=tmp_path)


def test_a_missing_required_value_names_the_key_and_its_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"database_path: required, .* or STRICT_DATABASE_PATH"):
        load_settings(StrictSettings, "strict", env={}, config_dir=tmp_path)
    settings = load_settings(StrictSettings, "strict", env={"STRICT_DATABASE_PATH": "/tmp/x.db"}, config_dir=tmp_path)
    assert settings.database_path == "/tmp/x.db"


def test_the_seed_plan_merges_the_environment_file_over_the_base_file(config_dir: Path) -> None:
    plan = dict(seed_plan(config_dir, env="test"))
    assert plan == {
        "protomesh/config/users/max_page_size": "20",
        "protomesh/config/users/log_level": "DEBUG",
        "protomesh/config/users/server/grace_s": "1",
        "protomesh/config/users/server/tags": '["blue"]',
        "protomesh/config/users/server/port": "7001",
    }
    seeded = load_settings(UsersSettings, "users", env={}, config_dir=config_dir.parent / "none", kv=plan)
    assert seeded == load_settings(UsersSettings, "users", env={"PROTOMESH_ENV": "test"}, config_dir=config_dir)


def test_security_is_mtls_by_default_and_its_folder_comes_from_the_environment(tmp_path: Path) -> None:
    default = load_settings(UsersSettings, "users", env={}, config_dir=tmp_path)
    given = load_settings(UsersSettings, "users", env={"USERS_SECURITY__IDENTITY_DIR": "/run/identity",
                                                       "USERS_SECURITY__TRUST_DOMAIN": "acme.test"},
                          config_dir=tmp_path)

    assert default.security == SecuritySettings(mode="mtls", identity_dir=None, trust_domain="protomesh.local")
    assert given.security == SecuritySettings(identity_dir=Path("/run/identity"), trust_domain="acme.test")
