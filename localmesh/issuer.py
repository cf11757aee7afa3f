"""The container stack's issuer: every container's credentials from the mesh's CA, and Consul's ACLs and policy.

docker-compose.yml runs it as its `issuer` entry (`protomesh up` needs none: the runner issues for its processes):

    python -m localmesh.issuer --topology /etc/protomesh/docker-compose.yml --state /mesh --consul consul:8500

It reads the topology's `x-protomesh.security` (SecuritySpec) and its entries, and writes one folder per container
under <state>/credentials/<entry>, which that container alone mounts, read-only, at /run/protomesh:

    <service>/identity/            the service's identity (identity.pem 0600, ca.pem), renewed at half life
    <service>/consul-token         its Consul token (CONSUL_HTTP_TOKEN_FILE)
    <controlplane>/mesh/, edge/    the gateway's identity towards services, and at the edge (none when plaintext)
    <controlplane>/jwks.json       the token issuer's public keys, which the gateway checks tokens against
    <consul>/agent.json, ...       ACLs (default deny, the master token), the agent's certificate for TLS checks
    <prometheus>/prometheus.yml    observability/prometheus.yml rendered to read the catalog with its token file

<state>/pki and <state>/issuer are the local mesh's CA and token issuer (docker-compose.yml bind-mounts
var/mesh/pki and var/mesh/issuer there), so one `protomesh token` and one `--cacert var/mesh/pki/ca.pem` serve
both ways of running the mesh. The Consul token secrets (<state>/consul/tokens.json) belong to the stack.

Started as root, it hands each folder to the user its container runs as, then drops to the project's user
(CONTAINER_UID), the owner of every folder it renews. Once Consul answers it applies the ACL tokens, intentions
and policy, and again whenever Consul no longer holds them (a restarted dev agent). A changed security section
applies with `docker-compose restart issuer` (new intentions, rules and rate limits; services keep their tokens).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import signal
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from localmesh import acl
from localmesh.compose import TopologyError, load_compose
from localmesh.observability import PROMETHEUS_TEMPLATE, render_prometheus_config
from localmesh.pki import replace_file
from localmesh.security import EDGE_DNS_NAMES, EDGE_IP_ADDRESSES, MeshSecurity, SecuritySpec
from localmesh.topology import EXTENSION
from protomesh.auth import POLICY_KEY
from protomesh.identity import CA_FILE, GATEWAY

log = logging.getLogger("localmesh.issuer")

# Where every container mounts its own credentials folder (read-only).
MOUNT = Path("/run/protomesh")
CREDENTIALS, TOKEN_FILE = "credentials", "consul-token"
# The project's images (services/Dockerfile, gateway_envoy/Dockerfile) run as this user; the official Consul and
# Prometheus images as their own. A folder belongs to the user that reads it: its files are 0600.
CONTAINER_UID = 10001
IMAGE_UIDS = {"consul": 100, "prometheus": 65534}
# Written (inside the issuer's own container) once every folder is: its healthcheck; Consul starts after it.
READY_FILE = Path("/tmp/protomesh-issuer.ready")
# How often Consul is asked whether it still holds the mesh's ACLs and policy (a dev agent forgets on restart).
DEFAULT_CHECK_S = 1.0


@dataclass(frozen=True)
class Stack:
    """What the issuer reads from docker-compose.yml: the security section, the services, the infrastructure."""

    security: SecuritySpec
    services: tuple[str, ...]
    kinds: Mapping[str, str]  # infrastructure entry -> its x-protomesh.run

    @classmethod
    def load(cls, path: Path, env: Mapping[str, str]) -> Stack:
        data, _ = load_compose(path, env)
        kinds: dict[str, str] = {}
        services: list[str] = []
        for name, raw in data["services"].items():
            run = ((raw or {}).get(EXTENSION) or {}).get("run")
            if run:
                kinds[str(name)] = str(run)
            else:  # the topology's rule: an entry the runner does not run by name is a protomesh service
                services.append(str(name))
        return cls(SecuritySpec.parse(data.get(EXTENSION) or {}), tuple(services), kinds)

    def entry(self, kind: str) -> str | None:
        return next((name for name, run in self.kinds.items() if run == kind), None)


def _write(path: Path, data: str, mode: int = 0o600) -> None:
    """Replace path by one rename (a container reading it never sees half a file)."""
    replace_file(path, data.encode(), mode)


class Issuer:
    """The credentials of one stack under its state folder, and the Consul it configures."""

    def __init__(self, stack: Stack, state: Path, *, template: Path | None = None) -> None:
        self.stack = stack
        self.state = state
        self.template = template
        self.security = MeshSecurity(stack.security, state)

    def folder(self, entry: str) -> Path:
        return self.state / CREDENTIALS / entry

    def _token_file(self, entry: str, token_name: str) -> None:
        _write(self.folder(entry) / TOKEN_FILE, self.security.token(token_name) + "\n")

    def issue(self) -> dict[Path, int]:
        """Every container's folder, written now; returns folder -> the user it belongs to."""
        owners: dict[Path, int] = {}
        for service in self.stack.services:
            self.security.renewer.add(self.security.workload(service), self.folder(service) / "identity")
            self._token_file(service, service)
            owners[self.folder(service)] = CONTAINER_UID
        for kind, write in (("controlplane", self._gateway), ("consul", self._consul),
                            ("prometheus", self._prometheus)):
            entry = self.stack.entry(kind)
            if entry is not None:
                write(entry)
                owners[self.folder(entry)] = IMAGE_UIDS.get(kind, CONTAINER_UID)
        # Every token the stack hands out exists now: nothing has to be saved once privileges are dropped.
        for name in acl.grants(self.stack.services):
            self.security.token(name)
        return owners

    def _gateway(self, entry: str) -> None:
        """The control plane's: mTLS towards services, the edge certificate (unless plaintext), JWKS, token."""
        gateway = self.security.workload(GATEWAY)
        self.security.renewer.add(gateway, self.folder(entry) / "mesh")
        if not self.stack.security.plaintext_gateway:
            # The host reaches it as localhost or 127.0.0.1; containers by the name of the Envoy entry.
            names = (*EDGE_DNS_NAMES, *filter(None, [self.stack.entry("gateway")]))
            self.security.renewer.add(gateway, self.folder(entry) / "edge", dns_names=names,
                                      ip_addresses=EDGE_IP_ADDRESSES)
        _write(self.folder(entry) / "jwks.json", self.security.issuer.jwks_path.read_text(), 0o644)
        self._token_file(entry, acl.CONTROLPLANE)

    def _consul(self, entry: str) -> None:
        """Consul's agent: its config file (ACLs, TLS for checks) naming the files as its container sees them."""
        folder = self.folder(entry)
        agent = self.security.consul_agent(folder)
        mounted = dataclasses.replace(agent, ca_file=MOUNT / CA_FILE, cert_file=MOUNT / "cert.pem",
                                      key_file=MOUNT / "key.pem")
        _write(folder / "agent.json", json.dumps(mounted.config(), indent=2) + "\n")
        # The agent's own CLI (its healthcheck reads the policy key) holds the master token already.
        _write(folder / TOKEN_FILE, agent.master_token + "\n")

    def _prometheus(self, entry: str) -> None:
        folder = self.folder(entry)
        folder.mkdir(parents=True, exist_ok=True)
        consul = self.stack.entry("consul") or "consul"
        template = (self.template or Path(PROMETHEUS_TEMPLATE)).read_text()
        _write(folder / "prometheus.yml", render_prometheus_config(template, f"{consul}:8500",
                                                                   token_file=str(MOUNT / TOKEN_FILE)), 0o644)
        self._token_file(entry, acl.PROMETHEUS)

    async def configure(self, address: str, *, force: bool = False) -> bool:
        """Apply ACL tokens, intentions and the policy unless Consul holds them already; True when applied."""
        if not force and await asyncio.to_thread(_holds_policy, address, self.security.token(acl.RUNNER)):
            return False
        await self.security.configure_consul(address, self.stack.services)
        return True


