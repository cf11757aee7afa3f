"""Who may call what through the gateway: the contracts' rules and the topology's policy, per gRPC path.

Pure: `access_rules(descriptor, policy)` folds the `(protomesh.v1.auth)` option of every method the descriptor set
holds and the policy stored in Consul (rules for contracts the project does not own, rate limits) into one
table the filter builders read (see edge_filters.py). A contract's own rule always wins over the policy's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gateway_envoy.catalog import routable
from gateway_envoy.descriptor import Descriptor
from protomesh.auth import Policy, RateLimit, Rule, effective_rule


@dataclass(frozen=True)
class PathRule:
    """The rule for one method path (`/pkg.Service/Method`), or for a service prefix (`/pkg.Service/`) naming rpcs
    the descriptor set does not hold (a service only Consul announces); `excluded` are that service's method
    paths with rules of their own."""

    path: str
    rule: Rule
    excluded: tuple[str, ...] = ()

    @property
    def prefix(self) -> bool:
        return self.path.endswith("/")


@dataclass(frozen=True)
class AccessRules:
    """Every path with a rule, exact method paths first; everything else needs a valid token and no scope."""

    rules: tuple[PathRule, ...] = ()
    # Per-method token buckets: exact method paths only (a service prefix names each of its methods).
    rate_limits: tuple[tuple[str, RateLimit], ...] = ()

    def public(self) -> list[PathRule]:
        return [rule for rule in self.rules if rule.rule.public]

    def scoped(self) -> list[PathRule]:
        return [rule for rule in self.rules if not rule.rule.public and rule.rule.scopes]


def _service_of(path: str) -> str:
    return path.rsplit("/", 1)[0] + "/"


def _routable_path(path: str) -> bool:
    return routable(path.strip("/").split("/", 1)[0])


def access_rules(descriptor: Descriptor, policy: Policy) -> AccessRules:
    """The rules of every routable method of the descriptor set, plus the policy's entries for rpcs it lacks."""
    declared = dict(descriptor.declared_rules)
    methods = [path for path in descriptor.methods if _routable_path(path)]
    known = set(methods)
    exact = {path: effective_rule(path, declared, policy) for path in methods}
    exact.update({path: rule for path, rule in policy.rules.items() if not path.endswith("/") and path not in known})
    described = {_service_of(path) for path in methods}
    prefixes = [PathRule(path, rule, tuple(sorted(p for p in exact if p.startswith(path))))
                for path, rule in sorted(policy.rules.items()) if path.endswith("/") and path not in described]
    rules = [PathRule(path, rule) for path, rule in sorted(exact.items()) if rule.declared]
    return AccessRules(tuple(rules + prefixes), tuple(sorted(_limits(methods, policy).items())))


def _limits(methods: Iterable[str], policy: Policy) -> dict[str, RateLimit]:
    """A method's own limit, else its service's (one bucket per method, of that size)."""
    limits = {path: limit for path, limit in policy.rate_limits.items() if not path.endswith("/")}
    for path in methods:
        service_limit = policy.rate_limits.get(_service_of(path))
        if service_limit is not None:
            limits.setdefault(path, service_limit)
    return {path: limit for path, limit in limits.items() if _routable_path(path)}
