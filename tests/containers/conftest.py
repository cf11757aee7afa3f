"""Fixtures of the container tests: podman with the project's config, and every image docker-compose.yml names."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from localmesh.testing import project_root
from tests.containers.images import Images, build_all
from tests.containers.podman import Podman
from tests.containers.timing import Phases

log = logging.getLogger("containers")


@pytest.fixture(scope="session")
def podman() -> Podman:
    """podman with var/containers/containers.conf; fails naming `make setup` when a container tool is missing."""
    return Podman(project_root() / "var" / "containers")


@pytest.fixture(scope="session")
def phases(podman: Podman) -> Iterator[Phases]:
    """Every phase's time, written to var/containers/timings.json at the end of the session."""
    recorded = Phases()
    yield recorded
    recorded.write(podman.state_dir / "timings.json")
    log.info("container phases: %s", recorded.summary())


@pytest.fixture(scope="session")
def images(podman: Podman, phases: Phases) -> Images:
    """Stand-ins where a base image is missing, then the project's images (as `make images` builds them)."""
    built = build_all(project_root(), podman, phases)
    phases.notes["image_sizes_mb"] = {i.tag: round(i.size / 1e6, 1) for i in [*built.base.values(),
                                                                               *built.built.values()]}
    return built
