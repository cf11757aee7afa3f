"""grpc-go's interop client runs every case through a secured gateway to the TestService in Consul, as `make up`
secures it: TLS with the development CA at the edge, a bearer token checked against the policy's rule for
grpc.testing, mTLS with the service's own identity behind the gateway (allowed by an intention), Consul with ACLs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from interop_build import build_contracts, merge_descriptor_sets
from interop_client import CASES, Credentials, run_case
from interop_service import ORCA_SERVICE, SERVICE, TEST_SERVICE

from gateway_envoy.options import DEFAULT_ROUTE_TIMEOUT_S
from localmesh import acl
from localmesh.security import MeshSecurity, SecuritySpec
from localmesh.testing import ConsulAgent, Gateway, ManagedProcess, project_root, wait_until
from protomesh.auth import Policy
from protomesh.identity import GATEWAY
from protomesh.intentions import Intention

log = logging.getLogger("interop-gateway")
SERVICE_SCRIPT = Path(__file__).with_name("interop_service.py")
# grpc.testing is not the project's contract, so its rule comes from the policy (what the topology's
# `x-protomesh.security.rules` becomes): every TestService call needs this scope, and so does a call to
# UnimplementedService (which no instance serves: the case expects UNIMPLEMENTED from the gateway).
SCOPE = "interop:call"
UNIMPLEMENTED_SERVICE = "grpc.testing.UnimplementedService"
POLICY = Policy.parse({"rules": {
    f"/{TEST_SERVICE.full_name}/": {"scopes": [SCOPE]},
    f"/{UNIMPLEMENTED_SERVICE}/": {"scopes": [SCOPE]},
    # ORCA's out-of-band load reports (case orca_oob) are a stream grpc-go's LB policy opens on the subchannel by
    # itself: the client's interceptors, and so its -additional_metadata token, never see it. A real mesh would
    # not expose it at the edge at all; here it is public so that the case can run through the gateway.
    f"/{ORCA_SERVICE.full_name}/": {"public": True},
}})
# The gateway may call the interop service; nothing else may.
INTENTIONS = (Intention(GATEWAY, SERVICE),)
INSTANCE = f"{SERVICE}-1"


@dataclass
class Mesh:
    consul: ConsulAgent
    gateway: Gateway
    service: ManagedProcess
    security: MeshSecurity

    def credentials(self, *scopes: str, token: bool = True) -> Credentials:
        """TLS with the mesh's CA, and (unless token is False) a token from its issuer holding scopes."""
        issued = self.security.issuer.token("interop", scopes) if token else None
        return Credentials(self.security.ca_file, issued)

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
    # The local mesh's own security pieces (localmesh.security): a development CA, a token issuer, Consul's
    # ACL tokens, identity folders, and the control plane's flags.
    security = MeshSecurity(SecuritySpec(intentions=INTENTIONS, policy=POLICY), workdir / "security")
    consul = ConsulAgent(workdir / "logs", security=security.consul_agent())
    consul.start()
    # Tokens and policies for the interop service and the control plane, the intention and the policy.
    asyncio.run(security.configure_consul(consul.address, [SERVICE]))
    # The route timeout `make up` uses, not the tests' short one: this suite checks what users get.
    gateway = Gateway(workdir / "logs", consul_address=consul.address, descriptor=descriptor,
                      route_timeout_s=DEFAULT_ROUTE_TIMEOUT_S, extra_args=security.gateway_arguments(),
                      env={**os.environ, "CONSUL_HTTP_TOKEN": security.token(acl.CONTROLPLANE)}, tls=True)
    env = {**os.environ, "CONSUL_HTTP_ADDR": consul.address, "INTEROP_LOG_LEVEL": "WARNING",
           "INTEROP_SERVER__GRACE_S": "1", "INTEROP_SERVER__DRAIN_S": "0", "INTEROP_SERVER__INSTANCE_ID": INSTANCE,
           # Its identity folder (mTLS, spiffe://protomesh.local/service/interop), trust domain and Consul token.
           **security.service_environment("INTEROP_", SERVICE, INSTANCE)}
    service = ManagedProcess(SERVICE, [sys.executable, str(SERVICE_SCRIPT)], log_dir=workdir / "logs",
                             cwd=project_root(), env=env)
    mesh = Mesh(consul, gateway, service, security)
    try:
        service.start()
        wait_until(lambda: _registered(service, consul), what=f"{SERVICE} passing in Consul (a TLS health check)")
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
async def test_the_grpc_go_interop_client_passes_the_case_through_the_secured_gateway(mesh: Mesh, case: str) -> None:
    log.info("step: %s through the gateway at %s (TLS, token with %s) to Consul service %r over mTLS", case,
             mesh.gateway.address, SCOPE, SERVICE)
    run = await run_case(case, mesh.gateway.ports.listen, credentials=mesh.credentials(SCOPE))
    assert run.passed, run.report()


async def test_the_gateway_turns_away_a_call_without_a_token_or_without_the_scope(mesh: Mesh) -> None:
    port = mesh.gateway.ports.listen
    without = await run_case("empty_unary", port, credentials=mesh.credentials(token=False))
    assert not without.passed, without.report()
    assert "code = Unauthenticated desc = authentication required" in without.output, without.report()
    log.info("step: empty_unary over TLS without a token -> UNAUTHENTICATED")
    unscoped = await run_case("empty_unary", port, credentials=mesh.credentials("users:read"))
    assert not unscoped.passed, unscoped.report()
    assert "code = PermissionDenied desc = permission denied" in unscoped.output, unscoped.report()
    log.info("step: empty_unary with a token lacking %s -> PERMISSION_DENIED", SCOPE)
    plaintext = await run_case("empty_unary", port)
    assert not plaintext.passed, plaintext.report()
    log.info("step: empty_unary in plaintext to the TLS listener fails")


async def test_the_calls_reached_the_service_over_mtls(mesh: Mesh) -> None:
    run = await run_case("empty_unary", mesh.gateway.ports.listen, credentials=mesh.credentials(SCOPE))
    assert run.passed, run.report()
    # Envoy counts the TLS handshakes of the cluster's upstream connections (none on a plaintext cluster).
    assert mesh.gateway.stat(f"cluster.{SERVICE}.ssl.handshake") >= 1
    assert mesh.gateway.stat(f"cluster.{SERVICE}.ssl.connection_error") == 0
    log.info("step: the gateway's connections to %r are TLS handshakes with no connection error", SERVICE)
