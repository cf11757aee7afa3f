"""Load generators on the load core: ghz for gRPC, wrk for HTTP, or the Python one when a tool is missing."""

from __future__ import annotations

import json
import math
import re
import shlex
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._core import ROOT
from bench._proc import LOAD_CPU, find_tool, pinned, python_argv

DESCRIPTOR = ROOT / "gen" / "descriptors" / "protomesh.binpb"
# A load run that takes this much longer than asked is hung (a server that stopped answering).
OVERRUN_S = 60.0
_WRK_LATENCY = re.compile(r"^\s*50(?:\.0+)?%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
_WRK_REQUESTS = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m)", re.MULTILINE)
_WRK_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_WRK_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_GHZ_CUT_OFF = ("use of closed network connection", "context canceled", "grpc: the client connection is closing")
_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}
# Recorded commands travel (results JSON, docs page): a bearer token and forwarded claims are shown by name.
_TOKEN = re.compile(r"(Bearer )[\w.-]+")
_CLAIMS = re.compile(r'("x-protomesh-claims": ")[\w-]+(")')


@dataclass(frozen=True)
class ClientTls:
    """How a load generator speaks TLS: the CA it trusts, the certificate it presents (mTLS) and the name it
    expects in the server's certificate (a service's is `<name>.svc.<trust domain>`, not 127.0.0.1)."""

    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str = ""

    def args(self, *, server_name_flag: str) -> list[str]:
        """The flags of ghz (`server_name_flag` "--cname") or bench/_pyload.py ("--server-name")."""
        args = ["--cacert", str(self.ca_file)]
        if self.cert_file is not None and self.key_file is not None:
            args += ["--cert", str(self.cert_file), "--key", str(self.key_file)]
        return args + ([server_name_flag, self.server_name] if self.server_name else [])


@dataclass(frozen=True)
class LoadResult:
    """What one load run did: answered requests, failures, wall seconds, median latency and the command."""

    requests: int
    errors: int
    seconds: float
    p50_ms: float
    command: str
    tool: str

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def summary(self) -> dict[str, Any]:
        return {"requests": self.requests, "errors": self.errors, "seconds": round(self.seconds, 3),
                "rps": round(self.rps, 1), "p50_ms": round(self.p50_ms, 3), "tool": self.tool}


def shown(argv: list[str]) -> str:
    """The command line as recorded: shell-quoted, with $TOKEN and $CLAIMS in place of their values."""
    return _CLAIMS.sub(r"\1$CLAIMS\2", _TOKEN.sub(r"\1$TOKEN", shlex.join(argv)))


def _run(argv: list[str], timeout: float) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + OVERRUN_S, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{shown(argv)} exited {done.returncode}: {done.stderr.strip()[-800:]}")
    return done.stdout


def grpc_load(target: str, call: str, data: Mapping[str, Any], *, duration: float, concurrency: int,
              connections: int = 1, tls: ClientTls | None = None,
              metadata: Mapping[str, str] | None = None) -> LoadResult:
    """Unary calls to `target` ("host:port") for `duration` seconds: ghz if installed, else the Python client.
    Plaintext unless `tls` is given; every call carries `metadata`."""
    ghz = find_tool("ghz")
    extra = ["--metadata", json.dumps(dict(metadata))] if metadata else []
    if ghz is None:
        tls_args = tls.args(server_name_flag="--server-name") if tls is not None else []
        return _python_load("grpc", target, duration, concurrency, "--call", call, "--data", json.dumps(data),
                            "--connections", str(connections), *tls_args, *extra)
    security = tls.args(server_name_flag="--cname") if tls is not None else ["--insecure"]
    argv = pinned([ghz, *security, "--protoset", str(DESCRIPTOR), "--call", call, "-d", json.dumps(data), *extra,
                   "-z", f"{duration:g}s", "-c", str(concurrency), "--connections", str(connections),
                   "--cpus", "1", "-O", "json", target], LOAD_CPU)
    report = json.loads(_run(argv, duration))
    codes: dict[str, int] = report.get("statusCodeDistribution") or {}
    ok = codes.get("OK", 0)
    # ghz ends a -z run by closing its connections under the calls still in flight: not server failures.
    cut_off = sum(n for message, n in (report.get("errorDistribution") or {}).items()
                  if any(mark in message for mark in _GHZ_CUT_OFF))
    latencies = {int(d["percentage"]): d["latency"] for d in report.get("latencyDistribution") or ()}
    return LoadResult(requests=ok, errors=int(report.get("count", 0)) - ok - cut_off, seconds=report["total"] / 1e9,
                      p50_ms=latencies.get(50, math.nan) / 1e6, command=shown(argv), tool="ghz")


def http_load(url: str, *, duration: float, concurrency: int, headers: Mapping[str, str] | None = None,
              ca_file: Path | None = None) -> LoadResult:
    """GETs of `url` (http or https) over `concurrency` keep-alive connections, each with `headers`: wrk if
    installed (which does not verify certificates), else the Python client (which checks against `ca_file`)."""
    wrk = find_tool("wrk")
    header_args = [arg for name, value in (headers or {}).items() for arg in ("-H", f"{name}: {value}")]
    if wrk is None:
        return _python_load("http", url, duration, concurrency, *header_args,
                            *(["--cacert", str(ca_file)] if ca_file is not None else []))
    seconds = max(1, round(duration))  # wrk takes whole seconds
    argv = pinned([wrk, "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "10s", "--latency", *header_args,
                   url], LOAD_CPU)
    return _parse_wrk(_run(argv, seconds), shown(argv))


def _parse_wrk(out: str, command: str) -> LoadResult:
    requests = _WRK_REQUESTS.search(out)
    latency = _WRK_LATENCY.search(out)
    if requests is None or latency is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    failed = _WRK_NON_2XX.search(out)
    errors = int(failed.group(1)) if failed else 0
    socket = _WRK_SOCKET.search(out)
    if socket:
        errors += sum(int(n) for n in socket.groups())
    total = int(requests.group(1))
    return LoadResult(requests=total - (int(failed.group(1)) if failed else 0), errors=errors,
                      seconds=float(requests.group(2)) * _UNIT_MS[requests.group(3)] / 1e3,
                      p50_ms=float(latency.group(1)) * _UNIT_MS[latency.group(2)], command=command, tool="wrk")


def _python_load(kind: str, target: str, duration: float, concurrency: int, *extra: str) -> LoadResult:
    argv = pinned(python_argv("bench._pyload", kind, target, "--duration", f"{duration:g}",
                              "--concurrency", str(concurrency), *extra), LOAD_CPU)
    report = json.loads(_run(argv, duration))
    return LoadResult(requests=report["requests"], errors=report["errors"], seconds=report["seconds"],
                      p50_ms=report["p50_ms"], command=shown(argv), tool=f"python-{kind}")


def load_tools() -> dict[str, str]:
    """Which load generator each protocol uses on this machine (for the report)."""
    return {"grpc": "ghz" if find_tool("ghz") else "python (bench/_pyload.py: ghz missing)",
            "http": "wrk" if find_tool("wrk") else "python (bench/_pyload.py: wrk missing)"}
