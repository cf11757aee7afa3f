"""The one place that talks to Consul's HTTP API: a thin async client and the blocking-query watch loop.

    async with ConsulClient.from_settings(ConsulSettings(address="127.0.0.1:8500")) as consul:
        index, instances = await consul.healthy_instances("users")
        index, body = await consul.get_indexed("/v1/health/state/any", index=index, wait="30s")
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import warnings
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

import consul.aio
from consul.base import ConsulException

from protomesh._settings import ConsulSettings
from protomesh.aio import Backoff

log = logging.getLogger("protomesh.consul")

T = TypeVar("T")

# Consul's blocking-query wait: idle watches cost one request per 30 s, and a request stuck on a dead
# connection is abandoned after at most this long (Consul's own default, 5 min, is far too long).
DEFAULT_WAIT = "30s"
# Longest wait a watch accepts; the HTTP session timeout below must stay above it.
MAX_WAIT_S = 60.0
# Backstop on every HTTP request of the aiohttp session: above MAX_WAIT_S + Consul's wait/16 jitter, because
# py-consul's asyncio client does not add the blocking wait to its HTTP timeout.
DEFAULT_HTTP_TIMEOUT_S = 75.0
# Slack on top of wait + wait/16 before a blocking query is given up client-side (slow, loaded machines).
DEFAULT_TIMEOUT_MARGIN_S = 2.0
# Non-blocking calls go to the local agent: anything slower than this means it is stuck or gone.
DEFAULT_REQUEST_TIMEOUT_S = 5.0
# Retry delays after an error: start fast (an agent restart takes ~1-2 s), cap low so recovery is quick.
DEFAULT_BACKOFF_INITIAL_S = 0.1
DEFAULT_BACKOFF_MAX_S = 2.0
# A query that comes back unchanged this quickly is not blocking; pausing avoids a hot loop.
DEFAULT_MIN_INTERVAL_S = 0.05

_WAIT_RE = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m)$")
_WAIT_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0}


@dataclass(frozen=True)
class ServiceInstance:
    """One registered instance of a service as the health endpoint reports it."""

    id: str
    service: str
    address: str
    port: int
    tags: tuple[str, ...] = ()
    meta: Mapping[str, str] = field(default_factory=dict)

    @property
    def target(self) -> str:
        return f"{self.address}:{self.port}"


def wait_seconds(wait: str) -> float:
    """Seconds of a Consul duration such as "30s", "500ms" or "1m"."""
    match = _WAIT_RE.match(wait)
    if match is None:
        raise ValueError(f"not a Consul wait duration: {wait!r} (use e.g. '30s')")
    return float(match.group(1)) * _WAIT_UNITS[match.group(2)]


def blocking_timeout(wait: str) -> float:
    """The client-side limit for one blocking query: wait plus Consul's up-to-wait/16 jitter plus margin."""
    seconds = wait_seconds(wait)
    if seconds > MAX_WAIT_S:
        raise ValueError(f"wait {wait!r} is longer than {MAX_WAIT_S:.0f}s, the most the HTTP timeout allows")
    return seconds + seconds / 16 + DEFAULT_TIMEOUT_MARGIN_S


def watch_backoff() -> Backoff:
    """The pause between failed queries of a watch: an agent restart takes ~1-2 s, so retry fast, cap low."""
    return Backoff(initial_s=DEFAULT_BACKOFF_INITIAL_S, max_s=DEFAULT_BACKOFF_MAX_S)


def _split_address(address: str) -> tuple[str, str, int]:
    scheme, _, rest = address.rpartition("://")
    host, _, port = rest.rstrip("/").partition(":")
    return scheme or "http", host or "127.0.0.1", int(port) if port else 8500


