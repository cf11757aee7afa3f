"""The local mesh's security, declared in the topology's `x-protomesh.security` and held in the mesh's state.

    x-protomesh:
      security:
        intentions:                                   # who may call whom; everything else is denied
          - {from: gateway, to: "*"}
          - {from: orders, to: users, forward_claims: true}
        rules:                                        # for contracts the project does not own
          grpc.testing.TestService: {public: true}
        rate_limits:                                  # per-method token buckets at the gateway
          acme.users.v1.UserService/CreateUser: {requests: 100, per: 1s}

Other keys: `enabled` (default true; false runs everything plaintext, with no checks), `plaintext_gateway`
(default false: the gateway serves TLS), `trust_domain` (default protomesh.local), `certificate_ttl`
(default 1h; certificates rotate at half life).

`MeshSecurity` is what one running mesh holds: its development CA (var/mesh/pki), token issuer
(var/mesh/issuer), Consul tokens (var/mesh/consul/tokens.json) and the renewer that keeps every
instance's identity folder (var/mesh/identities/<instance>) fresh.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localmesh import acl
from localmesh.compose import TopologyError
from localmesh.consul import AgentSecurity
from localmesh.pki import DevCA, Renewer, write_identity
from localmesh.tokens import AUDIENCE, DevIssuer, parse_ttl
from protomesh.auth import POLICY_KEY, Policy
from protomesh.identity import CA_FILE, CONSUL_AGENT, GATEWAY, TRUST_DOMAIN, Workload
from protomesh.intentions import Intention

SECTION = "security"
# Folders of a mesh's state: its development CA and its token issuer.
PKI_FOLDER, ISSUER_FOLDER = "pki", "issuer"
DEFAULT_CERTIFICATE_TTL_S = 3600.0
# Consul reads its certificate once, at start: it gets one that outlives any local session.
CONSUL_AGENT_TTL_S = 30 * 24 * 3600.0
# Where the gateway's certificates go, by folder name under identities/.
EDGE_FOLDER, GATEWAY_FOLDER = "gateway-edge", "gateway"
# Names the edge certificate is valid for: the loopback addresses the gateway listens on.
EDGE_DNS_NAMES = ("localhost",)
EDGE_IP_ADDRESSES = ("127.0.0.1", "::1")
_INTENTION_DESCRIPTION = "protomesh topology"


@dataclass(frozen=True)
class SecuritySpec:
    """The topology's `x-protomesh.security`, checked."""

    enabled: bool = True
    plaintext_gateway: bool = False
    trust_domain: str = TRUST_DOMAIN
    certificate_ttl_s: float = DEFAULT_CERTIFICATE_TTL_S
    intentions: tuple[Intention, ...] = ()
    policy: Policy = field(default_factory=Policy)

    @classmethod
    def parse(cls, settings: Mapping[str, Any]) -> SecuritySpec:
        raw = settings.get(SECTION)
        where = f"x-protomesh.{SECTION}"
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise TopologyError(f"{where}: expected a mapping")
        known = {"enabled", "plaintext_gateway", "trust_domain", "certificate_ttl", "intentions", "rules",
                 "rate_limits"}
        if unknown := sorted(set(raw) - known):
            raise TopologyError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        try:
            ttl = parse_ttl(str(raw.get("certificate_ttl", f"{int(DEFAULT_CERTIFICATE_TTL_S)}s")))
            policy = Policy.parse({"rules": _paths(raw.get("rules"), f"{where}.rules"),
                                   "rate_limits": _limits(raw.get("rate_limits"), f"{where}.rate_limits")})
        except ValueError as exc:
            raise TopologyError(f"{where}: {exc}") from None
        if ttl < 2:
            raise TopologyError(f"{where}.certificate_ttl: at least 2 s (certificates rotate at half life)")
        return cls(enabled=_flag(raw, "enabled", True, where), plaintext_gateway=_flag(raw, "plaintext_gateway",
                   False, where), trust_domain=str(raw.get("trust_domain") or TRUST_DOMAIN),
                   certificate_ttl_s=float(ttl), intentions=_intentions(raw.get("intentions"), f"{where}.intentions"),
                   policy=policy)


