"""Every image pins each of the runtime's dependencies, so `pip check` in an image build never meets a missing one."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from localmesh.testing import project_root

ROOT = project_root()
# The pinned files the Dockerfiles install before `pip install --no-deps .` and `pip check`.
IMAGE_PINS = ("services/requirements.txt", "gateway_envoy/requirements.txt")


def _name(requirement: str) -> str:
    """The distribution name of a requirement, normalized as pip compares them (PEP 503)."""
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip())
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def _pinned(path: Path) -> set[str]:
    return {_name(line) for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")}


@pytest.mark.parametrize("pins", IMAGE_PINS)
def test_each_image_pins_every_dependency_of_the_runtime(pins: str) -> None:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    missing = sorted({_name(dependency) for dependency in dependencies} - _pinned(ROOT / pins))
    assert missing == [], f"{pins} lacks a pin for {missing}: the image's `pip check` fails"
