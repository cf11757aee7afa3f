"""Workload identity: SPIFFE ids, and the certificate folder a workload proves its identity with.

Every workload of the mesh holds an X.509 certificate whose one URI SAN is its SPIFFE id:

    spiffe://protomesh.local/service/users     a service (plus the DNS SAN users.svc.protomesh.local)
    spiffe://protomesh.local/service/gateway   the gateway, when it calls services
    spiffe://protomesh.local/agent/consul      Consul's agent, when it runs gRPC health checks

The certificate lives in a folder of two files, each replaced by one rename by whoever issues it (the local
mesh's CA, or spiffe-helper, cert-manager, Vault agent in production):

    identity.pem   the private key (PEM), then the certificate and any intermediates
    ca.pem         the trust bundle: the CA certificates a peer's certificate must chain to

`IdentityFolder` watches such a folder: servers built on it present the newest certificate from the next
handshake on, and subscribers (discovery channels) re-dial with it, so rotation needs no restart.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from protomesh.aio import BackgroundTasks

log = logging.getLogger("protomesh.identity")

TRUST_DOMAIN = "protomesh.local"
IDENTITY_FILE = "identity.pem"
CA_FILE = "ca.pem"
# The gateway's workload name: services trust the claims it forwards.
GATEWAY = "gateway"
SERVICE_KIND, AGENT_KIND = "service", "agent"
CONSUL_AGENT = "consul"
# How often a folder is looked at for a new certificate; rotation happens at half life, hours ahead.
DEFAULT_POLL_S = 1.0

_SPIFFE = re.compile(r"spiffe://(?P<domain>[a-z0-9.-]+)/(?P<kind>service|agent)/(?P<name>[a-z][a-z0-9-]*)")
_PEM_BLOCK = re.compile(rb"-----BEGIN (?P<label>[A-Z ]+)-----\r?\n.+?-----END (?P=label)-----\r?\n?", re.S)


@dataclass(frozen=True)
class Workload:
    """Who a certificate speaks for: a service (or the gateway) or an agent, in one trust domain."""

    name: str
    kind: str = SERVICE_KIND
    trust_domain: str = TRUST_DOMAIN

    @classmethod
    def service(cls, name: str, trust_domain: str = TRUST_DOMAIN) -> Workload:
        return cls(name, SERVICE_KIND, trust_domain)

    @classmethod
    def agent(cls, name: str, trust_domain: str = TRUST_DOMAIN) -> Workload:
        return cls(name, AGENT_KIND, trust_domain)

    @classmethod
    def parse(cls, spiffe_id: str) -> Workload | None:
        """The workload a SPIFFE id names, or None when it is not one of the mesh's forms."""
        match = _SPIFFE.fullmatch(spiffe_id)
        if match is None:
            return None
        return cls(match["name"], match["kind"], match["domain"])

    @property
    def spiffe_id(self) -> str:
        return f"spiffe://{self.trust_domain}/{self.kind}/{self.name}"

    @property
    def dns_names(self) -> tuple[str, ...]:
        """The DNS SAN a service's certificate also holds: what a Python client verifies it by."""
        return (service_host_name(self.name, self.trust_domain),) if self.kind == SERVICE_KIND else ()

    @property
    def is_gateway(self) -> bool:
        return self.kind == SERVICE_KIND and self.name == GATEWAY

    def __str__(self) -> str:
        return self.spiffe_id


def service_host_name(service: str, trust_domain: str = TRUST_DOMAIN) -> str:
    """`users.svc.protomesh.local`: the name a client expects in the certificate of an instance of service."""
    return f"{service}.svc.{trust_domain}"


class IdentityError(ValueError):
    """An identity folder is missing a file or holds something that is not a key and a certificate."""


@dataclass(frozen=True)
class Credentials:
    """One reading of an identity folder: PEM bytes as grpc and Envoy take them."""

    private_key: bytes
    certificate_chain: bytes
    trust_bundle: bytes

    @classmethod
    def load(cls, folder: Path) -> Credentials:
        try:
            identity = (folder / IDENTITY_FILE).read_bytes()
            bundle = (folder / CA_FILE).read_bytes()
        except FileNotFoundError as exc:
            raise IdentityError(f"{exc.filename}: missing; the mesh's issuer writes {IDENTITY_FILE} and "
                                f"{CA_FILE} there (protomesh up does it for local runs)") from None
        keys: list[bytes] = []
        certs: list[bytes] = []
        for block in _PEM_BLOCK.finditer(identity):
            (keys if block["label"].endswith(b"PRIVATE KEY") else certs).append(block.group(0))
        if len(keys) != 1 or not certs:
            raise IdentityError(f"{folder / IDENTITY_FILE}: expected one private key and a certificate, "
                                f"found {len(keys)} key(s) and {len(certs)} certificate(s)")
        if not _PEM_BLOCK.search(bundle):
            raise IdentityError(f"{folder / CA_FILE}: holds no certificate")
        return cls(keys[0], b"".join(_newline_terminated(cert) for cert in certs), bundle)


