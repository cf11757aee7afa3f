"""The conformance scenario, in Python, Go, TypeScript and Java, against one whole mesh through the gateway port."""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import sys

import pytest
import pytest_asyncio

from protomesh.testing import project_root
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


async def run_client(language: str, gateway: str) -> tuple[int, str]:
    """Runs one client against the gateway: (exit code, everything it printed)."""
    cwd, argv = CLIENTS[language]
    process = await asyncio.create_subprocess_exec(*argv, "--target", gateway, cwd=ROOT / cwd,
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
    code, output = await run_client(language, mesh.gateway)
    log.info("%s client:\n%s", language, output)
    assert code == 0, f"the {language} client exited {code}:\n{output}"
    lines = output.strip().splitlines()
    assert lines[-1] == f"all {STEPS} steps ok", output
    assert sum(line.startswith("ok   ") for line in lines) == STEPS, output
