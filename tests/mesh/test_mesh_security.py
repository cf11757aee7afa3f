"""The local mesh's security: the topology's section, the development CA and issuer, Consul ACLs and intentions."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from localmesh import acl
from localmesh.compose import TopologyError
from localmesh.consul import AgentSecurity, ConsulAgent
from localmesh.pki import DevCA, Renewer
from localmesh.security import Intention, SecuritySpec, put_policy, write_intentions
from localmesh.tokens import AUDIENCE, ISSUER, DevIssuer, parse_ttl
from protomesh.auth import POLICY_KEY, Policy, RateLimit, Rule
from protomesh.identity import Credentials, Workload


def _b64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# --- the topology's section --------------------------------------------------------------------------------

def test_the_security_section_reads_intentions_rules_and_rate_limits_as_grpc_paths() -> None:
    spec = SecuritySpec.parse({"security": {
        "intentions": [{"from": "gateway", "to": "*"}, {"from": "orders", "to": "users", "forward_claims": True}],
        "rules": {"grpc.testing.TestService": {"public": True},
                  "grpc.testing.TestService/UnaryCall": {"scopes": ["interop:call"]}},
        "rate_limits": {"acme.users.v1.UserService/CreateUser": {"requests": 5, "per": "2s"}},
        "certificate_ttl": "10m", "plaintext_gateway": "true"}})

    assert spec.intentions == (Intention("gateway", "*"), Intention("orders", "users", forward_claims=True))
    assert spec.policy.rules == {"/grpc.testing.TestService/": Rule(public=True),
                                 "/grpc.testing.TestService/UnaryCall": Rule(frozenset({"interop:call"}))}
    assert spec.policy.rate_limits == {"/acme.users.v1.UserService/CreateUser": RateLimit(5, 2.0)}
    assert (spec.certificate_ttl_s, spec.plaintext_gateway, spec.enabled) == (600.0, True, True)


def test_security_is_on_when_the_topology_says_nothing() -> None:
    spec = SecuritySpec.parse({})
    assert spec.enabled
    assert not spec.plaintext_gateway
    assert spec.intentions == ()


@pytest.mark.parametrize(("section", "named"), [
    ({"intentions": [{"from": "orders"}]}, "intentions[0]"),
    ({"rules": {"NoPackage": {"public": True}}}, "NoPackage"),
    ({"rules": {"a.B": {"public": True, "scopes": ["x:y"]}}}, "either public or name its scopes"),
    ({"rate_limits": {"a.B/C": {"requests": 0}}}, "rate_limits"),
    ({"certificate_ttl": "1s"}, "certificate_ttl"),
    ({"plaintext_gateway": "sometimes"}, "plaintext_gateway"),
    ({"intentons": []}, "unknown key(s) intentons"),
])
def test_a_wrong_security_section_is_refused_naming_the_entry(section: dict[str, object], named: str) -> None:
    with pytest.raises(TopologyError, match=r"x-protomesh\.security") as raised:
        SecuritySpec.parse({"security": section})
    assert named in str(raised.value)


def test_the_projects_topology_lets_the_gateway_call_every_service_and_orders_call_users() -> None:
    from localmesh.testing import project_root
    from localmesh.topology import Topology

    spec = SecuritySpec.parse(Topology.load(project_root(), {}).settings)
    assert Intention("gateway", "*") in spec.intentions
    assert Intention("orders", "users", forward_claims=True) in spec.intentions


def test_a_ttl_reads_seconds_minutes_and_hours() -> None:
    assert [parse_ttl(text) for text in ("90s", "15m", "1h", "42")] == [90, 900, 3600, 42]
    with pytest.raises(ValueError, match="ttl"):
        parse_ttl("soon")


# --- the development CA ---------------------------------------------------------------------------------

def test_a_service_certificate_holds_its_spiffe_id_and_service_name_and_chains_to_the_ca(tmp_path: Path) -> None:
    ca = DevCA.open(tmp_path / "pki")
    issued = ca.issue(Workload.service("users"), ttl_s=60, ip_addresses=["127.0.0.1"])

    cert = x509.load_pem_x509_certificate(issued.cert_pem)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://protomesh.local/service/users"]
    assert sans.get_values_for_type(x509.DNSName) == ["users.svc.protomesh.local"]
    cert.verify_directly_issued_by(ca.cert)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert 60 <= lifetime.total_seconds() <= 60 + 61  # backdated one minute for clock skew


def test_the_ca_is_made_once_and_its_key_is_private(tmp_path: Path) -> None:
    first = DevCA.open(tmp_path / "pki")
    again = DevCA.open(tmp_path / "pki")
    assert again.bundle == first.bundle
    assert (tmp_path / "pki" / "ca-key.pem").stat().st_mode & 0o077 == 0


def test_the_renewer_rewrites_an_identity_at_half_life_with_a_new_serial(tmp_path: Path) -> None:
    ca = DevCA.open(tmp_path / "pki")
    renewer = Renewer(ca, ttl_s=2.0)
    folder = renewer.add(Workload.service("users"), tmp_path / "identities" / "users-1")

    def serial() -> int:
        chain = Credentials.load(folder).certificate_chain
        return int(x509.load_pem_x509_certificate(chain).serial_number)

    async def watch() -> set[int]:
        seen = {serial()}
        await renewer.start()
        try:
            for _ in range(60):  # 3 s: the first renewal is due after 1 s
                await asyncio.sleep(0.05)
                seen.add(serial())
                if len(seen) > 1:
                    break
        finally:
            await renewer.stop()
        return seen

    assert len(asyncio.run(watch())) > 1
    assert (folder / "identity.pem").stat().st_mode & 0o077 == 0


# --- the token issuer -----------------------------------------------------------------------------------

def test_a_development_token_is_es256_over_the_claims_and_verifies_with_the_published_jwk(tmp_path: Path) -> None:
    issuer = DevIssuer.open(tmp_path / "issuer")
    token = issuer.token("alice", ["orders:write", "users:read", "orders:write"], ttl_s=600, now=1_000_000)

    head, body, signature = token.split(".")
    header, claims = json.loads(_b64(head)), json.loads(_b64(body))
    assert header == {"alg": "ES256", "typ": "JWT", "kid": issuer.public_jwk["kid"]}
    assert claims == {"iss": ISSUER, "sub": "alice", "aud": AUDIENCE, "iat": 1_000_000, "nbf": 1_000_000,
                      "exp": 1_000_600, "scope": "orders:write users:read"}
    jwk = json.loads((tmp_path / "issuer" / "jwks.json").read_text())["keys"][0]
    public = ec.EllipticCurvePublicNumbers(int.from_bytes(_b64(jwk["x"])), int.from_bytes(_b64(jwk["y"])),
                                           ec.SECP256R1()).public_key()
    raw = _b64(signature)
    der = encode_dss_signature(int.from_bytes(raw[:32]), int.from_bytes(raw[32:]))
    public.verify(der, f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256()))  # raises when it does not verify


def test_a_token_outliving_a_day_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ttl must be between"):
        DevIssuer.open(tmp_path / "issuer").token("alice", [], ttl_s=2 * 24 * 3600)


# --- Consul with ACLs (a real agent) ---------------------------------------------------------------------

@pytest.fixture
def secured_consul(tmp_path: Path) -> tuple[ConsulAgent, acl.MeshTokens]:
    tokens = acl.MeshTokens.open(tmp_path / acl.TOKENS_FILE)
    agent = ConsulAgent(tmp_path / "logs", security=AgentSecurity(tokens.master))
    agent.start()
    try:
        acl.apply_when_ready(agent.address, tokens, acl.grants(["users", "orders"]))
        yield agent, tokens
    finally:
        agent.stop()


def _status(agent: ConsulAgent, method: str, path: str, token: str | None, body: bytes = b"{}") -> int:
    request = urllib.request.Request(f"http://{agent.address}{path}", data=body, method=method,
                                     headers={"X-Consul-Token": token} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _register(agent: ConsulAgent, name: str, token: str | None) -> int:
    body = json.dumps({"Name": name, "ID": f"{name}-1", "Port": 1}).encode()
    return _status(agent, "PUT", "/v1/agent/service/register", token, body)


def test_consul_refuses_a_registration_without_a_token_or_with_another_services_token(
        secured_consul: tuple[ConsulAgent, acl.MeshTokens]) -> None:
    agent, tokens = secured_consul
    assert _register(agent, "users", None) == 403
    assert _register(agent, "users", tokens.secret("orders")) == 403
    assert _register(agent, "users", tokens.secret("users")) == 200


def test_a_services_token_reads_its_own_config_only_and_writes_no_config(
        secured_consul: tuple[ConsulAgent, acl.MeshTokens]) -> None:
    agent, tokens = secured_consul
    agent.put("/v1/kv/protomesh/config/orders/log_level", "DEBUG")
    agent.put("/v1/kv/protomesh/config/users/log_level", "DEBUG")
    users = tokens.secret("users")
    assert _status(agent, "GET", "/v1/kv/protomesh/config/users/log_level", users, b"") == 200
    assert _status(agent, "GET", "/v1/kv/protomesh/config/orders/log_level", users, b"") in (403, 404)
    assert _status(agent, "PUT", "/v1/kv/protomesh/config/users/log_level", users, b"INFO") == 403
    assert _status(agent, "PUT", "/v1/kv/protomesh/config/orders/log_level", users, b"INFO") == 403


def test_tokens_survive_a_dev_agent_restart_by_being_applied_again(
        secured_consul: tuple[ConsulAgent, acl.MeshTokens]) -> None:
    agent, tokens = secured_consul
    agent.restart()
    assert _register(agent, "users", tokens.secret("users")) == 403  # the new agent does not know the token
    acl.apply_when_ready(agent.address, tokens, acl.grants(["users"]))
    assert _register(agent, "users", tokens.secret("users")) == 200


def test_the_topologys_intentions_and_policy_land_in_consul_and_stale_ones_go(
        secured_consul: tuple[ConsulAgent, acl.MeshTokens]) -> None:
    agent, tokens = secured_consul
    runner = tokens.secret(acl.RUNNER)
    write_intentions(agent.address, runner, [Intention("gateway", "*"), Intention("notifications", "users")])
    write_intentions(agent.address, runner, [Intention("gateway", "*"),
                                             Intention("orders", "users", forward_claims=True)])
    listed = agent.get("/v1/connect/intentions")
    assert isinstance(listed, list)
    assert sorted((i["SourceName"], i["DestinationName"], i["Action"], i["Meta"].get("forward-claims"))
                  for i in listed) == [("gateway", "*", "allow", None), ("orders", "users", "allow", "true")]

    put_policy(agent.address, runner, Policy({"/grpc.testing.TestService/": Rule(public=True)}))
    [entry] = agent.get(f"/v1/kv/{POLICY_KEY}", token=tokens.secret("users"))  # type: ignore[misc]
    assert Policy.parse(json.loads(base64.b64decode(entry["Value"]))).rules == {
        "/grpc.testing.TestService/": Rule(public=True)}