class ConsulClient:
    """A thin async wrapper around py-consul's consul.aio.Consul with typed helpers and timeouts.

    >>> consul = ConsulClient.from_settings(settings.consul)   # inside the running loop
    >>> index, instances = await consul.healthy_instances("users")
    """

    def __init__(self, raw: consul.aio.Consul, *, address: str) -> None:
        self.raw = raw
        self.address = address

    @classmethod
    def from_settings(cls, settings: ConsulSettings) -> ConsulClient:
        asyncio.get_running_loop()  # aiohttp's session must belong to the loop that uses it
        scheme, host, port = _split_address(settings.address)
        with warnings.catch_warnings():
            # py-consul 1.8 passes aiohttp's deprecated verify_ssl/ssl_context arguments; harmless here.
            warnings.filterwarnings("ignore", message=r"(verify_ssl|ssl_context) is deprecated",
                                    category=DeprecationWarning)
            raw = consul.aio.Consul(host=host, port=port, scheme=scheme, connections_timeout=DEFAULT_HTTP_TIMEOUT_S)
        # py-consul lets CONSUL_HTTP_TOKEN beat an explicit token; the settings layers already decided which wins.
        raw.token = settings.token or None
        return cls(raw, address=f"{host}:{port}")

    async def close(self) -> None:
        await self.raw.close()

    async def __aenter__(self) -> ConsulClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def kv_prefix(self, prefix: str, *, index: int | None = None,
                        wait: str = DEFAULT_WAIT) -> tuple[int, dict[str, str]]:
        """Every key under prefix (folders skipped) with its value as text; blocks when index is given."""
        async with asyncio.timeout(blocking_timeout(wait)):
            new_index, entries = await self.raw.kv.get(prefix, recurse=True, index=index, wait=wait)
        values = {}
        for entry in entries or ():
            if not entry["Key"].endswith("/"):
                value = entry.get("Value")
                values[entry["Key"]] = value.decode() if isinstance(value, bytes) else ""
        return int(new_index), values

    async def kv_get(self, key: str, *, index: int | None = None,
                     wait: str = DEFAULT_WAIT) -> tuple[int, str | None]:
        """One key's value as text (None when absent); blocks until it may have changed when index is given."""
        async with asyncio.timeout(blocking_timeout(wait)):
            new_index, entry = await self.raw.kv.get(key, index=index, wait=wait)
        value = entry.get("Value") if entry else None
        return int(new_index or 0), value.decode() if isinstance(value, bytes) else None

    async def get_indexed(self, path: str, *, index: int | None = None, wait: str | None = None,
                          timeout_s: float | None = None) -> tuple[int, bytes]:
        """GET an HTTP API path as Consul sent it (uncompressed, not decoded): its X-Consul-Index and body.

        With index, it blocks until the index moves past it or `wait` passes (a blocking query); a 404
        reads as index 0 and body `null`. For endpoints py-consul does not wrap, or answers too large to
        decode whole on every change.
        """
        params = [("index", str(index)), ("wait", wait or DEFAULT_WAIT)] if index is not None else []
        limit = timeout_s or (blocking_timeout(params[1][1]) if params else DEFAULT_REQUEST_TIMEOUT_S)
        headers = {**self.raw.prepare_headers(), **_UNCOMPRESSED}
        async with asyncio.timeout(limit):
            answer: tuple[int, bytes] = await self.raw.http.get(_indexed_body, path, params=params, raw=True,
                                                                headers=headers)
        return answer

    async def kv_put(self, key: str, value: str) -> None:
        async with asyncio.timeout(DEFAULT_REQUEST_TIMEOUT_S):
            await self.raw.kv.put(key, value)

    async def healthy_instances(self, service: str, *, index: int | None = None,
                                wait: str = DEFAULT_WAIT) -> tuple[int, list[ServiceInstance]]:
        """The instances whose checks all pass; blocks until that list may have changed when index is given."""
        async with asyncio.timeout(blocking_timeout(wait)):
            new_index, entries = await self.raw.health.service(service, passing=True, index=index, wait=wait)
        return int(new_index), [_instance(entry) for entry in entries or ()]

    async def register(self, **body: Any) -> None:
        """Register a service instance with the local agent (py-consul's agent.service.register arguments)."""
        async with asyncio.timeout(DEFAULT_REQUEST_TIMEOUT_S):
            await self.raw.agent.service.register(**body)

    async def deregister(self, instance_id: str) -> None:
        async with asyncio.timeout(DEFAULT_REQUEST_TIMEOUT_S):
            await self.raw.agent.service.deregister(instance_id)

    async def agent_has(self, instance_id: str) -> bool:
        """Whether the local agent lists this service instance (a restarted dev agent forgets it)."""
        # Not py-consul's agent.service_definition(): it sends no token, which ACLs answer with 403.
        async with asyncio.timeout(DEFAULT_REQUEST_TIMEOUT_S):
            found: bool = await self.raw.http.get(_found, f"/v1/agent/service/{instance_id}",
                                                  headers=self.raw.prepare_headers())
        return found


