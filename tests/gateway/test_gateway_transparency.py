"""The gateway is transparent to gRPC: deadlines pass as the caller set them, nothing of Envoy shows either way,
only retry-safe methods run twice, and streams outlive the route timeout (a probe service looks through it)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import grpc
import grpc.aio
import pytest
import pytest_asyncio
from gateway_support import REQUEST_HEADERS_TIMEOUT_S, Stack, served_probe, start_stack, step
from probe_service import SERVICE, Probe, compile_probe

from gateway_envoy.routes import NUM_RETRIES
from localmesh.testing import TEST_ROUTE_TIMEOUT_S, project_root

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("transparency")
    started = start_stack(workdir, compile_probe(workdir, project_root() / "protos"))
    try:
        yield started
    finally:
        started.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def probe(stack: Stack) -> AsyncIterator[Probe]:
    async with served_probe(stack) as served:
        yield served


def _call(probe: Probe, channel: grpc.aio.Channel, method: str, request: str, response: str) -> Any:
    return channel.unary_unary(f"/{SERVICE}/{method}", request_serializer=lambda m: m.SerializeToString(),
                               response_deserializer=probe.messages[response].FromString)


async def test_a_service_sees_its_callers_deadline_and_no_header_of_the_gateway(stack: Stack, probe: Probe) -> None:
    async with grpc.aio.insecure_channel(stack.gateway.address) as channel:
        inspect = _call(probe, channel, "Inspect", "InspectRequest", "InspectResponse")
        seen = await inspect(probe.messages["InspectRequest"](), timeout=5,
                             metadata=(("x-envoy-upstream-rq-timeout-ms", "1"), ("x-envoy-retry-on", "5xx")))
    step("over gRPC with a 5 s deadline the service saw %.3f s left and headers %s", seen.deadline_s,
         list(seen.header_names))
    assert seen.has_deadline
    assert 4.0 < seen.deadline_s <= 5.05
    assert [name for name in seen.header_names if name.startswith("x-envoy-")] == []
    async with aiohttp.ClientSession() as session, session.get(
            f"{stack.gateway.url}/v1/probe:inspect", headers={"x-envoy-retry-on": "5xx"}) as response:
        body = await response.json()
    step("over REST (no deadline of the caller's) the service saw %s", body)
    assert not body["hasDeadline"]
    assert [name for name in body["headerNames"] if name.startswith("x-envoy-")] == []


async def test_no_answer_names_the_gateway_in_its_headers(stack: Stack, probe: Probe) -> None:
    async with aiohttp.ClientSession() as session:
        for path in ("/v1/probe:inspect", "/v1/nothing-here"):
            async with session.get(stack.gateway.url + path) as response:
                names = {name.lower() for name in response.headers}
                step("REST %s -> %d with headers %s", path, response.status, sorted(names))
                assert "server" not in names
                assert [name for name in names if name.startswith("x-envoy-")] == []
    async with grpc.aio.insecure_channel(stack.gateway.address) as channel:
        call = _call(probe, channel, "Inspect", "InspectRequest", "InspectResponse")(probe.messages["InspectRequest"]())
        await call
        metadata = [key for key, _ in (*await call.initial_metadata(), *await call.trailing_metadata())]
    step("gRPC metadata: %s", metadata)
    assert "server" not in metadata
    assert [name for name in metadata if name.startswith("x-envoy-")] == []


async def test_a_clients_own_claims_header_never_reaches_a_service(stack: Stack, probe: Probe) -> None:
    """Services trust x-protomesh-claims from the gateway: the hygiene filter removes a client's own even when the
    gateway checks no token (jwt_authn, when on, would drop it too)."""
    forged = {"x-protomesh-claims": "eyJzdWIiOiAibWFsbG9yeSJ9"}
    async with grpc.aio.insecure_channel(stack.gateway.address) as channel:
        seen = await _call(probe, channel, "Inspect", "InspectRequest", "InspectResponse")(
            probe.messages["InspectRequest"](), timeout=5, metadata=tuple(forged.items()))
    async with aiohttp.ClientSession() as session, session.get(f"{stack.gateway.url}/v1/probe:inspect",
                                                               headers=forged) as response:
        body = await response.json()
    step("the service saw over gRPC %s, over REST %s", list(seen.header_names), body["headerNames"])
    assert "x-protomesh-claims" not in seen.header_names
    assert "x-protomesh-claims" not in body["headerNames"]


async def test_a_handler_answering_unavailable_runs_once_unless_its_method_is_retry_safe(
        stack: Stack, probe: Probe) -> None:
    async with grpc.aio.insecure_channel(stack.gateway.address) as channel:
        fail = _call(probe, channel, "Fail", "FailRequest", "FailResponse")
        fail_read = _call(probe, channel, "FailRead", "FailRequest", "FailResponse")
        for method, key in ((fail, "grpc-create"), (fail_read, "grpc-read")):
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await method(probe.messages["FailRequest"](key=key), timeout=5)
            assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    async with aiohttp.ClientSession() as session, session.post(f"{stack.gateway.url}/v1/probe:fail",
                                                               json={"key": "rest-create"}) as response:
        assert response.status == 503
    step("handler runs: %s", dict(probe.calls))
    assert probe.calls["grpc-create"] == 1
    assert probe.calls["rest-create"] == 1
    assert probe.calls["grpc-read"] == 1 + NUM_RETRIES  # NO_SIDE_EFFECTS: tried on every instance it may


async def test_a_stream_lives_past_the_route_timeout_over_grpc_and_over_rest(stack: Stack, probe: Probe) -> None:
    ticks, interval_ms = 4, round(TEST_ROUTE_TIMEOUT_S * 1000 / 2)  # twice as long as the route timeout
    async with grpc.aio.insecure_channel(stack.gateway.address) as channel:
        stream = channel.unary_stream(f"/{SERVICE}/Ticks", request_serializer=lambda m: m.SerializeToString(),
                                      response_deserializer=probe.messages["Tick"].FromString)
        call = stream(probe.messages["TicksRequest"](count=ticks, interval_ms=interval_ms), timeout=30)
        received = [tick.n async for tick in call]
        assert await call.code() == grpc.StatusCode.OK
    step("gRPC: %d ticks over %.1f s, status OK", len(received), ticks * interval_ms / 1000)
    assert received == list(range(ticks))
    async with aiohttp.ClientSession() as session, session.get(
            f"{stack.gateway.url}/v1/probe:ticks?count={ticks}&intervalMs={interval_ms}") as response:
        text = await response.text()
    step("REST: %r", text)
    assert response.status == 200
    # Newline-delimited JSON: each line a whole document, so even a cut stream leaves valid lines.
    assert [json.loads(line) for line in text.splitlines() if line.strip()] == [{"n": n} for n in range(ticks)]


async def test_request_headers_too_large_get_a_json_status_431(stack: Stack) -> None:
    async with aiohttp.ClientSession(max_field_size=1 << 20) as session, session.get(
            f"{stack.gateway.url}/v1/users/u-1", headers={"x-padding": "a" * 100_000}) as response:
        body = await response.json(content_type=None)
    step("431 body: %s", body)
    assert response.status == 431
    assert response.headers["content-type"].startswith("application/json")
    assert body["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]


async def test_a_client_too_slow_to_send_its_headers_gets_a_json_status_408(stack: Stack) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.gateway.ports.listen)
    writer.write(b"GET /v1/users/u-1 HTTP/1.1\r\nHost: gateway\r\n")  # the headers never end
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(65536), timeout=REQUEST_HEADERS_TIMEOUT_S + 10)
    writer.close()
    head, _, body = answer.decode().partition("\r\n\r\n")
    step("answer after %.0f s: %s", REQUEST_HEADERS_TIMEOUT_S, answer.decode()[:300])
    assert head.startswith("HTTP/1.1 408")
    assert "content-type: application/json" in head.lower()
    assert json.loads(body)["code"] == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]

