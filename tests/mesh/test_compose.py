"""docker-compose.yml is the mesh's one topology: Debian's docker-compose accepts it and protomesh up can run it."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import pytest
import yaml

from gateway_envoy.bootstrap import DEFAULT_ADMIN_PORT
from gateway_envoy.options import DEFAULT_LISTEN_PORT, DEFAULT_XDS_PORT
from localmesh.compose import variable_defaults
from localmesh.testing import MissingComponentError, project_root
from localmesh.topology import INFRASTRUCTURE, SERVICE_KIND, Topology

ROOT = project_root()
FILE = ROOT / "docker-compose.yml"


def _compose() -> dict[str, Any]:
    loaded = yaml.safe_load(FILE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_compose_accepts_the_file() -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        raise MissingComponentError("docker-compose is not installed: run `make setup`")
    result = subprocess.run([binary, "-f", str(FILE), "config", "-q"], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr


def test_the_local_runner_reads_every_entry_as_infrastructure_or_a_protomesh_service() -> None:
    topology = Topology.load(ROOT, {})
    kinds = {spec.kind for spec in topology.specs.values()}
    assert {"consul", "rabbitmq", "controlplane", "gateway", SERVICE_KIND} <= kinds <= {*INFRASTRUCTURE, SERVICE_KIND}
    assert [spec.name for spec in topology.services] == ["users", "notifications", "orders"]
    assert topology.specs["users"].replicas == 2


@pytest.mark.parametrize(("variable", "default"), [
    ("GATEWAY_PORT", DEFAULT_LISTEN_PORT), ("ENVOY_ADMIN_PORT", DEFAULT_ADMIN_PORT), ("XDS_PORT", DEFAULT_XDS_PORT),
    ("CONSUL_PORT", 8500), ("AMQP_PORT", 5672),
])
def test_the_published_ports_default_to_the_documented_ones_the_gateway_uses_alone(variable: str,
                                                                                     default: int) -> None:
    assert variable_defaults(FILE)[variable] == str(default)


def test_every_service_has_a_healthcheck_and_every_build_a_dockerfile() -> None:
    services = _compose()["services"]
    awaited = {other for spec in services.values() for other, condition in (spec.get("depends_on") or {}).items()
               if condition.get("condition") == "service_healthy"}
    for name, spec in services.items():
        assert "healthcheck" in spec, name
        # Disabled only where nothing waits for it being healthy (the collector: an image with nothing to probe).
        if spec["healthcheck"].get("disable"):
            assert name not in awaited, name
        if "build" in spec:
            assert (ROOT / spec["build"]["dockerfile"]).is_file(), name


def test_admin_surfaces_are_published_on_loopback_only() -> None:
    services = _compose()["services"]
    published = [(name, entry) for name, spec in services.items() for entry in spec.get("ports", [])]
    public = [f"{name}: {entry}" for name, entry in published if not str(entry).startswith("127.0.0.1:")]
    assert public == ["gateway: ${GATEWAY_PORT:-8080}:8080"]
