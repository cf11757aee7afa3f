"""`protomesh probe` (container healthchecks): plaintext by default, mTLS with an identity folder, given or found
in the service's own environment; against real servers, real certificates, the real command line."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from mtls_support import Pki
from test_server_support import bindings

from protomesh._probe import ProbeTls
from protomesh._server import Server
from protomesh._settings import ServerSettings
from protomesh.identity import Workload

USERS = Workload.service("users")


async def protomesh_probe(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run `protomesh probe ARGS` as a process; its exit status and what it printed."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "protomesh.cli", "probe", *args, env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    async with asyncio.timeout(30):
        output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode().strip().splitlines()[-1]


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki.create(tmp_path)


@pytest.fixture
async def mtls_port(pki: Pki) -> AsyncIterator[int]:
    server = Server(ServerSettings(port=0), bindings(), identity=pki.identity(USERS))
    port = await server.start()
    try:
        yield port
    finally:
        await server.stop(0)


async def test_the_plaintext_default_probes_a_plaintext_port() -> None:
    server = Server(ServerSettings(port=0), bindings())
    port = await server.start()
    try:
        assert await protomesh_probe(f"127.0.0.1:{port}") == (0, "SERVING")
    finally:
        await server.stop(0)


async def test_an_identity_folder_and_server_name_probe_an_mtls_port(pki: Pki, mtls_port: int) -> None:
    folder = pki.folder_for(Workload.service("users"), name="probe")

    answer = await protomesh_probe(f"127.0.0.1:{mtls_port}", "acme.users.v1.UserService", "--identity-dir",
                                   str(folder), "--server-name", "users.svc.protomesh.local")
    plaintext = await protomesh_probe(f"127.0.0.1:{mtls_port}")

    assert answer == (0, "SERVING")
    assert plaintext == (1, "UNREACHABLE: UNAVAILABLE")


async def test_the_services_own_identity_setting_is_found_in_the_environment(pki: Pki, mtls_port: int) -> None:
    env = {"USERS_SECURITY__IDENTITY_DIR": str(pki.folder_for(USERS, name="container"))}

    assert await protomesh_probe(f"127.0.0.1:{mtls_port}", env=env) == (0, "SERVING")


async def test_a_server_that_is_not_the_expected_service_is_unreachable(pki: Pki, mtls_port: int) -> None:
    env = {"ORDERS_SECURITY__IDENTITY_DIR": str(pki.folder_for(Workload.service("orders")))}

    assert await protomesh_probe(f"127.0.0.1:{mtls_port}", env=env) == (1, "UNREACHABLE: UNAVAILABLE")


async def test_an_identity_folder_without_a_server_name_is_refused_with_what_to_add(pki: Pki) -> None:
    status, message = await protomesh_probe("127.0.0.1:1", "--identity-dir", str(pki.folder_for(USERS)))

    assert status == 2
    assert "--server-name" in message


def test_the_environment_names_the_service_and_its_trust_domain() -> None:
    env = {"BILLING_API_SECURITY__IDENTITY_DIR": "/run/identity", "BILLING_API_SECURITY__TRUST_DOMAIN": "acme.test"}

    assert ProbeTls.from_env(env) == ProbeTls(Path("/run/identity"), "billing-api.svc.acme.test")


def test_security_off_or_no_single_identity_in_the_environment_means_plaintext() -> None:
    assert ProbeTls.from_env({}) is None
    assert ProbeTls.from_env({"USERS_SECURITY__IDENTITY_DIR": "/a", "USERS_SECURITY__MODE": "off"}) is None
    assert ProbeTls.from_env({"USERS_SECURITY__IDENTITY_DIR": "/a", "ORDERS_SECURITY__IDENTITY_DIR": "/b"}) is None