def _newline_terminated(block: bytes) -> bytes:
    return block if block.endswith(b"\n") else block + b"\n"


def _stamp(folder: Path) -> tuple[int, ...]:
    """What changes when the issuer replaces a file (a rename gives a new inode and mtime)."""
    stamp: list[int] = []
    for name in (IDENTITY_FILE, CA_FILE):
        try:
            info = (folder / name).stat()
        except FileNotFoundError:
            stamp += [0, 0, 0]
        else:
            stamp += [info.st_ino, info.st_mtime_ns, info.st_size]
    return tuple(stamp)


class IdentityFolder:
    """An identity folder, followed: `current` is the newest complete reading of its files.

        identity = IdentityFolder.open(Path("var/state/identities/users-1"))
        server.add_secure_port(address, identity.server_credentials())
        identity.subscribe(lambda credentials: ...)      # called after each rotation
        await identity.start()                           # polls for new files until stop()
    """

    def __init__(self, folder: Path, credentials: Credentials, *, poll_s: float = DEFAULT_POLL_S) -> None:
        self.folder = folder
        self.current = credentials
        self.generation = 0  # +1 per rotation seen
        self._stamp = _stamp(folder)
        self._poll_s = poll_s
        self._subscribers: list[Callable[[Credentials], None]] = []
        self._tasks = BackgroundTasks()

    @classmethod
    def open(cls, folder: Path, *, poll_s: float = DEFAULT_POLL_S) -> IdentityFolder:
        """Read the folder now; IdentityError when its files are missing or malformed."""
        return cls(folder, Credentials.load(folder), poll_s=poll_s)

    def subscribe(self, callback: Callable[[Credentials], None]) -> Callable[[], None]:
        """Call callback with the new credentials after every rotation; returns an unsubscribe function."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback) if callback in self._subscribers else None

    def refresh(self) -> bool:
        """Re-read the folder if its files changed; True when the credentials rotated."""
        stamp = _stamp(self.folder)
        if stamp == self._stamp:
            return False
        try:
            credentials = Credentials.load(self.folder)
        except IdentityError as exc:  # between two renames, or a broken issuer: keep serving what we have
            log.warning("keeping the current certificate: %s", exc)
            return False
        self._stamp = stamp
        if credentials == self.current:
            return False
        self.current = credentials
        self.generation += 1
        log.info("certificate in %s rotated (generation %d)", self.folder, self.generation)
        for callback in list(self._subscribers):
            try:
                callback(credentials)
            except Exception:
                log.exception("identity subscriber %r failed", callback)
        return True

    async def start(self) -> None:
        if not self._tasks.running:
            self._tasks.start(self._poll(), name=f"protomesh-identity-{self.folder.name}")

    async def stop(self) -> None:
        await self._tasks.stop()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._poll_s)
            self.refresh()

    def server_credentials(self, *, require_client_auth: bool = True) -> grpc.ServerCredentials:
        """TLS for a server port that presents the newest certificate from the next handshake on, and (by
        default) refuses callers without a certificate that chains to the trust bundle."""
        served = {"generation": self.generation}

        def configuration(credentials: Credentials) -> grpc.ServerCertificateConfiguration:
            return grpc.ssl_server_certificate_configuration(
                [(credentials.private_key, credentials.certificate_chain)],
                root_certificates=credentials.trust_bundle)

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            # Called by grpc core on every handshake, on its own thread: compare, never read files here.
            if served["generation"] == self.generation:
                return None
            served["generation"] = self.generation
            return configuration(self.current)

        # grpc calls fetch() and takes None as "keep the current one" (its stubs say it must return one).
        return grpc.dynamic_ssl_server_credentials(configuration(self.current), fetch,  # type: ignore[arg-type]
                                                   require_client_authentication=require_client_auth)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """TLS for a client channel presenting the current certificate (make a new channel after rotation)."""
        credentials = self.current
        return grpc.ssl_channel_credentials(credentials.trust_bundle, credentials.private_key,
                                            credentials.certificate_chain)


__all__ = [
    "AGENT_KIND",
    "CA_FILE",
    "CONSUL_AGENT",
    "DEFAULT_POLL_S",
    "GATEWAY",
    "IDENTITY_FILE",
    "SERVICE_KIND",
    "TRUST_DOMAIN",
    "Credentials",
    "IdentityError",
    "IdentityFolder",
    "Workload",
    "service_host_name",
]
