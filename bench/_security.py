"""The mesh's real security parts for p1 and p3: its development CA and identities, a token issuer, Consul with ACLs.

    pki = BenchPki.create(log_dir / "pki")
    pki.users_dir                        # the backend's identity folder (spiffe://protomesh.local/service/users)
    pki.as_gateway()                     # ghz/_pyload presenting the gateway's certificate to a service port
    with secured_consul(log_dir, pki) as consul:
        consul.allow(Intention("gateway", "users"))
    TLS_JWT_MTLS.gateway_args(pki)       # the control plane's flags of one security variant of the gateway

Everything is what `protomesh up` makes (localmesh.pki, localmesh.tokens, localmesh.acl): certificates of the
dev CA, ES256 tokens, default-deny ACLs with one token per process, intentions through Consul's HTTP API.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from bench._load import ClientTls
from bench._proc import need_binary
from localmesh import acl
from localmesh.consul import AgentSecurity, ConsulAgent
from localmesh.pki import DevCA, Issued, write_identity
from localmesh.tokens import AUDIENCE, DevIssuer
from protomesh.auth import Policy, RateLimit
from protomesh.identity import CA_FILE, Workload, service_host_name
from protomesh.intentions import INTENTIONS_PATH, Intention

# The service every benchmark backend is (bench.grpc_server registers as it).
SERVICE = "users"
# Longer than any benchmark runs; nothing rotates during a measurement.
CERT_TTL_S = 6 * 3600.0
TOKEN_TTL_S = 6 * 3600
# What GetUser's contract asks of a caller's token: `(protomesh.v1.auth) = {scopes: "users:read"}`.
READ_SCOPES = ("users:read",)
# The rate-limited setting: GetUser gets a token bucket of its own, so every call takes a token, but one no
# benchmark empties (what the filter costs, not what refusing costs).
RATE_LIMITED = Policy(rate_limits={"/acme.users.v1.UserService/GetUser": RateLimit(requests=1_000_000, per_s=1.0)})


@dataclass
class BenchPki:
    """A development CA with the identities a secured gateway stack needs, and a token issuer."""

    folder: Path
    ca: DevCA
    issuer: DevIssuer

    @classmethod
    def create(cls, folder: Path) -> BenchPki:
        made = cls(folder, DevCA.open(folder / "ca"), DevIssuer.open(folder / "issuer"))
        made.issue(Workload.service(SERVICE), made.users_dir)
        gateway = made.issue(Workload.service("gateway"), made.gateway_dir)
        # ghz takes the certificate and its key as two files: the gateway's own, split.
        made._write(made.client_dir, gateway)
        # The edge certificate: what HTTPS clients of 127.0.0.1 (or localhost) check, as the local mesh issues it.
        made.issue(Workload.service("gateway"), made.edge_dir, dns_names=("localhost",), ip_addresses=("127.0.0.1",))
        return made

    def issue(self, workload: Workload, folder: Path, *, dns_names: Sequence[str] = (),
              ip_addresses: Sequence[str] = ()) -> Issued:
        """A certificate of the CA for workload, written as an identity folder (identity.pem + ca.pem)."""
        issued = self.ca.issue(workload, ttl_s=CERT_TTL_S, dns_names=dns_names, ip_addresses=ip_addresses)
        write_identity(folder, issued, self.ca.bundle)
        return issued

    def _write(self, folder: Path, issued: Issued) -> None:
        """cert.pem, key.pem and ca.pem: the three files of a TLS client or of Consul's agent."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "cert.pem").write_bytes(issued.cert_pem)
        (folder / "key.pem").write_bytes(issued.key_pem)
        (folder / CA_FILE).write_bytes(self.ca.bundle)

    @property
    def users_dir(self) -> Path:
        return self.folder / "identities" / SERVICE

    @property
    def gateway_dir(self) -> Path:
        """The gateway's workload identity (`--identity-dir`): what it presents to services."""
        return self.folder / "identities" / "gateway"

    @property
    def edge_dir(self) -> Path:
        """The gateway listener's certificate (`--edge-identity-dir`)."""
        return self.folder / "identities" / "edge"

    @property
    def client_dir(self) -> Path:
        return self.folder / "gateway-client"

    @property
    def ca_file(self) -> Path:
        return self.users_dir / CA_FILE

    def as_gateway(self) -> ClientTls:
        """A load generator on a service port presenting the gateway's certificate and expecting the service's
        name, as Envoy does: the service then does for it exactly what it does for the gateway."""
        return ClientTls(self.ca_file, self.client_dir / "cert.pem", self.client_dir / "key.pem",
                         service_host_name(SERVICE))

    def edge_client(self) -> ClientTls:
        return ClientTls(self.ca_file)

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    @cached_property
    def token(self) -> str:
        """One token of a caller allowed to read users (the same for every request, as a client reuses it)."""
        return self.issuer.token("bench", READ_SCOPES, ttl_s=TOKEN_TTL_S)

    @property
    def claims(self) -> str:
        """What Envoy's jwt_authn forwards to services in x-protomesh-claims: the token's payload segment."""
        return self.token.split(".")[1]

    def jwt_args(self) -> list[str]:
        return ["--jwks-file", str(self.issuer.jwks_path), "--jwt-issuer", self.issuer.issuer,
                "--jwt-audience", AUDIENCE]

    def agent_security(self, master_token: str) -> AgentSecurity:
        """ACLs on, and the agent's own certificate for its TLS health checks of mTLS ports."""
        folder = self.folder / "agent"
        self._write(folder, self.ca.issue(Workload.agent("consul"), ttl_s=CERT_TTL_S))
        return AgentSecurity(master_token, folder / CA_FILE, folder / "cert.pem", folder / "key.pem")


