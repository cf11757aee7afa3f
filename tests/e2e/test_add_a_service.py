"""Add your own service to a running mesh: `protomesh new service` -> `make protos` -> `protomesh up --detach`
reconciles it in, and it answers REST and gRPC through the gateway while nothing already running restarts,
fails a call, or loses an open watch stream."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import grpc
import pytest
import pytest_asyncio
from acme.notifications.v1 import notifications_service_pb2 as notifications_pb
from acme.notifications.v1 import notifications_service_pb2_grpc as notifications_grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from localmesh.testing import GatewayClient, isolated_env, project_root

pytestmark = pytest.mark.asyncio(loop_scope="module")
log = logging.getLogger("e2e")
ROOT = project_root()
# A project of one's own: the contracts, services, config and topology are copies; the runtime is this one.
COPIED = ("protos/acme", "protos/protomesh", "services", "config", "observability", "docker-compose.yml")
# What the test's caller may do: the example domain's scopes and the new service's (`protomesh new` gives it
# ledger:read and ledger:write), in a token from the mesh's own issuer, as `protomesh token` prints it.
SCOPES = ("users:read", "orders:write", "notifications:read", "ledger:read", "ledger:write")


def protomesh(project: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "protomesh.cli", *args], cwd=project, env=env,
                            capture_output=True, text=True, timeout=240, check=False)
    log.info("step: protomesh %s -> %d\n%s%s", " ".join(args), result.returncode, result.stdout, result.stderr)
    return result


def make_protos(project: Path, env: dict[str, str]) -> None:
    made = protomesh(project, env, "protos", "--root", "protos", "--python-out", "gen/python",
                     "--descriptor-out", "gen/descriptors/protomesh.binpb")
    assert made.returncode == 0, made.stderr


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    folder = tmp_path_factory.mktemp("own-project")
    for name in COPIED:
        source, target = ROOT / name, folder / name
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "var", ".pytest_cache"))
        else:
            shutil.copyfile(source, target)
    env = isolated_env(folder, folder / "var" / "mesh", overrides={"USERS_REPLICAS": "1"})
    make_protos(folder, env)
    up = protomesh(folder, env, "up", "--detach")
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        yield folder, env
    finally:
        protomesh(folder, env, "down")


@pytest.fixture(scope="module")
def client(project: tuple[Path, dict[str, str]]) -> GatewayClient:
    return GatewayClient.of_running(*project)


@pytest.fixture(scope="module")
def token(project: tuple[Path, dict[str, str]]) -> str:
    folder, env = project
    scopes = [arg for scope in SCOPES for arg in ("--scope", scope)]
    made = protomesh(folder, env, "token", "--sub", "ada", *scopes)
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


@pytest_asyncio.fixture(loop_scope="module")
async def http(client: GatewayClient, token: str) -> AsyncIterator[aiohttp.ClientSession]:
    async with client.session(token) as session:
        yield session


def pids(project: Path) -> dict[str, int]:
    state = json.loads((project / "var" / "mesh" / "state.json").read_text())
    return {name: info["pid"] for c in state["components"].values() for name, info in c["instances"].items()}


async def steady_load(http: aiohttp.ClientSession, gateway: str, user_id: str, stop: asyncio.Event) -> list[str]:
    """GET the user through the gateway until stopped; every answer that is not 200 is a failure."""
    failures = []
    while not stop.is_set():
        try:
            async with http.get(f"{gateway}/v1/users/{user_id}") as response:
                if response.status != 200:
                    failures.append(f"{response.status} {await response.text()}")
        except aiohttp.ClientError as exc:
            failures.append(repr(exc))
        await asyncio.sleep(0.01)
    return failures


def ledger_stub(project: Path, client: GatewayClient, token: str) -> tuple[grpc.aio.Channel, object, type]:
    """A native gRPC GetLedger call built from the project's new descriptor set (no generated Python needed)."""
    files = descriptor_pb2.FileDescriptorSet.FromString((project / "gen/descriptors/protomesh.binpb").read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    request = message_factory.GetMessageClass(pool.FindMessageTypeByName("acme.ledger.v1.GetLedgerRequest"))
    response = message_factory.GetMessageClass(pool.FindMessageTypeByName("acme.ledger.v1.GetLedgerResponse"))
    channel = client.channel(token)
    call = channel.unary_unary("/acme.ledger.v1.LedgerService/GetLedger",
                               request_serializer=lambda m: m.SerializeToString(),
                               response_deserializer=response.FromString)
    return channel, call, request


async def test_a_new_service_joins_the_running_mesh_without_disturbing_it(
    project: tuple[Path, dict[str, str]], http: aiohttp.ClientSession, client: GatewayClient, token: str,
) -> None:
    folder, env = project
    gateway = client.url
    async with http.post(f"{gateway}/v1/users", json={"email": f"{uuid.uuid4().hex[:8]}@example.com",
                                                            "displayName": "Ada"}) as response:
        user_id = (await response.json())["user"]["userId"]
    before = pids(folder)
    async with client.channel(token) as channel:
        watch = notifications_grpc.NotificationServiceStub(channel).WatchNotifications(
            notifications_pb.WatchNotificationsRequest(user_id=user_id), timeout=120)
        await watch.initial_metadata()
        log.info("step: a WatchNotifications stream is open through the gateway; steady REST load starts")
        stop = asyncio.Event()
        load = asyncio.create_task(steady_load(http, gateway, user_id, stop))

        assert protomesh(folder, env, "new", "service", "ledger").returncode == 0
        make_protos(folder, env)
        reconciled = protomesh(folder, env, "up", "--detach")
        assert reconciled.returncode == 0, reconciled.stderr
        assert "started ledger" in reconciled.stdout

        async with http.post(f"{gateway}/v1/ledgers", json={"displayName": "first"}) as response:
            assert response.status == 200, await response.text()
            ledger = (await response.json())["ledger"]
        async with http.get(f"{gateway}/v1/ledgers/{ledger['ledgerId']}") as response:
            assert (response.status, (await response.json())["ledger"]) == (200, ledger)
        log.info("step: POST then GET /v1/ledgers answer through the gateway: %s", ledger)
        ledger_channel, get_ledger, request = ledger_stub(folder, client, token)
        async with ledger_channel:
            reply = await get_ledger(request(ledger_id=ledger["ledgerId"]), timeout=5)  # type: ignore[operator]
        assert reply.ledger.display_name == "first"
        log.info("step: GetLedger answers native gRPC through the same port")

        async with http.post(f"{gateway}/v1/orders", json={"userId": user_id, "lineItems": [
                {"sku": "book", "quantity": 1, "unitPriceCents": 100}]}) as response:
            order_id = (await response.json())["order"]["orderId"]
        notification = await asyncio.wait_for(watch.read(), timeout=10)
        assert order_id in notification.notification.text
        log.info("step: the watch opened before the rollout still streams: %s", notification.notification.text)
        watch.cancel()
        stop.set()
        failures = await load

    assert failures == []
    after = pids(folder)
    assert {name: after[name] for name in before} == before, "nothing that ran before was restarted"
    assert set(after) - set(before) == {"ledger-1"}
