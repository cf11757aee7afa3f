"""Consul's health checks as comparable rows: which services changed between two reads, and instances joined to them."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

# One check: (service name, node, service id, check id, status, modify index). Node checks (serfHealth, node
# maintenance) have "" as service name and id. ModifyIndex moves whenever the check was re-registered or its
# status or output changed, so a row differs whenever anything about the check may have.
CheckRow = tuple[str, str, str, str, str, int]
HealthEntry = dict[str, Any]

# Between two checks of a /v1/health/state/any answer, compact or indented (a -dev agent indents). No check
# field holds objects in an array and JSON strings escape their quotes, so it matches nowhere else.
_BETWEEN_CHECKS = re.compile(rb'\}\s*,\s*\{(?=\s*"Node"\s*:)')


class CheckRows:
    """Rows of successive /v1/health/state/any answers, parsing only the checks whose JSON text changed.

    Consul writes an unchanged check byte for byte the same, so after the first answer a change costs a split
    of the body (~2 ms for 3,000 checks) instead of decoding all of it (~15 ms).
    """

    def __init__(self, ignored: frozenset[str]) -> None:
        self._ignored = ignored
        self._seen: dict[bytes, CheckRow | None] = {}  # a check's JSON members -> its row (None: ignored)

    def read(self, body: bytes) -> frozenset[CheckRow]:
        try:
            seen = {chunk: self._seen[chunk] if chunk in self._seen else self._row(json.loads(b"{%s}" % chunk))
                    for chunk in _split_checks(body)}
        except (ValueError, KeyError, TypeError):  # not laid out as expected: decode the whole answer
            self._seen = {}
            checks = json.loads(body) or []
            if not isinstance(checks, list):
                raise ValueError(f"expected a list of checks, got {body[:100]!r}") from None
            return frozenset(row for check in checks if (row := self._row(check)) is not None)
        self._seen = seen
        return frozenset(row for row in seen.values() if row is not None)

    def _row(self, check: Mapping[str, Any]) -> CheckRow | None:
        service = check.get("ServiceName") or ""
        if service in self._ignored:
            return None
        return (service, check["Node"], check.get("ServiceID") or "", check["CheckID"], check["Status"],
                int(check["ModifyIndex"]))


def _split_checks(body: bytes) -> list[bytes]:
    """The JSON members of each check in a list answer (`[{...},{...}]` -> `...`, `...`), unparsed."""
    chunks = _BETWEEN_CHECKS.split(body)
    if len(chunks) == 1 and chunks[0].strip() == b"[]":
        return []
    first, last = chunks[0].lstrip(), chunks[-1].rstrip()
    if not (first[:1] == b"[" and first[1:].lstrip()[:1] == b"{" and last[-1:] == b"]"
            and last[:-1].rstrip()[-1:] == b"}"):
        raise ValueError("not a JSON list of objects")
    chunks[0] = first[1:].lstrip()[1:]
    chunks[-1] = chunks[-1].rstrip()[:-1].rstrip()[:-1]
    return chunks


def changed_services(old: frozenset[CheckRow], new: frozenset[CheckRow]) -> set[str]:
    """Services whose checks, or whose node's checks, differ between two reads (appeared and vanished included)."""
    differing = old ^ new
    changed = {row[0] for row in differing if row[0]}
    nodes = {row[1] for row in differing if not row[0]}
    if nodes:
        changed.update(row[0] for row in old | new if row[0] and row[1] in nodes)
    return changed


def _statuses(rows: Iterable[CheckRow]) -> dict[tuple[str, str], list[str]]:
    """(node, service id) -> statuses of its checks; (node, "") holds the node's own checks."""
    statuses: dict[tuple[str, str], list[str]] = defaultdict(list)
    for _, node, service_id, _, status, _ in rows:
        statuses[(node, service_id)].append(status)
    return statuses


def join_checks(nodes: Iterable[Mapping[str, Any] | None], rows: frozenset[CheckRow], *, read_at: int,
                ignored: frozenset[str]) -> tuple[dict[str, list[HealthEntry]], set[str]]:
    """/v1/catalog/node/<node> answers joined with check rows into /v1/health/service-like entries per service.

    An instance carries its own checks and its node's, as the health endpoint reports them. Services with an
    instance modified after the checks were read (ModifyIndex above `read_at`) come back apart, by name: their
    checks may be missing from the rows, so the caller reads them through the health endpoint instead.
    """
    statuses = _statuses(rows)
    entries: dict[str, list[HealthEntry]] = defaultdict(list)
    newer: set[str] = set()
    for dump in nodes:
        if not dump:  # the node left between the two reads
            continue
        node = dump["Node"]
        node_checks = statuses.get((node["Node"], ""), [])
        for service in (dump.get("Services") or {}).values():
            name = service["Service"]
            if name in ignored:
                continue
            if int(service.get("ModifyIndex", 0)) > read_at:
                newer.add(name)
            checks = statuses.get((node["Node"], service["ID"]), []) + node_checks
            entries[name].append({"Node": node, "Service": service, "Checks": [{"Status": s} for s in checks]})
    for name in newer:
        entries.pop(name, None)
    return dict(entries), newer