def _flag(raw: Mapping[str, Any], key: str, default: bool, where: str) -> bool:
    value = raw.get(key, default)
    if isinstance(value, str) and value.lower() in ("true", "false"):  # an interpolated ${VARIABLE}
        return value.lower() == "true"
    if not isinstance(value, bool):
        raise TopologyError(f"{where}.{key}: expected true or false, got {value!r}")
    return value


def _method_path(name: object, where: str) -> str:
    """`pkg.Service/Method` or `pkg.Service` (every rpc of it), as a gRPC path or service prefix."""
    text = str(name).strip("/")
    service, _, method = text.partition("/")
    if not service or "." not in service or "/" in method:
        raise TopologyError(f"{where}: {name!r}: expected package.Service or package.Service/Method")
    return f"/{service}/{method}" if method else f"/{service}/"


def _paths(raw: object, where: str) -> dict[str, object]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise TopologyError(f"{where}: expected a mapping of package.Service[/Method] to a rule")
    return {_method_path(name, where): rule for name, rule in raw.items()}


def _limits(raw: object, where: str) -> dict[str, object]:
    limits: dict[str, object] = {}
    for path, value in _paths(raw, where).items():
        if not isinstance(value, Mapping) or not set(value) <= {"requests", "per"}:
            raise TopologyError(f"{where}: {path}: expected {{requests: N, per: 1s}}")
        requests = value.get("requests")
        if isinstance(requests, str) and requests.isdigit():  # an interpolated ${VARIABLE}
            requests = int(requests)
        limits[path] = {"requests": requests, "per_s": parse_ttl(str(value.get("per", "1s")))}
    return limits


