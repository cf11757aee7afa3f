"""What proves the containers are no plaintext back door: mTLS and intentions on service ports, TLS and tokens at the
gateway, Consul's ACLs, and each container holding only its own credentials."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
import grpc.aio
from acme.users.v1 import users_service_pb2 as users_pb
from acme.users.v1 import users_service_pb2_grpc as users_grpc

from localmesh import acl
from localmesh.issuer import CREDENTIALS, MOUNT
from localmesh.pki import DevCA, write_identity
from localmesh.security import ISSUER_FOLDER, PKI_FOLDER
from localmesh.tokens import DevIssuer
from protomesh.identity import Credentials, Workload, service_host_name
from tests.containers.stack import ComposeStack, Container
from tests.containers.walkthrough import CALL_TIMEOUT_S, WALKTHROUGH_SCOPES, Gateway

log = logging.getLogger("containers")

# The service port every service container listens on (services/entrypoint.sh), reached on its container address.
SERVICE_PORT = 50051


@dataclass(frozen=True)
class MeshCredentials:
    """The host's side of a stack's security: the local mesh's CA and token issuer (var/mesh, shared with the stack
    through bind mounts) and the stack's own state folder (its Consul tokens, each container's credentials)."""

    ca: DevCA
    issuer: DevIssuer
    stack_state: Path

    @classmethod
    def open(cls, mesh_state: Path, stack_state: Path) -> MeshCredentials:
        """Created where missing (as `make setup` and `protomesh token` do), before the stack mounts them."""
        stack_state.mkdir(parents=True, exist_ok=True)
        return cls(DevCA.open(mesh_state / PKI_FOLDER), DevIssuer.open(mesh_state / ISSUER_FOLDER), stack_state)

    @property
    def ca_file(self) -> Path:
        return self.ca.folder / "ca.pem"

    def token(self) -> str:
        """What `protomesh token --sub ada --scope ...` prints: the walkthrough's scopes."""
        return self.issuer.token("ada", WALKTHROUGH_SCOPES)

    def consul_token(self, name: str) -> str:
        """A token the issuer made for the stack (the Consul agent knows it once the stack is up)."""
        return acl.MeshTokens.open(self.stack_state / acl.TOKENS_FILE).secrets[name]


def container_address(stack: ComposeStack, container: Container) -> str:
    """The container's address on the stack's network (the host routes to podman's bridge)."""
    [info] = stack.podman.inspect(container.id)
    networks = info["NetworkSettings"]["Networks"]
    return str(next(iter(networks.values()))["IPAddress"])


async def _get_user(target: str, identity: Path | None) -> grpc.StatusCode:
    if identity is None:
        channel = grpc.aio.insecure_channel(target)
    else:
        creds = Credentials.load(identity)
        channel = grpc.aio.secure_channel(
            target, grpc.ssl_channel_credentials(creds.trust_bundle, creds.private_key, creds.certificate_chain),
            options=[("grpc.ssl_target_name_override", service_host_name("users"))])
    async with channel:
        try:
            await users_grpc.UserServiceStub(channel).GetUser(users_pb.GetUserRequest(user_id="nobody"),
                                                              timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            return error.code()
    return grpc.StatusCode.OK


async def service_ports_want_mtls_and_an_intention(stack: ComposeStack, mesh: MeshCredentials, scratch: Path) -> None:
    """A users container: plaintext refused; orders (its intention) reaches it, notifications (none) is denied."""
    users = next(c for c in stack.containers() if c.service == "users")
    target = f"{container_address(stack, users)}:{SERVICE_PORT}"
    assert await _get_user(target, None) == grpc.StatusCode.UNAVAILABLE
    log.info("step: plaintext gRPC to %s (%s) is refused", users.name, target)
    identities = {}
    for name in ("orders", "notifications"):
        identities[name] = scratch / name
        write_identity(identities[name], mesh.ca.issue(Workload.service(name), ttl_s=600), mesh.ca.bundle)
    assert await _get_user(target, identities["orders"]) == grpc.StatusCode.NOT_FOUND
    assert await _get_user(target, identities["notifications"]) == grpc.StatusCode.PERMISSION_DENIED
    log.info("step: with the mesh's certificates, orders may call users (NOT_FOUND) and notifications may not")


async def the_gateway_wants_tls_and_a_token(gateway: Gateway, mesh: MeshCredentials, user_id: str) -> None:
    status, body = await gateway.call("GET", f"/v1/users/{user_id}", token="")
    assert (status, body["code"], body["message"]) == (401, 16, "authentication required")
    scopeless = mesh.issuer.token("mallory", ["orders:read"])
    status, body = await gateway.call("GET", f"/v1/users/{user_id}", token=scopeless)
    assert (status, body["code"]) == (403, 7)
    try:
        async with gateway.http.get(f"http://{gateway.address}/v1/users/{user_id}",
                                    timeout=aiohttp.ClientTimeout(total=CALL_TIMEOUT_S)) as response:
            answered: object = response.status
    except aiohttp.ClientError as error:
        answered = error
    assert isinstance(answered, aiohttp.ClientError), f"plaintext HTTP to the TLS gateway got {answered}"
    log.info("step: the gateway answers 401 without a token, 403 without the scope, and speaks no plaintext")


def _register(consul: str, name: str, token: str) -> int:
    body = json.dumps({"Name": name, "ID": f"{name}-intruder", "Port": 1}).encode()
    request = urllib.request.Request(f"http://{consul}/v1/agent/service/register", data=body, method="PUT",
                                     headers={"X-Consul-Token": token} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def consul_refuses_anonymous_and_foreign_registrations(consul: str, mesh: MeshCredentials) -> None:
    assert _register(consul, "orders", "") == 403
    assert _register(consul, "orders", mesh.consul_token("users")) == 403
    log.info("step: Consul refuses a registration without a token, and one of orders with the token of users")


def each_container_mounts_only_its_own_credentials(stack: ComposeStack, mesh: MeshCredentials) -> None:
    """Every container but the issuer mounts at most one credentials folder: its own entry's, read-only."""
    root = (mesh.stack_state / CREDENTIALS).resolve()
    for container in stack.containers():
        [info] = stack.podman.inspect(container.id)
        mounts = [m for m in info.get("Mounts", []) if Path(m.get("Source", "/")).resolve().is_relative_to(
            mesh.stack_state.resolve())]
        if container.service == "issuer":
            continue
        expected = [] if not (root / container.service).is_dir() else [(str(root / container.service), str(MOUNT))]
        assert [(str(Path(m["Source"]).resolve()), m["Destination"]) for m in mounts] == expected, container.name
        assert all(not m.get("RW", True) for m in mounts), container.name
    log.info("step: each container mounts its own credentials folder only, read-only")
