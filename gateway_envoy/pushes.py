"""When each published snapshot's Consul cause arrived and when Envoy ACKed it: propagation without polling Envoy.

    log = PushLog()
    log.caused(time.time(), index=42)            # a Consul answer that changed the catalog arrived
    log.published(previous, snapshot)            # the snapshot built from it went to the ADS server
    log.acked(ENDPOINT_TYPE, version)            # Envoy ACKed that type's version
    log.recent()                                 # JSON-ready records, oldest first (the status endpoint's /pushes)
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway_envoy.snapshot import CLUSTER_TYPE, ENDPOINT_TYPE, PUSH_ORDER, Snapshot

# Records kept: enough for a benchmark to find the push of the change it made a few seconds ago.
MAX_PUSHES = 64
# Changed clusters named in one record; a larger change (a full read, an agent restart) is only counted.
MAX_NAMED_CHANGES = 16


@dataclass
class Push:
    """One published snapshot: what changed, the wall-clock time (time.time()) of its cause, publication and ACK."""

    version: str
    versions: Mapping[str, str]
    changed: tuple[str, ...]           # clusters added, changed or removed (at most MAX_NAMED_CHANGES)
    changed_count: int
    published_at: float
    caused_at: float | None = None     # the Consul answer that led to it arrived (the earliest, when coalesced)
    consul_index: int | None = None
    acked_at: float | None = None      # every changed type ACKed by an Envoy (the first to answer)
    superseded: bool = False           # a later push was ACKed first: this one was never applied on its own
    pending: set[str] = field(default_factory=set, repr=False)

    def view(self) -> dict[str, Any]:
        return {"version": self.version, "changed": list(self.changed), "changed_count": self.changed_count,
                "caused_at": self.caused_at, "consul_index": self.consul_index, "published_at": self.published_at,
                "acked_at": self.acked_at, "superseded": self.superseded}


def changed_clusters(previous: Snapshot | None, snapshot: Snapshot) -> list[str]:
    """Names of the clusters whose cluster or load assignment differs between two snapshots (sorted).

    Unchanged resources are the very objects of the previous snapshot (the builder reuses them), so this costs a
    pointer comparison per cluster.
    """
    if previous is None:
        return sorted(snapshot.resources[CLUSTER_TYPE])
    changed: set[str] = set()
    for type_url in (CLUSTER_TYPE, ENDPOINT_TYPE):
        old, new = previous.resources[type_url], snapshot.resources[type_url]
        if previous.versions[type_url] == snapshot.versions[type_url]:
            continue
        changed.update(name for name, resource in new.items()
                       if (before := old.get(name)) is not resource and before != resource)
        changed.update(old.keys() - new.keys())
    return sorted(changed)


def _changed(previous: Snapshot | None, snapshot: Snapshot, type_url: str) -> bool:
    """Whether Envoy will be sent, and ACK, this type (it never subscribes to a type it has no resource of)."""
    if previous is None:
        return bool(snapshot.resources[type_url])
    return previous.versions[type_url] != snapshot.versions[type_url] and bool(
        snapshot.resources[type_url] or previous.resources[type_url])


class PushLog:
    """The last MAX_PUSHES published snapshots with their timings, for the status endpoint."""

    def __init__(self, size: int = MAX_PUSHES) -> None:
        self._pushes: deque[Push] = deque(maxlen=size)
        self._cause: tuple[float, int] | None = None

    def caused(self, at: float, *, index: int | None = None) -> None:
        """A Consul answer arrived at `at` (time.time()); the next published snapshot carries it."""
        if self._cause is None:  # coalesced causes: the earliest one counts, so latency is never understated
            self._cause = (at, index if index is not None else -1)

    def published(self, previous: Snapshot | None, snapshot: Snapshot) -> None:
        cause, self._cause = self._cause, None
        changed = changed_clusters(previous, snapshot)
        pending = {t for t in PUSH_ORDER if _changed(previous, snapshot, t)}
        self._pushes.append(Push(
            version=snapshot.version, versions=dict(snapshot.versions), changed=tuple(changed[:MAX_NAMED_CHANGES]),
            changed_count=len(changed), published_at=time.time(), caused_at=cause[0] if cause else None,
            consul_index=cause[1] if cause and cause[1] >= 0 else None, pending=pending))

    def unchanged(self) -> None:
        """A rebuild that produced the same snapshot: its cause leads to no push."""
        self._cause = None

    def acked(self, type_url: str, version: str) -> None:
        """Envoy ACKed `version` of `type_url`: pushes waiting for it are done once all their types are ACKed."""
        now = time.time()
        for position, push in enumerate(self._pushes):
            if push.acked_at is not None or push.superseded or type_url not in push.pending:
                continue
            if push.versions.get(type_url) != version:
                continue
            push.pending.discard(type_url)
            if not push.pending:
                push.acked_at = now
                self._supersede(position)

    def _supersede(self, position: int) -> None:
        """Older pushes still waiting were replaced before Envoy applied them (a version may come back later:
        an instance added then removed returns the load assignments to an earlier hash)."""
        for older in list(self._pushes)[:position]:
            if older.acked_at is None:
                older.superseded, older.pending = True, set()

    def recent(self) -> list[dict[str, Any]]:
        return [push.view() for push in self._pushes]