def _holds_policy(address: str, token: str) -> bool:
    """Whether Consul knows the issuer's token and holds the policy (written last by configure_consul)."""
    request = urllib.request.Request(f"http://{address}/v1/kv/{POLICY_KEY}", headers={"X-Consul-Token": token})
    try:
        with urllib.request.urlopen(request, timeout=5):
            return True
    except urllib.error.HTTPError as exc:
        if exc.code in (403, 404):  # "ACL not found" (a new agent), or no policy yet
            return False
        raise


def hand_over(owners: Mapping[Path, int]) -> None:
    """Give each folder, and everything in it, to the user its container runs as; then become CONTAINER_UID."""
    if os.geteuid() != 0:
        log.warning("not started as root: the folders stay %d's, readable only by containers of that user",
                    os.geteuid())
        return
    for folder, uid in owners.items():
        for top, dirs, files in os.walk(folder):
            for name in (top, *(os.path.join(top, d) for d in dirs), *(os.path.join(top, f) for f in files)):
                os.chown(name, uid, uid)
    os.setgroups([])
    os.setgid(CONTAINER_UID)
    os.setuid(CONTAINER_UID)


async def keep_consul_configured(issuer: Issuer, address: str, *, interval: float = DEFAULT_CHECK_S) -> None:
    """Configure Consul once (this topology's security, whatever an earlier issuer applied), then whenever it no
    longer holds the mesh's ACLs and policy."""
    applied = False
    while True:
        try:
            if await issuer.configure(address, force=not applied):
                log.info("applied ACL tokens, intentions and the security policy to Consul at %s", address)
            applied = True
        except (OSError, acl.AclError) as exc:  # not up yet, or restarting
            log.debug("Consul at %s not configured yet: %r", address, exc)
        await asyncio.sleep(interval)


