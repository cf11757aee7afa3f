"""DiscoveryChannel against real Consul and real grpc.aio servers: spreading, failover, deadlines, no instance."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

import grpc
import pytest
from acme.users.v1 import users_service_pb2, users_service_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from test_registry_support import USER_SERVICE, consul_client, passing_ids, registered, serving

from localmesh.testing import ConsulAgent
from protomesh._context import bind_call, reset_call
from protomesh._discovery import DiscoveryChannel
from protomesh.aio import poll_until
from protomesh.auth import CLAIMS_KEY, Caller, bind_caller, reset_caller

log = logging.getLogger(__name__)

REQUEST = users_service_pb2.GetUserRequest(user_id="u1")


async def call_tags(channel: DiscoveryChannel, count: int) -> Counter[str]:
    stub = users_service_pb2_grpc.UserServiceStub(channel)
    replies = [await stub.GetUser(REQUEST, timeout=2) for _ in range(count)]
    return Counter(reply.user.display_name for reply in replies)


async def test_calls_are_spread_over_every_passing_instance(consul_agent: ConsulAgent) -> None:
    async with consul_client(consul_agent) as consul, serving("blue") as blue, serving("green") as green, \
            registered(consul, blue), registered(consul, green):
        await poll_until(lambda: len(passing_ids(consul_agent)) == 2, timeout=10, what="two passing")
        async with await DiscoveryChannel.open(consul, "users") as channel:
            assert len(channel.targets) == 2
            tags = await call_tags(channel, 20)
    assert tags == Counter({"blue": 10, "green": 10})


@pytest.mark.parametrize("how", ["deregistered", "crashed"])
async def test_calls_move_to_the_remaining_instance_when_one_is_stopped(consul_agent: ConsulAgent, how: str) -> None:
    async with consul_client(consul_agent) as consul, serving("blue") as blue, registered(consul, blue), \
            serving("green") as green, registered(consul, green) as green_registration:
        await poll_until(lambda: len(passing_ids(consul_agent)) == 2, timeout=10, what="two passing")
        async with await DiscoveryChannel.open(consul, "users", close_grace_s=0.1) as channel:
            assert set((await call_tags(channel, 4)).keys()) == {"blue", "green"}
            green_target = f"127.0.0.1:{green.port}"
            green_channel = channel._endpoints[green_target].channel
            if how == "deregistered":  # a graceful shutdown: deregister, then stop
                await green_registration.deregister()
            await green.server.stop(None)
            took = await poll_until(lambda: green_target not in channel.targets, timeout=10,
                                    what="green dropped")
            log.info("%s -> discovery dropped the instance in %.2fs", how, took)
            # once discovery has caught up, not a single call may fail
            assert await call_tags(channel, 20) == Counter({"blue": 20})
            await poll_until(lambda: not channel._retiring.running, timeout=2, what="retired channel closed")
            assert green_channel.get_state() == grpc.ChannelConnectivity.SHUTDOWN


async def test_calls_follow_an_instance_that_fails_its_check(consul_agent: ConsulAgent) -> None:
    async with consul_client(consul_agent) as consul, serving("blue") as blue, serving("green") as green, \
            registered(consul, blue), registered(consul, green):
        await poll_until(lambda: len(passing_ids(consul_agent)) == 2, timeout=10, what="two passing")
        async with await DiscoveryChannel.open(consul, "users") as channel:
            await green.health.set(USER_SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
            await poll_until(lambda: len(channel.targets) == 1, timeout=5, what="green dropped")
            assert await call_tags(channel, 10) == Counter({"blue": 10})


async def test_the_remaining_deadline_and_correlation_id_go_downstream(consul_agent: ConsulAgent) -> None:
    async with consul_client(consul_agent) as consul, serving("blue") as blue, registered(consul, blue):
        await poll_until(lambda: passing_ids(consul_agent), timeout=10, what="passing")
        async with await DiscoveryChannel.open(consul, "users") as channel:
            stub = users_service_pb2_grpc.UserServiceStub(channel)
            tokens = bind_call("cid-42", 0.2)  # what the server interceptor does for a handler
            try:
                reply = await stub.GetUser(REQUEST, timeout=30)
            finally:
                reset_call(tokens)
            cid, remaining = reply.user.email.split("|")
            assert cid == "cid-42"
            # gRPC rounds deadlines on the wire (up to ~0.1 s seen); without propagation this would be ~30
            assert 0.05 < float(remaining) < 0.35
            reply = await stub.GetUser(REQUEST, timeout=30)  # outside a handler: the caller's own timeout
            assert reply.user.email.split("|")[0] == ""
            assert 25 < float(reply.user.email.split("|")[1]) < 30.5


async def test_the_served_calls_trusted_claims_go_downstream_unless_the_caller_sets_its_own(
        consul_agent: ConsulAgent) -> None:
    claims_request = users_service_pb2.GetUserRequest(user_id="claims")
    async with consul_client(consul_agent) as consul, serving("blue") as blue, registered(consul, blue):
        await poll_until(lambda: passing_ids(consul_agent), timeout=10, what="passing")
        async with await DiscoveryChannel.open(consul, "users") as channel:
            stub = users_service_pb2_grpc.UserServiceStub(channel)
            outside = await stub.GetUser(claims_request, timeout=5)
            token = bind_caller(Caller("gateway", claims={"sub": "alice"}, raw_claims="eyJzdWIiOiJhbGljZSJ9"))
            try:
                forwarded = await stub.GetUser(claims_request, timeout=5)
                own = await stub.GetUser(claims_request, timeout=5, metadata=((CLAIMS_KEY, "mine"),))
            finally:
                reset_caller(token)
            ignored = bind_caller(Caller("billing"))  # claims it did not trust: nothing to forward
            try:
                untrusted = await stub.GetUser(claims_request, timeout=5)
            finally:
                reset_caller(ignored)

    assert outside.user.user_id == ""
    assert forwarded.user.user_id == "eyJzdWIiOiJhbGljZSJ9"
    assert own.user.user_id == "mine"
    assert untrusted.user.user_id == ""


async def test_a_call_with_no_known_instance_fails_with_unavailable(consul_agent: ConsulAgent) -> None:
    async with consul_client(consul_agent) as consul, \
            await DiscoveryChannel.open(consul, "users", open_timeout_s=0.5) as channel:
        stub = users_service_pb2_grpc.UserServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetUser(REQUEST)
        with pytest.raises(grpc.aio.AioRpcError, match="no healthy instance of users"):
            async for _ in health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest()):
                pass
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert caught.value.details() == "no healthy instance of users"


async def test_server_streaming_calls_go_through_the_channel_too(consul_agent: ConsulAgent) -> None:
    async with consul_client(consul_agent) as consul, serving("blue") as blue, registered(consul, blue):
        await poll_until(lambda: passing_ids(consul_agent), timeout=10, what="passing")
        async with await DiscoveryChannel.open(consul, "users") as channel:
            call = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=USER_SERVICE),
                                                            timeout=5)
            first = await call.read()
            call.cancel()
    assert first.status == health_pb2.HealthCheckResponse.SERVING


async def test_an_instance_registered_later_is_picked_up(consul_agent: ConsulAgent) -> None:
    async with consul_client(consul_agent) as consul, \
            await DiscoveryChannel.open(consul, "users", open_timeout_s=0.5) as channel:
        assert channel.targets == []
        async with serving("blue") as blue, registered(consul, blue):
            took = await poll_until(lambda: channel.targets, timeout=5, what="instance discovered")
            log.info("registration -> discovered in %.2fs", took)
            await asyncio.wait_for(channel.channel_ready(), timeout=5)
            assert await call_tags(channel, 2) == Counter({"blue": 2})


async def test_close_stops_the_watch_and_closes_every_instance_channel(consul_agent: ConsulAgent) -> None:
    async with consul_client(consul_agent) as consul, serving("blue") as blue, registered(consul, blue):
        await poll_until(lambda: passing_ids(consul_agent), timeout=10, what="passing")
        channel = await DiscoveryChannel.open(consul, "users")
        [endpoint] = channel._endpoints.values()
        await channel.close()
        assert not channel._watch.running
        assert endpoint.channel.get_state() == grpc.ChannelConnectivity.SHUTDOWN
        with pytest.raises(grpc.aio.AioRpcError):
            await users_service_pb2_grpc.UserServiceStub(channel).GetUser(REQUEST)


async def test_calls_keep_working_while_the_agent_restarts(consul_agent: ConsulAgent) -> None:
    async with consul_client(consul_agent) as consul, serving("blue") as blue, registered(consul, blue):
        await poll_until(lambda: passing_ids(consul_agent), timeout=10, what="passing")
        async with await DiscoveryChannel.open(consul, "users") as channel:
            restart = asyncio.create_task(asyncio.to_thread(consul_agent.restart))
            calls = 0
            while not restart.done():
                assert await call_tags(channel, 1) == Counter({"blue": 1})
                calls += 1
                await asyncio.sleep(0.05)
            await restart
            await poll_until(lambda: passing_ids(consul_agent), timeout=5, what="passing again")
            assert calls > 5
            assert channel.targets == [f"127.0.0.1:{blue.port}"]
            assert await call_tags(channel, 3) == Counter({"blue": 3})
