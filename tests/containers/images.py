"""Every image docker-compose.yml names, built with podman (`make images` and the container tests run this)."""

from __future__ import annotations

import fcntl
import logging
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from localmesh.process import MissingComponentError, project_root
from tests.containers.compose_file import ComposeFile, ServiceSpec
from tests.containers.podman import Podman
from tests.containers.standins import StandIns, qualified
from tests.containers.timing import Phases

log = logging.getLogger("containers")

# The build secret the Dockerfiles read pip's CA bundle from (see services/Dockerfile).
PIP_CA_SECRET = "pip-ca"
# OCI label -> the build argument the Dockerfiles fill it from.
OCI_LABELS = {"org.opencontainers.image.version": "VERSION", "org.opencontainers.image.source": "SOURCE",
              "org.opencontainers.image.revision": "REVISION"}


@dataclass(frozen=True)
class Image:
    """One image ready in local storage: what it is for, its tag, its ID and size."""

    name: str
    tag: str
    image_id: str
    size: int
    provided: str


@dataclass(frozen=True)
class Images:
    """The base images and the project images of one compose file."""

    base: Mapping[str, Image]
    built: Mapping[str, Image]


def version(root: Path) -> str:
    return str(tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"])


def pip_ca_bundle(env: Mapping[str, str]) -> Path | None:
    """The CA bundle this machine's pip is configured with (PIP_CERT or `cert=` in pip's config), if any."""
    configured = env.get("PIP_CERT")
    if not configured:
        listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                                timeout=60, check=False).stdout
        found = re.search(r"^[\w:.-]*\.cert='([^']+)'", listed, re.M)
        configured = found.group(1) if found else None
    return Path(configured) if configured and Path(configured).is_file() else None


def _git(root: Path, *args: str) -> str:
    result = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30,
                            check=False)
    return result.stdout.strip() if result.returncode == 0 else ""


def oci_args(root: Path) -> dict[str, str]:
    """VERSION, SOURCE and REVISION for the images' OCI labels."""
    origin = re.sub(r"//[^/@]+@", "//", _git(root, "remote", "get-url", "origin"))  # never a credential
    return {"VERSION": version(root), "SOURCE": origin, "REVISION": _git(root, "rev-parse", "HEAD")}


def project_tag(root: Path, spec: ServiceSpec) -> str:
    return qualified(spec.image) if spec.image else f"localhost/protomesh/{spec.name}:{version(root)}"


def build_project_image(podman: Podman, root: Path, spec: ServiceSpec, ca: Path | None) -> Image:
    assert spec.build is not None
    tag, iid = project_tag(root, spec), podman.state_dir / f"{spec.name}.iid"
    args = spec.build.expanded_args(os.environ) | oci_args(root)
    command = ["build", "--pull=never", "-f", str(spec.build.dockerfile), "-t", tag, "--iidfile", str(iid)]
    command += [f"--build-arg={name}={value}" for name, value in args.items()]
    # Also as --label: buildah 1.28 reuses a cached LABEL layer whatever the ARG values in it.
    command += [f"--label={key}={args[arg]}" for key, arg in OCI_LABELS.items()]
    if ca is not None:
        command.append(f"--secret=id={PIP_CA_SECRET},src={ca}")
    podman.run(*command, str(spec.build.context), timeout=1200)
    image_id = iid.read_text().strip().removeprefix("sha256:")
    iid.unlink()
    return _image(podman, spec.name, tag, "built", image_id)


def build_all(root: Path, podman: Podman, phases: Phases) -> Images:
    """Stand-ins where a base image is missing, then every project image, each timed in phases."""
    with _storage_lock():
        return _build_all(root, podman, phases)


@contextmanager
def _storage_lock() -> Iterator[None]:
    # Image storage is the machine's, shared by every checkout: one build at a time writes its tags.
    with (Path(tempfile.gettempdir()) / "protomesh-images.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _build_all(root: Path, podman: Podman, phases: Phases) -> Images:
    compose = ComposeFile.load(root / "docker-compose.yml")
    provided = StandIns(podman, root, phases).ensure(compose.base_images(os.environ))
    base = {image: _image(podman, image, qualified(image), how) for image, how in provided.items()}
    ca = pip_ca_bundle(os.environ)
    built = {}
    for spec in compose.built():
        with phases.measure(f"image {spec.name}"):
            built[spec.name] = build_project_image(podman, root, spec, ca)
    return Images(base, built)


def _image(podman: Podman, name: str, tag: str, provided: str, image_id: str | None = None) -> Image:
    info = podman.image(image_id or tag)
    assert info is not None, f"{tag} is not in local storage"
    return Image(name, tag, str(info["Id"]), int(info["Size"]), provided)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root = project_root()
    phases = Phases()
    try:
        images = build_all(root, Podman(root / "var" / "containers"), phases)
    except (MissingComponentError, RuntimeError) as error:
        raise SystemExit(f"make images: {error}") from None
    for image in [*images.base.values(), *images.built.values()]:
        log.info("%-44s %7.1f MB  %s", image.tag, image.size / 1e6, image.provided)
    log.info("took: %s", phases.summary())
    phases.write(root / "var" / "containers" / "images-timings.json")


if __name__ == "__main__":
    main()
