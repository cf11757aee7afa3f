"""A gateway verifying tokens against an issuer's JWKS URL (what production uses): Envoy fetches the keys itself
over TLS, through a cluster of its own. Consul holds no security policy here (the key is absent)."""

from __future__ import annotations

import asyncio
import http.server
import json
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from edge_support import EdgeSecurity, SecureStack, https, start_secure_stack
from gateway_support import step
from secure_backend import FOREIGN, SECURE, Backend, Messages, compile_secure

from localmesh.testing import project_root, wait_until
from localmesh.tokens import AUDIENCE, ISSUER
from protomesh import ConsulSettings
from protomesh.consul import ConsulClient
from protomesh.identity import Workload

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]


class JwksServer:
    """An HTTPS server answering GET /jwks.json with a key set, its certificate from the development CA."""

    def __init__(self, certificate: Path, jwks: bytes) -> None:
        handler = self._handler(jwks)
        self.requests = handler.requests
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certificate)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @staticmethod
    def _handler(jwks: bytes) -> type[http.server.BaseHTTPRequestHandler]:
        class Handler(http.server.BaseHTTPRequestHandler):
            requests: list[str] = []  # noqa: RUF012 (one list per server: the class is made per server)

            def do_GET(self) -> None:
                Handler.requests.append(self.path)
                found = self.path == "/jwks.json"
                self.send_response(200 if found else 404)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(jwks if found else b"{}")

            def log_message(self, *args: object) -> None:
                return

        return Handler

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.server_address[1]}/jwks.json"

    def __enter__(self) -> JwksServer:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def jwks_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[JwksServer, Path]]:
    workdir = tmp_path_factory.mktemp("remote-jwks")
    # The stack opens the same folder (workdir/security): one CA and one issuer for the key server and the gateway.
    security = EdgeSecurity.create(workdir / "security")
    folder = workdir / "jwks-host"
    security.issue(Workload.service("issuer"), folder, ip_addresses=["127.0.0.1"])
    with JwksServer(folder / "identity.pem", json.dumps(security.issuer.jwks).encode()) as server:
        yield server, workdir


@pytest.fixture(scope="module")
def stack(jwks_server: tuple[JwksServer, Path]) -> Iterator[SecureStack]:
    server, workdir = jwks_server
    token_args = ["--jwks-uri", server.url, "--jwks-ca", str(workdir / "security" / "pki" / "ca.pem"),
                  "--jwt-issuer", ISSUER, "--jwt-audience", AUDIENCE]
    started = start_secure_stack(workdir, compile_secure(workdir, project_root() / "protos"), None,
                                 token_args=token_args)
    try:
        yield started
    finally:
        started.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def backend(stack: SecureStack) -> AsyncIterator[Backend]:
    consul = ConsulClient.from_settings(ConsulSettings(address=stack.consul.address,
                                                       token=stack.security.tokens.master))
    served = Backend("secure", stack.security.identity("secure"), Messages.load(stack.gateway.descriptor),
                     (SECURE, FOREIGN))
    await served.start(consul)
    await asyncio.to_thread(wait_until, lambda: bool(stack.gateway.hosts("secure")), what="secure endpoints in Envoy")
    try:
        yield served
    finally:
        await served.stop(consul)
        await consul.close()


async def test_tokens_are_checked_against_the_keys_envoy_fetched_from_the_issuer(
        stack: SecureStack, backend: Backend, jwks_server: tuple[JwksServer, Path]) -> None:
    server, _ = jwks_server
    good = await https(stack, "GET", "/v1/secure:read", token=stack.security.token("secure:read"))
    head, payload, signature = stack.security.token("secure:read").split(".")
    flipped = signature[:20] + ("A" if signature[20] != "A" else "B") + signature[21:]
    forged = await https(stack, "GET", "/v1/secure:read", token=f"{head}.{payload}.{flipped}")
    missing = await https(stack, "GET", "/v1/secure:read")
    step("keys from %s (%d fetch(es)): valid %d, bad signature %d, none %d", server.url, len(server.requests),
         good.status, forged.status, missing.status)
    assert (good.status, forged.status, missing.status) == (200, 401, 401)
    assert "/jwks.json" in server.requests


async def test_without_a_policy_in_consul_the_contracts_rules_alone_apply(stack: SecureStack, backend: Backend) -> None:
    """The policy key is absent: the gateway serves; ForeignService (no rules of its own) takes any valid token."""
    status = stack.gateway.status()
    assert status["security"]["policy"] == {"rules": 0, "rate_limits": 0}
    assert (await https(stack, "GET", "/v1/foreign:open")).status == 401
    assert (await https(stack, "GET", "/v1/foreign:guarded", token=stack.security.token())).status == 200
    assert (await https(stack, "GET", "/v1/secure:hello")).status == 200
