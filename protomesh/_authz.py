"""Per-call authorization: the peer's certificate, the intentions, trusted claims and the rpc's rule decide.

The interceptor asks a guard for the caller of every call it wraps. `Authorizer` (security.mode mtls) denies
with `Denied`; `Unchecked` (security.mode off) never denies and reports any claims as they came.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol

import grpc
import grpc.aio

from protomesh.auth import UNDECLARED, Caller, Policy, Rule, decode_claims, effective_rule, scopes_of
from protomesh.identity import AGENT_KIND, TRUST_DOMAIN, Workload
from protomesh.intentions import Intentions

log = logging.getLogger("protomesh.authz")

# What a denied caller is told: plain, the same for every reason (the reason is in the service's log).
PERMISSION_DENIED_MESSAGE = "permission denied"
UNAUTHENTICATED_MESSAGE = "authentication required"
# Consul's agent may run health checks and nothing else.
HEALTH_PREFIX = "/grpc.health.v1.Health/"
# Verdicts are cached per (peer, method). Peers hold certificates of the mesh CA and methods are the served
# ones, so the key space is small; the cap only bounds memory should a CA issue identities without end.
MAX_CACHED_VERDICTS = 10_000
# Decoded claims by their metadata value: a caller sends the same token for minutes, and decoding (base64 and
# JSON) costs several µs. Tokens are many, so this cache is bounded too (emptied when full).
MAX_CACHED_CLAIMS = 1024
# A denial is logged at once, then at most once per this interval for the same source, method and code; the
# next line says how many were not logged, so a caller retrying in a loop cannot flood the log.
DENIAL_LOG_INTERVAL_S = 10.0
_SPIFFE_PREFIX = b"spiffe://"


class Denied(Exception):
    """A call the guard refuses: the status code and the plain message its caller gets."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class CallGuard(Protocol):
    """What the interceptor asks on each call it wraps (and once per plumbing method it serves)."""

    def authorize(self, context: grpc.aio.ServicerContext[Any, Any], method: str, raw_claims: str | None) -> Caller:
        """The caller of this call, or Denied."""
        ...

    def admits_plumbing(self, context: grpc.aio.ServicerContext[Any, Any], method: str) -> None:
        """Nothing, or Denied, for health and reflection calls (which need no intention)."""
        ...

    def gates_plumbing(self, method: str) -> bool:
        """Whether calls of this plumbing method must go through admits_plumbing."""
        ...


class Unchecked:
    """security.mode off: plaintext, nobody is checked, and caller() reports claims as they came."""

    def authorize(self, context: grpc.aio.ServicerContext[Any, Any], method: str, raw_claims: str | None) -> Caller:
        claims = decode_claims(raw_claims) if raw_claims is not None else None
        return _ANONYMOUS if claims is None else Caller(claims=claims, raw_claims=raw_claims)

    def admits_plumbing(self, context: grpc.aio.ServicerContext[Any, Any], method: str) -> None:
        return None

    def gates_plumbing(self, method: str) -> bool:
        return False


_ANONYMOUS = Caller()


@dataclass(frozen=True, slots=True)
class _Verdict:
    """What the peer's certificate decides for one method, before any claims are looked at."""

    source: str                        # the peer's SPIFFE id, or a description when it has none (for the log)
    denial: str | None                 # why the call is refused (for the log); None: admitted
    caller: Caller                     # the caller in its own name
    rule: Rule = UNDECLARED
    trust_claims: bool = False         # the gateway, or a source whose intention says forward_claims
    needs_claims: bool = False         # the gateway calling an rpc that is not public


def spiffe_id_of(identities: Iterable[bytes] | None) -> bytes | None:
    """The one SPIFFE id among a TLS peer's SANs (None: no TLS peer, none, or more than one)."""
    found = [identity for identity in identities or () if identity.startswith(_SPIFFE_PREFIX)]
    return found[0] if len(found) == 1 else None