# Consul gzips an answer when asked to, and aiohttp asks by default: next to Consul that only costs CPU on both
# sides (3,000 checks take Consul twice as long to answer compressed).
_UNCOMPRESSED = {"Accept-Encoding": "identity"}


def _found(response: Any) -> bool:
    """py-consul's response callback for a lookup: True on 200, False on 404, ConsulException otherwise."""
    if response.code in (200, 404):
        return bool(response.code == 200)
    raise ConsulException(f"HTTP {response.code}: {response.body[:200]!r}")


def _indexed_body(response: Any) -> tuple[int, bytes]:
    """py-consul's response callback for get_indexed: X-Consul-Index and the raw body; a 404 reads as null."""
    if response.code == 404:
        return 0, b"null"
    if response.code != 200:
        raise ConsulException(f"HTTP {response.code}: {response.body[:200]!r}")
    return int(response.headers["X-Consul-Index"]), response.body


def _instance(entry: Mapping[str, Any]) -> ServiceInstance:
    svc = entry["Service"]
    return ServiceInstance(
        id=svc["ID"], service=svc["Service"], address=svc.get("Address") or entry["Node"]["Address"],
        port=int(svc["Port"]), tags=tuple(svc.get("Tags") or ()), meta=dict(svc.get("Meta") or {}),
    )


async def watch(fetch: Callable[[int | None], Awaitable[tuple[int, T]]],
                on_change: Callable[[T], Awaitable[None]], *, wait: str = DEFAULT_WAIT,
                what: str = "consul watch") -> NoReturn:
    """Run a blocking-query loop until cancelled; on_change gets the first result and every different one.

    fetch(index) must issue the query with the same `wait` (None = answer at once). The index is reset
    to None after an error or when it goes backwards (a restarted -dev agent starts its index over);
    errors back off exponentially and never end the loop.

    >>> task = asyncio.create_task(watch(lambda i: consul.kv_prefix("protomesh/", index=i, wait="30s"),
    ...                                  on_value, wait="30s"))
    """
    limit = blocking_timeout(wait)
    index: int | None = None
    last: object = _UNSET
    backoff = watch_backoff()
    while True:
        started = time.monotonic()
        try:
            async with asyncio.timeout(limit):
                new_index, value = await fetch(index)
        except Exception as exc:  # any failure (agent down, timeout, bad answer) means: start over
            delay = backoff.next_delay()
            _log_failure(what, backoff.failures, exc)
            index = None
            await asyncio.sleep(delay)
            continue
        if backoff.failures:
            log.info("%s: Consul reachable again after %d failed attempts", what, backoff.failures)
            backoff.reset()
        previous, index = index, _next_index(what, index, new_index)
        if value != last:
            last = value
            await _deliver(what, on_change, value)
        elif previous == new_index and time.monotonic() - started < DEFAULT_MIN_INTERVAL_S:
            await asyncio.sleep(DEFAULT_MIN_INTERVAL_S)


_UNSET = object()


def _next_index(what: str, index: int | None, new_index: int) -> int | None:
    new_index = max(new_index, 1)  # Consul docs: an index of 0 is a Consul bug; blocking on it never blocks
    if index is not None and new_index < index:
        log.info("%s: Consul index went backwards (%d -> %d), agent restarted? re-reading", what, index, new_index)
        return None
    return new_index


def _log_failure(what: str, failures: int, exc: Exception) -> None:
    level = logging.WARNING if failures == 1 else logging.DEBUG
    log.log(level, "%s: Consul query failed (attempt %d), retrying: %r", what, failures, exc)


async def _deliver(what: str, on_change: Callable[[T], Awaitable[None]], value: T) -> None:
    try:
        await on_change(value)
    except Exception:
        log.exception("%s: change handler failed; the watch goes on", what)


__all__ = [
    "DEFAULT_BACKOFF_INITIAL_S",
    "DEFAULT_REQUEST_TIMEOUT_S",
    "DEFAULT_WAIT",
    "ConsulClient",
    "ServiceInstance",
    "blocking_timeout",
    "wait_seconds",
    "watch",
    "watch_backoff",
]
