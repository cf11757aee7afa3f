"""docker-compose.yml describes the same mesh `protomesh up` runs, and Debian's docker-compose accepts it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from protomesh._mesh.topology import COMPONENTS, SERVICES, MeshPlan, MeshPorts
from protomesh.testing import MissingComponentError, project_root

ROOT = project_root()


def _compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def _published(spec: dict[str, Any]) -> dict[int, str]:
    """container port -> the ${VAR:-default} expression that publishes it."""
    published = {}
    for entry in spec.get("ports", []):
        host, container = entry.rsplit(":", 1)
        published[int(container)] = host
    return published


def test_compose_accepts_the_file() -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        raise MissingComponentError("docker-compose is not installed: run `make setup`")
    result = subprocess.run([binary, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr


def test_compose_lists_the_components_of_the_local_mesh() -> None:
    assert set(_compose()["services"]) == set(COMPONENTS)


@pytest.mark.parametrize(("component", "container_port", "field"), [
    ("gateway", 8080, "gateway"), ("gateway", 9901, "envoy_admin"),
    ("consul", 8500, "consul"), ("rabbitmq", 5672, "amqp"),
])
def test_published_ports_use_the_local_defaults_and_variables(component: str, container_port: int,
                                                              field: str) -> None:
    expression = _published(_compose()["services"][component])[container_port]
    variable, default = re.fullmatch(r"\$\{(\w+):-(\d+)\}", expression).groups()  # type: ignore[union-attr]
    assert variable == MeshPorts.ENV[field]
    assert int(default) == getattr(MeshPorts(), field)


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_gets_the_same_environment_keys_as_locally(service: str) -> None:
    compose_env = _compose()["services"][service]["environment"]
    local_env = MeshPlan(ROOT).service_env(service)
    assert set(local_env) <= set(compose_env)


def test_replicas_match_the_local_defaults() -> None:
    services = _compose()["services"]
    plan = MeshPlan(ROOT)
    for service in SERVICES:
        replicas = services[service].get("deploy", {}).get("replicas", 1)
        expanded = os.path.expandvars(str(replicas))
        default = re.fullmatch(r"\$\{\w+:-(\d+)\}", expanded)
        assert int(default.group(1) if default else expanded) == plan.replicas[service]


def test_every_built_service_has_a_dockerfile_and_a_healthcheck() -> None:
    for name, spec in _compose()["services"].items():
        assert "healthcheck" in spec, name
        if "build" in spec:
            assert (ROOT / spec["build"]["dockerfile"]).is_file(), name
