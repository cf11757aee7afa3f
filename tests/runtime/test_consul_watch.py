"""The blocking-query watch helper and ConsulClient: index resets, backoff, timeouts and a restarted agent."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from localmesh.testing import ConsulAgent
from protomesh._settings import ConsulSettings
from protomesh.aio import poll_until
from protomesh.consul import ConsulClient, blocking_timeout, watch


class ScriptedFetch:
    """A fetch that plays back (index, value) answers or exceptions and records the index it was asked with."""

    def __init__(self, answers: list[tuple[int, str] | Exception]) -> None:
        self.answers = answers
        self.asked: list[int | None] = []

    async def __call__(self, index: int | None) -> tuple[int, str]:
        self.asked.append(index)
        if not self.answers:
            await asyncio.Event().wait()  # block like a long poll with nothing new
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


@contextlib.asynccontextmanager
async def watching(fetch: Callable[[int | None], Awaitable[tuple[int, Any]]], seen: list[object],
                   **options: str) -> AsyncIterator[None]:
    async def on_change(value: object) -> None:
        seen.append(value)

    task = asyncio.create_task(watch(fetch, on_change, **options))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_the_index_is_passed_on_and_reset_when_it_goes_backwards() -> None:
    fetch = ScriptedFetch([(10, "a"), (12, "b"), (3, "c"), (4, "d")])
    seen: list[object] = []
    async with watching(fetch, seen):
        await poll_until(lambda: len(fetch.asked) == 5, timeout=2, what="five queries")
    assert fetch.asked == [None, 10, 12, None, 4]
    assert seen == ["a", "b", "c", "d"]


async def test_errors_reset_the_index_and_back_off() -> None:
    fetch = ScriptedFetch([(10, "a"), ConnectionError("agent gone"), ConnectionError("still gone"), (2, "a")])
    seen: list[object] = []
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with watching(fetch, seen):
        await poll_until(lambda: len(fetch.asked) == 5, timeout=3, what="five queries")
    assert fetch.asked == [None, 10, None, None, 2]
    assert loop.time() - started >= 0.2, "two failures must back off (~0.1 s then ~0.2 s)"
    assert seen == ["a"], "an unchanged value after recovery is not delivered again"


async def test_index_zero_is_never_used_for_blocking() -> None:
    fetch = ScriptedFetch([(0, "a"), (0, "a")])
    async with watching(fetch, []):
        await poll_until(lambda: len(fetch.asked) == 3, timeout=2, what="three queries")
    assert fetch.asked == [None, 1, 1]


async def test_a_failing_change_handler_does_not_end_the_watch() -> None:
    fetch = ScriptedFetch([(1, "a"), (2, "b")])
    seen: list[object] = []

    async def on_change(value: object) -> None:
        seen.append(value)
        if value == "a":
            raise RuntimeError("handler bug")

    task = asyncio.create_task(watch(fetch, on_change))
    await poll_until(lambda: seen == ["a", "b"], timeout=2, what="both values")
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def test_the_client_side_timeout_is_longer_than_the_wait_and_its_jitter() -> None:
    assert blocking_timeout("30s") > 30 + 30 / 16
    assert blocking_timeout("500ms") > 0.5
    with pytest.raises(ValueError, match="longer than"):
        blocking_timeout("10m")
    with pytest.raises(ValueError, match="not a Consul wait duration"):
        blocking_timeout("soon")


def test_the_client_must_be_created_inside_a_running_loop() -> None:
    with pytest.raises(RuntimeError):
        ConsulClient.from_settings(ConsulSettings())


async def test_the_watch_follows_a_restarted_agent_from_its_new_smaller_index(consul_agent: ConsulAgent) -> None:
    for n in range(30):  # push the index well above what a fresh agent will have
        await asyncio.to_thread(consul_agent.put, f"/v1/kv/filler/{n}", "x")
    await asyncio.to_thread(consul_agent.put, "/v1/kv/watched/key", "before")
    asked: list[int | None] = []
    seen: list[object] = []
    async with ConsulClient.from_settings(ConsulSettings(address=consul_agent.address)) as consul:
        async def fetch(index: int | None) -> tuple[int, dict[str, str]]:
            asked.append(index)
            return await consul.kv_prefix("watched/", index=index, wait="5s")

        async with watching(fetch, seen, wait="5s"):
            await poll_until(lambda: seen == [{"watched/key": "before"}], timeout=5, what="first value")
            high = max(i for i in asked if i is not None) if any(asked) else 0
            await asyncio.to_thread(consul_agent.restart)
            await asyncio.to_thread(consul_agent.put, "/v1/kv/watched/key", "after")
            took = await poll_until(lambda: seen[-1] == {"watched/key": "after"}, timeout=5,
                                    what="value written after the restart")
    assert took < 3.0
    reset_at = asked.index(None, 1)
    assert all(i is None or i < high for i in asked[reset_at:]), "the old, higher index was used after the reset"


@pytest.mark.parametrize(("address", "expected"), [("127.0.0.1:8600", "127.0.0.1:8600"),
                                                   ("http://consul.local:8501/", "consul.local:8501"),
                                                   ("localhost", "localhost:8500")])
async def test_the_client_accepts_consul_style_addresses(address: str, expected: str) -> None:
    async with ConsulClient.from_settings(ConsulSettings(address=address)) as consul:
        assert consul.address == expected


async def test_the_token_from_the_settings_wins_over_py_consuls_own_env_lookup(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", "from-env")
    async with ConsulClient.from_settings(ConsulSettings(token="from-settings")) as consul:
        assert consul.raw.token == "from-settings"
