"""Who is calling, and what they may do: the rules contracts declare, verified claims, and the caller of a call.

A contract declares each rpc's rule with the `(protomesh.v1.auth)` option (protos/protomesh/v1/auth.proto):
`{scopes: "orders:write"}` (a token holding every listed scope) or `{public: true}` (no token needed).
The gateway verifies tokens and passes their payload on as `x-protomesh-claims`; a service reads its caller
through `caller()`, never by parsing headers:

    caller = protomesh.caller()
    if caller is not None and caller.subject is not None:
        owner = caller.subject
"""

from __future__ import annotations

import base64
import binascii
import contextvars
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

# The metadata key that carries a caller's verified token payload (base64url JSON, as Envoy's jwt_authn
# `forward_payload_header` writes it); the gateway removes any a client sends.
CLAIMS_KEY = "x-protomesh-claims"
# The contract option's full name (protos/protomesh/v1/auth.proto).
AUTH_OPTION = "protomesh.v1.auth"
# The Consul KV key holding the mesh's security policy (JSON, written from the topology by the runner): rules
# for contracts the project does not own, and the gateway's rate limits. See `Policy`.
POLICY_KEY = "protomesh/security/policy"
# The longest claims value accepted: a bloated header must not cost every hop a large parse.
MAX_CLAIMS_BYTES = 8192


@dataclass(frozen=True)
class Rule:
    """Who may call one rpc: anyone (public), or a caller whose token holds every scope listed."""

    scopes: frozenset[str] = frozenset()
    public: bool = False

    def allows(self, granted: frozenset[str]) -> bool:
        """Whether a caller holding the granted scopes may call (public rules need no scope)."""
        return self.public or self.scopes <= granted

    @property
    def declared(self) -> bool:
        return self.public or bool(self.scopes)


# What an rpc without a rule gets: no scope makes it callable by a valid token, never without one.
UNDECLARED = Rule()


def _rule_from_options(options_bytes: bytes, pool: descriptor_pool.DescriptorPool) -> Rule | None:
    try:
        extension = pool.FindExtensionByName(AUTH_OPTION)
    except KeyError:
        return None  # no contract in this pool imports the option
    options_type = message_factory.GetMessageClass(pool.FindMessageTypeByName("google.protobuf.MethodOptions"))
    options = options_type.FromString(options_bytes)
    # A FieldDescriptor found by name, not a generated extension handle: the stubs cannot type it.
    if not options.HasExtension(extension):  # type: ignore[arg-type]
        return None
    rule: Any = options.Extensions[extension]  # type: ignore[index]
    return Rule(frozenset(rule.scopes), bool(rule.public))


def method_rule(method: MethodDescriptor) -> Rule | None:
    """The rule an rpc's contract declares, or None when it declares none (a contract the project does not
    own, whose rule comes from the topology)."""
    return _rule_from_options(method.GetOptions().SerializeToString(), method.containing_service.file.pool)


def service_rules(service: ServiceDescriptor) -> dict[str, Rule]:
    """`/pkg.Service/Method` -> declared rule, for every rpc of service that declares one."""
    rules = {}
    for method in service.methods:
        rule = method_rule(method)
        if rule is not None:
            rules[f"/{service.full_name}/{method.name}"] = rule
    return rules


def descriptor_set_rules(serialized: bytes) -> dict[str, Rule]:
    """`/pkg.Service/Method` -> declared rule, for every rpc in a serialized FileDescriptorSet (what
    `make protos` writes for the gateway) that declares one."""
    files = descriptor_pb2.FileDescriptorSet.FromString(serialized)
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    rules: dict[str, Rule] = {}
    for file in files.file:
        for service in file.service:
            rules.update(service_rules(pool.FindServiceByName(f"{file.package}.{service.name}" if file.package
                                                              else service.name)))
    return rules


@dataclass(frozen=True)
class RateLimit:
    """A token bucket for one rpc at the gateway: `requests` calls, refilled every `per_s` seconds."""

    requests: int
    per_s: float = 1.0


