"""The local mesh's development CA: workload identities (SPIFFE ids in X.509), issued and kept fresh as files.

    ca = DevCA.open(state_dir / "pki")                       # created on first use (make setup does it)
    issued = ca.issue(Workload.service("users"), ttl_s=3600)
    write_identity(state_dir / "identities" / "users-1", issued, ca.bundle)

An identity folder holds `identity.pem` (private key, then certificate) and `ca.pem` (the trust bundle), each
replaced by one rename, so a reader never sees half a file or a key beside another key's certificate. The
runtime and the control plane only read such folders; `Renewer` rewrites them at half life, which is how a
certificate rotates without a restart. Production replaces this module with its own issuer writing the same
files (spiffe-helper, cert-manager, Vault agent); nothing else changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from protomesh.aio import BackgroundTasks
from protomesh.identity import CA_FILE, IDENTITY_FILE, TRUST_DOMAIN, Workload

log = logging.getLogger("localmesh.pki")

CA_KEY_FILE = "ca-key.pem"
# The development CA lives a year; leaf certificates an hour by default (tests use seconds).
CA_TTL = datetime.timedelta(days=365)
DEFAULT_LEAF_TTL_S = 3600.0
# Certificates are valid from a minute ago: clocks of processes on one host agree, containers' may not quite.
BACKDATE = datetime.timedelta(minutes=1)


@dataclass(frozen=True)
class Issued:
    """One certificate with its private key, both PEM."""

    key_pem: bytes
    cert_pem: bytes
    serial: int
    not_after: datetime.datetime

    @property
    def identity_pem(self) -> bytes:
        return self.key_pem + self.cert_pem


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class DevCA:
    """A self-signed EC P-256 CA whose files sit in one git-ignored folder (`ca.pem`, `ca-key.pem`)."""

    def __init__(self, folder: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        self.folder = folder
        self._key = key
        self.cert = cert

    @classmethod
    def open(cls, folder: Path, *, trust_domain: str = TRUST_DOMAIN) -> DevCA:
        """The CA in folder, created (key 0600) when the folder has none yet."""
        cert_path, key_path = folder / CA_FILE, folder / CA_KEY_FILE
        if cert_path.exists() and key_path.exists():
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{key_path}: not an EC private key; remove {folder} to make a new CA")
            return cls(folder, key, x509.load_pem_x509_certificate(cert_path.read_bytes()))
        folder.mkdir(parents=True, exist_ok=True)
        key = _new_key()
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "protomesh"),
                          x509.NameAttribute(NameOID.COMMON_NAME, f"protomesh development CA ({trust_domain})")])
        now = _now()
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - BACKDATE).not_valid_after(now + CA_TTL)
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                             content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False, encipher_only=False,
                                             decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA256()))
        _write_private(key_path, _key_pem(key))
        replace_file(cert_path, cert.public_bytes(serialization.Encoding.PEM))
        log.info("created the development CA in %s", folder)
        return cls(folder, key, cert)

    @property
    def bundle(self) -> bytes:
        """The trust bundle clients and servers verify against (`ca.pem`)."""
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, workload: Workload, *, ttl_s: float = DEFAULT_LEAF_TTL_S, dns_names: Sequence[str] = (),
              ip_addresses: Sequence[str] = ()) -> Issued:
        """A leaf certificate for workload: its SPIFFE id as the one URI SAN, plus the DNS and IP SANs given
        (a service's own `<name>.svc.<trust domain>` is always added), valid for TLS client and server."""
        key = _new_key()
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(workload.spiffe_id)]
        names += [x509.DNSName(dns) for dns in (*workload.dns_names, *dns_names)]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
        now = _now()
        not_after = now + datetime.timedelta(seconds=ttl_s)
        serial = x509.random_serial_number()
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, workload.name)]))
                .issuer_name(self.cert.subject).public_key(key.public_key()).serial_number(serial)
                .not_valid_before(now - BACKDATE).not_valid_after(not_after)
                .add_extension(x509.SubjectAlternativeName(names), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, key_cert_sign=False,
                                             crl_sign=False, content_commitment=False, data_encipherment=False,
                                             key_agreement=True, encipher_only=False, decipher_only=False),
                               critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                               critical=False)
                .sign(self._key, hashes.SHA256()))
        return Issued(_key_pem(key), cert.public_bytes(serialization.Encoding.PEM), serial, not_after)


def write_identity(folder: Path, issued: Issued, bundle: bytes) -> None:
    """Replace the identity folder's files, each by one rename (identity.pem is 0600: it holds the key)."""
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    replace_file(folder / CA_FILE, bundle)
    _write_private(folder / IDENTITY_FILE, issued.identity_pem)


def replace_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace path by one rename (a reader never sees half a file), with mode set before it appears."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _write_private(path: Path, data: bytes) -> None:
    replace_file(path, data, 0o600)


@dataclass
class Subject:
    """What one identity folder is issued for, and the certificate it holds now."""

    workload: Workload
    folder: Path
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    current: Issued | None = None


@dataclass
class Renewer:
    """Issues every subject's identity now, then again at half life, until stopped.

        renewer = Renewer(ca, ttl_s=3600)
        renewer.add(Workload.service("users"), state / "identities" / "users-1")
        await renewer.start()        # every folder written before this returns
        ...
        await renewer.stop()
    """

    ca: DevCA
    ttl_s: float = DEFAULT_LEAF_TTL_S
    subjects: dict[Path, Subject] = field(default_factory=dict)
    _tasks: BackgroundTasks = field(default_factory=BackgroundTasks)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, workload: Workload, folder: Path, *, dns_names: Sequence[str] = (),
            ip_addresses: Sequence[str] = ()) -> Path:
        """Keep folder issued for workload; written at once (before the process that reads it starts)."""
        subject = Subject(workload, folder, tuple(dns_names), tuple(ip_addresses))
        self.subjects[folder] = subject
        self._renew(subject)
        self._wake.set()
        return folder

    def remove(self, folder: Path) -> None:
        self.subjects.pop(folder, None)

    def _renew(self, subject: Subject) -> None:
        subject.current = self.ca.issue(subject.workload, ttl_s=self.ttl_s, dns_names=subject.dns_names,
                                        ip_addresses=subject.ip_addresses)
        write_identity(subject.folder, subject.current, self.ca.bundle)
        log.debug("issued %s (serial %x) into %s", subject.workload.spiffe_id, subject.current.serial,
                  subject.folder)

    def _due_in(self, subject: Subject) -> float:
        if subject.current is None:
            return 0.0
        return (subject.current.not_after - _now()).total_seconds() - self.ttl_s / 2

    async def start(self) -> None:
        if not self._tasks.running:
            self._tasks.start(self._run(), name="localmesh-pki-renewer")

    async def stop(self) -> None:
        await self._tasks.stop()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            for subject in list(self.subjects.values()):
                if self._due_in(subject) <= 0:
                    try:
                        self._renew(subject)
                    except OSError as exc:  # a folder removed under us: its process is gone
                        log.warning("could not renew %s: %s", subject.folder, exc)
            delays = [self._due_in(subject) for subject in self.subjects.values()]
            delay = max(0.05, min(delays, default=self.ttl_s / 2))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
