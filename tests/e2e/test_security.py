"""The mesh as `make up` runs it is secured: TLS and tokens at the gateway, mTLS and intentions between services,
Consul ACLs, and certificates that rotate under load without a failed call.

One mesh for the module, with certificates of 10 s (rotated every 5 s), so every test here also runs across
rotations of every certificate in the mesh.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
import ssl
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
import grpc.aio
import pytest
import pytest_asyncio
from acme.users.v1 import users_service_pb2 as users_pb
from acme.users.v1 import users_service_pb2_grpc as users_grpc
from cryptography import x509

from localmesh.pki import DevCA, write_identity
from localmesh.testing import GatewayClient, Mesh, isolated_mesh, project_root
from protomesh.identity import Credentials, Workload, service_host_name

pytestmark = pytest.mark.asyncio(loop_scope="module")
log = logging.getLogger("e2e.security")

CERTIFICATE_TTL_S = 10
# Sign-ups per second (the topology's rate limit on CreateUser): small, so a burst of a dozen meets it.
SIGNUP_RATE_LIMIT = 5
# Long enough for two rotations of every certificate (at half life, every 5 s).
LOAD_S = 12.0


@dataclass
class Secured:
    mesh: Mesh
    client: GatewayClient
    identities: Path  # client identities the tests issue from the mesh's CA

    def consul(self, path: str, token: str | None = None) -> object:
        headers = {"X-Consul-Token": self.mesh.ctx.consul_token if token is None else token}
        request = urllib.request.Request(f"http://{self.mesh.ctx.consul_address}{path}", headers=headers)
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read() or b"null")

    def instances(self, service: str) -> list[str]:
        entries = self.consul(f"/v1/health/service/{service}?passing=true")
        assert isinstance(entries, list)
        return [f"{e['Service']['Address']}:{e['Service']['Port']}" for e in entries]

    def identity_of(self, workload: Workload) -> Path:
        """A client identity from the mesh's own CA (what a compromised or misconfigured peer would hold)."""
        security = self.mesh.ctx.security
        assert security is not None
        folder = self.identities / workload.name
        write_identity(folder, security.ca.issue(workload, ttl_s=600), security.ca.bundle)
        return folder


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def secured(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Secured]:
    state = tmp_path_factory.mktemp("mesh")
    knobs = {"CERTIFICATE_TTL": f"{CERTIFICATE_TTL_S}s", "SIGNUP_RATE_LIMIT": str(SIGNUP_RATE_LIMIT)}
    async with isolated_mesh(project_root(), state, overrides=knobs) as mesh:
        yield Secured(mesh, GatewayClient.of(mesh), tmp_path_factory.mktemp("identities"))


async def rest(secured: Secured, method: str, path: str, *, token: str | None = None, body: object | None = None,
               headers: dict[str, str] | None = None) -> tuple[int, dict[str, object], aiohttp.typedefs.LooseHeaders]:
    async with secured.client.session(token) as http, \
            http.request(method, f"{secured.client.url}{path}", json=body, headers=headers) as response:
        return response.status, await response.json(content_type=None), response.headers


async def sign_up(secured: Secured) -> str:
    status, body, _ = await rest(secured, "POST", "/v1/users",
                                 body={"email": f"{uuid.uuid4().hex[:10]}@example.com", "displayName": "Ada"})
    assert status == 200, body
    return str(body["user"]["userId"])  # type: ignore[index]


# --- at the edge ------------------------------------------------------------------------------------------

async def test_signing_up_is_public_and_reading_a_user_needs_a_token_with_users_read(secured: Secured) -> None:
    user_id = await sign_up(secured)

    status, body, headers = await rest(secured, "GET", f"/v1/users/{user_id}")
    assert (status, body["code"], body["message"]) == (401, 16, "authentication required")
    assert headers["content-type"].startswith("application/json")

    status, body, _ = await rest(secured, "GET", f"/v1/users/{user_id}", token=secured.client.token("orders:read"))
    assert (status, body["code"], body["message"]) == (403, 7, "permission denied")

    status, body, _ = await rest(secured, "GET", f"/v1/users/{user_id}", token=secured.client.token("users:read"))
    assert status == 200, body
    assert body["user"]["userId"] == user_id  # type: ignore[index]


async def test_grpc_callers_get_unauthenticated_and_permission_denied_with_plain_messages(secured: Secured) -> None:
    user_id = await sign_up(secured)
    request = users_pb.GetUserRequest(user_id=user_id)
    for token, code, message in [(None, grpc.StatusCode.UNAUTHENTICATED, "authentication required"),
                                 (secured.client.token("orders:read"), grpc.StatusCode.PERMISSION_DENIED,
                                  "permission denied")]:
        async with secured.client.channel(token) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await users_grpc.UserServiceStub(channel).GetUser(request, timeout=5)
        assert (denied.value.code(), denied.value.details()) == (code, message)
    async with secured.client.channel(secured.client.token("users:read")) as channel:
        reply = await users_grpc.UserServiceStub(channel).GetUser(request, timeout=5)
    assert reply.user.user_id == user_id


async def test_claims_a_client_writes_itself_never_reach_a_service(secured: Secured) -> None:
    user_id = await sign_up(secured)
    forged = base64.urlsafe_b64encode(json.dumps({"sub": "mallory", "scope": "users:read"}).encode()).decode()
    status, body, _ = await rest(secured, "GET", f"/v1/users/{user_id}", headers={"x-protomesh-claims": forged})
    assert (status, body["code"]) == (401, 16)


