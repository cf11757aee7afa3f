"""Certificate rotation without restarts: short-lived certificates renewed at half life on both sides of a
discovery channel, calls flowing all along (real CA, real Consul with ACLs and TLS checks, real grpc)."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from acme.users.v1 import users_pb2, users_service_pb2, users_service_pb2_grpc
from cryptography import x509
from mtls_support import Pki, SecureConsul, secure_consul, until_intentions

from localmesh.pki import Renewer
from protomesh._access import AccessState
from protomesh._discovery import DiscoveryChannel
from protomesh._registry import Registration
from protomesh._security import authorizer_for
from protomesh._server import Binding, Server
from protomesh._settings import SecuritySettings, ServerSettings
from protomesh.aio import poll_until
from protomesh.identity import CA_FILE, IDENTITY_FILE, IdentityFolder, Workload, service_host_name
from protomesh.intentions import Intention

log = logging.getLogger(__name__)

# Certificates live 5 s and are renewed at half life: a run of 3 TTLs sees every original certificate expire.
TTL_S = 5.0
RUN_S = 3 * TTL_S
POLL_S = 0.2
USERS, ORDERS = Workload.service("users"), Workload.service("orders")


@pytest.fixture
def consul(tmp_path: Path, pki: Pki) -> Iterator[SecureConsul]:
    with secure_consul(tmp_path / "consul", pki) as agent:
        yield agent


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki.create(tmp_path / "pki")


@pytest.fixture
async def renewer(pki: Pki) -> AsyncIterator[Renewer]:
    renewer = Renewer(pki.ca, ttl_s=TTL_S)
    await renewer.start()
    try:
        yield renewer
    finally:
        await renewer.stop()


class ClientCertificates(users_service_pb2_grpc.UserServiceServicer):
    """GetUser notes the serial of the certificate its caller presented."""

    def __init__(self) -> None:
        self.serials: set[int] = set()

    async def GetUser(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        [pem] = context.auth_context()["x509_pem_cert"]
        self.serials.add(x509.load_pem_x509_certificate(pem).serial_number)
        return users_service_pb2.GetUserResponse(user=users_pb2.User(user_id=request.user_id))


def served_serial(port: int, folder: Path) -> int:
    """The serial of the certificate the server presents to a new TLS connection right now."""
    context = ssl.create_default_context(cafile=str(folder / CA_FILE))
    context.load_cert_chain(str(folder / IDENTITY_FILE))
    context.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=service_host_name("users")) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return int(x509.load_der_x509_certificate(der).serial_number)


async def test_rotating_certificates_on_both_sides_fails_no_call(consul: SecureConsul, pki: Pki, renewer: Renewer,
                                                                 tmp_path: Path) -> None:
    server_folder = renewer.add(USERS, tmp_path / "identities" / "users-1")
    client_folder = renewer.add(ORDERS, tmp_path / "identities" / "orders-1")
    server_identity = IdentityFolder.open(server_folder, poll_s=POLL_S)
    client_identity = IdentityFolder.open(client_folder, poll_s=POLL_S)
    await server_identity.start()
    await client_identity.start()
    async with consul.client("users") as users_consul, consul.client("orders") as orders_consul:
        access = await AccessState.open(users_consul)
        await until_intentions(consul, [Intention("orders", "users")], access)
        seen = ClientCertificates()
        served = [Binding(users_service_pb2.DESCRIPTOR.services_by_name["UserService"], seen,
                          users_service_pb2_grpc.add_UserServiceServicer_to_server)]
        guard = authorizer_for("users", SecuritySettings(), served, access)
        server = Server(ServerSettings(port=0, grace_s=0), served, identity=server_identity, guard=guard)
        port = await server.start()
        registration = Registration(users_consul, service="users", address="127.0.0.1", port=port,
                                    grpc_services=server.service_names, version="1", tls=True)
        await registration.start()
        channel = await DiscoveryChannel.open(orders_consul, "users", identity=client_identity)
        try:
            await poll_until(lambda: channel.targets, timeout=10, what="the instance discovered")
            first_channel = channel._endpoints[f"127.0.0.1:{port}"].channel
            calls, failures, serials = await _call_while_rotating(channel, port, client_folder)
            await poll_until(lambda: first_channel.get_state() == grpc.ChannelConnectivity.SHUTDOWN, timeout=5,
                             what="the first channel retired")
        finally:
            await channel.close()
            await registration.deregister()
            await server.stop(0)
            await access.close()
            await server_identity.stop()
            await client_identity.stop()

    log.info("%d calls, %d served certificates, client generation %d", calls, len(serials),
             client_identity.generation)
    assert failures == []
    assert calls > 0
    # Every renewal of the server's certificate was served from the next handshake on, without a restart.
    assert len(serials) >= 4, serials
    # The client dialled again with each of its own certificates (and retired the first channel, see above).
    assert client_identity.generation >= 4
    # (the server saw each as a new client certificate; one issued just before the end may not have been used)
    assert 4 <= len(seen.serials) <= client_identity.generation + 1


async def _call_while_rotating(channel: DiscoveryChannel, port: int,
                               client_folder: Path) -> tuple[int, list[BaseException], list[int]]:
    stub = users_service_pb2_grpc.UserServiceStub(channel)
    calls, failures, serials = 0, [], []
    started = time.monotonic()
    while time.monotonic() - started < RUN_S:
        try:
            await stub.GetUser(users_service_pb2.GetUserRequest(user_id="u-1"), timeout=5)
        except Exception as exc:
            failures.append(exc)
        calls += 1
        if calls % 20 == 0:
            serial = await asyncio.to_thread(served_serial, port, client_folder)
            if not serials or serials[-1] != serial:
                serials.append(serial)
    return calls, failures, serials
