"""The gateway's /docs page in Debian's headless Chromium: "Try it out" creates a user, then reads it back."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest

from localmesh.testing import project_root
from tests.e2e.conftest import RunningMesh

pytestmark = pytest.mark.asyncio(loop_scope="module")
log = logging.getLogger("e2e")

CHROMIUM = Path("/usr/bin/chromium")
BROWSER_DIR = project_root() / "tests" / "e2e" / "browser"
# Kept after the run for a person to look at; var/ is git-ignored.
SCREENSHOT = project_root() / "var" / "screenshots" / "docs-try-it-out.png"
# Chromium's start, swagger-ui's render and two calls; far more than they take (about 5 s).
BROWSER_TIMEOUT_S = 90


def browser_tools() -> str:
    """node, with playwright-core installed and Debian's Chromium present; a missing one fails naming its fix."""
    assert CHROMIUM.is_file(), f"{CHROMIUM} is missing: run `make setup` as root or `scripts/bootstrap.sh chromium`"
    node = shutil.which("node")
    assert node is not None, "node is missing: install Node.js and npm, then `scripts/bootstrap.sh browser`"
    assert (BROWSER_DIR / "node_modules" / "playwright-core").is_dir(), \
        "playwright-core is missing: run `scripts/bootstrap.sh browser` (`make test` does)"
    return node


async def test_try_it_out_on_create_user_then_get_user_shows_200_with_the_same_user(
        running_mesh: RunningMesh, tmp_path: Path) -> None:
    node = browser_tools()
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    SCREENSHOT.unlink(missing_ok=True)
    email = f"browser-{uuid.uuid4().hex[:10]}@example.com"
    seen = await run_browser(node, f"http://{running_mesh.gateway}", email, tmp_path / "chromium-profile")
    log.info("step: /docs rendered %r in Chromium, with no request off the gateway", seen["title"])
    assert "protomesh REST API" in seen["title"]
    assert seen["offsite"] == []
    created, fetched = seen["created"], seen["fetched"]
    assert created["status"] == 200, created
    assert created["body"]["user"]["email"] == email
    log.info("step: Try it out on CreateUser read 200 with user %s", created["body"]["user"]["userId"])
    assert fetched["status"] == 200, fetched
    assert fetched["body"]["user"] == created["body"]["user"]
    log.info("step: Try it out on GetUser read 200 with the same user")
    assert SCREENSHOT.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert SCREENSHOT.stat().st_size > 10_000
    log.info("step: screenshot saved to %s", SCREENSHOT)


async def run_browser(node: str, url: str, email: str, profile: Path) -> dict[str, Any]:
    """docs.mjs in its folder with a fresh Chromium profile; returns the JSON line it prints."""
    process = await asyncio.create_subprocess_exec(
        node, "docs.mjs", "--url", url, "--screenshot", str(SCREENSHOT), "--user-data-dir", str(profile),
        "--chromium", str(CHROMIUM), "--email", email, cwd=BROWSER_DIR,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True)
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout=BROWSER_TIMEOUT_S)
    except TimeoutError:
        os.killpg(process.pid, signal.SIGKILL)  # node and the Chromium it started, which it can no longer close
        await process.wait()
        raise
    assert process.returncode == 0, err.decode(errors="replace")[-4000:]
    seen: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return seen