def _intentions(raw: object, where: str) -> tuple[Intention, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise TopologyError(f"{where}: expected a list of {{from: SERVICE, to: SERVICE}}")
    made = []
    for index, entry in enumerate(raw):
        if not isinstance(entry, Mapping) or not {"from", "to"} <= set(entry) or not set(entry) <= {
                "from", "to", "forward_claims"}:
            raise TopologyError(f"{where}[{index}]: expected {{from: SERVICE, to: SERVICE[, forward_claims: true]}}")
        made.append(Intention(str(entry["from"]), str(entry["to"]),
                              forward_claims=_flag(entry, "forward_claims", False, f"{where}[{index}]")))
    return tuple(made)


class MeshSecurity:
    """One mesh's CA, token issuer, Consul tokens and identity renewer (under its state folder)."""

    def __init__(self, spec: SecuritySpec, state_dir: Path) -> None:
        self.spec = spec
        self.state_dir = state_dir
        self.ca = DevCA.open(state_dir / PKI_FOLDER, trust_domain=spec.trust_domain)
        self.issuer = DevIssuer.open(state_dir / ISSUER_FOLDER)
        self.tokens = acl.MeshTokens.open(state_dir / acl.TOKENS_FILE)
        self.renewer = Renewer(self.ca, ttl_s=spec.certificate_ttl_s)

    @property
    def ca_file(self) -> Path:
        return self.ca.folder / CA_FILE

    def token(self, name: str) -> str:
        """The Consul token of a process of the mesh (a service name, or acl.RUNNER, acl.CONTROLPLANE...)."""
        return self.tokens.secret(name)

    def identity(self, folder: str, workload: Workload, *, dns_names: Sequence[str] = (),
                 ip_addresses: Sequence[str] = ()) -> Path:
        """An identity folder for workload, issued now and renewed at half life while the mesh runs."""
        return self.renewer.add(workload, self.state_dir / "identities" / folder, dns_names=dns_names,
                                ip_addresses=ip_addresses)

    def workload(self, name: str) -> Workload:
        return Workload.service(name, self.spec.trust_domain)

    def consul_agent(self, folder: Path | None = None) -> AgentSecurity:
        """ACLs (this mesh's master token) and a certificate for the agent's TLS health checks, written into folder
        (default <state>/identities/consul-agent; the container stack's issuer gives Consul's container its own)."""
        folder = folder or self.state_dir / "identities" / "consul-agent"
        issued = self.ca.issue(Workload.agent(CONSUL_AGENT, self.spec.trust_domain), ttl_s=CONSUL_AGENT_TTL_S)
        write_identity(folder, issued, self.ca.bundle)
        # Consul takes the key and the certificate as two files.
        (folder / "cert.pem").write_bytes(issued.cert_pem)
        key = folder / "key.pem"
        key.touch(mode=0o600)
        key.write_bytes(issued.key_pem)
        return AgentSecurity(self.tokens.master, ca_file=self.ca_file, cert_file=folder / "cert.pem", key_file=key)

    async def configure_consul(self, address: str, services: Sequence[str]) -> None:
        """Policies and tokens, the topology's intentions and the security policy, in a (re)started agent."""
        await asyncio.to_thread(acl.apply, address, self.tokens, acl.grants(services))
        runner = self.token(acl.RUNNER)
        await asyncio.to_thread(write_intentions, address, runner, self.spec.intentions)
        await asyncio.to_thread(put_policy, address, runner, self.spec.policy)

    def service_environment(self, settings_prefix: str, service: str, instance: str) -> dict[str, str]:
        """What one instance of a service is started with: its identity folder, trust domain and token."""
        folder = self.identity(instance, self.workload(service))
        return {f"{settings_prefix}SECURITY__MODE": "mtls",
                f"{settings_prefix}SECURITY__IDENTITY_DIR": str(folder),
                f"{settings_prefix}SECURITY__TRUST_DOMAIN": self.spec.trust_domain,
                "CONSUL_HTTP_TOKEN": self.token(service)}

    def gateway_arguments(self) -> list[str]:
        """The control plane's flags: TLS at the edge (unless plaintext), mTLS to services, the issuer's JWKS."""
        mesh = self.identity(GATEWAY_FOLDER, self.workload(GATEWAY))
        edge: list[str] = ["--plaintext"]
        if not self.spec.plaintext_gateway:
            folder = self.identity(EDGE_FOLDER, self.workload(GATEWAY), dns_names=EDGE_DNS_NAMES,
                                   ip_addresses=EDGE_IP_ADDRESSES)
            edge = ["--edge-identity-dir", str(folder)]
        return [*edge, "--identity-dir", str(mesh), "--trust-domain", self.spec.trust_domain,
                "--jwks-file", str(self.issuer.jwks_path), "--jwt-issuer", self.issuer.issuer,
                "--jwt-audience", AUDIENCE]


def _consul(address: str, method: str, path: str, token: str, body: object | None = None) -> object:
    data = json.dumps(body).encode() if body is not None and not isinstance(body, bytes) else body
    request = urllib.request.Request(f"http://{address}{path}", data=data, method=method,
                                     headers={"X-Consul-Token": token})
    with urllib.request.urlopen(request, timeout=5) as response:
        raw = response.read()
    try:
        return json.loads(raw or b"null")
    except ValueError:
        return raw.decode()


def write_intentions(address: str, token: str, wanted: Sequence[Intention]) -> None:
    """Make Consul's intentions the topology's: create what is missing, update what changed, delete the ones
    the topology no longer lists (only ones it made: other intentions are left alone)."""
    existing = _consul(address, "GET", "/v1/connect/intentions", token)
    current = {(i["SourceName"], i["DestinationName"]): i for i in existing if isinstance(i, dict)} \
        if isinstance(existing, list) else {}
    for intention in wanted:
        body = {**intention.to_consul(), "Description": _INTENTION_DESCRIPTION}
        found = current.pop((intention.source, intention.destination), None)
        if found is None:
            _consul(address, "POST", "/v1/connect/intentions", token, body)
        elif found.get("Action") != body["Action"] or (found.get("Meta") or {}) != body["Meta"]:
            _consul(address, "PUT", f"/v1/connect/intentions/{found['ID']}", token, body)
    for stale in current.values():
        if stale.get("Description") == _INTENTION_DESCRIPTION:
            _consul(address, "DELETE", f"/v1/connect/intentions/{stale['ID']}", token)


def put_policy(address: str, token: str, policy: Policy) -> None:
    """The security policy as JSON at POLICY_KEY, where the control plane and every service follow it."""
    _consul(address, "PUT", f"/v1/kv/{POLICY_KEY}", token, json.dumps(policy.to_json(), sort_keys=True).encode())

