"""Runs grpc-go's interop client (`make setup` installs it) for one test case and keeps what it printed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

from localmesh.testing import MissingComponentError, find_binary

CLIENT = "grpc-interop-client"
# Every case that needs no cloud credentials, in the order of grpc's interop-test-descriptions.md.
CASES = (
    "empty_unary", "large_unary", "client_streaming", "server_streaming", "ping_pong", "empty_stream",
    "timeout_on_sleeping_server", "cancel_after_begin", "cancel_after_first_response", "status_code_and_message",
    "special_status_message", "custom_metadata", "unimplemented_method", "unimplemented_service",
    "pick_first_unary", "rpc_soak", "channel_soak", "orca_per_rpc", "orca_oob",
)
# The ORCA cases read load reports through this LB policy, which the client registers (interop/orcalb.go).
ORCA_SERVICE_CONFIG = '{"loadBalancingConfig": [{"test_backend_metrics_load_balancer": {}}]}'
ORCA_CASES = ("orca_per_rpc", "orca_oob")
# Soak cases: a few large unary calls (271828 bytes up, 314159 down), each within the client's default
# 1 s per-iteration budget; bounded overall so that a stuck case fails in seconds.
SOAK_ARGS = ("-soak_iterations", "5", "-soak_overall_timeout_seconds", "10")
SOAK_CASES = ("rpc_soak", "channel_soak")
# Longest case: orca_oob waits for out-of-band reports sent once a second; the client gives it up to 30 s.
CLIENT_TIMEOUT_S = 40.0
# At INFO the client logs its connectivity changes and "<Case> done" once a case passed: failures show what
# the channel saw, and a pass is confirmed by the client's own words, not only by its exit status.
CLIENT_ENV = {"GRPC_GO_LOG_SEVERITY_LEVEL": "info", "GRPC_GO_LOG_VERBOSITY_LEVEL": "0"}
_DONE = re.compile(r"INFO: \[interop\] \w+ done$", re.MULTILINE)
_BEARER = re.compile(r"^(authorization:Bearer )\S+$")


@dataclass(frozen=True)
class ClientRun:
    """One client run: the case, its exit status, what it printed (stdout and stderr) and how long it took."""

    case: str
    argv: tuple[str, ...]
    returncode: int
    output: str
    seconds: float

    @property
    def passed(self) -> bool:
        return self.returncode == 0 and _DONE.search(self.output) is not None

    def report(self) -> str:
        return (f"interop case {self.case} exited {self.returncode} after {self.seconds:.1f}s\n"
                f"$ {self.command()}\n{self.output}")

    def command(self) -> str:
        """The command line as a shell takes it, with a bearer token shown as $TOKEN (tokens stay out of logs)."""
        return " ".join(_BEARER.sub('"\\1$TOKEN"', arg) if _BEARER.match(arg) else shlex.quote(arg)
                        for arg in self.argv)


# The bootstrap step that installs the client (`make test` runs it; plain `make setup` does not).
INSTALL_HINT = "scripts/bootstrap.sh interop"


def client_binary() -> str:
    """The installed client; a missing one fails the test (never skips) and says how to install it."""
    try:
        return find_binary(CLIENT)
    except MissingComponentError:
        raise MissingComponentError(f"{CLIENT} (grpc-go's interop client) is not installed: run `{INSTALL_HINT}`, "
                                    "the bootstrap step of `make setup` that `make test` runs") from None


@dataclass(frozen=True)
class Credentials:
    """How the client reaches a secured gateway: TLS trusting ca_file, and a bearer token on every call.

    The client reads `-ca_file` only together with `-use_test_ca` (without it, the system's roots). It has
    no flag for a client certificate, so it cannot speak mTLS to a service port itself.
    """

    ca_file: Path
    token: str | None = None

    def argv(self) -> list[str]:
        argv = ["-use_tls", "-use_test_ca", "-ca_file", str(self.ca_file)]
        if self.token:
            # `key:value` pairs separated by `;`; a JWT holds neither `;` nor anything the parser splits on.
            argv += ["-additional_metadata", f"authorization:Bearer {self.token}"]
        return argv


def client_argv(case: str, host: str, port: int, credentials: Credentials | None = None) -> tuple[str, ...]:
    argv = [client_binary(), "-server_host", host, "-server_port", str(port), "-test_case", case]
    if credentials is not None:
        argv += credentials.argv()
    if case in ORCA_CASES:
        argv += ["-service_config_json", ORCA_SERVICE_CONFIG]
    if case in SOAK_CASES:
        argv += SOAK_ARGS
    return tuple(argv)


async def run_case(case: str, port: int, host: str = "127.0.0.1", *,
                   credentials: Credentials | None = None) -> ClientRun:
    """Run the client in a child process (the loop keeps serving meanwhile); killed after CLIENT_TIMEOUT_S.
    Without credentials it speaks plaintext."""
    argv = client_argv(case, host, port, credentials)
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.STDOUT,
                                                   env={**os.environ, **CLIENT_ENV})
    try:
        output, _ = await asyncio.wait_for(process.communicate(), CLIENT_TIMEOUT_S)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        output, _ = await process.communicate()
        output += f"\n(killed after {CLIENT_TIMEOUT_S:.0f}s)".encode()
    returncode = process.returncode if process.returncode is not None else -1
    return ClientRun(case, argv, returncode, output.decode(errors="replace"), time.monotonic() - started)
