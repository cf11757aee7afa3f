"""The local mesh's development token issuer: an ES256 key, its JWKS for the gateway, and signed tokens.

    issuer = DevIssuer.open(state_dir / "issuer")
    token = issuer.token("alice", ["orders:write"], ttl_s=3600)
    # the gateway verifies it against issuer.jwks_path (--jwks-file), issuer.issuer and AUDIENCE

Production points the gateway at a real issuer's JWKS instead; nothing here runs there.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

ISSUER = "https://issuer.protomesh.local"
AUDIENCE = "protomesh"
KEY_FILE = "issuer-key.pem"
JWKS_FILE = "jwks.json"
DEFAULT_TTL_S = 3600
# A development token outliving a working day is a token someone forgot about.
MAX_TTL_S = 24 * 3600


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _coordinate(value: int) -> str:
    return b64url(value.to_bytes(32, "big"))


class DevIssuer:
    """An EC P-256 signing key in a git-ignored folder, with the public JWKS beside it."""

    def __init__(self, folder: Path, key: ec.EllipticCurvePrivateKey, *, issuer: str = ISSUER) -> None:
        self.folder = folder
        self.issuer = issuer
        self._key = key
        numbers = key.public_key().public_numbers()
        self.public_jwk: dict[str, str] = {"kty": "EC", "crv": "P-256", "x": _coordinate(numbers.x),
                                           "y": _coordinate(numbers.y), "use": "sig", "alg": "ES256"}
        # RFC 7638 thumbprint: required members in lexicographic order, no whitespace.
        canonical = json.dumps({k: self.public_jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"))
        self.public_jwk["kid"] = b64url(hashlib.sha256(canonical.encode()).digest())[:16]

    @classmethod
    def open(cls, folder: Path, *, issuer: str = ISSUER) -> DevIssuer:
        """The issuer in folder, created (key 0600, jwks.json) when there is none yet."""
        key_path = folder / KEY_FILE
        if key_path.exists():
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{key_path}: not an EC private key; remove it to make a new issuer key")
        else:
            folder.mkdir(parents=True, exist_ok=True)
            key = ec.generate_private_key(ec.SECP256R1())
            pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(pem)
        made = cls(folder, key, issuer=issuer)
        made._write_jwks()
        return made

    @property
    def jwks_path(self) -> Path:
        return self.folder / JWKS_FILE

    @property
    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.public_jwk]}

    def _write_jwks(self) -> None:
        text = json.dumps(self.jwks, indent=2) + "\n"
        if not self.jwks_path.exists() or self.jwks_path.read_text() != text:
            tmp = self.jwks_path.with_name(f".{JWKS_FILE}.tmp")
            tmp.write_text(text)
            os.replace(tmp, self.jwks_path)

    def sign(self, claims: Mapping[str, Any], *, header: Mapping[str, Any] | None = None) -> str:
        """A compact JWS (ES256) of claims, exactly as given (tests use it for tokens that must fail)."""
        head = {"alg": "ES256", "typ": "JWT", "kid": self.public_jwk["kid"], **(header or {})}
        signing_input = f"{b64url(json.dumps(head).encode())}.{b64url(json.dumps(dict(claims)).encode())}"
        r, s = decode_dss_signature(self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def token(self, subject: str, scopes: Iterable[str], *, ttl_s: int = DEFAULT_TTL_S, audience: str = AUDIENCE,
              now: float | None = None, extra: Mapping[str, Any] | None = None) -> str:
        """A token for subject holding scopes (space-separated `scope` claim), valid from now for ttl_s."""
        if not 0 < ttl_s <= MAX_TTL_S:
            raise ValueError(f"ttl must be between 1 s and {MAX_TTL_S // 3600} h, got {ttl_s} s")
        issued = int(time.time() if now is None else now)
        claims = {"iss": self.issuer, "sub": subject, "aud": audience, "iat": issued, "nbf": issued,
                  "exp": issued + ttl_s, "scope": " ".join(dict.fromkeys(scopes)), **(extra or {})}
        return self.sign(claims)


def parse_ttl(text: str) -> int:
    """`90s`, `15m`, `1h` or plain seconds, as seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    raw = text.strip().lower()
    try:
        if raw and raw[-1] in units:
            return int(float(raw[:-1]) * units[raw[-1]])
        return int(raw)
    except ValueError:
        raise ValueError(f"ttl: expected e.g. 90s, 15m or 1h, got {text!r}") from None
