"""Propagation as the control plane records it: a Consul change -> Envoy ACKed the push carrying it, no Envoy polling.

    before = time.time(); register(...); after = time.time()
    timing = acked_change(gateway, "users", before, after)   # {"acked_ms": ..., "consul_ms": ..., ...}

The control plane's /status/pushes lists each published snapshot with the wall-clock times (time.time()) its
Consul answer arrived, it was published, and Envoy ACKed it. Reading it costs the control plane a small JSON
answer and Envoy nothing, unlike polling Envoy's admin /stats, which at 1,000 clusters walks ~100k stats on the
thread that applies xDS.
"""

from __future__ import annotations

import json
import statistics
import time
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

# Polling the control plane's record: the figure is read from its timestamps, so this only bounds the wait.
POLL_S = 0.02


def pushes(gateway: Any) -> list[dict[str, Any]]:
    """The control plane's recent pushes, oldest first (GET /status/pushes on its status port)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{gateway.ports.status}/status/pushes", timeout=5) as response:
        records: list[dict[str, Any]] = json.loads(response.read())
    return records


def carrying(records: Sequence[Mapping[str, Any]], cluster: str, before: float) -> dict[str, Any] | None:
    """Timings of the first push after `before` that changed `cluster`, once Envoy ACKed it or a later push.

    A push replaced before Envoy applied it counts as applied when the later push that carries it is ACKed.
    """
    for position, record in enumerate(records):
        if record["published_at"] < before or cluster not in record["changed"]:
            continue
        acked = next((later for later in records[position:] if later["acked_at"] is not None), None)
        if acked is None:
            return None
        return {"caused_at": record["caused_at"], "published_at": record["published_at"],
                "acked_at": acked["acked_at"]}
    return None


def acked_change(gateway: Any, cluster: str, before: float, after: float, *, timeout: float) -> dict[str, float]:
    """Milliseconds from `before` (the Consul request was sent) to Envoy's ACK, and the parts: the request itself
    (it returns once the agent wrote the catalog, so the watch may be answered first), Consul's answer arriving,
    the control plane publishing, Envoy ACKing. `after` is when the request returned."""
    deadline = time.perf_counter() + timeout
    while (found := carrying(pushes(gateway), cluster, before)) is None:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"no ACKed push changing {cluster} within {timeout:g}s")
        time.sleep(POLL_S)
    caused = found["caused_at"] if found["caused_at"] is not None else found["published_at"]
    return {"acked_ms": (found["acked_at"] - before) * 1e3, "request_ms": (after - before) * 1e3,
            "consul_ms": (caused - before) * 1e3,
            "control_plane_ms": (found["published_at"] - caused) * 1e3,
            "envoy_ms": (found["acked_at"] - found["published_at"]) * 1e3}


def parts_ms(timings: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Median of each part over several changes."""
    return {key: round(statistics.median(t[key] for t in timings), 2) for key in timings[0]} if timings else {}
