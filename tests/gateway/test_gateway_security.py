"""The secured gateway with real Consul (ACLs, default deny), control plane and Envoy: TLS at the edge, tokens,
scopes from the contracts and the policy, rate limits, mTLS to services, and certificates rotated under load.

Backends are small grpc.aio servers on mTLS ports (secure_backend.py) that echo what reached them."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import socket
import ssl
import subprocess
import time
import urllib.error
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import grpc.aio
import pytest
import pytest_asyncio
from cryptography import x509
from edge_support import Answer, SecureStack, bearer, https, put_policy, start_secure_stack
from gateway_support import step
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from secure_backend import FOREIGN, IMPOSTOR, SECURE, Backend, Messages, compile_secure

from localmesh import acl
from localmesh.testing import project_root, wait_until
from localmesh.tokens import AUDIENCE, DevIssuer, b64url
from protomesh import ConsulSettings
from protomesh.aio import poll_until
from protomesh.auth import POLICY_KEY, decode_claims
from protomesh.consul import ConsulClient
from protomesh.identity import Workload

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

LIMITED = f"/{SECURE}/Limited"
# Two calls, then one more every 10 s: slow enough that a bucket emptied by REST is still empty for gRPC, and
# after a route update.
LIMIT = {"requests": 2, "per_s": 20}
POLICY = {"rules": {f"/{FOREIGN}/": {"public": True}, f"/{FOREIGN}/Guarded": {"scopes": ["foreign:call"]}},
          "rate_limits": {LIMITED: LIMIT}}
# The control plane looks at the folders and the JWKS every second; Envoy applies a push at once.
ROTATION_WITHIN_S = 10.0
UNAUTHENTICATED_BODY = {"code": 16, "message": "authentication required", "details": []}
CHALLENGE = 'Bearer realm="protomesh"'
# Envoy's own words for its refusals: none may reach a client.
ENVOY_TEXTS = (b"Jwt", b"jwt", b"RBAC", b"rbac", b"local_rate_limited", b"Audiences", b"envoy")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureStack]:
    workdir = tmp_path_factory.mktemp("security")
    started = start_secure_stack(workdir, compile_secure(workdir, project_root() / "protos"), POLICY)
    try:
        yield started
    finally:
        started.close()


@pytest.fixture(scope="module")
def messages(stack: SecureStack) -> Messages:
    return Messages.load(stack.gateway.descriptor)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def consul(stack: SecureStack) -> AsyncIterator[ConsulClient]:
    client = ConsulClient.from_settings(ConsulSettings(address=stack.consul.address,
                                                       token=stack.security.tokens.master))
    try:
        yield client
    finally:
        await client.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def backends(stack: SecureStack, messages: Messages, consul: ConsulClient) -> AsyncIterator[dict[str, Backend]]:
    """`secure` serves SecureService and ForeignService with its own certificate; `impostor` serves
    ImpostorService holding the certificate of `secure`."""
    made = {"secure": Backend("secure", stack.security.identity("secure"), messages, (SECURE, FOREIGN)),
            "impostor": Backend("impostor", stack.security.identity("impostor", holding="secure"), messages,
                                (IMPOSTOR,))}
    for backend in made.values():
        await backend.start(consul)
    for name in made:
        await asyncio.to_thread(wait_until, lambda name=name: bool(stack.gateway.hosts(name)),
                                what=f"{name} endpoints in Envoy")
    try:
        yield made
    finally:
        for backend in made.values():
            await backend.stop(consul)


async def call(messages: Messages, stack: SecureStack, service: str, method: str, *, token: str | None = None,
               metadata: tuple[tuple[str, str], ...] = (), timeout: float | None = 5) -> Any:
    """One gRPC call over TLS: the response, or the AioRpcError (not raised)."""
    async with stack.security.channel(stack.gateway.address) as channel:
        sent = (*bearer(token), *metadata) if token is not None else metadata
        try:
            return await messages.stub(channel, service, method)(messages.request(), metadata=sent or None,
                                                                  timeout=timeout)
        except grpc.aio.AioRpcError as error:
            return error


def refusal(error: Any) -> tuple[grpc.StatusCode, str, str]:
    """What a gRPC caller learns from a refusal: code, message, and the challenge it got."""
    assert isinstance(error, grpc.aio.AioRpcError), f"expected a refusal, got {error}"
    trailers = dict(error.trailing_metadata() or ())
    return error.code(), error.details() or "", str(trailers.get("www-authenticate", ""))


def assert_nothing_of_envoy(answer: Answer) -> None:
    assert not [name for name in answer.headers if name.startswith(("x-envoy", "x-ratelimit", "server"))]
    assert not [text for text in ENVOY_TEXTS if text in answer.raw]


# --- TLS at the edge -----------------------------------------------------------------------------------------

def handshake(stack: SecureStack, alpn: tuple[str, ...]) -> tuple[str | None, int]:
    """A new TLS connection to the gateway: the protocol ALPN chose and the serial of the certificate served."""
    with socket.create_connection(("127.0.0.1", stack.gateway.ports.listen), timeout=5) as raw, \
            stack.security.ssl_context(alpn=alpn).wrap_socket(raw, server_hostname="localhost") as tls:
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return tls.selected_alpn_protocol(), x509.load_der_x509_certificate(der).serial_number


async def test_the_listener_serves_the_edge_certificate_and_alpn_picks_h2_or_http11(
        stack: SecureStack, backends: dict[str, Backend]) -> None:
    serial = x509.load_pem_x509_certificate((stack.security.edge_dir / "identity.pem").read_bytes()).serial_number
    assert handshake(stack, ("h2", "http/1.1")) == ("h2", serial)
    assert handshake(stack, ("http/1.1",)) == ("http/1.1", serial)
    step("ALPN: h2 when offered, http/1.1 otherwise; the certificate is the edge folder's (serial %x)", serial)
    # In a thread: the backend answering curl runs in this event loop.
    result = await asyncio.to_thread(
        subprocess.run, ["curl", "-sS", "--http2", "--cacert", str(stack.security.ca_file), "-o", "/dev/null",
                         "-w", "%{http_version} %{http_code}", f"{stack.url}/v1/secure:hello"],
        capture_output=True, text=True, timeout=30, check=True)
    step("curl --http2 against the dev CA: %s", result.stdout)
    assert result.stdout == "2 200"
    hello = await call(backends["secure"].messages, stack, SECURE, "Hello")
    assert isinstance(hello, backends["secure"].messages.response)


async def test_plaintext_is_refused_on_the_tls_port(stack: SecureStack, messages: Messages) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.gateway.ports.listen)
    writer.write(b"GET /v1/secure:hello HTTP/1.1\r\nhost: localhost\r\n\r\n")
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(1024), timeout=5)
    writer.close()
    step("plaintext HTTP/1.1 on the TLS port got %r", answer[:16])
    assert not answer.startswith(b"HTTP/")
    async with grpc.aio.insecure_channel(stack.gateway.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await messages.stub(channel, SECURE, "Hello")(messages.request(), timeout=5)
    step("a plaintext gRPC channel: %s", raised.value.code())
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


# --- authentication ------------------------------------------------------------------------------------------

def rejected_tokens(issuer: DevIssuer) -> dict[str, str]:
    """Tokens that must all fail the same way: each breaks one thing a valid token has."""
    now = int(time.time())
    claims = {"iss": issuer.issuer, "sub": "alice", "aud": AUDIENCE, "iat": now, "nbf": now, "exp": now + 600,
              "scope": "secure:read"}
    head, payload, signature = issuer.sign(claims).split(".")
    # A byte inside the signature: Envoy's decoder ignores a dangling base64url character appended to a valid
    # token (not a forgery: the signed bytes are the same), so appending is no tampering test.
    flipped = signature[:20] + ("A" if signature[20] != "A" else "B") + signature[21:]
    forged = b64url(json.dumps({**claims, "scope": "secure:read secure:write secure:admin"}).encode())
    public_key = json.dumps(issuer.jwks).encode()
    hs256 = f"{b64url(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}.{payload}"
    hs256_signature = b64url(hmac.new(public_key, hs256.encode(), hashlib.sha256).digest())
    return {
        "expired": issuer.sign({**claims, "iat": now - 900, "nbf": now - 900, "exp": now - 120}),
        "not yet valid": issuer.sign({**claims, "nbf": now + 600}),
        "wrong issuer": issuer.sign({**claims, "iss": "https://issuer.example"}),
        "wrong audience": issuer.sign({**claims, "aud": "someone-else"}),
        "tampered payload": f"{head}.{forged}.{signature}",
        "tampered signature": f"{head}.{payload}.{flipped}",
        "alg none": f"{b64url(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{payload}.",
        "HS256 keyed with the public key": f"{hs256}.{hs256_signature}",
        "oversized": issuer.sign({**claims, "padding": "x" * 9000}),
        "garbage": "not-a-token",
    }


async def test_a_call_without_a_token_is_unauthenticated_over_rest_and_grpc(
        stack: SecureStack, backends: dict[str, Backend]) -> None:
    answer = await https(stack, "GET", "/v1/secure:read")
    step("REST without a token: %d %s, www-authenticate %s", answer.status, answer.body,
         answer.headers.get("www-authenticate"))
    assert (answer.status, answer.body) == (401, UNAUTHENTICATED_BODY)
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["www-authenticate"] == CHALLENGE
    assert_nothing_of_envoy(answer)
    refused = refusal(await call(backends["secure"].messages, stack, SECURE, "Read"))
    step("gRPC without a token: %s", refused)
    assert refused == (grpc.StatusCode.UNAUTHENTICATED, "authentication required", CHALLENGE)
    assert backends["secure"].calls[f"/{SECURE}/Read"] == 0


async def test_every_rejected_token_gets_the_same_answer_as_no_token(
        stack: SecureStack, backends: dict[str, Backend]) -> None:
    """Expired, forged, for another issuer or audience, alg none, HS256, oversized, garbage: one 401, word for
    word, also on a public rpc (a token that is sent must be valid)."""
    messages, calls = backends["secure"].messages, backends["secure"].calls
    before = dict(calls)
    for name, token in rejected_tokens(stack.security.issuer).items():
        for path in ("/v1/secure:read", "/v1/secure:hello"):
            answer = await https(stack, "GET", path, token=token)
            assert (answer.status, answer.body, answer.headers["www-authenticate"]) == (
                401, UNAUTHENTICATED_BODY, CHALLENGE), f"{name} on {path}: {answer}"
            assert_nothing_of_envoy(answer)
        for method in ("Read", "Hello"):
            refused = refusal(await call(messages, stack, SECURE, method, token=token))
            assert refused == (grpc.StatusCode.UNAUTHENTICATED, "authentication required", CHALLENGE), name
        step("%s: 401 / UNAUTHENTICATED 'authentication required', like no token at all", name)
    assert dict(calls) == before


async def test_a_public_rpc_needs_no_token(stack: SecureStack, backends: dict[str, Backend]) -> None:
    answer = await https(stack, "GET", "/v1/secure:hello")
    step("REST Hello without a token: %d, the service saw claims %r", answer.status, answer.body["claims"])
    assert (answer.status, answer.body["claims"]) == (200, "")
    reply = await call(backends["secure"].messages, stack, SECURE, "Hello")
    assert reply.claims == ""
    token = stack.security.token()
    answer = await https(stack, "GET", "/v1/secure:hello", token=token)
    step("with a valid token, the service gets its claims: %s", decode_claims(answer.body["claims"]))
    assert decode_claims(answer.body["claims"])["sub"] == "alice"


# --- authorization -------------------------------------------------------------------------------------------

async def test_a_valid_token_without_the_scope_is_permission_denied_and_with_it_ok(
        stack: SecureStack, backends: dict[str, Backend]) -> None:
    messages, token = backends["secure"].messages, stack.security.token
    denied = await https(stack, "GET", "/v1/secure:read", token=token("secure:write"))
    step("Read with a token lacking secure:read: %d %s", denied.status, denied.body)
    assert (denied.status, denied.body) == (403, {"code": 7, "message": "permission denied", "details": []})
    assert "www-authenticate" not in denied.headers
    assert_nothing_of_envoy(denied)
    assert refusal(await call(messages, stack, SECURE, "Read", token=token("secure:write"))) == (
        grpc.StatusCode.PERMISSION_DENIED, "permission denied", "")
    assert (await https(stack, "GET", "/v1/secure:read", token=token("secure:read"))).status == 200
    assert isinstance(await call(messages, stack, SECURE, "Read", token=token("secure:read")), messages.response)
    # Write needs both of its scopes: one is not enough, a `scp` list counts like `scope`.
    one = await https(stack, "POST", "/v1/secure:write", token=token("secure:write"), json_body={})
    both = await https(stack, "POST", "/v1/secure:write", token=token("secure:write", "secure:admin"), json_body={})
    listed = await https(stack, "POST", "/v1/secure:write", json_body={}, token=stack.security.issuer.token(
        "alice", [], extra={"scp": ["secure:write", "secure:admin"]}))
    prefix = await https(stack, "POST", "/v1/secure:write", json_body={}, token=token("secure:write-all",
                                                                                       "secure:admin"))
    step("Write: one scope %d, both %d, both as scp %d, a longer name that starts alike %d", one.status,
         both.status, listed.status, prefix.status)
    assert (one.status, both.status, listed.status, prefix.status) == (403, 200, 200, 403)


async def test_a_rest_path_cannot_skip_the_rule_its_grpc_path_has(
        stack: SecureStack, backends: dict[str, Backend]) -> None:
    """Authorization runs after the transcoder: the REST path of Read is held to Read's scope (a filter before
    the transcoder would see /v1/secure:read, match no rule, and let the call through), and the REST path of
    public Hello needs no token (it would need one by the catch-all)."""
    calls = backends["secure"].calls
    before = calls[f"/{SECURE}/Read"]
    for headers in ({}, {"content-type": "application/json"}):
        answer = await https(stack, "GET", "/v1/secure:read", token=stack.security.token("other:scope"),
                             headers=headers)
        assert answer.status == 403
    posted = await https(stack, "POST", f"/{SECURE}/Read", token=stack.security.token("other:scope"),
                         json_body={})
    step("REST to Read with a scope-less token: 403; JSON POSTed to its gRPC path: %d", posted.status)
    assert posted.status in (403, 404)
    assert calls[f"/{SECURE}/Read"] == before
    assert (await https(stack, "GET", "/v1/secure:hello")).status == 200


async def test_an_rpc_of_no_rule_needs_a_valid_token_and_no_scope(
        stack: SecureStack, backends: dict[str, Backend]) -> None:
    assert (await https(stack, "GET", "/v1/secure:plain")).status == 401
    assert (await https(stack, "GET", "/v1/secure:plain", token=stack.security.token())).status == 200
    unknown = await call(backends["secure"].messages, stack, SECURE, "Nope")
    unknown_service = await call(backends["secure"].messages, stack, "nobody.v1.NobodyService", "Call")
    step("an unknown method and an unknown service without a token: %s, %s", refusal(unknown)[0],
         refusal(unknown_service)[0])
    assert refusal(unknown)[0] == refusal(unknown_service)[0] == grpc.StatusCode.UNAUTHENTICATED
    known = await call(backends["secure"].messages, stack, SECURE, "Nope", token=stack.security.token())
    assert refusal(known)[0] == grpc.StatusCode.UNIMPLEMENTED


async def test_the_policy_gives_rules_to_a_contract_the_project_does_not_own(
        stack: SecureStack, backends: dict[str, Backend]) -> None:
    opened = await https(stack, "GET", "/v1/foreign:open")
    guarded = await https(stack, "GET", "/v1/foreign:guarded", token=stack.security.token("secure:read"))
    allowed = await https(stack, "GET", "/v1/foreign:guarded", token=stack.security.token("foreign:call"))
    step("ForeignService (rules from %s): Open without a token %d, Guarded without foreign:call %d, with it %d",
         POLICY_KEY, opened.status, guarded.status, allowed.status)
    assert (opened.status, guarded.status, allowed.status) == (200, 403, 200)


async def test_a_policy_changed_in_consul_applies_without_a_restart(
        stack: SecureStack, backends: dict[str, Backend]) -> None:
    narrowed = {**POLICY, "rules": {f"/{FOREIGN}/": {"scopes": ["foreign:call"]}}}
    modified = stack.gateway.stat("listener_manager.listener_modified")

    async def open_answers(status: int) -> bool:
        return (await https(stack, "GET", "/v1/foreign:open")).status == status

    try:
        put_policy(stack.consul, narrowed)
        took = await poll_until(lambda: open_answers(401), timeout=ROTATION_WITHIN_S, what="the narrowed policy")
        step("ForeignService/ needs foreign:call now: Open without a token is refused %.1f s after the write", took)
        assert (await https(stack, "GET", "/v1/foreign:open", token=stack.security.token())).status == 403
    finally:
        put_policy(stack.consul, POLICY)
        await poll_until(lambda: open_answers(200), timeout=ROTATION_WITHIN_S, what="the original policy")
    assert stack.gateway.stat("listener_manager.listener_modified") == modified


async def test_the_gateways_own_paths_need_no_token(stack: SecureStack) -> None:
    document = await https(stack, "GET", "/openapi.json")
    async with stack.security.channel(stack.gateway.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = [a async for a in stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)]
    listed = [s.name for s in answers[0].list_services_response.service]
    step("/openapi.json without a token: %d; reflection lists %d services", document.status, len(listed))
    assert document.status == 200
    assert SECURE in listed


# --- what reaches a service ----------------------------------------------------------------------------------

async def test_a_clients_own_claims_never_reach_a_service_the_verified_ones_do(
        stack: SecureStack, backends: dict[str, Backend]) -> None:
    """Both the hygiene filter and jwt_authn (it drops its forward_payload_header from requests) remove a client's
    claims; test_gateway_transparency.py pins the hygiene filter alone, on a gateway that checks no token."""
    forged = b64url(json.dumps({"sub": "mallory", "scope": "secure:read secure:write secure:admin"}).encode())
    header = {"x-protomesh-claims": forged}
    alone = await https(stack, "GET", "/v1/secure:hello", headers=header)
    step("forged claims without a token: the service saw %r", alone.body["claims"])
    assert alone.body["claims"] == ""
    verified = await https(stack, "GET", "/v1/secure:read", token=stack.security.token("secure:read"),
                           headers=header)
    claims = decode_claims(verified.body["claims"])
    step("forged claims beside a valid token: the service saw %s, a token: %s", claims,
         verified.body["authorization"])
    assert claims is not None
    assert (claims["sub"], claims["scope"], claims["iss"]) == ("alice", "secure:read", stack.security.issuer.issuer)
    assert verified.body["authorization"] is False
    reply = await call(backends["secure"].messages, stack, SECURE, "Read", token=stack.security.token("secure:read"),
                       metadata=(("x-protomesh-claims", forged),))
    assert decode_claims(reply.claims)["sub"] == "alice"
    assert "x-protomesh-claims" not in (await call(backends["secure"].messages, stack, SECURE, "Hello",
                                                   metadata=(("x-protomesh-claims", forged),))).header_names


# --- rate limits ---------------------------------------------------------------------------------------------

async def test_a_rate_limited_method_answers_429_with_retry_after_and_its_bucket_refills(
        stack: SecureStack, backends: dict[str, Backend], consul: ConsulClient) -> None:
    statuses, limited = [], None
    for _ in range(LIMIT["requests"] + 2):
        answer = await https(stack, "GET", "/v1/secure:limited")
        statuses.append(answer.status)
        if answer.status == 429:
            limited = answer
            break
    step("REST calls to Limited (%s): %s", LIMIT, statuses)
    assert limited is not None
    assert statuses[:LIMIT["requests"]] == [200] * LIMIT["requests"]
    assert limited.body == {"code": 8, "message": "too many requests", "details": []}
    retry_after = int(limited.headers["retry-after"])
    assert 1 <= retry_after <= LIMIT["per_s"]
    assert_nothing_of_envoy(limited)
    # REST emptied the bucket: gRPC callers, with a deadline or without, share it.
    messages = backends["secure"].messages
    with_deadline = await call(messages, stack, SECURE, "Limited")
    without = await call(messages, stack, SECURE, "Limited", timeout=None)
    step("gRPC right after: %s / %s, retry-after %s", refusal(with_deadline)[:2], refusal(without)[:2],
         dict(with_deadline.trailing_metadata()).get("retry-after"))
    assert refusal(with_deadline)[:2] == refusal(without)[:2] == (grpc.StatusCode.RESOURCE_EXHAUSTED,
                                                                  "too many requests")
    assert 1 <= int(dict(with_deadline.trailing_metadata())["retry-after"]) <= LIMIT["per_s"]
    limited_at = time.monotonic()
    # A new Consul service changes the route table; the bucket is the filter's, not the routes', so it stays empty.
    updates = stack.gateway.stat("http.gateway.rds.protomesh.update_success")
    await consul.register(name="spare", service_id="spare-1", address="127.0.0.1", port=9,
                          meta={"grpc_services": "protomeshtest.spare.v1.SpareService"},
                          check={"TTL": "600s", "Status": "passing"})
    try:
        await poll_until(lambda: stack.gateway.stat("http.gateway.rds.protomesh.update_success") > updates,
                         timeout=ROTATION_WITHIN_S, what="a route update")
        after_update = await https(stack, "GET", "/v1/secure:limited")
    finally:
        await consul.deregister("spare-1")
    step("after a route update (%.1f s after the 429): %d", time.monotonic() - limited_at, after_update.status)
    assert time.monotonic() - limited_at < retry_after  # the bucket cannot have refilled meanwhile
    assert after_update.status == 429

    async def refilled() -> bool:
        return (await https(stack, "GET", "/v1/secure:limited")).status == 200

    await poll_until(refilled, timeout=LIMIT["per_s"] + 2.0, interval=0.25, what="the bucket to refill")
    step("the bucket refilled after %.1f s (Retry-After said %d)", time.monotonic() - limited_at, retry_after)


# --- mTLS to services ----------------------------------------------------------------------------------------

async def test_a_service_requires_a_client_certificate_and_sees_the_gateways_spiffe_id(
        stack: SecureStack, backends: dict[str, Backend]) -> None:
    answer = await https(stack, "GET", "/v1/secure:hello")
    step("through the gateway the service saw the caller %s", answer.body["peerUris"])
    assert answer.body["peerUris"] == [Workload.service("gateway").spiffe_id]
    backend, messages = backends["secure"], backends["secure"].messages
    target = f"127.0.0.1:{backend.port}"
    name = (("grpc.ssl_target_name_override", "secure.svc.protomesh.local"),)
    without = grpc.ssl_channel_credentials(stack.security.ca.bundle)
    tester = stack.security.identity("tester").current
    with_cert = grpc.ssl_channel_credentials(tester.trust_bundle, tester.private_key, tester.certificate_chain)
    outcomes = []
    for credentials in (without, with_cert):
        async with grpc.aio.secure_channel(target, credentials, options=name) as channel:
            try:
                await messages.stub(channel, SECURE, "Hello")(messages.request(), timeout=5)
                outcomes.append("ok")
            except grpc.aio.AioRpcError as error:
                outcomes.append(error.code().name)
    step("straight to the service: without a client certificate %s, with one from the CA %s", *outcomes)
    assert outcomes == ["UNAVAILABLE", "ok"]


async def test_an_instance_holding_another_services_certificate_is_refused(
        stack: SecureStack, backends: dict[str, Backend]) -> None:
    answer = await https(stack, "GET", "/v1/impostor:hello")
    refused = refusal(await call(backends["impostor"].messages, stack, IMPOSTOR, "Hello"))
    step("impostor (holding %s): REST %d %s, gRPC %s", Workload.service("secure").spiffe_id, answer.status,
         answer.body, refused[0])
    assert (answer.status, answer.body) == (503, {"code": 14, "message": "service unavailable", "details": []})
    assert refused[:2] == (grpc.StatusCode.UNAVAILABLE, "service unavailable")  # not Envoy's reset reason
    assert sum(backends["impostor"].calls.values()) == 0


async def test_a_rotated_gateway_identity_is_presented_on_the_next_connection_to_a_service(
        stack: SecureStack, backends: dict[str, Backend], messages: Messages, consul: ConsulClient) -> None:
    issued = await asyncio.to_thread(stack.security.rotate_mesh)
    serial = f"{issued.serial:x}"
    await poll_until(lambda: serial in stack.gateway.admin("/certs"), timeout=ROTATION_WITHIN_S,
                     what="Envoy holding the rotated mesh certificate")
    step("gateway identity rotated (serial %s); Envoy holds it: a second instance of secure starts", serial)
    second = Backend("secure", stack.security.identity("secure", instance=2), messages, (SECURE, FOREIGN))
    await second.start(consul)
    try:
        await asyncio.to_thread(wait_until, lambda: len(stack.gateway.hosts("secure")) == 2, what="two instances")
        replies = {}
        for _ in range(20):
            answer = await https(stack, "GET", "/v1/foreign:open")
            replies[answer.body["instance"]] = answer.body["peerSerial"]
            if second.instance_id in replies:
                break
    finally:
        await second.stop(consul)
    step("the new instance saw the gateway's certificate %s (instances and serials: %s)",
         replies.get(second.instance_id), replies)
    assert replies[second.instance_id] == serial


# --- Consul ACLs ---------------------------------------------------------------------------------------------

async def test_the_control_plane_reads_consul_with_its_own_least_privilege_token(stack: SecureStack) -> None:
    """ACLs are on with default deny: nobody reads the policy without a token, the control plane's token reads
    it (the rate limit above came from it) and writes nothing."""
    own = stack.security.tokens.secret(acl.CONTROLPLANE)
    statuses = []
    for token, method in (("", "GET"), (own, "PUT")):
        try:
            if method == "GET":
                stack.consul.get(f"/v1/kv/{POLICY_KEY}", token=token)
            else:
                stack.consul.put(f"/v1/kv/{POLICY_KEY}", "{}", token=token)
            statuses.append(200)
        except urllib.error.HTTPError as error:
            statuses.append(error.code)
    stack.consul.get(f"/v1/kv/{POLICY_KEY}", token=own)
    step("anonymous read of the policy: %d; the control plane's token writing it: %d", *statuses)
    assert statuses == [403, 403]


# --- rotation ------------------------------------------------------------------------------------------------

async def one_request_on_a_new_connection(stack: SecureStack) -> tuple[int, str]:
    """GET Hello on a fresh TLS connection: the serial of the certificate it was served with, and the status."""
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.gateway.ports.listen,
                                                   ssl=stack.security.ssl_context(alpn=("http/1.1",)),
                                                   server_hostname="localhost")
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.write(b"GET /v1/secure:hello HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        await writer.drain()
        status = (await asyncio.wait_for(reader.readline(), timeout=5)).decode()
    finally:
        writer.close()
    return x509.load_der_x509_certificate(der).serial_number, status.split(" ")[1] if " " in status else status


async def test_a_rotated_edge_certificate_is_served_without_a_restart_drain_or_failed_request(
        stack: SecureStack, backends: dict[str, Backend]) -> None:
    old_serial, _ = await one_request_on_a_new_connection(stack)
    modified = stack.gateway.stat("listener_manager.listener_modified")
    issued = await asyncio.to_thread(stack.security.rotate_edge)
    step("edge certificate rotated: serial %x -> %x", old_serial, issued.serial)
    seen: list[tuple[int, str]] = []
    deadline = time.monotonic() + ROTATION_WITHIN_S
    while time.monotonic() < deadline and (not seen or seen[-1][0] != issued.serial):
        seen.append(await one_request_on_a_new_connection(stack))
    for _ in range(5):  # and it stays
        seen.append(await one_request_on_a_new_connection(stack))
    failures = [status for _, status in seen if status != "200"]
    step("%d requests on new connections during the rotation, %d failed; serials seen %s", len(seen),
         len(failures), sorted({f"{serial:x}" for serial, _ in seen}))
    assert failures == []
    assert seen[-1][0] == issued.serial
    assert {serial for serial, _ in seen} <= {old_serial, issued.serial}
    assert stack.gateway.stat("listener_manager.listener_modified") == modified


async def test_a_new_issuer_key_in_the_jwks_file_is_trusted_and_a_removed_one_no_longer(
        stack: SecureStack, backends: dict[str, Backend], tmp_path_factory: pytest.TempPathFactory) -> None:
    old = stack.security.issuer
    new = DevIssuer.open(tmp_path_factory.mktemp("issuer-2"), issuer=old.issuer)
    original = old.jwks_path.read_text()
    modified = stack.gateway.stat("listener_manager.listener_modified")

    def publish(*issuers: DevIssuer) -> None:
        staging = old.jwks_path.with_name(".jwks.json.test")
        staging.write_text(json.dumps({"keys": [issuer.public_jwk for issuer in issuers]}))
        os.replace(staging, old.jwks_path)

    async def status_with(issuer: DevIssuer) -> int:
        return (await https(stack, "GET", "/v1/secure:plain", token=issuer.token("alice", []))).status

    async def answers(issuer: DevIssuer, status: int) -> bool:
        return await status_with(issuer) == status

    try:
        assert await status_with(new) == 401
        publish(old, new)
        await poll_until(lambda: answers(new, 200), timeout=ROTATION_WITHIN_S, what="the new key to be trusted")
        assert await status_with(old) == 200
        step("both keys published: tokens of either issuer key pass")
        publish(new)
        await poll_until(lambda: answers(old, 401), timeout=ROTATION_WITHIN_S, what="the old key to be dropped")
        step("old key withdrawn: its tokens are refused, the new key's pass (%d)", await status_with(new))
        assert await status_with(new) == 200
    finally:
        staging = old.jwks_path.with_name(".jwks.json.test")
        staging.write_text(original)
        os.replace(staging, old.jwks_path)
        await poll_until(lambda: answers(old, 200), timeout=ROTATION_WITHIN_S, what="the original key back")
    assert stack.gateway.stat("listener_manager.listener_modified") == modified


async def test_the_edge_identity_is_what_a_client_of_the_dev_ca_verifies(stack: SecureStack) -> None:
    context = ssl.create_default_context(cafile=str(stack.security.ca_file))
    with socket.create_connection(("127.0.0.1", stack.gateway.ports.listen), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
    untrusting = ssl.create_default_context()
    with socket.create_connection(("127.0.0.1", stack.gateway.ports.listen), timeout=5) as raw, \
            pytest.raises(ssl.SSLCertVerificationError):
        untrusting.wrap_socket(raw, server_hostname="localhost")
    step("a client trusting the dev CA verifies the gateway by IP and name; one that does not is refused")

