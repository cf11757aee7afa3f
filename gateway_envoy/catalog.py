"""What the control plane knows about Consul: gRPC services, their instances, and last-known-good merging."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("gateway_envoy.catalog")

# Registration meta key listing the full gRPC service names an instance serves (see protomesh._registry).
GRPC_SERVICES_META = "grpc_services"
# Never routed through the gateway even when announced: probes and schema introspection stay internal.
HIDDEN_SERVICE_PREFIXES = ("grpc.health.", "grpc.reflection.")


@dataclass(frozen=True, order=True)
class Endpoint:
    """One passing instance, as Envoy will dial it."""

    address: str
    port: int


@dataclass(frozen=True)
class ConsulService:
    """A Consul service that serves gRPC: the full service names it announces and its passing endpoints."""

    name: str
    grpc_services: tuple[str, ...]
    endpoints: tuple[Endpoint, ...]


Catalog = Mapping[str, ConsulService]


def package_owner(grpc_service: str) -> str:
    """The Consul service that owns a gRPC service by the mesh's one-name rule: `acme.users.v1.UserService`
    belongs to `users` (the package's last part before its version)."""
    package = grpc_service.split(".")[:-1]
    if package and re.fullmatch(r"v\d+(?:(?:alpha|beta)\d*)?", package[-1]):
        package = package[:-1]
    return package[-1] if package else ""


def routable(grpc_service: str) -> bool:
    return bool(grpc_service) and not grpc_service.startswith(HIDDEN_SERVICE_PREFIXES)


def service_from_health(name: str, entries: Sequence[Mapping[str, Any]]) -> ConsulService | None:
    """Build a ConsulService from /v1/health/service/<name> entries (all instances, passing or not).

    Announced gRPC services come from every instance (so a service whose instances are all failing
    still gets its route and answers 503), endpoints only from instances whose checks all pass.
    None when no instance announces any gRPC service (e.g. Consul's own "consul" service).
    """
    announced: set[str] = set()
    endpoints: set[Endpoint] = set()
    for entry in entries:
        svc = entry["Service"]
        meta = svc.get("Meta") or {}
        announced.update(s.strip() for s in meta.get(GRPC_SERVICES_META, "").split(","))
        if all(check.get("Status") == "passing" for check in entry.get("Checks") or ()):
            address = svc.get("Address") or entry["Node"]["Address"]
            endpoints.add(Endpoint(address, int(svc["Port"])))
    grpc_services = tuple(sorted(s for s in announced if routable(s)))
    if not grpc_services:
        return None
    return ConsulService(name, grpc_services, tuple(sorted(endpoints)))


def merge_last_known_good(previous: Catalog, current: Catalog) -> dict[str, ConsulService]:
    """current, except that a service which had endpoints and now has none (or vanished) keeps its old entry.

    A dev agent restart or a flapping check empties a service for a moment; keeping the last endpoints
    avoids 503s meanwhile, and outlier detection in Envoy ejects hosts that are really gone.
    """
    merged = dict(current)
    for name, old in previous.items():
        new = current.get(name)
        if old.endpoints and (new is None or not new.endpoints):
            log.info("%s reports no passing instance: keeping its %d last-known-good endpoints",
                     name, len(old.endpoints))
            merged[name] = old
    return merged
