"""The project's images as built from its Dockerfiles: unprivileged, labelled, health-checked, no build tools."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from localmesh.testing import project_root
from tests.containers.compose_file import ComposeFile
from tests.containers.images import Image, Images, oci_args, pip_ca_bundle, version
from tests.containers.podman import Podman

BUILT = [s.name for s in ComposeFile.load(project_root() / "docker-compose.yml").built()]
# Modules that only building needs: none may be importable from an image's venv.
BUILD_MODULES = ("pip", "setuptools", "pkg_resources", "wheel", "grpc_tools")
COMPILERS = ("cc", "gcc", "g++", "make")


def _run(podman: Podman, image: Image, *command: str) -> str:
    """A command in a throwaway container of image, as the image's own user, without its health check."""
    return podman.run("run", "--rm", "--no-healthcheck", "--entrypoint", command[0], image.image_id,
                      *command[1:], timeout=120).stdout


@contextmanager
def _mounted(podman: Podman, image: Image) -> Iterator[Path]:
    path = Path(podman.run("image", "mount", image.image_id).stdout.strip())
    try:
        yield path
    finally:
        podman.run("image", "unmount", image.image_id, check=False)


@pytest.mark.parametrize("service", BUILT)
def test_the_image_runs_as_an_unprivileged_user(podman: Podman, images: Images, service: str) -> None:
    image = images.built[service]
    user = (podman.image(image.image_id) or {})["Config"].get("User", "")
    assert user not in ("", "0", "root")
    assert _run(podman, image, "id", "-u").strip() not in ("", "0")


@pytest.mark.parametrize("service", BUILT)
def test_the_image_user_can_read_every_generated_file(podman: Podman, images: Images, service: str) -> None:
    script = ("import os; print([os.path.join(d, n) for d, ds, fs in os.walk('/app/gen') for n in ds + fs "
              "if not os.access(os.path.join(d, n), os.R_OK)] + ([] if os.access('/app/gen', os.R_OK | os.X_OK) "
              "else ['/app/gen']))")
    assert _run(podman, images.built[service], "python", "-c", script).strip() == "[]"


@pytest.mark.parametrize("service", BUILT)
def test_the_image_holds_no_build_tools(podman: Podman, images: Images, service: str) -> None:
    modules = json.dumps(BUILD_MODULES)
    script = f"import importlib.util as u, json; print([m for m in json.loads('{modules}') if u.find_spec(m)])"
    assert _run(podman, images.built[service], "/venv/bin/python", "-c", script).strip() == "[]"
    found = _run(podman, images.built[service], "sh", "-c", f"command -v {' '.join(COMPILERS)} || true")
    assert found.strip() == ""


@pytest.mark.parametrize("service", BUILT)
def test_the_image_carries_oci_labels_with_its_version_source_and_revision(images: Images, podman: Podman,
                                                                            service: str) -> None:
    labels = (podman.image(images.built[service].image_id) or {})["Config"]["Labels"]
    expected = oci_args(project_root())
    assert labels["org.opencontainers.image.version"] == version(project_root())
    assert labels["org.opencontainers.image.source"] == expected["SOURCE"]
    assert labels["org.opencontainers.image.revision"] == expected["REVISION"]
    assert labels["org.opencontainers.image.title"]


@pytest.mark.parametrize("service", BUILT)
def test_the_image_has_a_health_check(podman: Podman, images: Images, service: str) -> None:
    check = json.loads(podman.run("image", "inspect", "--format", "{{json .HealthCheck}}",
                                  images.built[service].image_id).stdout)
    assert check
    assert check["Test"][0] != "NONE"


@pytest.mark.parametrize("service", BUILT)
def test_no_layer_of_the_image_holds_the_pip_ca_bundle(podman: Podman, images: Images, service: str) -> None:
    bundle = pip_ca_bundle(os.environ)
    if bundle is None:  # pip here trusts the system's CAs: nothing was passed into the build
        return
    secret = bundle.read_bytes()
    history = podman.run("history", "--no-trunc", "--format", "{{.CreatedBy}}", images.built[service].image_id)
    assert "BEGIN CERTIFICATE" not in history.stdout
    with _mounted(podman, images.built[service]) as root:
        same_size = [Path(top, name) for top, _dirs, names in os.walk(root) for name in names
                     if not os.path.islink(os.path.join(top, name))
                     and os.path.getsize(os.path.join(top, name)) == len(secret)]
        copies = [str(p.relative_to(root)) for p in same_size if p.read_bytes() == secret]
    assert not copies


def test_the_dockerfiles_default_version_is_the_project_version() -> None:
    # `make images` passes VERSION; a user's `docker compose build` gets the Dockerfile's default.
    for service in ComposeFile.load(project_root() / "docker-compose.yml").built():
        assert service.build is not None
        assert f"ARG VERSION={version(project_root())}\n" in service.build.dockerfile.read_text(), service.name
