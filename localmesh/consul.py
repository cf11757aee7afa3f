"""A real Consul dev agent on loopback, restartable with the same ports (and, like any dev agent, no state)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from localmesh.process import ManagedProcess, find_binary, free_port, wait_until


class ConsulAgent:
    """`consul agent -dev` bound to 127.0.0.1; `restart()` loses all state like a real dev agent does."""

    def __init__(self, log_dir: Path, *, http_port: int | None = None, project: Path | None = None) -> None:
        self.binary = find_binary("consul", project=project)
        self.http_port = http_port or free_port()
        self._ports = {
            "-dns-port": "-1",
            "-grpc-port": "-1",
            "-serf-lan-port": str(free_port()),
            "-serf-wan-port": str(free_port()),
            "-server-port": str(free_port()),
        }
        self._log_dir = log_dir
        self.process: ManagedProcess | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    def argv(self) -> list[str]:
        """The agent's command line: dev mode, loopback only, DNS and gRPC off (nothing uses them)."""
        argv = [self.binary, "agent", "-dev", "-bind=127.0.0.1", "-client=127.0.0.1", "-log-level=warn",
                "-node=protomesh", f"-http-port={self.http_port}"]
        return argv + [f"{flag}={value}" for flag, value in self._ports.items()]

    def start(self) -> None:
        self.process = ManagedProcess("consul", self.argv(), log_dir=self._log_dir)
        self.process.start()
        wait_until(self._leader_elected, what="consul leader election")

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def restart(self) -> None:
        self.stop()
        self.start()

    def _leader_elected(self) -> bool:
        assert self.process is not None
        self.process.ensure_alive()
        try:
            return bool(self.get("/v1/status/leader"))
        except OSError:
            return False

    def get(self, path: str) -> object:
        """GET a Consul HTTP API path and decode its JSON (blocking; for test assertions)."""
        with urllib.request.urlopen(f"http://{self.address}{path}", timeout=5) as response:
            return json.loads(response.read() or b"null")

    def put(self, path: str, body: bytes | str) -> object:
        data = body.encode() if isinstance(body, str) else body
        request = urllib.request.Request(f"http://{self.address}{path}", data=data, method="PUT")
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read() or b"null")

    def passing_instances(self, service: str) -> list[dict[str, object]]:
        entries = self.get(f"/v1/health/service/{service}?passing=true")
        assert isinstance(entries, list)
        return [entry["Service"] for entry in entries]
