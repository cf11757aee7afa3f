"""`protomesh new service NAME`: a working service in the house layout (contract, app, tests, config, topology
entry) that passes `make protos && make lint` and its own tests straight away."""

from __future__ import annotations

import importlib.util
import keyword
import os
import re
import sys
from importlib import resources
from pathlib import Path

from localmesh.compose import TopologyError
from localmesh.process import TOPOLOGY_FILE
from localmesh.topology import SERVICES_DIR, Topology

# Lowercase letters and digits: the name is the proto package (acme.NAME.v1), the Python import path, the folder,
# the Consul service, the Envoy cluster and (upper-cased) the settings prefix, so it must suit all of them.
NAME_PATTERN = re.compile(r"[a-z][a-z0-9]{1,11}")
# Prefixes of environment variables that other programs own: a service NAME reads every NAME_* variable as one
# of its settings and refuses unknown ones, so a service called `grpc` would trip over GRPC_VERBOSITY.
FOREIGN_PREFIXES = ("CONSUL_", "DOCKER_", "ENVOY_", "ERL_", "GIT_", "GRPC_", "HTTP_", "HTTPS_", "JAVA_", "LC_",
                    "MAVEN_", "NO_", "NODE_", "NPM_", "PIP_", "PROTOMESH_", "PYTHON", "RABBITMQ_", "SSH_", "XDG_")
# Every service's own code is the package `app`, and `gateway` is the gateway's workload identity
# (spiffe://<trust domain>/service/gateway, trusted to forward callers' claims): no service takes either name.
RESERVED = frozenset({"app", "acme", "gateway", "test", "tests"})
TEMPLATES = "templates/service"


def plural(name: str) -> str:
    """English plural of a resource name, good enough for URLs and field names (ledger -> ledgers)."""
    if name.endswith(("s", "x", "z", "ch", "sh")):
        return name + "es"
    if name.endswith("y") and name[-2:-1] not in "aeiou":
        return name[:-1] + "ies"
    return name + "s"


def problem(project: Path, name: str, env: dict[str, str] | None = None) -> str | None:
    """Why `name` cannot be a new service of the project (one line), or None when it can."""
    env = dict(os.environ if env is None else env)
    if not NAME_PATTERN.fullmatch(name):
        return "use 2 to 12 lowercase letters and digits, starting with a letter (e.g. ledger)"
    if keyword.iskeyword(name) or name in RESERVED:
        return (f"{name!r} is reserved in Python, by the service layout (every service's own package is `app`) "
                "or by the mesh (the gateway's identity is `gateway`)")
    if (project / SERVICES_DIR / name).exists() or (project / "protos" / "acme" / name).exists():
        return f"services/{name} or protos/acme/{name} exists already"
    try:
        if name in Topology.load(project, env).specs:
            return f"{TOPOLOGY_FILE} has an entry named {name!r} already"
    except TopologyError as exc:
        return f"{TOPOLOGY_FILE} cannot be read: {exc}"
    if importlib.util.find_spec(name) is not None:
        return f"it would shadow the installed module {name!r} (import {name} already means something else)"
    prefix = name.upper() + "_"
    foreign = next((p for p in FOREIGN_PREFIXES if prefix.startswith(p) or p.startswith(prefix)), None)
    taken = sorted(key for key in env if key.startswith(prefix))
    if foreign is not None or taken:
        owner = f"{foreign}* variables belong to another program" if foreign else f"{', '.join(taken[:3])} are set"
        return f"its settings would read {prefix}* environment variables, and {owner}"
    return None


def _words(name: str) -> dict[str, str]:
    names = plural(name)
    return {"{{name}}": name, "{{Name}}": name.capitalize(), "{{names}}": names, "{{Names}}": names.capitalize(),
            "{{NAME}}": name.upper()}


def _render(text: str, words: dict[str, str]) -> str:
    for token, value in words.items():
        text = text.replace(token, value)
    return text


def _files(name: str) -> dict[str, str]:
    """Template path -> the path it is written to, relative to the project."""
    base = {"protos/resource.proto": f"protos/acme/{name}/v1/{name}.proto",
            "protos/service.proto": f"protos/acme/{name}/v1/{name}_service.proto",
            "config/service.yaml": f"config/{name}.yaml"}
    templates = resources.files("localmesh").joinpath(TEMPLATES)
    for folder in ("app", "tests"):
        for entry in sorted(templates.joinpath(folder).iterdir(), key=lambda e: e.name):
            if entry.name.endswith(".py.tmpl"):  # not .py: linters would read the placeholders as code
                base[f"{folder}/{entry.name}"] = f"{SERVICES_DIR}/{name}/{folder}/{entry.name.removesuffix('.tmpl')}"
    return base


def add_to_topology(project: Path, name: str, entry: str) -> None:
    """Insert the service's entry before the top-level `volumes:` and its volume at the end of that section."""
    path = project / TOPOLOGY_FILE
    lines = path.read_text().splitlines()
    try:
        volumes = lines.index("volumes:")
    except ValueError:
        raise TopologyError(f"{TOPOLOGY_FILE} has no top-level `volumes:` section; add this entry under "
                            f"`services:` yourself:\n{entry}") from None
    if any(line and not line.startswith((" ", "#")) for line in lines[volumes + 1:]):
        raise TopologyError(f"{TOPOLOGY_FILE}: `volumes:` is not the last section; add this entry under "
                            f"`services:` yourself:\n{entry}")
    while volumes > 0 and lines[volumes - 1].startswith("#"):
        volumes -= 1  # keep the comment that introduces `volumes:` with it
    updated = [*lines[:volumes], *entry.rstrip("\n").splitlines(), "", *lines[volumes:], f"  {name}-data:"]
    path.write_text("\n".join(updated) + "\n")


def scaffold(project: Path, name: str) -> list[Path]:
    """Write the new service's files and its topology entry; returns the files written."""
    words = _words(name)
    templates = resources.files("localmesh").joinpath(TEMPLATES)
    written = []
    for source, target in _files(name).items():
        path = project / target
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_render(templates.joinpath(source).read_text(), words))
        written.append(path)
    add_to_topology(project, name, _render(templates.joinpath("compose-entry.yaml").read_text(), words))
    written.append(project / TOPOLOGY_FILE)
    Topology.load(project, dict(os.environ))  # the entry must read back as a runnable service
    return written


def main(project: Path, name: str) -> int:
    reason = problem(project, name)
    if reason is not None:
        print(f"protomesh new service: cannot name a service {name!r}: {reason}", file=sys.stderr)
        return 2
    try:
        written = scaffold(project, name)
    except TopologyError as exc:
        print(f"protomesh new service: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(f"    wrote {path.relative_to(project)}")
    names = plural(name)
    print(f"""==> service {name!r} created: acme.{name}.v1.{name.capitalize()}Service, REST under /v1/{names}
Next:
  make protos && make lint                  # stubs, descriptor set, buf lint, ruff, mypy
  (cd services/{name} && ../../.venv/bin/python -m pytest tests -q)
  protomesh up --detach                     # starts {name} in the running mesh (only what is new)
  curl -s -X POST http://127.0.0.1:8080/v1/{names} -d '{{"displayName": "first"}}'""")
    return 0