@dataclass
class SecuredConsul:
    """A Consul dev agent with default-deny ACLs, and the token of each process that talks to it."""

    agent: ConsulAgent
    tokens: acl.MeshTokens

    @property
    def address(self) -> str:
        return self.agent.address

    def token(self, name: str) -> str:
        return self.tokens.secret(name)

    def allow(self, *intentions: Intention) -> None:
        """Store intentions as the local mesh's runner does (Consul 1.8: POST /v1/connect/intentions)."""
        for intention in intentions:
            self._call("POST", INTENTIONS_PATH, intention.to_consul())

    def _call(self, method: str, path: str, body: object) -> None:
        request = urllib.request.Request(f"http://{self.address}{path}", data=json.dumps(body).encode(),
                                         method=method, headers={"X-Consul-Token": self.token(acl.RUNNER)})
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()


@contextlib.contextmanager
def secured_consul(log_dir: Path, pki: BenchPki) -> Iterator[SecuredConsul]:
    """Consul with ACLs (default deny) and the mesh's tokens (agent, runner, control plane, users), as `protomesh
    up` applies them; stopped by its PID on exit."""
    need_binary("consul")
    tokens = acl.MeshTokens.open(log_dir / "consul-tokens.json")
    agent = ConsulAgent(log_dir, security=pki.agent_security(tokens.master))
    try:
        agent.start()
        acl.apply_when_ready(agent.address, tokens, acl.grants([SERVICE]))
        yield SecuredConsul(agent, tokens)
    finally:
        agent.stop()



@dataclass(frozen=True)
class GatewaySecurity:
    """One security setting of the gateway stack: TLS at the edge, bearer tokens checked (jwt_authn and the
    per-rpc scopes), mTLS from Envoy to the service (which then authorizes every call). All off is the
    development gateway P3's own goal is measured with; all on is what `protomesh up` runs."""

    name: str
    edge_tls: bool = False
    jwt: bool = False
    mtls: bool = False
    # GetUser under a rate limit of the policy in Consul (RATE_LIMITED), on any of the settings above.
    rate_limit: bool = False

    @property
    def off(self) -> bool:
        """No TLS and no token anywhere: Consul without ACLs, no PKI (a rate limit needs neither)."""
        return not (self.edge_tls or self.jwt or self.mtls)

    @property
    def what(self) -> str:
        parts = [("TLS at the edge", self.edge_tls), ("JWT checked", self.jwt), ("mTLS to the service", self.mtls)]
        security = " + ".join(part for part, on in parts if on) or "plaintext, no token, plaintext to the service"
        return f"{security}, GetUser rate-limited (a bucket it never empties)" if self.rate_limit else security

    def gateway_args(self, pki: BenchPki) -> list[str]:
        """The control plane's flags for this setting (as localmesh.security.gateway_arguments builds them)."""
        args = ["--edge-identity-dir", str(pki.edge_dir)] if self.edge_tls else ["--plaintext"]
        if self.jwt:
            args += pki.jwt_args()
        return args + (["--identity-dir", str(pki.gateway_dir)] if self.mtls else [])


PLAINTEXT = GatewaySecurity("off")
TLS = GatewaySecurity("tls", edge_tls=True)
TLS_JWT = GatewaySecurity("tls+jwt", edge_tls=True, jwt=True)
TLS_JWT_MTLS = GatewaySecurity("tls+jwt+mtls", edge_tls=True, jwt=True, mtls=True)
RATE_LIMIT = GatewaySecurity("ratelimit", rate_limit=True)