def prepare(args: argparse.Namespace, env: Mapping[str, str]) -> Issuer:
    """Every folder written and handed over, privileges dropped, the healthcheck's file written."""
    stack = Stack.load(args.topology, env)
    if not stack.security.enabled:
        log.warning("x-protomesh.security.enabled is false: that turns security off for `protomesh up` only; "
                    "the containers are secured all the same")
    issuer = Issuer(stack, args.state, template=args.prometheus_template)
    hand_over(issuer.issue())
    READY_FILE.write_text("issued\n")
    log.info("issued credentials for %s", ", ".join(sorted({*stack.services, *stack.kinds})))
    return issuer


async def run(issuer: Issuer, consul: str) -> None:
    """Renew at half life and keep Consul configured until SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await issuer.security.renewer.start()
    configuring = asyncio.create_task(keep_consul_configured(issuer, consul))
    try:
        await stop.wait()
    finally:
        configuring.cancel()
        await asyncio.gather(configuring, return_exceptions=True)
        await issuer.security.renewer.stop()


def parse_args(argv: Sequence[str] | None, env: Mapping[str, str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m localmesh.issuer", description=__doc__.splitlines()[0])
    parser.add_argument("--topology", type=Path, required=True, help="the mesh's docker-compose.yml")
    parser.add_argument("--state", type=Path, required=True,
                        help="the stack's state: pki/ and issuer/ (the mesh's CA and token issuer), credentials/")
    parser.add_argument("--consul", default=env.get("CONSUL_HTTP_ADDR", "consul:8500"),
                        help="Consul's HTTP address (default: $CONSUL_HTTP_ADDR or consul:8500)")
    parser.add_argument("--prometheus-template", type=Path, default=None,
                        help=f"the Prometheus template (default: {PROMETHEUS_TEMPLATE})")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv, os.environ)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        asyncio.run(run(prepare(args, os.environ), args.consul))
    except (TopologyError, OSError) as exc:
        raise SystemExit(f"issuer: {exc}") from None
    finally:
        READY_FILE.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
