"""A real Consul dev agent on loopback, restartable with the same ports (and, like any dev agent, no state)."""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from localmesh.process import ManagedProcess, find_binary, free_port, wait_until


@dataclass(frozen=True)
class AgentSecurity:
    """ACLs on with default deny (master_token creates every other token), and the certificate the agent
    presents when it runs gRPC health checks against mTLS service ports (all three files, or none)."""

    master_token: str
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    def config(self) -> dict[str, object]:
        """The agent's configuration for this (a JSON config file)."""
        config: dict[str, object] = {
            # down_policy: a service keeps what it was allowed while the agent cannot reach its server.
            "acl": {"enabled": True, "default_policy": "deny", "down_policy": "extend-cache",
                    "tokens": {"master": self.master_token}},
        }
        if self.cert_file is not None:
            # Consul 1.8 presents its own certificate on checks only with enable_agent_tls_for_checks.
            config.update({"ca_file": str(self.ca_file), "cert_file": str(self.cert_file),
                           "key_file": str(self.key_file), "enable_agent_tls_for_checks": True})
        return config


class ConsulAgent:
    """`consul agent -dev` bound to 127.0.0.1; `restart()` loses all state like a real dev agent does.

    With `security`, ACLs are on (default deny) and `get`/`put` use the master token; see localmesh.acl for
    the tokens every other process gets."""

    def __init__(self, log_dir: Path, *, http_port: int | None = None, project: Path | None = None,
                 security: AgentSecurity | None = None) -> None:
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
        self.security = security
        self.process: ManagedProcess | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    def argv(self) -> list[str]:
        """The agent's command line: dev mode, loopback only, DNS and gRPC off (nothing uses them)."""
        argv = [self.binary, "agent", "-dev", "-bind=127.0.0.1", "-client=127.0.0.1", "-log-level=warn",
                "-node=protomesh", f"-http-port={self.http_port}"]
        if self.security is not None:
            argv.append(f"-config-file={self._write_config()}")
        return argv + [f"{flag}={value}" for flag, value in self._ports.items()]

    def _write_config(self) -> Path:
        assert self.security is not None
        self._log_dir.mkdir(parents=True, exist_ok=True)
        path = self._log_dir / f"consul-{self.http_port}.json"
        path.touch(mode=0o600)  # it holds the master token
        path.write_text(json.dumps(self.security.config(), indent=2))
        return path

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

    @property
    def master_token(self) -> str | None:
        return self.security.master_token if self.security is not None else None

    def _headers(self, token: str | None) -> dict[str, str]:
        token = token if token is not None else self.master_token
        return {"X-Consul-Token": token} if token else {}

    def get(self, path: str, *, token: str | None = None) -> object:
        """GET a Consul HTTP API path and decode its JSON (blocking; for test assertions). With ACLs on, the
        master token is sent unless another is given."""
        request = urllib.request.Request(f"http://{self.address}{path}", headers=self._headers(token))
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read() or b"null")

    def put(self, path: str, body: bytes | str, *, token: str | None = None) -> object:
        data = body.encode() if isinstance(body, str) else body
        request = urllib.request.Request(f"http://{self.address}{path}", data=data, method="PUT",
                                         headers=self._headers(token))
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read() or b"null")

    def passing_instances(self, service: str) -> list[dict[str, object]]:
        entries = self.get(f"/v1/health/service/{service}?passing=true")
        assert isinstance(entries, list)
        return [entry["Service"] for entry in entries]
