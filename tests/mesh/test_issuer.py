"""The container stack's issuer: one credentials folder per compose entry, each holding what that container reads."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import yaml
from cryptography import x509

from localmesh import acl
from localmesh.compose import load_compose
from localmesh.issuer import CREDENTIALS, MOUNT, TOKEN_FILE, Issuer, Stack
from localmesh.scaffold import scaffold
from protomesh.identity import Credentials, Workload
from tests.mesh.test_scaffold import _copy_project

ROOT = Path(__file__).resolve().parents[2]
# What a compose entry mounts its folder from: the issuer writes <state>/credentials/<entry>.
STACK_STATE = "${STACK_STATE_DIR:-./var/compose}"


def _issued(topology: Path, state: Path, env: dict[str, str] | None = None) -> Issuer:
    issuer = Issuer(Stack.load(topology, env or {}), state, template=ROOT / "observability" / "prometheus.yml")
    issuer.issue()
    return issuer


def _spiffe_id(folder: Path) -> str:
    leaf = x509.load_pem_x509_certificate(Credentials.load(folder).certificate_chain)
    [uri] = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier)
    return str(uri)


def _credential_mounts(topology: Path) -> dict[str, list[str]]:
    """Entry -> the credentials folders it mounts, as written in the file (before interpolation)."""
    services = yaml.safe_load(topology.read_text())["services"]
    return {name: [v for v in (spec or {}).get("volumes", []) if str(v).startswith(f"{STACK_STATE}/{CREDENTIALS}/")]
            for name, spec in services.items()}


def test_each_service_container_gets_its_own_identity_and_consul_token(tmp_path: Path) -> None:
    issuer = _issued(ROOT / "docker-compose.yml", tmp_path)
    for service in ("users", "orders", "notifications"):
        folder = issuer.folder(service)
        assert _spiffe_id(folder / "identity") == Workload.service(service).spiffe_id
        assert stat.S_IMODE((folder / "identity" / "identity.pem").stat().st_mode) == 0o600
        assert (folder / TOKEN_FILE).read_text().strip() == issuer.security.token(service)
    tokens = acl.MeshTokens.open(tmp_path / acl.TOKENS_FILE).secrets
    assert {"users", "orders", "notifications", acl.CONTROLPLANE, acl.PROMETHEUS} <= set(tokens)


def test_every_entry_that_reads_credentials_mounts_only_the_folder_named_for_it_read_only() -> None:
    topology = ROOT / "docker-compose.yml"
    data, _ = load_compose(topology, {})
    for name, mounts in _credential_mounts(topology).items():
        if name == "issuer":  # it writes every folder
            continue
        spec = data["services"][name]
        reads = [v for v in [*spec.get("environment", {}).values(), *spec.get("command", [])]
                 if f"{MOUNT}/" in str(v)]
        assert mounts == ([f"{STACK_STATE}/{CREDENTIALS}/{name}:{MOUNT}:ro"] if reads else []), name


def test_the_control_plane_gets_a_mesh_identity_an_edge_certificate_and_the_token_issuer_s_keys(
    tmp_path: Path,
) -> None:
    issuer = _issued(ROOT / "docker-compose.yml", tmp_path)
    folder = issuer.folder("controlplane")
    Credentials.load(folder / "mesh")
    Credentials.load(folder / "edge")
    assert json.loads((folder / "jwks.json").read_text())["keys"]
    assert (folder / TOKEN_FILE).read_text().strip() == issuer.security.token(acl.CONTROLPLANE)


def test_a_plaintext_gateway_gets_no_edge_certificate(tmp_path: Path) -> None:
    issuer = _issued(ROOT / "docker-compose.yml", tmp_path, {"GATEWAY_PLAINTEXT": "true"})
    assert (issuer.folder("controlplane") / "mesh").is_dir()
    assert not (issuer.folder("controlplane") / "edge").exists()


def test_consul_and_prometheus_read_their_files_where_their_containers_mount_them(tmp_path: Path) -> None:
    issuer = _issued(ROOT / "docker-compose.yml", tmp_path)
    agent = json.loads((issuer.folder("consul") / "agent.json").read_text())
    assert agent["acl"]["enabled"] is True
    assert agent["acl"]["default_policy"] == "deny"
    named = [value for key, value in agent.items() if key.endswith("_file")]
    assert named
    assert all(Path(value).is_relative_to(MOUNT) for value in named)
    for value in named:
        assert (issuer.folder("consul") / Path(value).relative_to(MOUNT)).is_file()
    prometheus = yaml.safe_load((issuer.folder("prometheus") / "prometheus.yml").read_text())
    [discovery] = prometheus["scrape_configs"][0]["consul_sd_configs"]
    assert discovery["server"] == "consul:8500"
    assert discovery["authorization"]["credentials_file"] == str(MOUNT / TOKEN_FILE)
    assert (issuer.folder("prometheus") / TOKEN_FILE).read_text().strip() == issuer.security.token(acl.PROMETHEUS)


def test_a_scaffolded_service_mounts_its_own_credentials_and_the_issuer_writes_them(tmp_path: Path) -> None:
    project = _copy_project(tmp_path / "project")
    scaffold(project, "ledger")
    topology = project / "docker-compose.yml"
    assert _credential_mounts(topology)["ledger"] == [f"{STACK_STATE}/{CREDENTIALS}/ledger:{MOUNT}:ro"]
    data, _ = load_compose(topology, {})
    environment = data["services"]["ledger"]["environment"]
    assert environment["LEDGER_SECURITY__IDENTITY_DIR"] == str(MOUNT / "identity")
    assert environment["CONSUL_HTTP_TOKEN_FILE"] == str(MOUNT / TOKEN_FILE)
    issuer = _issued(topology, tmp_path / "state")
    Credentials.load(issuer.folder("ledger") / "identity")
