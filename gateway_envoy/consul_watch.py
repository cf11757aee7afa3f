"""Watches Consul by blocking queries: the service list, and every service's instances and their health."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from gateway_envoy.catalog import ConsulService, service_from_health
from protomesh._consul import DEFAULT_WAIT, ConsulClient, watch

log = logging.getLogger("gateway_envoy.consul")

# Consul lists itself as a service; it never serves gRPC through the gateway.
IGNORED_SERVICES = frozenset({"consul"})


class CatalogWatcher:
    """Keeps `services` equal to what Consul reports (raw: no last-known-good) and calls on_change after each change.

    One blocking query follows the service list; one per service follows its instances (passing or not,
    so that announced gRPC services are known even while every instance fails). `ready` is set once the
    list and each listed service have been read at least once.
    """

    def __init__(self, consul: ConsulClient, on_change: Callable[[], None], *, wait: str = DEFAULT_WAIT) -> None:
        self._consul = consul
        self._on_change = on_change
        self._wait = wait
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._unread: set[str] | None = None
        self.services: dict[str, ConsulService] = {}
        self.ready = asyncio.Event()

    async def run(self) -> None:
        """Watch until cancelled; per-service watches end with it."""
        try:
            await watch(self._fetch_names, self._on_names, wait=self._wait, what="consul services")
        finally:
            for task in self._tasks.values():
                task.cancel()
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def _fetch_names(self, index: int | None) -> tuple[int, frozenset[str]]:
        new_index, services = await self._consul.raw.catalog.services(index=index, wait=self._wait)
        return int(new_index), frozenset(services or ()) - IGNORED_SERVICES

    async def _on_names(self, names: frozenset[str]) -> None:
        for gone in set(self._tasks) - names:
            self._tasks.pop(gone).cancel()
            self.services.pop(gone, None)
            log.info("service %s left the Consul catalog", gone)
        if self._unread is None:
            self._unread = set(names)
        for name in sorted(names - set(self._tasks)):
            self._tasks[name] = asyncio.create_task(self._watch_service(name), name=f"consul-watch-{name}")
        self._mark_read(None)
        self._on_change()

    async def _watch_service(self, name: str) -> None:
        async def fetch(index: int | None) -> tuple[int, ConsulService | None]:
            new_index, entries = await self._consul.raw.health.service(name, index=index, wait=self._wait)
            return int(new_index), service_from_health(name, entries or ())

        async def on_service(service: ConsulService | None) -> None:
            if service is None:
                self.services.pop(name, None)
            else:
                self.services[name] = service
                log.info("%s: %d passing endpoint(s) serving %s", name, len(service.endpoints),
                         ",".join(service.grpc_services))
            self._mark_read(name)
            self._on_change()

        await watch(fetch, on_service, wait=self._wait, what=f"consul health {name}")

    def _mark_read(self, name: str | None) -> None:
        if self._unread is None:
            return
        if name is not None:
            self._unread.discard(name)
        if not self._unread and not self.ready.is_set():
            log.info("initial Consul state read: %d gRPC service(s)", len(self.services))
            self.ready.set()
