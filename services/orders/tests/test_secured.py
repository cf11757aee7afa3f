"""orders as build() wires it, with mTLS: the gateway calls orders, orders calls users through Consul, each
checked by the intentions of a real Consul with ACLs; real certificates from the local mesh's CA."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from acme.orders.v1 import orders_pb2, orders_service_pb2, orders_service_pb2_grpc
from conftest import KNOWN_USER, UsersServicer

from app.main import SERVICE, build
from app.settings import OrdersSettings
from localmesh.acl import RUNNER, MeshTokens, apply, grants
from localmesh.consul import AgentSecurity, ConsulAgent
from localmesh.pki import DevCA, write_identity
from localmesh.testing import free_port, project_root
from protomesh import Binding, Context, ServiceSettings, caller, serve
from protomesh.aio import poll_until
from protomesh.auth import CLAIMS_KEY
from protomesh.identity import IdentityFolder, Workload, service_host_name
from protomesh.intentions import Intention


@dataclass
class Secured:
    folder: Path
    ca: DevCA
    agent: ConsulAgent
    tokens: MeshTokens

    def identity_dir(self, workload: Workload) -> Path:
        folder = self.folder / "identities" / workload.name
        write_identity(folder, self.ca.issue(workload), self.ca.bundle)
        return folder

    def env(self, service: str) -> dict[str, str]:
        prefix = service.upper()
        return {"CONSUL_HTTP_ADDR": self.agent.address, "CONSUL_HTTP_TOKEN": self.tokens.secret(service),
                f"{prefix}_SECURITY__IDENTITY_DIR": str(self.identity_dir(Workload.service(service)))}

    def intentions(self, *wanted: Intention) -> None:
        """Replace every intention (with the runner's token, as the local mesh writes them)."""
        def call(method: str, path: str, body: object | None = None) -> Any:
            request = urllib.request.Request(f"http://{self.agent.address}{path}", method=method,
                                             data=json.dumps(body).encode() if body is not None else None,
                                             headers={"X-Consul-Token": self.tokens.secret(RUNNER)})
            with urllib.request.urlopen(request, timeout=5) as response:
                return json.loads(response.read() or b"null")

        for entry in call("GET", "/v1/connect/intentions") or ():
            call("DELETE", f"/v1/connect/intentions/{entry['ID']}")
        for intention in wanted:
            call("POST", "/v1/connect/intentions", intention.to_consul())


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[Secured]:
    ca = DevCA.open(tmp_path / "ca")
    issued = ca.issue(Workload.agent("consul"))
    (tmp_path / "agent-cert.pem").write_bytes(issued.cert_pem)
    (tmp_path / "agent-key.pem").write_bytes(issued.key_pem)
    tokens = MeshTokens.open(tmp_path / "tokens.json")
    security = AgentSecurity(tokens.master, ca.folder / "ca.pem", tmp_path / "agent-cert.pem",
                             tmp_path / "agent-key.pem")
    agent = ConsulAgent(tmp_path / "logs", security=security)
    agent.start()
    try:
        apply(agent.address, tokens, grants(["users", "orders"]))
        yield Secured(tmp_path, ca, agent, tokens)
    finally:
        agent.stop()


class WhoAsked(UsersServicer):
    """The users service of these tests: also notes who the runtime says called GetUser."""

    def __init__(self, *user_ids: str) -> None:
        super().__init__(*user_ids)
        self.callers: list[tuple[str | None, str | None]] = []

    async def GetUser(self, request: Any, context: Any) -> Any:
        who = caller()
        self.callers.append((who.service, who.subject) if who is not None else (None, None))
        return await super().GetUser(request, context)


@dataclass
class Mesh:
    orders_port: int
    users: WhoAsked
    gateway: IdentityFolder


@asynccontextmanager
async def running(secured: Secured, tmp_path: Path, *intentions: Intention) -> AsyncIterator[Mesh]:
    """users and orders served with these intentions in Consul (each reads them before it serves)."""
    await asyncio.to_thread(secured.intentions, *intentions)
    servicer = WhoAsked(KNOWN_USER)

    async def build_users(ctx: Context[ServiceSettings]) -> list[Binding]:
        return [servicer.binding()]

    # Nothing listens on this port: the broker is down (the outbox keeps the events).
    orders_env = {**secured.env(SERVICE), "ORDERS_DATABASE_PATH": str(tmp_path / "orders.sqlite3"),
                  "ORDERS_AMQP_URL": f"amqp://guest:guest@127.0.0.1:{free_port()}/"}
    users = await serve("users", ServiceSettings, build_users, env=secured.env("users"),
                        config_dir=tmp_path / "no-config")
    try:
        await poll_until(lambda: secured.agent.passing_instances("users"), timeout=15, what="users passing")
        orders = await serve(SERVICE, OrdersSettings, build, env=orders_env, config_dir=project_root() / "config")
        try:
            gateway = IdentityFolder.open(secured.identity_dir(Workload.service("gateway")))
            yield Mesh(orders.port, servicer, gateway)
        finally:
            await orders.stop()
    finally:
        await users.stop()


def _claims(**claims: str) -> tuple[tuple[str, str], ...]:
    value = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return ((CLAIMS_KEY, value),)


async def _create_order(mesh: Mesh, metadata: tuple[tuple[str, str], ...]) -> orders_service_pb2.CreateOrderResponse:
    item = orders_pb2.LineItem(sku="sku-1", quantity=1, unit_price_cents=100)
    request = orders_service_pb2.CreateOrderRequest(order=orders_pb2.Order(user_id=KNOWN_USER, line_items=[item]))
    options = [("grpc.ssl_target_name_override", service_host_name(SERVICE))]
    async with grpc.aio.secure_channel(f"127.0.0.1:{mesh.orders_port}", mesh.gateway.channel_credentials(),
                                       options=options) as channel:
        response: orders_service_pb2.CreateOrderResponse = await orders_service_pb2_grpc.OrderServiceStub(
            channel).CreateOrder(request, metadata=metadata, timeout=10)
    return response


async def test_orders_asks_users_in_its_own_name_when_its_intention_does_not_forward_claims(
        secured: Secured, tmp_path: Path) -> None:
    async with running(secured, tmp_path, Intention("gateway", "*"), Intention("orders", "users")) as mesh:
        response = await _create_order(mesh, _claims(sub="alice", scope="orders:write"))

    assert response.order.state == orders_pb2.ORDER_STATE_CREATED
    assert mesh.users.callers == [("orders", None)]


async def test_with_forward_claims_users_sees_the_end_user_and_holds_them_to_its_own_scopes(
        secured: Secured, tmp_path: Path) -> None:
    forwarding = Intention("orders", "users", forward_claims=True)
    async with running(secured, tmp_path, Intention("gateway", "*"), forwarding) as mesh:
        response = await _create_order(mesh, _claims(sub="alice", scope="orders:write users:read"))
        with pytest.raises(grpc.aio.AioRpcError) as raised:  # no users:read: users refuses, orders cannot check
            await _create_order(mesh, _claims(sub="bob", scope="orders:write"))

    assert response.order.state == orders_pb2.ORDER_STATE_CREATED
    assert mesh.users.callers == [("orders", "alice")]
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_the_gateway_without_claims_cannot_place_an_order(secured: Secured, tmp_path: Path) -> None:
    async with running(secured, tmp_path, Intention("gateway", "*"), Intention("orders", "users")) as mesh:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await _create_order(mesh, ())

    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert mesh.users.callers == []
