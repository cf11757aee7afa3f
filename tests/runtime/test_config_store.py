"""ConfigStore against a real Consul dev agent: hot reload, rejected values, a late Consul and seeding."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from localmesh.testing import ConsulAgent
from protomesh._config import ConfigStore, seed_config
from protomesh._settings import ConsulSettings, ServiceSettings
from protomesh.aio import poll_until
from protomesh.consul import ConsulClient

log = logging.getLogger(__name__)

# A KV change must be applied and subscribers told within this long (the brief's bar).
APPLY_BUDGET_S = 1.0


@dataclass(frozen=True)
class UsersSettings(ServiceSettings):
    max_page_size: int = 100


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "users.yaml").write_text("max_page_size: 10\nserver:\n  grace_s: 1\n")
    return folder


async def open_store(agent: ConsulAgent, config_dir: Path) -> tuple[ConsulClient, ConfigStore[UsersSettings]]:
    consul = ConsulClient.from_settings(ConsulSettings(address=agent.address))
    store = await ConfigStore.open(UsersSettings, "users", consul, env={}, config_dir=config_dir, wait="5s")
    return consul, store


async def close_store(consul: ConsulClient, store: ConfigStore[UsersSettings]) -> None:
    await store.close()
    await consul.close()


async def test_a_kv_change_is_applied_and_subscribers_are_told_within_one_second(
        consul_agent: ConsulAgent, config_dir: Path) -> None:
    consul, store = await open_store(consul_agent, config_dir)
    try:
        assert store.current.max_page_size == 10
        seen: list[UsersSettings] = []
        told = asyncio.Event()

        async def on_change(settings: UsersSettings) -> None:
            seen.append(settings)
            told.set()

        store.subscribe(on_change)
        store.subscribe(lambda settings: None)  # plain callbacks are fine too
        started = time.monotonic()
        await asyncio.to_thread(consul_agent.put, "/v1/kv/protomesh/config/users/max_page_size", "50")
        await asyncio.wait_for(told.wait(), timeout=5)
        took = time.monotonic() - started
        log.info("KV change -> applied and subscriber notified took %.3fs", took)
        assert took < APPLY_BUDGET_S
        assert store.current.max_page_size == 50
        assert seen == [store.current]
        assert store.current.server.grace_s == 1.0  # the file layer below still applies
    finally:
        await close_store(consul, store)


async def test_an_invalid_kv_value_is_rejected_and_the_last_good_settings_stay(
        consul_agent: ConsulAgent, config_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    consul, store = await open_store(consul_agent, config_dir)
    try:
        seen: list[UsersSettings] = []
        store.subscribe(seen.append)
        await asyncio.to_thread(consul_agent.put, "/v1/kv/protomesh/config/users/max_page_size", "50")
        await poll_until(lambda: store.current.max_page_size == 50, timeout=5, what="first change")
        await asyncio.to_thread(consul_agent.put, "/v1/kv/protomesh/config/users/max_page_size", "lots")
        await poll_until(lambda: "rejected change" in caplog.text, timeout=5, what="rejection logged")
        assert store.current.max_page_size == 50
        assert "protomesh/config/users/max_page_size: max_page_size: expected int, got 'lots'" in caplog.text
        await asyncio.to_thread(consul_agent.put, "/v1/kv/protomesh/config/users/max_page_size", "70")
        await poll_until(lambda: store.current.max_page_size == 70, timeout=5, what="recovery")
        assert [s.max_page_size for s in seen] == [50, 70]
    finally:
        await close_store(consul, store)


async def test_a_service_starts_without_consul_and_applies_kv_once_consul_is_up(
        consul_agent: ConsulAgent, config_dir: Path) -> None:
    await asyncio.to_thread(consul_agent.stop)
    started = time.monotonic()
    consul, store = await open_store(consul_agent, config_dir)
    try:
        assert time.monotonic() - started < 3.0, "opening must not wait long for a dead Consul"
        assert store.current.max_page_size == 10
        await asyncio.to_thread(consul_agent.start)
        await asyncio.to_thread(consul_agent.put, "/v1/kv/protomesh/config/users/max_page_size", "60")
        took = await poll_until(lambda: store.current.max_page_size == 60, timeout=10, what="KV applied")
        log.info("Consul up + KV put -> applied took %.2fs", took)
    finally:
        await close_store(consul, store)


async def test_seeded_config_is_what_the_store_loads(consul_agent: ConsulAgent, config_dir: Path) -> None:
    (config_dir / "users.local.yaml").write_text("max_page_size: 15\n")
    async with ConsulClient.from_settings(ConsulSettings(address=consul_agent.address)) as consul:
        written = await seed_config(consul, config_dir, env="local")
    assert written == 2
    assert consul_agent.get("/v1/kv/protomesh/config/users/max_page_size?raw") == 15
    consul, store = await open_store(consul_agent, config_dir.parent / "empty")
    try:
        assert store.current.max_page_size == 15
        assert store.current.server.grace_s == 1.0
    finally:
        await close_store(consul, store)


async def test_a_bad_config_file_fails_the_start(consul_agent: ConsulAgent, config_dir: Path) -> None:
    (config_dir / "users.yaml").write_text("max_page_size: many\n")
    async with ConsulClient.from_settings(ConsulSettings(address=consul_agent.address)) as consul:
        with pytest.raises(ValueError, match="max_page_size: expected int, got 'many'"):
            await ConfigStore.open(UsersSettings, "users", consul, env={}, config_dir=config_dir)
