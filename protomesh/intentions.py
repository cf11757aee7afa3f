"""Intentions: which service may call which, as Consul stores them and as a service evaluates them per call.

An intention names a source and a destination service (either may be `*`), allows or denies, and may let the
source forward its caller's claims (`Meta: {"forward-claims": "true"}`). Like Consul, the matching intention of
highest precedence decides (an exact name beats a wildcard), and no match means deny:

    intentions = Intentions.parse(json.loads(body))           # GET /v1/connect/intentions
    found = intentions.match("orders", "users")
    allowed = found is not None and found.allow
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from protomesh.consul import DEFAULT_WAIT, ConsulClient

log = logging.getLogger("protomesh.intentions")

# Consul's HTTP path for every intention (blocking queries work on it; /match does not block in Consul 1.8).
INTENTIONS_PATH = "/v1/connect/intentions"
# The Meta key (value "true") that lets a source forward the claims of the call it serves.
FORWARD_CLAIMS_META = "forward-claims"
WILDCARD = "*"


def precedence(source: str, destination: str) -> int:
    """Consul's precedence for a source/destination pair without namespaces (what it reports in `Precedence`):
    exact to exact 9, any source to an exact destination 8, an exact source to any destination 6, any to any 5."""
    if destination != WILDCARD:
        return 9 if source != WILDCARD else 8
    return 6 if source != WILDCARD else 5


@dataclass(frozen=True, slots=True)
class Intention:
    """One intention: source may (allow) or may not call destination; either name may be `*`."""

    source: str
    destination: str
    allow: bool = True
    forward_claims: bool = False
    precedence: int = 0  # 0: computed from the names, as Consul does

    def __post_init__(self) -> None:
        if self.precedence == 0:
            object.__setattr__(self, "precedence", precedence(self.source, self.destination))

    @classmethod
    def from_consul(cls, entry: Mapping[str, Any]) -> Intention:
        """An entry of Consul's intention list; ValueError when it lacks a name or has an unknown action."""
        source, destination, action = entry.get("SourceName"), entry.get("DestinationName"), entry.get("Action")
        if not isinstance(source, str) or not isinstance(destination, str) or action not in ("allow", "deny"):
            raise ValueError(f"not an intention: {dict(entry)!r}")
        meta = entry.get("Meta") or {}
        forward = isinstance(meta, Mapping) and str(meta.get(FORWARD_CLAIMS_META, "")).lower() == "true"
        given = entry.get("Precedence")
        return cls(source, destination, action == "allow", forward,
                   given if isinstance(given, int) and not isinstance(given, bool) else 0)

    def to_consul(self) -> dict[str, Any]:
        """The body that creates this intention (POST /v1/connect/intentions)."""
        meta = {FORWARD_CLAIMS_META: "true"} if self.forward_claims else {}
        return {"SourceName": self.source, "DestinationName": self.destination,
                "Action": "allow" if self.allow else "deny", "Meta": meta}

    def matches(self, source: str, destination: str) -> bool:
        return self.source in (WILDCARD, source) and self.destination in (WILDCARD, destination)


@dataclass(frozen=True)
class Intentions:
    """A set of intentions, highest precedence first (a deny before an allow of the same precedence)."""

    entries: tuple[Intention, ...] = ()

    @classmethod
    def of(cls, entries: Iterable[Intention]) -> Intentions:
        return cls(tuple(sorted(entries, key=lambda i: (-i.precedence, i.allow, i.source, i.destination))))

    @classmethod
    def parse(cls, data: object) -> Intentions:
        """Consul's intention list (decoded JSON; null when there is none). An entry that is not an intention
        is left out with a warning: one bad entry must not open or close everything else."""
        entries = []
        for raw in data if isinstance(data, list) else ():
            try:
                entries.append(Intention.from_consul(raw if isinstance(raw, Mapping) else {}))
            except ValueError as exc:
                log.warning("ignoring an intention: %s", exc)
        return cls.of(entries)

    def match(self, source: str, destination: str) -> Intention | None:
        """The intention that decides whether source may call destination (None: none does, so deny)."""
        for intention in self.entries:
            if intention.matches(source, destination):
                return intention
        return None

    def allows(self, source: str, destination: str) -> bool:
        found = self.match(source, destination)
        return found is not None and found.allow


async def read_intentions(consul: ConsulClient, *, index: int | None = None,
                          wait: str = DEFAULT_WAIT) -> tuple[int, Intentions]:
    """Every intention the token may read, with Consul's index; blocks until they change when index is given."""
    new_index, body = await consul.get_indexed(INTENTIONS_PATH, index=index, wait=wait)
    return new_index, Intentions.parse(json.loads(body or b"null"))


__all__ = [
    "FORWARD_CLAIMS_META",
    "INTENTIONS_PATH",
    "WILDCARD",
    "Intention",
    "Intentions",
    "precedence",
    "read_intentions",
]