@dataclass(frozen=True)
class Policy:
    """What the topology adds to the contracts (stored as JSON under POLICY_KEY):

        {"rules": {"/grpc.testing.TestService/": {"public": true},
                   "/grpc.testing.TestService/UnaryCall": {"scopes": ["interop:call"]}},
         "rate_limits": {"/acme.orders.v1.OrderService/CreateOrder": {"requests": 20, "per_s": 1}}}

    A rule key is a method path or a service prefix (ending in "/"); it applies only to rpcs whose contract
    declares no rule of its own (a contract's rule always wins).
    """

    rules: Mapping[str, Rule] = field(default_factory=dict)
    rate_limits: Mapping[str, RateLimit] = field(default_factory=dict)

    @classmethod
    def parse(cls, data: object) -> Policy:
        """The policy in a decoded JSON document; ValueError naming the entry that does not fit."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise ValueError("security policy: expected an object with `rules` and `rate_limits`")
        rules = {}
        for key, raw in dict(data.get("rules") or {}).items():
            _check_path(key, "rules")
            if not isinstance(raw, Mapping) or not set(raw) <= {"scopes", "public"}:
                raise ValueError(f"security policy: rules.{key}: expected {{scopes: [...]}} or {{public: true}}")
            scopes = raw.get("scopes") or []
            if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
                raise ValueError(f"security policy: rules.{key}.scopes: expected a list of scopes")
            rule = Rule(frozenset(scopes), raw.get("public") is True)
            if rule.public == bool(rule.scopes):
                raise ValueError(f"security policy: rules.{key}: must be either public or name its scopes")
            rules[key] = rule
        limits = {}
        for key, raw in dict(data.get("rate_limits") or {}).items():
            _check_path(key, "rate_limits")
            requests = raw.get("requests") if isinstance(raw, Mapping) else None
            per_s = raw.get("per_s", 1.0) if isinstance(raw, Mapping) else None
            if (not isinstance(requests, int) or isinstance(requests, bool) or requests < 1
                    or not isinstance(per_s, int | float) or per_s <= 0):
                raise ValueError(f"security policy: rate_limits.{key}: expected {{requests: N >= 1, per_s: S > 0}}")
            limits[key] = RateLimit(requests, float(per_s))
        return cls(rules, limits)

    def to_json(self) -> dict[str, Any]:
        return {"rules": {key: ({"public": True} if rule.public else {"scopes": sorted(rule.scopes)})
                          for key, rule in sorted(self.rules.items())},
                "rate_limits": {key: {"requests": limit.requests, "per_s": limit.per_s}
                                for key, limit in sorted(self.rate_limits.items())}}

    def rule_for(self, method_path: str) -> Rule | None:
        """The topology's rule for `/pkg.Service/Method`: the method's own entry, else its service's."""
        return self.rules.get(method_path) or self.rules.get(method_path.rsplit("/", 1)[0] + "/")


def _check_path(key: str, section: str) -> None:
    if not (key.startswith("/") and key.count("/") == 2 and len(key) > 2):
        raise ValueError(f"security policy: {section}: {key!r} is not /package.Service/Method "
                         "(or /package.Service/ for every rpc of a service)")


def effective_rule(method_path: str, declared: Mapping[str, Rule], policy: Policy) -> Rule:
    """The rule an rpc is held to: its contract's, else the topology's, else UNDECLARED (a valid token)."""
    return declared.get(method_path) or policy.rule_for(method_path) or UNDECLARED


def scopes_of(claims: Mapping[str, Any]) -> frozenset[str]:
    """The scopes a token payload grants: its space-separated `scope` (RFC 8693), or a `scp` list."""
    scope = claims.get("scope")
    granted: set[str] = set(scope.split()) if isinstance(scope, str) else set()
    scp = claims.get("scp")
    if isinstance(scp, list):
        granted.update(item for item in scp if isinstance(item, str))
    return frozenset(granted)


def decode_claims(raw: str | bytes) -> dict[str, Any] | None:
    """A claims metadata value (base64url JSON, padded or not) as a dict; None when it is not one."""
    if isinstance(raw, str):
        raw = raw.encode("ascii", "replace")
    if not raw or len(raw) > MAX_CLAIMS_BYTES:
        return None
    try:
        decoded = json.loads(base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError):
        return None
    return decoded if isinstance(decoded, dict) else None


@dataclass(frozen=True)
class Caller:
    """The caller of the call being served: the workload that connected (from its certificate) and, when
    the call carries trusted claims, the end user on whose behalf it was made."""

    service: str | None = None                                  # "gateway", "orders"; None without mTLS
    spiffe_id: str | None = None
    claims: Mapping[str, Any] = field(default_factory=dict)     # the verified token payload, or empty
    raw_claims: str | None = None                               # as received: forwarded downstream unchanged

    @property
    def subject(self) -> str | None:
        sub = self.claims.get("sub")
        return sub if isinstance(sub, str) else None

    @property
    def scopes(self) -> frozenset[str]:
        return scopes_of(self.claims)

    def has_scopes(self, required: Iterable[str]) -> bool:
        return frozenset(required) <= self.scopes


_caller: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("protomesh_caller", default=None)


def caller() -> Caller | None:
    """The caller of the call being served (None outside a call, or before the runtime identified it)."""
    return _caller.get()


def bind_caller(value: Caller | None) -> contextvars.Token[Caller | None]:
    """Set the current call's caller (the runtime's interceptor does this); returns a token for reset_caller."""
    return _caller.set(value)


def reset_caller(token: contextvars.Token[Caller | None]) -> None:
    """Undo a bind_caller (where a thread serves one call after another)."""
    _caller.reset(token)


def forwarded_claims() -> str | None:
    """The claims an outgoing call made while serving this one carries on (None: it carries none)."""
    current = _caller.get()
    return current.raw_claims if current is not None else None


__all__ = [
    "AUTH_OPTION",
    "CLAIMS_KEY",
    "MAX_CLAIMS_BYTES",
    "POLICY_KEY",
    "UNDECLARED",
    "Caller",
    "Policy",
    "RateLimit",
    "Rule",
    "bind_caller",
    "caller",
    "decode_claims",
    "descriptor_set_rules",
    "effective_rule",
    "forwarded_claims",
    "method_rule",
    "reset_caller",
    "scopes_of",
    "service_rules",
]
