"""The conformance scenario, in Python, Go, TypeScript and Java, against one whole mesh through the gateway port
(plaintext, and over TLS with a bearer token through a front that requires both)."""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest
import pytest_asyncio

from localmesh.testing import project_root
from tests.clients.tls_front import TlsFront, tls_front
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


@pytest.fixture(scope="module")
def front(mesh: RunningMesh, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsFront]:
    """Envoy in front of the mesh's gateway: TLS with a test CA, and only calls with its token get through."""
    with tls_front(tmp_path_factory.mktemp("tls-front"), upstream_port=int(mesh.gateway.rsplit(":", 1)[1])) as running:
        yield running


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
async def test_each_client_passes_the_conformance_scenario_through_the_gateway(language: str,
                                                                               mesh: RunningMesh) -> None:
    code, output = await run_client(language, "--target", mesh.gateway)
    assert_passed(language, code, output)


@pytest.mark.parametrize("language", list(CLIENTS))
async def test_each_client_passes_it_over_tls_with_its_ca_file_and_bearer_token(language: str,
                                                                                 front: TlsFront) -> None:
    code, output = await run_client(language, "--target", front.address, "--ca-file", str(front.ca_file),
                                    "--token", front.token)
    assert_passed(language, code, output)


async def test_the_tls_front_turns_a_call_without_the_token_away(front: TlsFront) -> None:
    code, output = await run_client("python", "--target", front.address, "--ca-file", str(front.ca_file))
    assert code == 1
    assert output.startswith("FAIL create user: expected OK, got UNAUTHENTICATED"), output


def assert_passed(language: str, code: int, output: str) -> None:
    log.info("%s client:\n%s", language, output)
    assert code == 0, f"the {language} client exited {code}:\n{output}"
    lines = output.strip().splitlines()
    assert lines[-1] == f"all {STEPS} steps ok", output
    assert sum(line.startswith("ok   ") for line in lines) == STEPS, output
