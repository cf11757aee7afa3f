"""Watches Consul with one blocking query on every health check and re-reads only the services whose checks changed."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from gateway_envoy.catalog import ConsulService, service_from_health
from gateway_envoy.consul_checks import CheckRow, CheckRows, changed_services, join_checks
from protomesh.consul import DEFAULT_WAIT, ConsulClient, wait_seconds, watch

log = logging.getLogger("gateway_envoy.consul")

# Consul lists itself as a service; it never serves gRPC through the gateway.
IGNORED_SERVICES = frozenset({"consul"})
# Reads in flight at once (one health endpoint per changed service, or one node dump per node): enough to
# overlap round trips, far below Consul's limit of concurrent connections per client (200 by default).
DEFAULT_READ_CONCURRENCY = 8
# Above this many changed services one full read (every node's services: ~0.2 s for 3,000 instances) is
# cheaper than reading each one's health endpoint (~2 ms each).
FULL_READ_ABOVE = 64
# The blocking query waits this share of `wait`, so the reads that follow a change arriving at the very end
# of a wait still fit in the watch's timeout (wait + wait/16 + a 2 s margin).
QUERY_WAIT_SHARE = 0.8
# Changes that touch no check (a re-registration with the same checks that only changed Meta) do not wake the
# check watch; a full read this often catches them.
DEFAULT_RESYNC_S = 300.0
# Changed services named one by one in the log; a larger change is logged as a count.
LOGGED_CHANGES = 10


@dataclass(frozen=True)
class _Read:
    """The check rows one pass read, the gRPC services built from them, and the resync period it belongs to."""

    rows: frozenset[CheckRow]
    services: Mapping[str, ConsulService]
    epoch: int


class CatalogWatcher:
    """Keeps `services` equal to what Consul reports (raw: no last-known-good) and calls on_change after each change.

    One blocking query follows every health check (`/v1/health/state/any`): one connection and one index however
    many services there are. Its first answer, and the first after an error or an index reset, leads to a full
    read: each node's services joined with the checks. Later answers are compared with the previous one and only
    services whose checks (or whose node's checks) changed are read again, from their health endpoint, a few at a
    time. Registrations and deregistrations always add or remove checks; `resync_s` bounds how long a change
    touching no check can go unseen. Instances count whether passing or not, so announced gRPC services are known
    while every instance fails; endpoints are the passing ones. `ready` is set once the initial state is read.
    """

    def __init__(self, consul: ConsulClient, on_change: Callable[[], None], *, wait: str = DEFAULT_WAIT,
                 read_concurrency: int = DEFAULT_READ_CONCURRENCY, resync_s: float = DEFAULT_RESYNC_S) -> None:
        self._consul = consul
        self._on_change = on_change
        self._wait = wait
        self._query_wait = f"{round(wait_seconds(wait) * QUERY_WAIT_SHARE * 1000)}ms"
        self._reads = asyncio.Semaphore(read_concurrency)
        self._resync_s = resync_s
        self._last = _Read(frozenset(), {}, -1)
        self._rows = CheckRows(IGNORED_SERVICES)
        self._full_read_due = True
        self.services: dict[str, ConsulService] = {}
        self.ready = asyncio.Event()
        # When the blocking query's last answer arrived (time.time()) and its index: what on_change reports.
        self.answered_at: float | None = None
        self.answered_index: int | None = None

    async def run(self) -> None:
        """Watch until cancelled."""
        await watch(self._fetch, self._commit, wait=self._wait, what="consul health checks")

    async def _fetch(self, index: int | None) -> tuple[int, Mapping[str, ConsulService]]:
        """Block until a check changes, then read what changed; the watch delivers the services when they differ."""
        if index is None:  # the first read, or the watch starts over (error, index went backwards)
            self._full_read_due = True
        read_at, body = await self._consul.get_indexed("/v1/health/state/any", index=index, wait=self._query_wait)
        self.answered_at, self.answered_index = time.time(), read_at
        rows = self._rows.read(body)
        epoch = int(time.monotonic() // self._resync_s)
        changed = changed_services(self._last.rows, rows)
        if self._full_read_due or epoch != self._last.epoch or len(changed) > FULL_READ_ABOVE:
            services = await self._read_all(rows, read_at)
            self._full_read_due = False
        else:
            services = await self._reread(self._last.services, changed)
        self._last = _Read(rows, services, epoch)
        return read_at, services

    async def _read_all(self, rows: frozenset[CheckRow], read_at: int) -> Mapping[str, ConsulService]:
        """Every node's services joined with the check rows read at index `read_at`."""
        started = time.perf_counter()
        _, nodes = await self._read("/v1/catalog/nodes")
        answers = await asyncio.gather(*(self._read(f"/v1/catalog/node/{node['Node']}") for node in nodes or ()))
        dumps = [dump for _, dump in answers]
        entries, newer = join_checks(dumps, rows, read_at=read_at, ignored=IGNORED_SERVICES)
        joined = {name: service for name, instances in entries.items()
                  if (service := service_from_health(name, instances)) is not None}
        services = await self._reread(joined, newer)  # changed while the nodes were read: their checks may lag
        log.info("read every Consul node (%d): %d gRPC service(s), %d instance(s) in %.0f ms", len(dumps),
                 len(services), sum(map(len, entries.values())), (time.perf_counter() - started) * 1000)
        return services

    async def _reread(self, services: Mapping[str, ConsulService],
                      names: Collection[str]) -> Mapping[str, ConsulService]:
        """services with those named read again from their health endpoint (dropped when no longer gRPC)."""
        if not names:
            return services
        updated, names = dict(services), list(names)
        answers = await asyncio.gather(*(self._read(f"/v1/health/service/{name}") for name in names))
        for name, (_, entries) in zip(names, answers, strict=True):
            service = service_from_health(name, entries or ())
            if service is None:
                updated.pop(name, None)
            else:
                updated[name] = service
        return updated

    async def _read(self, path: str) -> tuple[int, Any]:
        """One non-blocking read, decoded, at most `read_concurrency` at a time."""
        async with self._reads:
            index, body = await self._consul.get_indexed(path)
        return index, json.loads(body)

    async def _commit(self, services: Mapping[str, ConsulService]) -> None:
        changed = sorted(name for name, service in services.items() if self.services.get(name) != service)
        gone = sorted(self.services.keys() - services.keys())
        for name in gone:
            del self.services[name]
        self.services.update((name, services[name]) for name in changed)
        self._log_changes(changed, gone)
        if not self.ready.is_set():
            log.info("initial Consul state read: %d gRPC service(s)", len(self.services))
            self.ready.set()
        self._on_change()

    def _log_changes(self, changed: list[str], gone: list[str]) -> None:
        if len(changed) + len(gone) > LOGGED_CHANGES:
            log.info("%d gRPC service(s) changed, %d left the Consul catalog", len(changed), len(gone))
            return
        for name in gone:
            log.info("service %s left the Consul catalog", name)
        for name in changed:
            service = self.services[name]
            log.info("%s: %d passing endpoint(s) serving %s", name, len(service.endpoints),
                     ",".join(service.grpc_services))

