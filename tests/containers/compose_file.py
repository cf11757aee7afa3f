"""What the container harness reads from docker-compose.yml: services, images, builds, health, ports, replicas."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from localmesh import compose

# A published port whose host side is one variable with a numeric default, after an optional host address:
# "${GATEWAY_PORT:-8080}:8080" or "127.0.0.1:${CONSUL_PORT:-8500}:8500".
_PORT_VARIABLE = re.compile(r"(?:(?P<address>[\d.]+):)?\$\{(?P<name>\w+):-(?P<default>\d+)\}")
_FROM = re.compile(r"^\s*FROM\s+(?:--platform=\S+\s+)?(?P<image>\S+)(?:\s+AS\s+(?P<stage>\S+))?", re.I | re.M)
_ARG = re.compile(r"^\s*ARG\s+(?P<name>\w+)(?:=(?P<value>\S*))?", re.I | re.M)


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """text with compose's variable syntax expanded from env (the local mesh's reading of the same file)."""
    return compose.interpolate(text, env, set())


@dataclass(frozen=True)
class PublishedPort:
    """One `ports:` entry: the container port and the host side as written ("${GATEWAY_PORT:-8080}")."""

    container_port: int
    host: str

    @property
    def variable(self) -> str | None:
        """The variable that chooses the host port, when the host side is exactly one ${VAR:-N}."""
        match = _PORT_VARIABLE.fullmatch(self.host)
        return match["name"] if match else None

    @property
    def bound_address(self) -> str | None:
        """The host address the entry itself names ("127.0.0.1:${VAR:-N}:N"), if any."""
        match = _PORT_VARIABLE.fullmatch(self.host)
        return match["address"] if match else None

    @classmethod
    def parse(cls, entry: str | int) -> PublishedPort:
        host, _, container = str(entry).rpartition(":")
        return cls(int(container.split("/")[0]), host)


@dataclass(frozen=True)
class Build:
    """A `build:` section, paths resolved against the compose file's folder."""

    context: Path
    dockerfile: Path
    args: Mapping[str, str]

    def expanded_args(self, env: Mapping[str, str]) -> dict[str, str]:
        return {name: interpolate(value, env) for name, value in self.args.items()}

    def base_images(self, env: Mapping[str, str]) -> list[str]:
        """The images the Dockerfile builds FROM (stage names and `scratch` left out), ARGs expanded."""
        text = self.dockerfile.read_text()
        head = text[: m.start()] if (m := _FROM.search(text)) else text
        args = {a["name"]: a["value"] or "" for a in _ARG.finditer(head)} | self.expanded_args(env)
        stages: set[str] = set()
        images: list[str] = []
        for match in _FROM.finditer(text):
            image = interpolate(match["image"], args)
            if image not in stages and image != "scratch" and image not in images:
                images.append(image)
            if match["stage"]:
                stages.add(match["stage"])
        return images


@dataclass(frozen=True)
class ServiceSpec:
    """One service of the compose file."""

    name: str
    image: str | None
    build: Build | None
    healthcheck: bool
    ports: tuple[PublishedPort, ...]
    replicas_expression: str | None
    raw: Mapping[str, Any] = field(repr=False)

    def replicas(self, env: Mapping[str, str]) -> int:
        return 1 if self.replicas_expression is None else int(interpolate(self.replicas_expression, env))

    def image_name(self, project: str) -> str:
        """The image compose runs: `image:`, else the name docker-compose 1.29 gives a built image."""
        return self.image or f"{project.lstrip('_-')}_{self.name}"


@dataclass(frozen=True)
class ComposeFile:
    """docker-compose.yml, read as data (merge keys resolved): nothing here runs a container."""

    path: Path
    services: Mapping[str, ServiceSpec]

    @classmethod
    def load(cls, path: Path) -> ComposeFile:
        document = yaml.safe_load(path.read_text())
        services = {name: _service(name, spec or {}, path.parent) for name, spec in document["services"].items()}
        return cls(path, services)

    def built(self) -> list[ServiceSpec]:
        """The services built from a Dockerfile of this repository, in file order."""
        return [s for s in self.services.values() if s.build is not None]

    def base_images(self, env: Mapping[str, str]) -> list[str]:
        """Every image not built here: `image:` of the services that run one, and each Dockerfile's FROM."""
        images: list[str] = []
        for service in self.services.values():
            found = service.build.base_images(env) if service.build else [interpolate(str(service.image), env)]
            images += [i for i in found if i not in images]
        return images

    def port_variables(self) -> dict[str, PublishedPort]:
        """variable -> published port, for every host port chosen by a ${VAR:-N} expression."""
        return {p.variable: p for s in self.services.values() for p in s.ports if p.variable}


def _service(name: str, spec: Mapping[str, Any], base: Path) -> ServiceSpec:
    build = spec.get("build")
    if isinstance(build, str):
        build = {"context": build}
    parsed_build = None
    if build is not None:
        context = (base / build.get("context", ".")).resolve()
        args = build.get("args") or {}
        if isinstance(args, list):  # the list form: ["KEY=value", ...]
            args = dict(a.split("=", 1) for a in args)
        parsed_build = Build(context, context / build.get("dockerfile", "Dockerfile"),
                             {str(k): str(v) for k, v in args.items()})
    health = spec.get("healthcheck")
    disabled = isinstance(health, dict) and (health.get("disable") or health.get("test") in (["NONE"], "NONE"))
    replicas = (spec.get("deploy") or {}).get("replicas", spec.get("scale"))
    return ServiceSpec(
        name=name, image=spec.get("image"), build=parsed_build, healthcheck=bool(health) and not disabled,
        ports=tuple(PublishedPort.parse(p) for p in spec.get("ports", []) if not isinstance(p, dict)),
        replicas_expression=None if replicas is None else str(replicas), raw=spec,
    )
