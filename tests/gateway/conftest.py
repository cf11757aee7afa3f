"""Fixtures for gateway tests: real Consul, control plane, Envoy, and real users service instances."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from gateway_support import Stack, start_stack

from localmesh.testing import project_root


@pytest.fixture(scope="session")
def gateway_descriptor() -> Path:
    path = project_root() / "gen" / "descriptors" / "protomesh.binpb"
    assert path.is_file(), f"{path} is missing: run `make protos`"
    return path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, gateway_descriptor: Path) -> Iterator[Stack]:
    started = start_stack(tmp_path_factory.mktemp("gateway"), gateway_descriptor)
    try:
        yield started
    finally:
        started.close()
