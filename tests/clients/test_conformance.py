"""The conformance scenario, in Python, Go, TypeScript and Java, against one whole mesh secured as `make up` runs
it, through the gateway port: TLS trusting the mesh's development CA, and a token holding only the scopes the
scenario needs; without a token the public CreateUser still works and the first guarded call is UNAUTHENTICATED."""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import sys

import pytest
import pytest_asyncio

from localmesh.testing import project_root
from tests.e2e.conftest import RunningMesh

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]
log = logging.getLogger("conformance")

ROOT = project_root()
# How each client is run (README "Clients in other languages"): (working directory, argv before --target).
CLIENTS: dict[str, tuple[str, list[str]]] = {
    "python": (".", [sys.executable, "clients/python/conformance.py"]),
    "go": ("clients/go", ["go", "run", "."]),
    "typescript": (".", ["node", "clients/ts/dist/src/conformance.js"]),
    "java": (".", ["java", "-jar", "clients/java/target/conformance.jar"]),
}
# What `make clients` needs on the machine besides the project's own .venv and .tools.
TOOLS = ("go", "node", "npm", "mvn", "java", "javac")
# Cold, `make clients` downloads Go modules, npm packages and Maven artifacts; warm it takes seconds.
BUILD_TIMEOUT_S = 900
RUN_TIMEOUT_S = 120
STEPS = 9
# What the scenario calls besides the public CreateUser: GetUser, WatchNotifications, CreateOrder and CancelOrder.
SCENARIO_SCOPES = ("users:read", "notifications:read", "orders:write")


@pytest.fixture(scope="module")
def built_clients() -> None:
    """Generates and builds every client once (what `make clients` runs); fails loudly, never skips."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"not on PATH: {', '.join(missing)}. The conformance test needs Go, Node.js with npm, and Maven "
                    "with a JDK 17: install them, then run `make setup && make clients`")
    built = subprocess.run([str(ROOT / "scripts" / "clients.sh")], cwd=ROOT, capture_output=True, text=True,
                           timeout=BUILD_TIMEOUT_S, check=False)
    if built.returncode != 0:
        pytest.fail(f"`make clients` (scripts/clients.sh) failed with exit {built.returncode}:\n"
                    f"{built.stdout}{built.stderr}")
    log.info("clients built:\n%s", built.stdout)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def mesh(built_clients: None, running_mesh: RunningMesh) -> RunningMesh:
    """The mesh, started once the clients are built (so the build does not compete with its start-up)."""
    return running_mesh


def tls_options(mesh: RunningMesh) -> list[str]:
    assert mesh.client.tls, "the mesh's gateway must serve TLS"
    assert mesh.client.ca_file is not None
    return ["--target", mesh.gateway, "--ca-file", str(mesh.client.ca_file)]


async def run_client(language: str, *args: str) -> tuple[int, str]:
    """Runs one client with the given options: (exit code, everything it printed)."""
    cwd, argv = CLIENTS[language]
    process = await asyncio.create_subprocess_exec(*argv, *args, cwd=ROOT / cwd,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout=RUN_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"the {language} client did not finish within {RUN_TIMEOUT_S} s")
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


@pytest.mark.parametrize("language", list(CLIENTS))
async def test_each_client_passes_the_scenario_through_the_secured_gateway_with_its_ca_and_a_token(
        language: str, mesh: RunningMesh) -> None:
    token = mesh.client.token(*SCENARIO_SCOPES, subject=f"conformance-{language}")
    code, output = await run_client(language, *tls_options(mesh), "--token", token)
    assert_passed(language, code, output)


@pytest.mark.parametrize("language", list(CLIENTS))
async def test_without_a_token_each_client_creates_its_user_and_is_then_unauthenticated(
        language: str, mesh: RunningMesh) -> None:
    code, output = await run_client(language, *tls_options(mesh))
    log.info("%s client without a token:\n%s", language, output)
    lines = output.strip().splitlines()
    assert code == 1, output
    # CreateUser is public: the first two steps get their answers from the users service.
    assert lines[0].startswith("ok   create user "), output
    assert lines[1] == "ok   duplicate email -> ALREADY_EXISTS", output
    assert lines[2] == 'FAIL unknown id: expected NOT_FOUND, got UNAUTHENTICATED ("authentication required")', output


async def test_a_token_without_the_orders_scope_is_refused_at_place_order(mesh: RunningMesh) -> None:
    token = mesh.client.token("users:read", "notifications:read", subject="conformance-no-orders")
    code, output = await run_client("python", *tls_options(mesh), "--token", token)
    assert code == 1, output
    assert output.strip().splitlines()[-1] == \
        'FAIL place order: expected OK, got PERMISSION_DENIED ("permission denied")', output


def assert_passed(language: str, code: int, output: str) -> None:
    log.info("%s client:\n%s", language, output)
    assert code == 0, f"the {language} client exited {code}:\n{output}"
    lines = output.strip().splitlines()
    assert lines[-1] == f"all {STEPS} steps ok", output
    assert sum(line.startswith("ok   ") for line in lines) == STEPS, output
