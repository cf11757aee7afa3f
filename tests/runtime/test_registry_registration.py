"""Registration against a real Consul dev agent: body, timing, agent restarts and a Consul that starts late."""

from __future__ import annotations

import asyncio
import logging
import time

import grpc
import pytest
from acme.users.v1 import users_service_pb2, users_service_pb2_grpc
from grpc_health.v1 import health_pb2
from test_registry_support import USER_SERVICE, consul_client, passing_ids, registered, serving

from localmesh.testing import ConsulAgent, free_port
from protomesh._registry import Registration
from protomesh._settings import ConsulSettings
from protomesh.aio import poll_until
from protomesh.consul import ConsulClient

log = logging.getLogger(__name__)

# Registration must be visible as passing this fast on an idle agent; the brief's bar, with no extra slack.
REGISTRATION_BUDGET_S = 2.0
# After a (state-losing) agent restart the instance must be back, passing, within this long.
REREGISTRATION_BUDGET_S = 3.0
# A failing gRPC check (1 s interval) must take the instance out of the passing list within this long.
CHECK_FAILURE_BUDGET_S = 4.0


async def test_a_registered_instance_is_passing_in_consul_within_two_seconds(consul_agent: ConsulAgent) -> None:
    async with consul_client(consul_agent) as consul, serving("blue") as instance:
        started = time.monotonic()
        async with registered(consul, instance) as registration:
            took = await poll_until(lambda: registration.instance_id in passing_ids(consul_agent),
                                    timeout=10, what="instance passing")
            took = time.monotonic() - started
            log.info("registration -> passing took %.2fs", took)
            assert took < REGISTRATION_BUDGET_S
            [entry] = consul_agent.passing_instances("users")
    assert entry["ID"] == registration.instance_id
    assert entry["ID"] == f"users-127.0.0.1-{instance.port}"
    assert entry["Tags"] == ["protomesh", "grpc", "blue"]
    assert entry["Meta"] == {"version": "1.2.3", "grpc_services": USER_SERVICE}
    assert (entry["Address"], entry["Port"]) == ("127.0.0.1", instance.port)


async def test_the_check_is_a_native_grpc_check_on_the_full_service_name(consul_agent: ConsulAgent) -> None:
    async with consul_client(consul_agent) as consul, serving("blue") as instance, \
            registered(consul, instance) as registration:
        await registration.wait_registered()
        assert registration.body["check"] == {"GRPC": f"127.0.0.1:{instance.port}/{USER_SERVICE}",
                                              "Interval": "1s", "DeregisterCriticalServiceAfter": "1m",
                                              "Status": "passing"}
        agent_checks = consul_agent.get("/v1/agent/checks")
        assert isinstance(agent_checks, dict)
        [check] = [c for c in agent_checks.values() if c["ServiceID"] == registration.instance_id]
        assert check["Type"] == "grpc"


