"""The supervisor's control socket: `protomesh up --detach` (reconcile) and `protomesh restart` talk to a running mesh.

One JSON request per connection; the answer is JSON lines: progress lines (`{"say": "..."}`), then one result
(`{"ok": true, "actions": [...]}` or `{"ok": false, "error": "..."}`). The socket lives in the mesh's state
folder, so only who may read that folder may drive the mesh.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("localmesh.control")

SOCKET_NAME = "control.sock"
# A reconcile may roll services (each instance start takes ~1-2 s) or cold-start a broker (~10 s).
REQUEST_TIMEOUT_S = 300.0

Handler = Callable[[dict[str, Any], Callable[[str], None]], Awaitable[list[str]]]


async def serve_control(state_dir: Path, handler: Handler) -> asyncio.Server:
    """Listen on <state_dir>/control.sock; each request runs `handler(request, say)` one at a time."""
    path = state_dir / SOCKET_NAME
    path.unlink(missing_ok=True)
    one_at_a_time = asyncio.Lock()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def say(line: str) -> None:
            writer.write(json.dumps({"say": line}).encode() + b"\n")

        try:
            request = json.loads(await reader.readline())
            async with one_at_a_time:
                actions = await handler(request, say)
            answer: dict[str, Any] = {"ok": True, "actions": actions}
        except Exception as exc:  # the requester sees what went wrong; the mesh goes on
            log.exception("control request failed")
            answer = {"ok": False, "error": str(exc) or type(exc).__name__}
        with contextlib.suppress(ConnectionError):
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
            writer.close()

    server = await asyncio.start_unix_server(handle, path=str(path))
    path.chmod(0o600)
    return server


def request(state_dir: Path, payload: Mapping[str, Any], *, say: Callable[[str], None] = print,
            timeout_s: float = REQUEST_TIMEOUT_S) -> dict[str, Any]:
    """Send one request to the mesh running in state_dir; progress lines go to `say`. ConnectionError if none."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout_s)
        conn.connect(str(state_dir / SOCKET_NAME))
        conn.sendall(json.dumps(dict(payload)).encode() + b"\n")
        with conn.makefile("r") as answers:
            for line in answers:
                message = json.loads(line)
                if "say" in message:
                    say(str(message["say"]))
                else:
                    result: dict[str, Any] = message
                    return result
    raise ConnectionError("the mesh closed the control connection without an answer")
