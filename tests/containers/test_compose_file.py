"""The harness reads docker-compose.yml as compose does: interpolation, ports, replicas, images and their bases."""

from __future__ import annotations

from pathlib import Path

import pytest

from localmesh.testing import project_root
from tests.containers.compose_file import ComposeFile, PublishedPort, interpolate
from tests.containers.standins import RECIPES, qualified, tag_version


@pytest.mark.parametrize(("text", "env", "expected"), [
    ("${PORT:-8080}", {}, "8080"),
    ("${PORT:-8080}", {"PORT": ""}, "8080"),
    ("${PORT-8080}", {"PORT": ""}, ""),
    ("${PORT:-8080}", {"PORT": "127.0.0.1:1234"}, "127.0.0.1:1234"),
    ("${PORT}:80", {}, ":80"),
    ("$$HOME and $USER", {"USER": "ada"}, "$HOME and ada"),
])
def test_interpolation_follows_compose(text: str, env: dict[str, str], expected: str) -> None:
    assert interpolate(text, env) == expected


def test_a_published_port_names_the_variable_that_moves_it() -> None:
    assert PublishedPort.parse("${GATEWAY_PORT:-8080}:8080") == PublishedPort(8080, "${GATEWAY_PORT:-8080}")
    assert PublishedPort.parse("${GATEWAY_PORT:-8080}:8080").variable == "GATEWAY_PORT"
    assert PublishedPort.parse("127.0.0.1:9000:9000/udp").variable is None
    assert PublishedPort.parse("9000").container_port == 9000


def _compose(tmp_path: Path, text: str, dockerfile: str = "") -> ComposeFile:
    (tmp_path / "docker-compose.yml").write_text(text)
    (tmp_path / "Dockerfile").write_text(dockerfile)
    return ComposeFile.load(tmp_path / "docker-compose.yml")


def test_merge_keys_replicas_and_image_names_are_read_as_compose_reads_them(tmp_path: Path) -> None:
    compose = _compose(tmp_path, """
x-base: &base
  healthcheck: {test: ["CMD", "true"]}
  deploy: {replicas: "${N:-3}"}
services:
  api: {<<: *base, build: {context: ., args: {FLAVOUR: "${FLAVOUR:-plain}"}}}
  db: {image: "postgres:16", healthcheck: {disable: true}}
""")
    api, db = compose.services["api"], compose.services["db"]
    assert (api.replicas({}), api.replicas({"N": "1"}), db.replicas({})) == (3, 1, 1)
    assert api.healthcheck
    assert not db.healthcheck
    assert (api.image_name("_proj"), db.image_name("proj")) == ("proj_api", "postgres:16")
    assert api.build is not None
    assert api.build.expanded_args({}) == {"FLAVOUR": "plain"}
    assert [s.name for s in compose.built()] == ["api"]


def test_base_images_are_the_run_images_and_each_dockerfiles_from_without_its_stages(tmp_path: Path) -> None:
    compose = _compose(tmp_path, "services:\n  api: {build: .}\n  db: {image: postgres:16}\n", """
ARG PY=3.12
FROM python:${PY}-slim AS build
FROM build AS test
FROM scratch
FROM --platform=linux/amd64 python:${PY}-slim
""")
    assert compose.base_images({}) == ["python:3.12-slim", "postgres:16"]


def test_the_project_compose_file_needs_a_stand_in_recipe_for_each_base_image() -> None:
    compose = ComposeFile.load(project_root() / "docker-compose.yml")
    for image in compose.base_images({}):
        assert qualified(image).rpartition(":")[0] in RECIPES, image
        assert tag_version(image), image


@pytest.mark.parametrize(("image", "expected"), [
    ("python:3.11-slim", "docker.io/library/python:3.11-slim"),
    ("hashicorp/consul:1.8.7", "docker.io/hashicorp/consul:1.8.7"),
    ("quay.io/prometheus/prometheus:v2.42.0", "quay.io/prometheus/prometheus:v2.42.0"),
    ("localhost/protomesh/users:0.1.0", "localhost/protomesh/users:0.1.0"),
])
def test_short_image_names_are_qualified_as_docker_does(image: str, expected: str) -> None:
    assert qualified(image) == expected


def test_a_tag_promises_the_version_in_it() -> None:
    assert [tag_version(t) for t in ("python:3.11-slim", "envoyproxy/envoy:v1.40.0", "rabbitmq:3.10.8")] == \
        ["3.11", "1.40.0", "3.10.8"]
