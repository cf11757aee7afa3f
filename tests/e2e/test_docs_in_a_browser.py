"""The gateway's /docs page in Debian's headless Chromium, over https with the mesh's development CA trusted through
an NSS database (as a person would add it): "Try it out" creates a user, Swagger UI's "Authorize" takes a bearer
token, GetUser then reads the user back, and after "Logout" it is refused."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import subprocess
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
# Two Chromium starts, swagger-ui's render and four calls; far more than they take (about 10 s).
BROWSER_TIMEOUT_S = 120
CERTUTIL_TIMEOUT_S = 30
# The one scope GetUser needs (its `x-scopes`); CreateUser is public.
SCOPE = "users:read"
CA_NICKNAME = "protomesh development CA"


def browser_tools() -> tuple[str, str]:
    """node (with playwright-core) and certutil, with Debian's Chromium present; a missing one fails naming its fix."""
    assert CHROMIUM.is_file(), f"{CHROMIUM} is missing: run `make setup` as root or `scripts/bootstrap.sh chromium`"
    certutil = shutil.which("certutil")
    assert certutil is not None, "certutil is missing: run `scripts/bootstrap.sh chromium` (Debian's libnss3-tools)"
    node = shutil.which("node")
    assert node is not None, "node is missing: install Node.js and npm, then `scripts/bootstrap.sh browser`"
    assert (BROWSER_DIR / "node_modules" / "playwright-core").is_dir(), \
        "playwright-core is missing: run `scripts/bootstrap.sh browser` (`make test` does)"
    return node, certutil


def trust_in_nss(certutil: str, home: Path, ca_file: Path) -> None:
    """A new NSS database in home/.pki/nssdb (where Chromium on Linux looks) trusting ca_file to issue servers'
    certificates: `certutil -N` then `certutil -A -t C,,`."""
    database = f"sql:{home / '.pki' / 'nssdb'}"
    (home / ".pki" / "nssdb").mkdir(parents=True)
    for argv in (["-N", "-d", database, "--empty-password"],
                 ["-A", "-d", database, "-n", CA_NICKNAME, "-t", "C,,", "-i", str(ca_file)]):
        subprocess.run([certutil, *argv], check=True, capture_output=True, timeout=CERTUTIL_TIMEOUT_S)
    listed = subprocess.run([certutil, "-L", "-d", database], check=True, capture_output=True, text=True,
                            timeout=CERTUTIL_TIMEOUT_S).stdout
    assert CA_NICKNAME in listed, listed


async def test_docs_over_https_authorize_with_a_token_then_get_user_shows_200_with_the_same_user(
        running_mesh: RunningMesh, tmp_path: Path) -> None:
    node, certutil = browser_tools()
    ca_file = running_mesh.client.ca_file
    assert running_mesh.url.startswith("https://")
    assert ca_file is not None
    await asyncio.to_thread(trust_in_nss, certutil, tmp_path / "home", ca_file)
    (tmp_path / "empty-home").mkdir()
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    SCREENSHOT.unlink(missing_ok=True)
    email = f"browser-{uuid.uuid4().hex[:10]}@example.com"
    token = running_mesh.client.token(SCOPE, subject="browser")
    seen = await run_browser(node, running_mesh.url, tmp_path, token=token, email=email)

    assert seen["untrusted"] == "net::ERR_CERT_AUTHORITY_INVALID"
    log.info("step: without the CA in its NSS database Chromium refuses the gateway: %s", seen["untrusted"])
    assert seen["tls"]["issuer"].startswith("protomesh development CA"), seen["tls"]
    log.info("step: /docs over %s, certificate issued by %r (trusted through the NSS database)",
             seen["tls"]["protocol"], seen["tls"]["issuer"])
    assert "protomesh REST API" in seen["title"]
    assert seen["offsite"] == []
    log.info("step: /docs rendered %r, with no request off the gateway", seen["title"])
    created, fetched, anonymous = seen["created"], seen["fetched"], seen["anonymous"]
    assert created["status"] == 200, created
    assert created["body"]["user"]["email"] == email
    log.info("step: Try it out on CreateUser (public) read 200 with user %s", created["body"]["user"]["userId"])
    assert fetched["status"] == 200, fetched
    assert fetched["body"]["user"] == created["body"]["user"]
    log.info("step: Authorize with a %s token, then Try it out on GetUser read 200 with the same user", SCOPE)
    assert (anonymous["status"], anonymous["body"]["code"]) == (401, 16), anonymous
    log.info("step: after Logout, GetUser read 401 %r", anonymous["body"]["message"])
    # Swagger UI sent the token exactly where the document asks for it: not on the public CreateUser.
    user_path = f"/v1/users/{created['body']['user']['userId']}"
    assert [(r["method"], r["path"], r["authorization"]) for r in seen["sent"]] == [
        ("POST", "/v1/users", None), ("GET", user_path, f"Bearer {token}"), ("GET", user_path, None)]
    assert SCREENSHOT.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert SCREENSHOT.stat().st_size > 10_000
    log.info("step: screenshot saved to %s", SCREENSHOT)


async def run_browser(node: str, url: str, work: Path, *, token: str, email: str) -> dict[str, Any]:
    """docs.mjs in its folder with fresh Chromium profiles under work; returns the JSON line it prints."""
    process = await asyncio.create_subprocess_exec(
        node, "docs.mjs", "--url", url, "--home", str(work / "home"), "--untrusted-home", str(work / "empty-home"),
        "--token", token, "--screenshot", str(SCREENSHOT), "--user-data-dir", str(work / "chromium-profile"),
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
