"""The edge's inputs besides Consul's catalog and the contracts: the JWKS file, the identity folders, the policy.

Each is read before the first snapshot and followed afterwards; a reading that does not parse is logged and
ignored, so the gateway keeps serving the last good one (a half-written file, a bad policy in Consul).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from protomesh.aio import BackgroundTasks
from protomesh.auth import POLICY_KEY, Policy
from protomesh.consul import DEFAULT_WAIT, ConsulClient, watch
from protomesh.identity import DEFAULT_POLL_S, Credentials, IdentityError, IdentityFolder

T = TypeVar("T")
log = logging.getLogger("gateway_envoy.edge_inputs")

# A JWKS larger than this is not a key set: Envoy would carry it in every jwt_authn configuration.
MAX_JWKS_BYTES = 256 * 1024


class JwksError(ValueError):
    """The file is not a JWKS document (missing, unreadable, not JSON, or without keys)."""


def read_jwks(path: Path) -> str:
    """The JWKS document's text, once it parses as {"keys": [...]} with at least one key."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise JwksError(f"cannot read {path}: {exc}") from exc
    if len(text) > MAX_JWKS_BYTES:
        raise JwksError(f"{path}: {len(text)} bytes, more than a key set ({MAX_JWKS_BYTES})")
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise JwksError(f"{path}: not JSON: {exc}") from exc
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list) or not keys or not all(isinstance(key, dict) for key in keys):
        raise JwksError(f"{path}: not a JWKS (an object whose `keys` lists at least one key)")
    return text


async def read_when_ready(read: Callable[[Path], T], path: Path, error: type[Exception], *, what: str,
                          poll_s: float = DEFAULT_POLL_S) -> T:
    """read(path) once it succeeds (off the loop), polling every poll_s; the first failure is logged once, with
    what the file is and how it comes to exist."""
    warned = False
    while True:
        try:
            return await asyncio.to_thread(read, path)
        except error as exc:
            if not warned:
                log.warning("waiting for %s: %s", what, exc)
                warned = True
            await asyncio.sleep(poll_s)


async def wait_for_jwks(path: Path, *, poll_s: float = DEFAULT_POLL_S) -> str:
    return await read_when_ready(read_jwks, path, JwksError, what="the JWKS file", poll_s=poll_s)


async def watch_jwks(path: Path, on_change: Callable[[str], None], *, current: str,
                     poll_s: float = DEFAULT_POLL_S) -> None:
    """Re-read the JWKS file every poll_s until cancelled; on_change gets each new valid document."""
    last_error = ""
    while True:
        await asyncio.sleep(poll_s)
        try:
            text = await asyncio.to_thread(read_jwks, path)
        except JwksError as exc:
            if str(exc) != last_error:
                log.error("keeping the current JWKS: %s", exc)
                last_error = str(exc)
            continue
        last_error = ""
        if text != current:
            current = text
            log.info("JWKS %s changed: %d key(s)", path, len(json.loads(text)["keys"]))
            on_change(text)


async def open_identity(folder: Path, what: str, *, poll_s: float = DEFAULT_POLL_S) -> IdentityFolder:
    """The identity folder, once its files are there and parse (the issuer may still be writing them)."""
    warned = False
    while True:
        try:
            return await asyncio.to_thread(IdentityFolder.open, folder, poll_s=poll_s)
        except IdentityError as exc:
            if not warned:
                log.warning("waiting for the %s identity in %s: %s", what, folder, exc)
                warned = True
            await asyncio.sleep(poll_s)


async def _follow(identity: IdentityFolder, poll_s: float) -> None:
    """Look at the folder every poll_s (IdentityFolder's own cadence): a rotation reaches Envoy within about that."""
    while True:
        await asyncio.sleep(poll_s)
        identity.refresh()


async def follow_edge_inputs(set_edge: Callable[..., None], tasks: BackgroundTasks, *, edge: Path | None,
                             mesh: Path | None, jwks: Path | None, poll_s: float = DEFAULT_POLL_S) -> None:
    """Read the identity folders and the JWKS file given (waiting until they are there), hand each to
    set_edge(edge=..., mesh=..., jwks=...), and follow them with background tasks for as long as tasks run."""
    for field, folder in (("edge", edge), ("mesh", mesh)):
        if folder is None:
            continue
        identity = await open_identity(folder, field, poll_s=poll_s)
        set_edge(**{field: identity.current})

        def rotated(credentials: Credentials, field: str = field) -> None:
            log.info("pushing the rotated %s certificate", field)
            set_edge(**{field: credentials})

        identity.subscribe(rotated)
        tasks.start(_follow(identity, poll_s), name=f"{field}-identity")
    if jwks is not None:
        text = await wait_for_jwks(jwks, poll_s=poll_s)
        set_edge(jwks=text)
        tasks.start(watch_jwks(jwks, lambda changed: set_edge(jwks=changed), current=text, poll_s=poll_s),
                    name="jwks")


class PolicyWatcher:
    """Follows the mesh's security policy (POLICY_KEY, JSON) with a blocking query; an absent key is the empty
    policy, one that does not parse is logged and the last good one kept. `ready` is set after the first good
    read: a gateway never serves without the rules the policy adds (without them a scoped rpc of a contract the
    project does not own would take any valid token)."""

    def __init__(self, consul: ConsulClient, on_change: Callable[[Policy], None], *, wait: str = DEFAULT_WAIT,
                 ) -> None:
        self._consul = consul
        self._on_change = on_change
        self._wait = wait
        self.policy = Policy()
        self.ready = asyncio.Event()

    async def run(self) -> None:
        await watch(self._fetch, self._commit, wait=self._wait, what="security policy")

    async def _fetch(self, index: int | None) -> tuple[int, str | None]:
        # A prefix read blocks on a key that does not exist yet; only the exact key counts.
        new_index, values = await self._consul.kv_prefix(POLICY_KEY, index=index, wait=self._wait)
        return new_index, values.get(POLICY_KEY)

    async def _commit(self, raw: str | None) -> None:
        try:
            policy = Policy.parse(json.loads(raw) if raw else None)
        except ValueError as exc:
            log.error("keeping the current security policy: %s is not one: %s", POLICY_KEY, exc)
            return
        if policy != self.policy or not self.ready.is_set():
            log.info("security policy: %d rule(s), %d rate limit(s)", len(policy.rules), len(policy.rate_limits))
            self.policy = policy
            self._on_change(policy)
        self.ready.set()
