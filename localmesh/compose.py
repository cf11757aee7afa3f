"""Reads docker-compose.yml as Compose does: YAML (anchors and merge keys), then `${VAR}` interpolation.

    data, used = load_compose(Path("docker-compose.yml"), os.environ)
    data["services"]["users"]["deploy"]["replicas"]     # "2" unless USERS_REPLICAS says otherwise
    "USERS_REPLICAS" in used                            # True: a knob of the file, not of a service
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

# $$ (a literal $), ${NAME...} or $NAME, as in the Compose specification.
_REFERENCE = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))")
_BRACED = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|-|:\?|\?|:\+|\+)(?P<arg>.*))?$", re.DOTALL)


class TopologyError(ValueError):
    """docker-compose.yml cannot be read as a mesh; the message names the place and what to change."""


def interpolate(text: str, env: Mapping[str, str], used: set[str]) -> str:
    """One string with its variables substituted; every variable name read is added to `used`."""

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["named"]:
            used.add(match["named"])
            return env.get(match["named"], "")
        braced = _BRACED.match(match["braced"])
        if braced is None:
            raise TopologyError(f"invalid interpolation {match[0]!r} in {text!r}")
        name, op, arg = braced["name"], braced["op"], braced["arg"] or ""
        used.add(name)
        value, unset_or_empty = env.get(name), not env.get(name)
        if op in (":-", "-"):
            missing = unset_or_empty if op == ":-" else value is None
            return interpolate(arg, env, used) if missing else str(value)
        if op in (":?", "?"):
            missing = unset_or_empty if op == ":?" else value is None
            if missing:
                raise TopologyError(f"{name} is required: {interpolate(arg, env, used) or 'set it'}")
            return str(value)
        if op in (":+", "+"):
            present = not unset_or_empty if op == ":+" else value is not None
            return interpolate(arg, env, used) if present else ""
        return value or ""

    return _REFERENCE.sub(substitute, text)


def _interpolated(node: Any, env: Mapping[str, str], used: set[str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env, used)
    if isinstance(node, Mapping):
        return {key: _interpolated(value, env, used) for key, value in node.items()}
    if isinstance(node, list):
        return [_interpolated(item, env, used) for item in node]
    return node


def load_compose(path: Path, env: Mapping[str, str]) -> tuple[dict[str, Any], frozenset[str]]:
    """The file's mapping with every value interpolated, and the names of the variables it reads."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise TopologyError(f"{path}: cannot be read: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("services"), dict):
        raise TopologyError(f"{path}: no `services:` mapping")
    used: set[str] = set()
    interpolated = _interpolated(data, env, used)
    assert isinstance(interpolated, dict)
    return interpolated, frozenset(used)


def variable_defaults(path: Path) -> dict[str, str]:
    """Every `${VAR:-default}` (or `${VAR-default}`) the file reads, with its default: the mesh's knobs."""
    try:
        text = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))
    except OSError:
        return {}
    found: dict[str, str] = {}
    for match in _REFERENCE.finditer(text):
        braced = _BRACED.match(match["braced"] or "")
        if braced is not None and braced["op"] in (":-", "-"):
            found.setdefault(braced["name"], braced["arg"] or "")
        elif braced is not None or match["named"]:
            found.setdefault(braced["name"] if braced is not None else match["named"], "")
    return dict(sorted(found.items()))
