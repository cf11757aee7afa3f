"""Registers a service instance in Consul with a native gRPC check and keeps it registered."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from protomesh.aio import BackgroundTasks, Backoff
from protomesh.consul import DEFAULT_BACKOFF_INITIAL_S, ConsulClient

log = logging.getLogger("protomesh.registry")

# How often the keeper asks the local agent whether it still lists the instance: a restarted -dev agent
# forgets every service, and re-registration must land within ~3 s; one local GET per 0.5 s is cheap.
DEFAULT_KEEP_INTERVAL_S = 0.5
# Retry cap while the agent is unreachable: it is local, so retrying often costs little and shortens the
# gap after it comes back.
DEFAULT_RETRY_MAX_S = 0.5
# Tags every protomesh instance carries, so the control plane and operators can tell them apart.
BASE_TAGS = ("protomesh", "grpc")


class Registration:
    """One instance's registration: registers in the background (never blocks serving) and re-registers
    whenever the agent stops listing it.

    Call start() once the server answers SERVING: the check starts out as `initial_status` ("passing"), because
    a just-started agent syncs the first check result to its catalog only after up to ~3 s; the gRPC check
    corrects a wrong start within one interval.

    With `tls` the check speaks TLS (the port is mTLS): GRPCUseTLS, without verifying the server's name.

    >>> registration = Registration(consul, service="users", address="127.0.0.1", port=port,
    ...                             grpc_services=["acme.users.v1.UserService"], version="1.2.0", tls=True)
    >>> await registration.start()
    >>> ...
    >>> await registration.deregister()
    """

    def __init__(self, consul: ConsulClient, *, service: str, address: str, port: int,
                 grpc_services: Sequence[str], version: str, tags: Sequence[str] = (), instance_id: str = "",
                 check_interval: str = "1s", deregister_after: str = "1m", initial_status: str = "passing",
                 keep_interval_s: float = DEFAULT_KEEP_INTERVAL_S, meta: Mapping[str, str] | None = None,
                 http_check: str = "", tls: bool = False) -> None:
        self._consul = consul
        self.service = service
        # host:port is unique among running instances; a restart on the same address (a container brought back
        # by its restart policy) takes over the registration its killed predecessor left instead of adding one.
        self.instance_id = instance_id or f"{service}-{address}-{port}"
        self._keep_interval_s = keep_interval_s
        target = f"{address}:{port}/{grpc_services[0]}" if grpc_services else f"{address}:{port}"
        # An endpoint that is not a gRPC server (a scrape target such as Envoy's admin) is checked over HTTP.
        probe = {"HTTP": http_check} if http_check else {"GRPC": target}
        check: dict[str, Any] = {**probe, "Interval": check_interval, "Status": initial_status,
                                 "DeregisterCriticalServiceAfter": deregister_after}
        if tls and not http_check:
            # An mTLS port: the agent presents its own certificate (enable_agent_tls_for_checks). Consul 1.8 cannot
            # be told which server name to expect, so it skips verifying ours; the port still verifies the agent.
            check.update({"GRPCUseTLS": True, "TLSSkipVerify": True})
        self.body: dict[str, Any] = {
            "name": service,
            "service_id": self.instance_id,
            "address": address,
            "port": port,
            "tags": [*BASE_TAGS, *tags],
            # Extra meta (e.g. metrics_port, which Prometheus's Consul discovery reads) beside the mesh's own keys.
            "meta": {**(meta or {}), "version": version, "grpc_services": ",".join(grpc_services)},
            # The suffix is the name the server's health servicer marks SERVING.
            "check": check,
            # Re-registering must not pile up stale checks from an earlier registration.
            "replace_existing_checks": True,
        }
        self._registered = asyncio.Event()
        self._keeper = BackgroundTasks()

    @property
    def registered(self) -> bool:
        """Whether the agent accepted the registration and, at the last look, still lists it."""
        return self._registered.is_set()

    async def wait_registered(self) -> None:
        await self._registered.wait()

    async def start(self) -> None:
        """Start registering in the background and keep the instance registered until deregister()."""
        if not self._keeper.running:
            self._keeper.start(self._keep(), name=f"protomesh-registration-{self.instance_id}")

    async def deregister(self) -> None:
        """Stop the keeper and remove the instance from the agent (best effort: failures are logged)."""
        await self._keeper.stop()
        self._registered.clear()
        try:
            await self._consul.deregister(self.instance_id)
        except Exception as exc:  # Consul gone: DeregisterCriticalServiceAfter cleans up after us
            log.warning("could not deregister %s from Consul: %r", self.instance_id, exc)
        else:
            log.info("deregistered %s from Consul", self.instance_id)

    async def _keep(self) -> None:
        backoff = Backoff(initial_s=DEFAULT_BACKOFF_INITIAL_S, max_s=DEFAULT_RETRY_MAX_S)
        while True:
            try:
                await self._ensure_registered()
            except Exception as exc:  # agent down or restarting: retry soon, never give up
                delay = backoff.next_delay()
                self._registered.clear()
                level = logging.WARNING if backoff.failures == 1 else logging.DEBUG
                log.log(level, "registering %s in Consul failed (attempt %d), retrying: %r",
                        self.instance_id, backoff.failures, exc)
                await asyncio.sleep(delay)
                continue
            backoff.reset()
            await asyncio.sleep(self._keep_interval_s)

    async def _ensure_registered(self) -> None:
        if self._registered.is_set():
            if await self._consul.agent_has(self.instance_id):
                return
            log.warning("Consul agent no longer lists %s (restarted?); registering again", self.instance_id)
            self._registered.clear()
        await self._consul.register(**self.body)
        self._registered.set()
        check = self.body["check"]
        log.info("registered %s in Consul (%s)", self.instance_id, check.get("GRPC") or check.get("HTTP"))