async def test_the_topologys_rate_limit_on_sign_up_answers_429_with_retry_after_then_refills(secured: Secured) -> None:
    async def one() -> tuple[int, str | None]:
        status, _, headers = await rest(secured, "POST", "/v1/users", body={
            "email": f"{uuid.uuid4().hex[:10]}@example.com", "displayName": "burst"})
        return status, headers.get("retry-after")

    answers = await asyncio.gather(*(one() for _ in range(3 * SIGNUP_RATE_LIMIT)))
    limited = [retry for status, retry in answers if status == 429]
    assert limited, sorted({status for status, _ in answers})
    assert all(retry is not None and int(retry) >= 1 for retry in limited)
    await asyncio.sleep(1.5)
    assert (await one())[0] == 200


# --- inside the mesh ------------------------------------------------------------------------------------

async def _get_user_directly(target: str, identity: Path | None, ca: bytes | None) -> grpc.StatusCode:
    if identity is None:
        channel = grpc.aio.insecure_channel(target)
    else:
        creds = Credentials.load(identity)
        channel = grpc.aio.secure_channel(
            target, grpc.ssl_channel_credentials(ca or creds.trust_bundle, creds.private_key, creds.certificate_chain),
            options=[("grpc.ssl_target_name_override", service_host_name("users"))])
    async with channel:
        try:
            await users_grpc.UserServiceStub(channel).GetUser(users_pb.GetUserRequest(user_id="nobody"), timeout=3)
        except grpc.aio.AioRpcError as error:
            return error.code()
    return grpc.StatusCode.OK


async def test_a_service_port_refuses_plaintext_and_a_certificate_from_another_ca(secured: Secured,
                                                                                   tmp_path: Path) -> None:
    target = secured.instances("users")[0]
    assert await _get_user_directly(target, None, None) == grpc.StatusCode.UNAVAILABLE

    stranger = DevCA.open(tmp_path / "other-ca")
    folder = tmp_path / "stranger"
    write_identity(folder, stranger.issue(Workload.service("orders"), ttl_s=600), stranger.bundle)
    security = secured.mesh.ctx.security
    assert security is not None
    assert await _get_user_directly(target, folder, security.ca.bundle) == grpc.StatusCode.UNAVAILABLE


async def test_orders_may_call_users_and_notifications_may_not(secured: Secured) -> None:
    target = secured.instances("users")[0]
    orders = secured.identity_of(Workload.service("orders"))
    notifications = secured.identity_of(Workload.service("notifications"))

    # orders in its own name: its intention allows it; the user does not exist.
    assert await _get_user_directly(target, orders, None) == grpc.StatusCode.NOT_FOUND
    assert await _get_user_directly(target, notifications, None) == grpc.StatusCode.PERMISSION_DENIED

    logs = secured.mesh.state_dir / "logs"
    denial = [line for path in logs.glob("users-*.log") for line in path.read_text().splitlines()
              if "spiffe://protomesh.local/service/notifications" in line
              and "spiffe://protomesh.local/service/users" in line]
    assert denial, "the denial is logged with both identities"


def _register(secured: Secured, name: str, token: str) -> int:
    body = json.dumps({"Name": name, "ID": f"{name}-intruder", "Port": 1}).encode()
    request = urllib.request.Request(f"http://{secured.mesh.ctx.consul_address}/v1/agent/service/register",
                                     data=body, method="PUT", headers={"X-Consul-Token": token} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


async def test_consul_refuses_a_registration_without_a_token_or_with_another_services(secured: Secured) -> None:
    security = secured.mesh.ctx.security
    assert security is not None
    assert _register(secured, "orders", "") == 403
    assert _register(secured, "orders", security.token("users")) == 403


# --- rotation under load --------------------------------------------------------------------------------

def served_serial(address: str, identity: Path, *, server_name: str | None = None) -> int:
    """The serial of the certificate a TLS server presents on a new connection (verified against the CA)."""
    host, _, port = address.rpartition(":")
    context = ssl.create_default_context(cafile=str(identity / "ca.pem"))
    context.check_hostname = False
    context.load_cert_chain(identity / "identity.pem")
    context.set_alpn_protocols(["h2"])
    with socket.create_connection((host, int(port)), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=server_name or host) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return int(x509.load_der_x509_certificate(der).serial_number)


async def test_certificates_rotate_under_load_with_no_failed_call(secured: Secured) -> None:
    user_id = await sign_up(secured)
    token = secured.client.token("users:read", "orders:write")
    probe = secured.identity_of(Workload.service("orders"))
    users = secured.instances("users")[0]
    first = served_serial(users, probe), served_serial(secured.client.address, probe, server_name="localhost")
    failures: list[str] = []
    calls = 0
    stop = time.monotonic() + LOAD_S

    async def load(http: aiohttp.ClientSession) -> None:
        nonlocal calls
        while time.monotonic() < stop:
            # GetUser: gateway -> users; CreateOrder: gateway -> orders -> users (claims forwarded).
            async with http.get(f"{secured.client.url}/v1/users/{user_id}") as response:
                calls += 1
                if response.status != 200:
                    failures.append(f"GET {response.status} {await response.text()}")
            order = {"userId": user_id, "lineItems": [{"sku": "book", "quantity": 1, "unitPriceCents": 100}]}
            async with http.post(f"{secured.client.url}/v1/orders", json=order) as response:
                calls += 1
                if response.status != 200:
                    failures.append(f"POST {response.status} {await response.text()}")

    async with secured.client.session(token) as http:
        await asyncio.gather(*(load(http) for _ in range(4)))
    last = served_serial(users, probe), served_serial(secured.client.address, probe, server_name="localhost")
    log.info("step: %d calls across rotations; serials users %x -> %x, gateway %x -> %x", calls, first[0], last[0],
             first[1], last[1])
    assert failures == []
    assert calls > 40
    assert last[0] != first[0], "the users instance serves a new certificate"
    assert last[1] != first[1], "the gateway serves a new certificate"
