"""Layered service settings (defaults < YAML < env YAML < Consul KV < environment) with hot reload from KV."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Generic

import yaml

from protomesh._settings import (
    ConfigError,
    FieldPath,
    S,
    build,
    mapping_layer,
    text_layer,
)
from protomesh.aio import BackgroundTasks
from protomesh.consul import DEFAULT_WAIT, ConsulClient, watch

log = logging.getLogger("protomesh.config")

# Where each service's live settings live in Consul KV: one key per field path below this.
KV_ROOT = "protomesh/config"
# The folders a service reads its YAML from and keeps relative data paths in; whoever starts the service sets
# them (the local mesh, an image), so the runtime never guesses from where it happens to run.
CONFIG_DIR_ENV = "PROTOMESH_CONFIG_DIR"
STATE_DIR_ENV = "PROTOMESH_STATE_DIR"
# Environment chosen when PROTOMESH_ENV is unset: a developer's machine.
DEFAULT_ENV = "local"
# How long ConfigStore.open waits for Consul before starting without the KV layer (serving must not wait).
DEFAULT_START_TIMEOUT_S = 2.0

# Consul's own variables, honoured like the consul CLI does (a <SERVICE>_CONSUL__* variable still wins).
_CONSUL_ENV = {"CONSUL_HTTP_ADDR": ("consul", "address"), "CONSUL_HTTP_TOKEN": ("consul", "token")}
# The token read from a file (what an orchestrator mounts), as Consul's own client does: CONSUL_HTTP_TOKEN wins.
CONSUL_TOKEN_FILE_ENV = "CONSUL_HTTP_TOKEN_FILE"


def kv_prefix(service: str) -> str:
    return f"{KV_ROOT}/{service}/"


def env_prefix(service: str) -> str:
    return service.upper().replace("-", "_") + "_"


def default_config_dir(env: Mapping[str, str] | None = None) -> Path:
    """PROTOMESH_CONFIG_DIR (the local mesh and compose set it), else ./config: never a search for a checkout."""
    env = os.environ if env is None else env
    return Path(env.get(CONFIG_DIR_ENV) or "config")


def default_state_dir(env: Mapping[str, str] | None = None) -> Path:
    """PROTOMESH_STATE_DIR, where relative data paths (databases) live; else the working directory."""
    env = os.environ if env is None else env
    return Path(env.get(STATE_DIR_ENV) or ".")


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _yaml_file(path: Path) -> object:
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{_display(path)}: not valid YAML: {exc}") from exc


def _consul_entries(settings_type: type, env: Mapping[str, str]) -> list[tuple[FieldPath, str, str]]:
    if "consul" not in getattr(settings_type, "__dataclass_fields__", {}):
        return []
    entries: list[tuple[FieldPath, str, str]] = [(path, env[name], f"env {name}") for name, path in
                                                 _CONSUL_ENV.items() if name in env]
    token_file = env.get(CONSUL_TOKEN_FILE_ENV)
    if token_file and "CONSUL_HTTP_TOKEN" not in env:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"env {CONSUL_TOKEN_FILE_ENV}: cannot read the Consul token from {token_file}: "
                              f"{exc.strerror or exc}") from None
        entries.append((("consul", "token"), token, f"env {CONSUL_TOKEN_FILE_ENV} ({token_file})"))
    return entries


def _env_entries(service: str, settings_type: type, env: Mapping[str, str]) -> list[tuple[FieldPath, str, str]]:
    prefix = env_prefix(service)
    entries = _consul_entries(settings_type, env)
    for name in sorted(env):
        if name.startswith(prefix) and len(name) > len(prefix):
            path = tuple(part.lower() for part in name[len(prefix):].split("__"))
            entries.append((path, env[name], f"env {name}"))
    return entries


def _kv_entries(service: str, kv: Mapping[str, str]) -> list[tuple[FieldPath, str, str]]:
    prefix = kv_prefix(service)
    entries: list[tuple[FieldPath, str, str]] = []
    for key in sorted(kv):
        relative = key.removeprefix(prefix).strip("/")
        if relative:
            entries.append((tuple(relative.split("/")), kv[key], f"consul kv {prefix}{relative}"))
    return entries


def load_settings(settings_type: type[S], service: str, *, env: Mapping[str, str] | None = None,
                  config_dir: Path | None = None, kv: Mapping[str, str] | None = None) -> S:
    """The settings from every layer, lowest first: dataclass defaults, config/<service>.yaml,
    config/<service>.<env>.yaml, Consul KV (keys relative to protomesh/config/<service>/ or full), environment.

    >>> settings = load_settings(UsersSettings, "users", env={"USERS_MAX_PAGE_SIZE": "50"})
    """
    env = os.environ if env is None else env
    folder = config_dir or default_config_dir(env)
    values: dict[FieldPath, object] = {}
    for path in (folder / f"{service}.yaml", folder / f"{service}.{env.get('PROTOMESH_ENV') or DEFAULT_ENV}.yaml"):
        if path.is_file():
            values.update(mapping_layer(settings_type, _yaml_file(path), _display(path)))
    values.update(text_layer(settings_type, _kv_entries(service, kv or {}), secrets_allowed=False))
    values.update(text_layer(settings_type, _env_entries(service, settings_type, env), secrets_allowed=True))
    return build(settings_type, values, env_prefix=env_prefix(service))


Subscriber = Callable[[Any], Awaitable[None] | None]


class ConfigStore(Generic[S]):
    """Live settings of one service: re-layered whenever its Consul KV prefix changes.

    >>> store = await ConfigStore.open(UsersSettings, "users", consul)
    >>> store.subscribe(lambda settings: log.info("page size now %d", settings.max_page_size))
    """

    def __init__(self, settings_type: type[S], service: str, consul: ConsulClient, current: S, *,
                 env: Mapping[str, str], config_dir: Path | None) -> None:
        self._type = settings_type
        self._service = service
        self._consul = consul
        self._current = current
        self._env = env
        self._config_dir = config_dir
        self._kv: Mapping[str, str] | None = None
        self._subscribers: list[Callable[[S], Awaitable[None] | None]] = []
        self._follower = BackgroundTasks()

    @classmethod
    async def open(cls, settings_type: type[S], service: str, consul: ConsulClient, *,
                   env: Mapping[str, str] | None = None, config_dir: Path | None = None,
                   wait: str = DEFAULT_WAIT) -> ConfigStore[S]:
        """Load the settings (ConfigError on bad files/env) and start following Consul KV.

        Consul down or its KV layer invalid at start: start without that layer (logged) and keep watching.
        """
        env = dict(os.environ if env is None else env)
        static = await asyncio.to_thread(load_settings, settings_type, service, env=env, config_dir=config_dir)
        store = cls(settings_type, service, consul, static, env=env, config_dir=config_dir)
        try:
            async with asyncio.timeout(DEFAULT_START_TIMEOUT_S):
                _, kv = await consul.kv_prefix(kv_prefix(service), wait=wait)
        except Exception as exc:  # Consul unreachable must not stop a service from starting
            log.warning("config %s: Consul KV unavailable (%r); starting without it, will retry", service, exc)
        else:
            await store._adopt(kv)
        store._follower.start(store._follow(wait), name=f"protomesh-config-{service}")
        return store

    @property
    def current(self) -> S:
        return self._current

    def subscribe(self, callback: Callable[[S], Awaitable[None] | None]) -> None:
        """Call callback(new_settings) after each applied change (sync or async callbacks)."""
        self._subscribers.append(callback)

    async def close(self) -> None:
        await self._follower.stop()

    async def _follow(self, wait: str) -> None:
        prefix = kv_prefix(self._service)

        async def fetch(index: int | None) -> tuple[int, dict[str, str]]:
            return await self._consul.kv_prefix(prefix, index=index, wait=wait)

        await watch(fetch, self._on_kv, wait=wait, what=f"config {self._service}")

    async def _adopt(self, kv: Mapping[str, str]) -> bool:
        """Re-layer with this KV snapshot; True when the settings changed, False when same or rejected."""
        if kv == self._kv:
            return False
        self._kv = kv
        try:
            new = await asyncio.to_thread(load_settings, self._type, self._service, env=self._env,
                                          config_dir=self._config_dir, kv=kv)
        except ConfigError as exc:
            log.error("config %s: rejected change, keeping the last good settings: %s", self._service, exc)
            return False
        if new == self._current:
            return False
        self._current = new
        log.info("config %s: applied new settings from Consul KV", self._service)
        return True

    async def _on_kv(self, kv: dict[str, str]) -> None:
        if await self._adopt(kv):
            await self._notify(self._current)

    async def _notify(self, settings: S) -> None:
        for callback in list(self._subscribers):
            try:
                result = callback(settings)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("config %s: subscriber %r failed", self._service, callback)


def _leaves(node: object, prefix: FieldPath = ()) -> list[tuple[FieldPath, object]]:
    if isinstance(node, Mapping):
        return [leaf for key, value in node.items() for leaf in _leaves(value, (*prefix, str(key)))]
    return [(prefix, node)] if prefix else []


def _merge(base: object, over: object) -> object:
    if isinstance(base, Mapping) and isinstance(over, Mapping):
        return {**base, **{key: _merge(base.get(key), value) for key, value in over.items()}}
    return over


def seed_plan(config_dir: Path, services: Sequence[str] | None = None, *,
              env: str | None = None) -> list[tuple[str, str]]:
    """The (KV key, text value) pairs seed_config writes: config/<service>.yaml merged with <service>.<env>.yaml.

    env defaults to PROTOMESH_ENV or "local": the KV layer sits above the env file, so seeding the bare base
    file would hide the environment's own values.
    """
    env = env or os.environ.get("PROTOMESH_ENV") or DEFAULT_ENV
    names = services or sorted(p.stem for p in config_dir.glob("*.yaml") if "." not in p.stem)
    plan = []
    for service in names:
        base, overlay = config_dir / f"{service}.yaml", config_dir / f"{service}.{env}.yaml"
        if not base.is_file():
            raise ConfigError(f"{_display(base)}: no such config file")
        overrides = _yaml_file(overlay) if overlay.is_file() else None
        for path, value in _leaves(_merge(_yaml_file(base) or {}, overrides or {})):
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            plan.append((kv_prefix(service) + "/".join(path), text))
    return plan


async def seed_config(consul: ConsulClient, config_dir: Path, services: Sequence[str] | None = None, *,
                      env: str | None = None) -> int:
    """Write every leaf of each service's YAML config into Consul KV (see seed_plan); returns the key count.

    >>> await seed_config(consul, Path("config"), ["users"], env="local")
    """
    plan = await asyncio.to_thread(seed_plan, config_dir, services, env=env)
    for key, text in plan:
        await consul.kv_put(key, text)
    return len(plan)
