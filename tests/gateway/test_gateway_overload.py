"""Load shedding at the gateway: past a service's circuit breaker REST gets 503 + Retry-After as JSON
google.rpc.Status and gRPC gets UNAVAILABLE, at once and with nothing of Envoy in the answer; then service resumes.

The gateway here lets one request at a time reach each service (`--cluster-max-requests 1`), so one open stream
fills the probe service and the next call is over the limit, deterministically.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import grpc
import grpc.aio
import pytest
import pytest_asyncio
from gateway_support import Stack, served_probe, start_stack, step
from probe_service import SERVICE, Probe, compile_probe

from localmesh.testing import project_root, wait_until

pytestmark = pytest.mark.asyncio(loop_scope="module")

# A shed answer comes from the gateway itself: well under this, even on a loaded machine.
SHED_WITHIN_S = 2.0
CALL_TIMEOUT_S = 5.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("overload")
    started = start_stack(workdir, compile_probe(workdir, project_root() / "protos"),
                          extra_args=["--cluster-max-requests", "1"])
    try:
        yield started
    finally:
        started.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def probe(stack: Stack) -> AsyncIterator[Probe]:
    async with served_probe(stack) as served:
        yield served


def _method(probe: Probe, channel: grpc.aio.Channel, name: str, request: str, response: str) -> Any:
    return channel.unary_unary(f"/{SERVICE}/{name}", request_serializer=lambda m: m.SerializeToString(),
                               response_deserializer=probe.messages[response].FromString)


async def _inspect_rest(stack: Stack) -> tuple[int, dict[str, str], bytes, float]:
    began = time.monotonic()
    async with aiohttp.ClientSession() as session, session.get(
            f"{stack.gateway.url}/v1/probe:inspect", timeout=aiohttp.ClientTimeout(total=CALL_TIMEOUT_S)) as response:
        return (response.status, {k.lower(): v for k, v in response.headers.items()}, await response.read(),
                time.monotonic() - began)


async def test_past_the_limit_rest_gets_503_with_retry_after_and_grpc_unavailable_then_calls_succeed_again(
        stack: Stack, probe: Probe) -> None:
    async with grpc.aio.insecure_channel(stack.gateway.address) as channel:
        ticks = channel.unary_stream(f"/{SERVICE}/Ticks", request_serializer=lambda m: m.SerializeToString(),
                                     response_deserializer=probe.messages["Tick"].FromString)
        stream = ticks(probe.messages["TicksRequest"](count=1000, interval_ms=100), timeout=30)
        await stream.read()
        step("one stream open through the gateway: the probe service's one request slot is taken")

        status, headers, body, took = await _inspect_rest(stack)
        step("REST over the limit: %s %s %s in %.3f s", status, headers, body, took)
        assert status == 503
        assert headers["retry-after"] == "1"
        assert headers["content-type"] == "application/json"
        assert json.loads(body) == {"code": 14, "message": "service unavailable", "details": []}
        assert not [name for name in headers if name.startswith(("x-envoy", "grpc-"))]
        assert took < SHED_WITHIN_S

        inspect = _method(probe, channel, "Inspect", "InspectRequest", "InspectResponse")
        with pytest.raises(grpc.aio.AioRpcError) as shed:
            await inspect(probe.messages["InspectRequest"](), timeout=CALL_TIMEOUT_S)
        step("gRPC over the limit: %s %r", shed.value.code(), shed.value.details())
        assert shed.value.code() == grpc.StatusCode.UNAVAILABLE
        assert shed.value.details() == "service unavailable"

        stream.cancel()
    step("stream ended: the slot is free again")
    await asyncio.to_thread(wait_until, lambda: stack.gateway.stat("cluster.probe.upstream_rq_active") == 0,
                            what="the probe cluster idle")
    status, _, body, _ = await _inspect_rest(stack)
    assert status == 200, body
    async with grpc.aio.insecure_channel(stack.gateway.address) as channel:
        seen = await _method(probe, channel, "Inspect", "InspectRequest", "InspectResponse")(
            probe.messages["InspectRequest"](), timeout=CALL_TIMEOUT_S)
    assert seen.has_deadline
    # Envoy 1.40 counts max_requests overflows here (upstream_rq_pending_overflow stays 0 with HTTP/2).
    overflows = stack.gateway.stat("cluster.probe.upstream_rq_active_overflow")
    step("Envoy counted %d requests over the limit", overflows)
    assert overflows >= 2


async def test_an_instance_answering_unavailable_reaches_rest_as_503_with_retry_after(
        stack: Stack, probe: Probe) -> None:
    async with aiohttp.ClientSession() as session, session.post(
            f"{stack.gateway.url}/v1/probe:fail", json={"key": "shed"},
            timeout=aiohttp.ClientTimeout(total=CALL_TIMEOUT_S)) as response:
        body = await response.json()
        step("an instance's UNAVAILABLE (as its concurrency bound answers): %s %s %s", response.status,
             dict(response.headers), body)
        assert response.status == 503
        assert response.headers["retry-after"] == "1"
        assert body["code"] == 14
