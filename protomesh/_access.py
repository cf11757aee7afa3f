"""What a service authorizes calls against, followed in Consul: every intention, and the mesh's security policy."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

from protomesh.aio import BackgroundTasks
from protomesh.auth import POLICY_KEY, Policy
from protomesh.consul import DEFAULT_WAIT, ConsulClient, watch
from protomesh.intentions import Intentions, read_intentions

log = logging.getLogger("protomesh.access")

# open() waits this long for the first intentions and policy, so that a starting instance does not deny calls
# it would allow a moment later; then it starts anyway (everything denied until Consul answers).
DEFAULT_OPEN_TIMEOUT_S = 2.0


class AccessState:
    """The newest intentions and policy from Consul (blocking queries, so changes land within a second).

    Until the first answer, no intention exists: every call is denied. When Consul becomes unreachable the
    last known state stays in force (the watch retries with backoff).

        access = await AccessState.open(consul)
        access.subscribe(lambda: authorizer.invalidate())
        access.intentions.allows("orders", "users")
        await access.close()
    """

    def __init__(self, consul: ConsulClient, *, wait: str = DEFAULT_WAIT) -> None:
        self.intentions = Intentions()
        self.policy = Policy()
        self._intentions_seen = _AfterRestart("intentions")
        self._policy_seen = _AfterRestart(f"the security policy ({POLICY_KEY})")
        self._consul = consul
        self._wait = wait
        self._loaded = {"intentions": asyncio.Event(), "policy": asyncio.Event()}
        self._subscribers: list[Callable[[], None]] = []
        self._watches = BackgroundTasks()

    @classmethod
    async def open(cls, consul: ConsulClient, *, wait: str = DEFAULT_WAIT,
                   open_timeout_s: float = DEFAULT_OPEN_TIMEOUT_S) -> AccessState:
        state = cls(consul, wait=wait)
        state._watches.start(watch(state._fetch_intentions, state._on_intentions, wait=wait, what="intentions"),
                             name="protomesh-intentions")
        state._watches.start(watch(state._fetch_policy, state._on_policy, wait=wait, what="security policy"),
                             name="protomesh-security-policy")
        try:
            async with asyncio.timeout(open_timeout_s):
                await asyncio.gather(*(loaded.wait() for loaded in state._loaded.values()))
        except TimeoutError:
            log.warning("no intentions or security policy from Consul at %s yet: calls are denied until they "
                        "arrive (does CONSUL_HTTP_TOKEN's policy read services and %s?)", consul.address, POLICY_KEY)
        return state

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call callback after every change of the intentions or the policy."""
        self._subscribers.append(callback)

    async def close(self) -> None:
        await self._watches.stop()

    async def _fetch_intentions(self, index: int | None) -> tuple[int, Intentions]:
        new_index, intentions = await read_intentions(self._consul, index=index, wait=self._wait)
        keep = self._intentions_seen.keeps(new_index, empty=not intentions.entries,
                                           holding=bool(self.intentions.entries))
        return new_index, self.intentions if keep else intentions

    async def _fetch_policy(self, index: int | None) -> tuple[int, str | None]:
        new_index, text = await self._consul.kv_get(POLICY_KEY, index=index, wait=self._wait)
        keep = self._policy_seen.keeps(new_index, empty=text is None, holding=self.policy != Policy())
        return new_index, _KEEP_POLICY if keep else text

    async def _on_intentions(self, intentions: Intentions) -> None:
        self._loaded["intentions"].set()
        if intentions != self.intentions:
            self.intentions = intentions
            log.info("intentions: %d in force", len(intentions.entries))
            self._notify()

    async def _on_policy(self, text: str | None) -> None:
        self._loaded["policy"].set()
        if text is _KEEP_POLICY:
            return
        try:
            policy = Policy.parse(json.loads(text) if text else None)
        except ValueError as exc:  # json.JSONDecodeError is a ValueError too
            log.error("keeping the last good security policy: the value at %s is invalid: %s", POLICY_KEY, exc)
            return
        if policy != self.policy:
            self.policy = policy
            log.info("security policy: %d rule(s) for contracts without their own", len(policy.rules))
            self._notify()

    def _notify(self) -> None:
        for callback in list(self._subscribers):
            try:
                callback()
            except Exception:
                log.exception("access subscriber %r failed", callback)


# What _fetch_policy answers while it keeps the last policy (compared by identity).
_KEEP_POLICY = "<keep the last policy>"


class _AfterRestart:
    """Tells when an empty answer comes from a Consul agent that restarted and lost its state.

    A -dev agent (the local mesh's) keeps nothing: after a restart it answers "no intentions" and "no policy"
    with an index that went back, until the runner writes them again a moment later. Applying that would deny
    every call in between, so the last known state is kept until the answer holds something again, or until the
    index moves past the restart (a real removal, made after it).
    """

    def __init__(self, what: str) -> None:
        self._what = what
        self._last: int | None = None
        self._held_at: int | None = None

    def keeps(self, index: int, *, empty: bool, holding: bool) -> bool:
        went_back = self._last is not None and index < self._last
        self._last = index
        if empty and holding and (went_back or (self._held_at is not None and index <= self._held_at)):
            if self._held_at is None:
                log.warning("Consul answers no %s after its index went back (an agent that restarted without its "
                            "state?): keeping the last known until it holds them again", self._what)
            self._held_at = index if self._held_at is None else self._held_at
            return True
        self._held_at = None
        return False
