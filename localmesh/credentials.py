"""`protomesh token` and `protomesh ca`: development credentials of the project's local mesh, for people."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

from localmesh.components import DESCRIPTOR
from localmesh.mesh import MeshOptions
from localmesh.pki import DevCA
from localmesh.runner import shown
from localmesh.security import ISSUER_FOLDER, PKI_FOLDER
from localmesh.tokens import AUDIENCE, DevIssuer, parse_ttl
from protomesh.auth import descriptor_set_rules


def contract_scopes(project: Path) -> list[str]:
    """Every scope the project's contracts name, sorted (from the descriptor set `make protos` writes)."""
    path = project / DESCRIPTOR
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `make protos` first")
    return sorted({scope for rule in descriptor_set_rules(path.read_bytes()).values() for scope in rule.scopes})


def token_command(project: Path, env: Mapping[str, str], *, subject: str, scopes: list[str], all_scopes: bool,
                  ttl: str, audience: str | None) -> int:
    """Print a token on stdout (and nothing else there, for `TOKEN=$(...)`); what it grants goes to stderr."""
    state = MeshOptions.from_env(project, env).state_dir
    try:
        granted = [*scopes, *(contract_scopes(project) if all_scopes else [])]
        seconds = parse_ttl(ttl)
        issuer = DevIssuer.open(state / ISSUER_FOLDER)
        token = issuer.token(subject, granted, ttl_s=seconds, audience=audience or AUDIENCE)
    except (ValueError, OSError) as exc:
        print(f"protomesh token: {exc}", file=sys.stderr)
        return 2
    if not granted:
        print("protomesh token: note: no --scope given; the token opens public methods only", file=sys.stderr)
    print(token)
    print(f"protomesh token: {subject!r}, scopes {' '.join(dict.fromkeys(granted)) or '(none)'}, valid {seconds}s; "
          f"send it as `authorization: Bearer $TOKEN`", file=sys.stderr)
    return 0


def ca_command(project: Path, env: Mapping[str, str]) -> int:
    """Create the development CA when there is none, and print where it is and how clients trust it."""
    state = MeshOptions.from_env(project, env).state_dir
    ca = DevCA.open(state / PKI_FOLDER)
    path = shown(project, ca.folder / "ca.pem")
    print(f"development CA: {path} (valid until {ca.cert.not_valid_after_utc:%Y-%m-%d})")
    print(f"  curl --cacert {path} https://127.0.0.1:8080/...")
    print(f"  grpcurl -cacert {path} 127.0.0.1:8080 list")
    print(f"  python: grpc.ssl_channel_credentials(open({path!r}, 'rb').read())")
    return 0
