"""grpc-go's interop client runs every case through the gateway `make up` runs, to the TestService in Consul."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from interop_build import build_contracts, merge_descriptor_sets
from interop_client import CASES, run_case
from interop_service import SERVICE

from gateway_envoy.options import DEFAULT_ROUTE_TIMEOUT_S
from localmesh.testing import ConsulAgent, Gateway, ManagedProcess, project_root, wait_until

log = logging.getLogger("interop-gateway")
SERVICE_SCRIPT = Path(__file__).with_name("interop_service.py")


@dataclass
class Mesh:
    consul: ConsulAgent
    gateway: Gateway
    service: ManagedProcess

    def close(self) -> None:
        self.service.stop()
        self.gateway.stop()
        self.consul.stop()


def _start_mesh(workdir: Path) -> Mesh:
    project_set = project_root() / "gen" / "descriptors" / "protomesh.binpb"
    assert project_set.is_file(), f"{project_set} is missing: run `make protos`"
    # The gateway transcodes and routes the services of its descriptor set: the project's contracts and,
    # for this suite, grpc.testing and ORCA's service as grpc-go's client speaks them.
    descriptor = merge_descriptor_sets(project_set, build_contracts(), workdir / "gateway.binpb")
    consul = ConsulAgent(workdir / "logs")
    consul.start()
    # The route timeout `make up` uses, not the tests' short one: this suite checks what users get.
    # The plaintext dev listener without token checks: grpc-go's client speaks to it as to any gRPC server.
    gateway = Gateway(workdir / "logs", consul_address=consul.address, descriptor=descriptor,
                      route_timeout_s=DEFAULT_ROUTE_TIMEOUT_S, extra_args=["--plaintext"])
    env = {**os.environ, "CONSUL_HTTP_ADDR": consul.address, "INTEROP_LOG_LEVEL": "WARNING",
           "INTEROP_SERVER__GRACE_S": "1", "INTEROP_SERVER__DRAIN_S": "0",
           # Plaintext: this suite is about gRPC semantics through the gateway, not the mesh's identities.
           "INTEROP_SECURITY__MODE": "off"}
    service = ManagedProcess(SERVICE, [sys.executable, str(SERVICE_SCRIPT)], log_dir=workdir / "logs",
                             cwd=project_root(), env=env)
    mesh = Mesh(consul, gateway, service)
    try:
        service.start()
        wait_until(lambda: _registered(service, consul), what=f"{SERVICE} passing in Consul")
        gateway.start()
        wait_until(lambda: bool(gateway.hosts(SERVICE)), what=f"{SERVICE} endpoints in Envoy")
    except BaseException:
        mesh.close()
        raise
    return mesh


def _registered(service: ManagedProcess, consul: ConsulAgent) -> bool:
    service.ensure_alive()
    return bool(consul.passing_instances(SERVICE))


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    started = _start_mesh(tmp_path_factory.mktemp("interop-gateway"))
    try:
        yield started
    finally:
        started.close()


@pytest.mark.parametrize("case", CASES)
async def test_the_grpc_go_interop_client_passes_the_case_through_the_gateway(mesh: Mesh, case: str) -> None:
    log.info("step: %s through the gateway at %s to Consul service %r", case, mesh.gateway.address, SERVICE)
    run = await run_case(case, mesh.gateway.ports.listen)
    assert run.passed, run.report()
