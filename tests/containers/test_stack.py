"""docker-compose.yml for real: built, run in podman, secured like `protomesh up` (TLS and tokens at the containerised
Envoy, mTLS and intentions between service containers, Consul ACLs), walked through, one instance killed, Consul
restarted."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import time
from pathlib import Path

import aiohttp
import pytest

from localmesh import acl
from localmesh.process import pid_alive
from localmesh.testing import project_root
from protomesh.aio import poll_until
from tests.containers.compose_file import ComposeFile
from tests.containers.images import Images
from tests.containers.podman import HealthTicker, Podman, podman_service
from tests.containers.secured import (
    MeshCredentials,
    consul_refuses_anonymous_and_foreign_registrations,
    each_container_mounts_only_its_own_credentials,
    service_ports_want_mtls_and_an_intention,
    the_gateway_wants_tls_and_a_token,
)
from tests.containers.stack import ComposeStack, Container, project_name, reap_abandoned
from tests.containers.timing import Phases
from tests.containers.walkthrough import Gateway, observed, walkthrough

log = logging.getLogger("containers")

# Beyond docker-compose's own wait (each dependency healthy before its dependants start).
HEALTHY_TIMEOUT_S = 120.0
# The killed instance is restarted by its restart policy and passes its health check again.
RESTART_TIMEOUT_S = 60.0
# Calls keep going this long once the restarted instance is back, so a late failure is counted too.
SETTLE_S = 3.0
# One REST call through the gateway every so often while an instance dies and comes back.
CALL_INTERVAL_S = 0.05
KILLED_SERVICE = "users"
# The protomesh services of docker-compose.yml, each registered by its instances with their own Consul tokens.
SERVICES = ("users", "orders", "notifications")


class Load:
    """REST reads through the gateway in a loop: how many answered 200, and what went wrong otherwise."""

    def __init__(self, gateway: Gateway, user_id: str) -> None:
        self.gateway, self.user_id = gateway, user_id
        self.ok = 0
        self.failures: list[str] = []
        self.done = asyncio.Event()

    async def run(self) -> None:
        while not self.done.is_set():
            try:
                status, body = await self.gateway.call("GET", f"/v1/users/{self.user_id}")
                if status == 200:
                    self.ok += 1
                else:
                    self.failures.append(f"{status} {body}")
            except (aiohttp.ClientError, TimeoutError) as error:
                self.failures.append(repr(error))
            await asyncio.sleep(CALL_INTERVAL_S)


async def passing_addresses(gateway: Gateway, consul: str, token: str, service: str) -> set[str]:
    """The distinct addresses of a service's passing instances in Consul (read with a catalog-reading token).

    Addresses, not instances: a restarted container keeps its IP and port, so the registration its killed
    process left behind passes its check again beside the new one (same endpoint, two instance ids).
    """
    async with gateway.http.get(f"http://{consul}/v1/health/service/{service}?passing",
                                headers={"X-Consul-Token": token}) as response:
        entries = await response.json()
    return {f"{e['Service']['Address']}:{e['Service']['Port']}" for e in entries}


async def kill_9_one_instance(stack: ComposeStack, gateway: Gateway, token: str, user_id: str) -> None:
    """SIGKILL one instance's main process by its host PID: calls go on, the restart policy brings it back."""
    victim = next(c for c in stack.containers() if c.service == KILLED_SERVICE)
    replicas = stack.expected_replicas()[KILLED_SERVICE]
    consul = f"127.0.0.1:{stack.ports['CONSUL_PORT']}"
    load = Load(gateway, user_id)
    calls = asyncio.create_task(load.run())
    try:
        await asyncio.sleep(1.0)
        # Not `podman kill`: the engine would count that as a stop by the user and not restart it.
        os.kill(victim.pid, signal.SIGKILL)
        log.info("step: SIGKILL to %s (host PID %d)", victim.name, victim.pid)

        def back() -> Container | None:
            now = next((c for c in stack.containers() if c.id == victim.id), None)
            restarted = now is not None and now.restarts > victim.restarts and now.pid != victim.pid
            return now if restarted and now is not None and now.health == "healthy" else None

        took = await poll_until(lambda: asyncio.to_thread(back), timeout=RESTART_TIMEOUT_S,
                                what=f"{victim.name} restarted and healthy", interval=0.5)
        log.info("step: %s restarted by its policy and healthy after %.1fs", victim.name, took)

        async def all_registered() -> bool:
            return len(await passing_addresses(gateway, consul, token, KILLED_SERVICE)) == replicas

        await poll_until(all_registered, timeout=RESTART_TIMEOUT_S,
                         what=f"{replicas} passing {KILLED_SERVICE} addresses in Consul", interval=0.5)
        await asyncio.sleep(SETTLE_S)
    finally:
        load.done.set()
        await calls
    log.info("step: %d calls answered, %d failed: %s", load.ok, len(load.failures), load.failures)
    assert len(load.failures) <= 1, load.failures
    assert load.ok > 0


