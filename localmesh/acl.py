"""Consul ACLs for the local mesh: default deny, and one token per process with only the policy it needs.

    tokens = MeshTokens.open(state_dir / "consul" / "tokens.json")     # secrets made once, kept 0600
    apply(agent.address, tokens, grants(["users", "orders"]))           # after every (re)start of the agent
    env["CONSUL_HTTP_TOKEN"] = tokens.secret("users")

A dev agent forgets its ACL tokens when it restarts, so the secrets are chosen here (Consul accepts a given
SecretID) and applied again after each start: a service keeps the token it was started with.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from protomesh import config_kv_prefix
from protomesh.auth import POLICY_KEY

# Who gets a token besides the services.
AGENT, CONTROLPLANE, PROMETHEUS, RUNNER = "agent", "controlplane", "prometheus", "runner"
# Where a mesh keeps its token secrets, relative to its state folder (0600).
TOKENS_FILE = Path("consul") / "tokens.json"
POLICY_PREFIX = "protomesh-"
_CATALOG_READ = 'service_prefix "" { policy = "read" }\nnode_prefix "" { policy = "read" }\n'


def service_rules(service: str) -> str:
    """A service registers (and deregisters) only itself, reads the catalog and intentions, its own config
    and the mesh's security policy."""
    return (f'service "{service}" {{ policy = "write" }}\n{_CATALOG_READ}'
            f'key_prefix "{config_kv_prefix(service)}" {{ policy = "read" }}\n'
            f'key "{POLICY_KEY}" {{ policy = "read" }}\n')


def controlplane_rules(registers: Iterable[str] = ("controlplane", "gateway")) -> str:
    """The control plane watches the catalog and the policy, and registers its own scrape targets."""
    own = "".join(f'service "{name}" {{ policy = "write" }}\n' for name in registers)
    return f'{own}{_CATALOG_READ}key "{POLICY_KEY}" {{ policy = "read" }}\n'


# Prometheus finds its targets in the catalog, after asking the agent for its datacenter (/v1/agent/self).
PROMETHEUS_RULES = _CATALOG_READ + 'agent_prefix "" { policy = "read" }\n'
# The agent's own token: it registers its node and syncs the services registered with it.
AGENT_RULES = 'node_prefix "" { policy = "write" }\nservice_prefix "" { policy = "read" }\n'
# The runner seeds config and the policy, writes intentions, and deregisters instances that crashed.
RUNNER_RULES = ('key_prefix "protomesh/" { policy = "write" }\n'
                'service_prefix "" { policy = "write" intentions = "write" }\nnode_prefix "" { policy = "read" }\n')


def grants(services: Iterable[str]) -> dict[str, str]:
    """Every token the local mesh hands out, by name, with its policy's rules."""
    made = {AGENT: AGENT_RULES, RUNNER: RUNNER_RULES, CONTROLPLANE: controlplane_rules(),
            PROMETHEUS: PROMETHEUS_RULES}
    made.update({service: service_rules(service) for service in services})
    return made


@dataclass
class MeshTokens:
    """The master token and every process's token secret, in one 0600 JSON file of the mesh's state."""

    path: Path
    master: str
    secrets: dict[str, str]

    @classmethod
    def open(cls, path: Path) -> MeshTokens:
        if path.exists():
            data = json.loads(path.read_text())
            return cls(path, str(data["master"]), {str(k): str(v) for k, v in data["tokens"].items()})
        tokens = cls(path, str(uuid.uuid4()), {})
        tokens._save()
        return tokens

    def secret(self, name: str) -> str:
        """The secret of name's token, made (and saved) on first use."""
        if name not in self.secrets:
            self.secrets[name] = str(uuid.uuid4())
            self._save()
        return self.secrets[name]

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump({"master": self.master, "tokens": self.secrets}, out, indent=2)
        os.replace(tmp, self.path)


class AclError(RuntimeError):
    """Consul refused to set up an ACL policy or token; the message says which and why."""


class AclNotReady(AclError):
    """A new agent has a leader but has not left the legacy ACL mode yet (a moment after start): try again."""


# Consul's answer (500) to the ACL API until its leader has switched the ACL system out of legacy mode.
LEGACY_MODE = "currently in legacy mode"


def _call(address: str, method: str, path: str, token: str, body: object | None = None) -> object:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://{address}{path}", data=data, method=method,
                                     headers={"X-Consul-Token": token})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read() or b"null")


def _found(address: str, path: str, token: str) -> dict[str, object] | None:
    try:
        answer = _call(address, "GET", path, token)
    except urllib.error.HTTPError as exc:
        if exc.code in (403, 404):  # 403 "ACL not found" for an unknown token secret
            return None
        raise
    return answer if isinstance(answer, dict) else None


# How long apply_when_ready() waits for a new agent to leave the legacy ACL mode (a loaded machine: seconds).
ACL_READY_TIMEOUT_S = 30.0


def apply_when_ready(address: str, tokens: MeshTokens, wanted: Mapping[str, str], *,
                     timeout: float = ACL_READY_TIMEOUT_S) -> None:
    """apply(), retried while an agent that has just started is still in the legacy ACL mode (for callers
    that start an agent and set it up at once: tests and benchmarks; the runner polls instead)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            apply(address, tokens, wanted)
            return
        except AclNotReady:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def apply(address: str, tokens: MeshTokens, wanted: Mapping[str, str]) -> None:
    """Make Consul hold a policy and a token (with the saved secret) for each name of wanted; idempotent,
    and cheap on an agent that has them already. The agent's own token is set on the agent as well."""
    master = tokens.master
    try:
        for name, rules in wanted.items():
            policy_name = POLICY_PREFIX + name
            policy = _found(address, f"/v1/acl/policy/name/{policy_name}", master)
            if policy is None:
                _call(address, "PUT", "/v1/acl/policy", master, {"Name": policy_name, "Rules": rules})
            elif policy.get("Rules") != rules:
                _call(address, "PUT", f"/v1/acl/policy/{policy['ID']}", master, {"Name": policy_name, "Rules": rules})
            secret = tokens.secret(name)
            if _found(address, "/v1/acl/token/self", secret) is None:
                _call(address, "PUT", "/v1/acl/token", master,
                      {"SecretID": secret, "Description": f"protomesh {name}", "Policies": [{"Name": policy_name}]})
        if AGENT in wanted:
            _call(address, "PUT", "/v1/agent/token/agent", master, {"Token": tokens.secret(AGENT)})
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace").strip()
        error = AclNotReady if LEGACY_MODE in detail else AclError
        raise error(f"Consul at {address} refused the mesh's ACL setup ({exc.code}: {detail})") from None