class Authorizer:
    """security.mode mtls: authorizes every call to `service` and binds its caller.

        authorizer = Authorizer("users", declared=declared_rules(bindings))
        access.subscribe(lambda: authorizer.update(access.intentions, access.policy))

    Order: the peer's SPIFFE id (of this trust domain, a service: agents may only run health checks), then
    the intention from its service to this one (none: deny), then the rpc's rule (contract, else policy).
    Claims count only from the gateway or a source whose intention lets it forward them; with them, their
    scopes must satisfy the rule; the gateway without them reaches public rpcs only; any other source without
    them calls in its own name, which its intention allowed.
    """

    def __init__(self, service: str, *, declared: Mapping[str, Rule], trust_domain: str = TRUST_DOMAIN,
                 intentions: Intentions | None = None, policy: Policy | None = None) -> None:
        self.service = service
        self.trust_domain = trust_domain
        self.spiffe_id = Workload.service(service, trust_domain).spiffe_id
        self._declared = dict(declared)
        self._intentions = intentions or Intentions()
        self._policy = policy or Policy()
        self._verdicts: dict[tuple[bytes | None, str], _Verdict] = {}
        self._claims: dict[str, tuple[Mapping[str, Any], frozenset[str]]] = {}
        self._denials = DenialLog()

    def update(self, intentions: Intentions, policy: Policy) -> None:
        """Decide from these from the next call on (cached verdicts are dropped)."""
        self._intentions, self._policy = intentions, policy
        self._verdicts = {}

    def authorize(self, context: grpc.aio.ServicerContext[Any, Any], method: str, raw_claims: str | None) -> Caller:
        spiffe_id = spiffe_id_of(context.peer_identities())
        verdict = self._verdicts.get((spiffe_id, method))
        if verdict is None:
            verdict = self._verdict(spiffe_id, method)
        if verdict.denial is not None:
            raise self._deny(verdict, method, grpc.StatusCode.PERMISSION_DENIED, verdict.denial)
        if raw_claims is None or not verdict.trust_claims:
            if verdict.needs_claims:
                raise self._deny(verdict, method, grpc.StatusCode.UNAUTHENTICATED,
                                 "the gateway sent no claims for an rpc that is not public")
            return verdict.caller
        decoded = self._decoded(raw_claims)
        if decoded is None:
            raise self._deny(verdict, method, grpc.StatusCode.UNAUTHENTICATED, "its claims are not base64url JSON")
        claims, granted = decoded
        missing = verdict.rule.scopes - granted
        if missing and not verdict.rule.public:
            raise self._deny(verdict, method, grpc.StatusCode.PERMISSION_DENIED,
                             f"the claims of subject {claims.get('sub')!r} lack {' '.join(sorted(missing))}")
        return Caller(verdict.caller.service, verdict.caller.spiffe_id, claims, raw_claims)

    def _decoded(self, raw_claims: str) -> tuple[Mapping[str, Any], frozenset[str]] | None:
        """The claims (read-only: shared by every call that carries them) and their scopes; None if unreadable."""
        found = self._claims.get(raw_claims)
        if found is None:
            claims = decode_claims(raw_claims)
            if claims is None:
                return None
            if len(self._claims) >= MAX_CACHED_CLAIMS:
                self._claims = {}
            found = self._claims[raw_claims] = (MappingProxyType(claims), scopes_of(claims))
        return found

    def admits_plumbing(self, context: grpc.aio.ServicerContext[Any, Any], method: str) -> None:
        spiffe_id = spiffe_id_of(context.peer_identities())
        workload = Workload.parse(spiffe_id.decode(errors="replace")) if spiffe_id is not None else None
        if workload is not None and workload.kind == AGENT_KIND:
            verdict = _Verdict(workload.spiffe_id, "an agent may call grpc.health.v1.Health only", _ANONYMOUS)
            raise self._deny(verdict, method, grpc.StatusCode.PERMISSION_DENIED, verdict.denial or "")

    def gates_plumbing(self, method: str) -> bool:
        return not method.startswith(HEALTH_PREFIX)

    def _verdict(self, spiffe_id: bytes | None, method: str) -> _Verdict:
        verdict = self._decide(spiffe_id, method)
        if len(self._verdicts) >= MAX_CACHED_VERDICTS:
            self._verdicts = {}
        self._verdicts[(spiffe_id, method)] = verdict
        return verdict

    def _decide(self, spiffe_id: bytes | None, method: str) -> _Verdict:
        text = spiffe_id.decode(errors="replace") if spiffe_id is not None else None
        workload = Workload.parse(text) if text is not None else None
        if workload is None:
            return _Verdict(text or "a peer without one SPIFFE id", "its certificate names no workload of the mesh",
                            _ANONYMOUS)
        source = workload.spiffe_id
        if workload.trust_domain != self.trust_domain:
            return _Verdict(source, f"it is not of trust domain {self.trust_domain}", _ANONYMOUS)
        if workload.kind == AGENT_KIND:
            return _Verdict(source, "an agent may call grpc.health.v1.Health only", _ANONYMOUS)
        caller = Caller(workload.name, source)
        intention = self._intentions.match(workload.name, self.service)
        if intention is None:
            return _Verdict(source, f"no intention allows {workload.name} to call {self.service}", caller)
        if not intention.allow:
            return _Verdict(source, f"an intention denies {intention.source} -> {intention.destination}", caller)
        rule = effective_rule(method, self._declared, self._policy)
        return _Verdict(source, None, caller, rule, trust_claims=workload.is_gateway or intention.forward_claims,
                        needs_claims=workload.is_gateway and not rule.public)

    def _deny(self, verdict: _Verdict, method: str, code: grpc.StatusCode, reason: str) -> Denied:
        self._denials.record(verdict.source, self.spiffe_id, method, code, reason)
        message = PERMISSION_DENIED_MESSAGE if code == grpc.StatusCode.PERMISSION_DENIED else UNAUTHENTICATED_MESSAGE
        return Denied(code, message)


class DenialLog:
    """One WARNING line per denial, naming both identities, the method and why; repeats are counted."""

    def __init__(self, interval_s: float = DENIAL_LOG_INTERVAL_S, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._interval_s = interval_s
        self._clock = clock
        self._last: dict[tuple[str, str, grpc.StatusCode], tuple[float, int]] = {}

    def record(self, source: str, destination: str, method: str, code: grpc.StatusCode, reason: str) -> None:
        key = (source, method, code)
        now = self._clock()
        last, suppressed = self._last.get(key, (float("-inf"), 0))
        if now - last < self._interval_s:
            self._last[key] = (last, suppressed + 1)
            return
        if len(self._last) >= MAX_CACHED_VERDICTS:
            self._last = {}
        self._last[key] = (now, 0)
        repeats = f" ({suppressed} more like it not logged)" if suppressed else ""
        log.warning("denied %s %s -> %s %s: %s%s", code.name, source, destination, method, reason, repeats)