async def test_an_instance_whose_health_turns_not_serving_leaves_the_passing_list(consul_agent: ConsulAgent) -> None:
    async with consul_client(consul_agent) as consul, serving("blue") as instance, \
            registered(consul, instance):
        await poll_until(lambda: passing_ids(consul_agent), timeout=10, what="instance passing")
        await instance.health.set(USER_SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
        took = await poll_until(lambda: not passing_ids(consul_agent), timeout=10, what="instance critical")
        log.info("NOT_SERVING -> out of the passing list took %.2fs", took)
        assert took < CHECK_FAILURE_BUDGET_S


async def test_a_restart_on_the_same_address_takes_over_the_registration_instead_of_adding_one(
        consul_agent: ConsulAgent) -> None:
    async with consul_client(consul_agent) as consul:
        # A killed process never deregisters; the one its restart policy brings back on the same address and port
        # (a container keeps its IP) must not leave two instances passing for one address.
        killed, restarted = (Registration(consul, service="users", address="127.0.0.1", port=50051,
                                          grpc_services=[USER_SERVICE], version="1", initial_status="passing",
                                          keep_interval_s=60) for _ in range(2))
        assert killed.instance_id == restarted.instance_id == "users-127.0.0.1-50051"
        await killed.start()
        await killed.wait_registered()
        await killed._keeper.stop()  # the process died: its keeper is gone, its registration stays
        await restarted.start()
        await restarted.wait_registered()
        listed = await asyncio.to_thread(consul_agent.get, "/v1/agent/services")
        await restarted.deregister()
    assert [s["ID"] for s in listed.values() if s["Service"] == "users"] == ["users-127.0.0.1-50051"]


async def test_deregister_removes_the_instance_from_consul(consul_agent: ConsulAgent) -> None:
    async with consul_client(consul_agent) as consul, serving("blue") as instance:
        async with registered(consul, instance):
            await poll_until(lambda: passing_ids(consul_agent), timeout=10, what="instance passing")
        assert not passing_ids(consul_agent)
        assert consul_agent.get("/v1/catalog/service/users") == []


async def test_the_instance_is_registered_again_within_three_seconds_of_an_agent_restart(
        consul_agent: ConsulAgent) -> None:
    async with consul_client(consul_agent) as consul, serving("blue") as instance, \
            registered(consul, instance) as registration:
        await poll_until(lambda: passing_ids(consul_agent), timeout=10, what="instance passing")
        restarting = time.monotonic()
        await asyncio.to_thread(consul_agent.restart)
        back = time.monotonic()
        await poll_until(lambda: registration.instance_id in passing_ids(consul_agent), timeout=15,
                         what="instance passing again")
        took = time.monotonic() - back
        log.info("agent back -> instance passing again took %.2fs (%.2fs including the restart itself)",
                 took, time.monotonic() - restarting)
        assert took < REREGISTRATION_BUDGET_S


async def test_serving_goes_on_while_consul_is_down_and_registration_lands_when_it_comes_up(
        consul_agent: ConsulAgent) -> None:
    await asyncio.to_thread(consul_agent.stop)
    async with consul_client(consul_agent) as consul, serving("blue") as instance, \
            registered(consul, instance) as registration:
        await asyncio.sleep(0.5)
        assert not registration.registered
        async with grpc.aio.insecure_channel(f"127.0.0.1:{instance.port}") as channel:
            reply = await users_service_pb2_grpc.UserServiceStub(channel).GetUser(
                users_service_pb2.GetUserRequest(user_id="u1"), timeout=2)
        assert reply.user.display_name == "blue"
        await asyncio.to_thread(consul_agent.start)
        up = time.monotonic()
        await poll_until(lambda: registration.instance_id in passing_ids(consul_agent), timeout=15,
                         what="registration after Consul came up")
        log.info("Consul up -> instance passing took %.2fs", time.monotonic() - up)
        assert time.monotonic() - up < REREGISTRATION_BUDGET_S


async def test_start_returns_at_once_even_when_consul_is_unreachable() -> None:
    consul = ConsulClient.from_settings(ConsulSettings(address=f"127.0.0.1:{free_port()}"))
    registration = Registration(consul, service="users", address="127.0.0.1", port=1, grpc_services=[USER_SERVICE],
                                version="1")
    started = time.monotonic()
    await registration.start()
    assert time.monotonic() - started < 0.1
    await asyncio.sleep(0.3)
    assert not registration.registered
    await registration.deregister()
    await consul.close()


@pytest.mark.parametrize("grpc_services", [[], ["a.B", "c.D"]])
def test_meta_lists_every_grpc_service_and_the_check_targets_the_first(grpc_services: list[str]) -> None:
    consul = object()  # building the body talks to nobody
    registration = Registration(consul, service="s", address="h", port=1, grpc_services=grpc_services, version="v")
    assert registration.body["meta"]["grpc_services"] == ",".join(grpc_services)
    assert registration.body["check"]["GRPC"] == ("h:1/a.B" if grpc_services else "h:1")
