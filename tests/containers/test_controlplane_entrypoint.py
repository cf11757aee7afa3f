"""The control plane image's entry point: what docker-compose.yml mounts becomes what the control plane reads."""

from __future__ import annotations

import subprocess
from pathlib import Path

from localmesh.testing import project_root

ENTRYPOINT = project_root() / "gateway_envoy" / "entrypoint.sh"


def _environment_after(env: dict[str, str]) -> dict[str, str]:
    """The environment the command gets (the entry point runs `env` instead of the control plane)."""
    result = subprocess.run(["sh", str(ENTRYPOINT), "env"], env={"PATH": "/usr/bin:/bin", **env},
                            capture_output=True, text=True, timeout=10, check=True)
    return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)


def test_the_consul_token_comes_from_the_mounted_file_unless_one_is_set(tmp_path: Path) -> None:
    token_file = tmp_path / "consul-token"
    token_file.write_text("from-the-file\n")
    assert _environment_after({"CONSUL_HTTP_TOKEN_FILE": str(token_file)})["CONSUL_HTTP_TOKEN"] == "from-the-file"
    both = {"CONSUL_HTTP_TOKEN_FILE": str(token_file), "CONSUL_HTTP_TOKEN": "set"}
    assert _environment_after(both)["CONSUL_HTTP_TOKEN"] == "set"


def test_a_plaintext_gateway_drops_the_edge_identity_and_a_tls_one_keeps_it() -> None:
    edge = {"PROTOMESH_EDGE_IDENTITY_DIR": "/run/protomesh/edge"}
    for plaintext in ("true", "1"):
        after = _environment_after({**edge, "PROTOMESH_GATEWAY_PLAINTEXT": plaintext})
        assert "PROTOMESH_EDGE_IDENTITY_DIR" not in after
    after = _environment_after({**edge, "PROTOMESH_GATEWAY_PLAINTEXT": "false"})
    assert after["PROTOMESH_EDGE_IDENTITY_DIR"] == "/run/protomesh/edge"