async def a_restarted_consul_is_set_up_again(stack: ComposeStack, gateway: Gateway, token: str,
                                             user_id: str) -> None:
    """The dev agent forgets everything on restart: the issuer applies the ACL tokens, intentions and policy again,
    every instance registers again with its own token, and an order (orders calls users) still goes through."""
    consul = f"127.0.0.1:{stack.ports['CONSUL_PORT']}"
    await asyncio.to_thread(stack.compose, "restart", "consul", timeout=RESTART_TIMEOUT_S)
    log.info("step: docker-compose restart consul (a dev agent: ACL tokens, intentions, policy and catalog gone)")
    replicas = stack.expected_replicas()

    async def registered_again() -> bool:
        try:
            return all([len(await passing_addresses(gateway, consul, token, name)) == replicas[name]
                        for name in SERVICES])
        except (aiohttp.ClientError, TimeoutError):  # restarting, or the issuer has not made the token yet
            return False

    took = await poll_until(registered_again, timeout=RESTART_TIMEOUT_S, interval=0.5,
                            what=f"every instance of {', '.join(SERVICES)} passing in the restarted Consul")
    log.info("step: every instance registered again with its own token after %.1fs", took)

    async def ordered() -> bool:
        status, _ = await gateway.call("POST", "/v1/orders", {
            "userId": user_id, "lineItems": [{"sku": "pen", "quantity": 1, "unitPriceCents": 150}]})
        return status == 200

    await poll_until(ordered, timeout=RESTART_TIMEOUT_S, interval=0.5, what="an order through the gateway")
    log.info("step: an order goes through the gateway again (orders may still call users)")


async def secured(stack: ComposeStack, gateway: Gateway, mesh: MeshCredentials, user_id: str,
                  scratch: Path) -> None:
    """The assertions that the containers are secured (tests/containers/secured.py)."""
    await the_gateway_wants_tls_and_a_token(gateway, mesh, user_id)
    await service_ports_want_mtls_and_an_intention(stack, mesh, scratch)
    consul_refuses_anonymous_and_foreign_registrations(f"127.0.0.1:{stack.ports['CONSUL_PORT']}", mesh)
    each_container_mounts_only_its_own_credentials(stack, mesh)


@pytest.mark.slow
async def test_the_stack_in_containers_answers_the_walkthrough_and_survives_a_kill_9(
    podman: Podman, images: Images, phases: Phases, tmp_path: Path,
) -> None:
    compose = ComposeFile.load(project_root() / "docker-compose.yml")
    if reaped := reap_abandoned(podman):
        log.info("step: removed what killed runs left behind: %s", ", ".join(reaped))
    project = project_name()
    started = time.monotonic()
    with podman_service(podman, podman.state_dir / project / "podman.sock") as service:
        stack = ComposeStack(podman, compose, project, service.docker_host, images)
        mesh = MeshCredentials.open(stack.mesh_state_dir, stack.state_dir)
        try:
            with HealthTicker(podman, project):
                try:
                    with phases.measure("up to healthy"):
                        await asyncio.to_thread(stack.up)
                        await asyncio.to_thread(stack.wait_healthy, HEALTHY_TIMEOUT_S)
                    log.info("step: %d containers healthy: %s", len(stack.containers()),
                             ", ".join(sorted(c.name for c in stack.containers())))
                    address = f"127.0.0.1:{stack.ports['GATEWAY_PORT']}"
                    async with aiohttp.ClientSession() as http:
                        gateway = Gateway(address, http, mesh.ca_file, mesh.token())
                        with phases.measure("walkthrough"):
                            user_id = await walkthrough(gateway)
                        with phases.measure("secured"):
                            await secured(stack, gateway, mesh, user_id, tmp_path)
                        with phases.measure("observability"):
                            await observed(http, f"127.0.0.1:{stack.ports['PROMETHEUS_PORT']}",
                                           f"127.0.0.1:{stack.ports['ZIPKIN_PORT']}", stack.expected_replicas())
                        with phases.measure("kill test"):
                            await kill_9_one_instance(stack, gateway, mesh.consul_token(acl.PROMETHEUS), user_id)
                        with phases.measure("consul restart"):
                            await a_restarted_consul_is_set_up_again(stack, gateway, mesh.consul_token(acl.PROMETHEUS),
                                                                     user_id)
                except BaseException:
                    log.error("compose logs:\n%s", await asyncio.to_thread(stack.logs))
                    raise
        finally:
            with phases.measure("down"):
                await asyncio.to_thread(stack.down)
    assert not stack.leftovers()
    assert not pid_alive(service.pid)
    assert not service.socket.exists()
    shutil.rmtree(service.socket.parent)  # the service's log; kept only when the test fails
    log.info("step: down -v left nothing behind; the stack's run took %.1fs", time.monotonic() - started)

