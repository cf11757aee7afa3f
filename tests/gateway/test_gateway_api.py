"""REST and native gRPC through one gateway port, and the one JSON error shape, against real components."""

from __future__ import annotations

import signal
import uuid

import grpc
import pytest
from acme.orders.v1 import orders_service_pb2, orders_service_pb2_grpc
from acme.users.v1 import users_pb2, users_service_pb2, users_service_pb2_grpc
from gateway_support import Reply, Stack, rest, step
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from localmesh.testing import wait_until

pytestmark = pytest.mark.slow


def assert_status_shape(reply: Reply, http_status: int, code: int) -> None:
    """A JSON google.rpc.Status with the mapped HTTP status and no grpc-* header."""
    step("HTTP %d answers JSON google.rpc.Status code %d: %s", http_status, code, reply.body)
    assert (reply.status, reply.headers.get("content-type")) == (http_status, "application/json")
    assert isinstance(reply.body, dict)
    assert set(reply.body) == {"code", "message", "details"}
    assert reply.body["code"] == code
    assert isinstance(reply.body["details"], list)
    step("no grpc-* header leaks into the JSON response")
    assert not [name for name in reply.headers if name.startswith("grpc-")]


def new_user() -> dict[str, str]:
    return {"email": f"{uuid.uuid4().hex[:10]}@example.com", "displayName": "Ada"}


async def test_rest_client_creates_reads_lists_updates_and_deletes_a_user(stack: Stack) -> None:
    url = stack.gateway.url
    created = await rest(url, "POST", "/v1/users", json=new_user())
    step("POST /v1/users creates a user with an id (lowerCamelCase JSON)")
    assert created.status == 200, created.body
    assert created.body["user"]["userId"]
    user_id = created.body["user"]["userId"]
    step("the success response has no grpc-* header")
    assert not [name for name in created.headers if name.startswith("grpc-")]
    fetched = await rest(url, "GET", f"/v1/users/{user_id}")
    step("GET /v1/users/{id} returns it")
    assert fetched.status == 200
    assert fetched.body["user"]["email"] == created.body["user"]["email"]
    listed = await rest(url, "GET", "/v1/users?pageSize=100")
    step("GET /v1/users lists it, with nextPageToken always present")
    assert user_id in [u["userId"] for u in listed.body["users"]]
    assert "nextPageToken" in listed.body
    updated = await rest(url, "PATCH", f"/v1/users/{user_id}?updateMask=displayName", json={"displayName": "Grace"})
    step("PATCH with updateMask changes the display name")
    assert updated.status == 200, updated.body
    assert updated.body["user"]["displayName"] == "Grace"
    deleted = await rest(url, "DELETE", f"/v1/users/{user_id}")
    step("DELETE answers 200 {}")
    assert (deleted.status, deleted.body) == (200, {})
    gone = await rest(url, "GET", f"/v1/users/{user_id}")
    step("the deleted user is gone")
    assert gone.status == 404


async def test_native_grpc_client_uses_the_same_port_and_gets_real_status_codes(stack: Stack) -> None:
    async with grpc.aio.insecure_channel(stack.gateway.address) as channel:
        stub = users_service_pb2_grpc.UserServiceStub(channel)
        created = await stub.CreateUser(users_service_pb2.CreateUserRequest(
            user=users_pb2.User(email=f"{uuid.uuid4().hex[:8]}@example.com", display_name="Lin")), timeout=5)
        step("CreateUser over gRPC through the gateway port returns an id")
        assert created.user.user_id
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.GetUser(users_service_pb2.GetUserRequest(user_id="no-such-user"), timeout=5)
        step("GetUser of an unknown id is NOT_FOUND")
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as invalid:
            await stub.CreateUser(users_service_pb2.CreateUserRequest(user=users_pb2.User(email="x")), timeout=5)
        step("an invalid user is INVALID_ARGUMENT with BadRequest details in grpc-status-details-bin")
        assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        details = dict(invalid.value.trailing_metadata() or ())["grpc-status-details-bin"]
        status = status_pb2.Status.FromString(details)
        bad_request = error_details_pb2.BadRequest()
        assert status.details[0].Unpack(bad_request)
        assert bad_request.field_violations


async def test_service_errors_reach_rest_clients_as_json_status_with_field_violations(stack: Stack) -> None:
    url = stack.gateway.url
    invalid = await rest(url, "POST", "/v1/users", json={"email": "not-an-email", "displayName": ""})
    assert_status_shape(invalid, 400, 3)
    step("details hold a google.rpc.BadRequest naming the bad fields")
    violations = invalid.body["details"][0]["fieldViolations"]
    assert invalid.body["details"][0]["@type"].endswith("google.rpc.BadRequest")
    assert {v["field"] for v in violations} >= {"user.email", "user.display_name"}
    assert_status_shape(await rest(url, "GET", "/v1/users/no-such-user"), 404, 5)
    user = new_user()
    step("a first create with an email succeeds")
    assert (await rest(url, "POST", "/v1/users", json=user)).status == 200
    assert_status_shape(await rest(url, "POST", "/v1/users", json=user), 409, 6)


@pytest.mark.parametrize(("method", "path", "body", "http_status", "code"), [
    pytest.param("POST", "/v1/users", b'{"email": ', 400, 3, id="malformed-json"),
    pytest.param("POST", "/v1/users", b'{"email": {"a": 1}}', 400, 3, id="wrong-type-in-body"),
    pytest.param("GET", "/v1/users?pageSize=abc", None, 400, 3, id="wrong-type-in-query"),
    pytest.param("GET", "/v1/users?color=blue", None, 400, 3, id="unknown-query-parameter"),
    pytest.param("GET", "/v1/nothing-here", None, 404, 5, id="unknown-path"),
    pytest.param("PUT", "/v1/users", b"{}", 404, 5, id="wrong-method"),
    pytest.param("GET", "/acme.users.v1.UserService/GetUser", None, 404, 5, id="grpc-path-over-rest"),
    pytest.param("POST", "/v1/users", b'{"email":"' + b"a" * 1_100_000 + b'"}', 413, 3, id="body-too-large"),
])
async def test_gateway_errors_reach_rest_clients_as_json_status(
        stack: Stack, method: str, path: str, body: bytes | None, http_status: int, code: int) -> None:
    reply = await rest(stack.gateway.url, method, path, data=body, headers={"content-type": "application/json"})
    assert_status_shape(reply, http_status, code)


async def test_a_declared_service_without_instances_answers_503_json(stack: Stack) -> None:
    reply = await rest(stack.gateway.url, "GET", "/v1/users/u-1/notifications")
    assert_status_shape(reply, 503, 14)
    step("the message is fixed text, not Envoy's internal reason")
    assert reply.body["message"] == "service unavailable"


async def test_a_service_nobody_declares_is_unimplemented_for_rest_and_grpc_callers(stack: Stack) -> None:
    reply = await rest(stack.gateway.url, "GET", "/v1/orders/o-1")
    step("REST: 501 with a JSON google.rpc.Status UNIMPLEMENTED (clients do not retry it)")
    assert_status_shape(reply, 501, 12)
    assert reply.body["message"] == "acme.orders.v1.OrderService is not implemented by any service of this mesh"
    async with grpc.aio.insecure_channel(stack.gateway.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await orders_service_pb2_grpc.OrderServiceStub(channel).GetOrder(
                orders_service_pb2.GetOrderRequest(order_id="o-1"), timeout=5)
    step("gRPC: UNIMPLEMENTED with the text a gRPC server gives for a service it lacks: %s", error.value.details())
    assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert error.value.details() == "unknown service acme.orders.v1.OrderService"


async def test_a_registered_service_whose_instances_all_fail_answers_503_json(stack: Stack) -> None:
    stack.consul.put("/v1/agent/service/register", '{"Name": "notifications", "ID": "notifications-dead", '
                     '"Address": "127.0.0.1", "Port": 1, "Meta": {"grpc_services": '
                     '"acme.notifications.v1.NotificationService"}, "Check": {"TTL": "30s"}}')
    wait_until(lambda: "notifications" in stack.gateway.status()["services"], what="notifications in the snapshot")
    reply = await rest(stack.gateway.url, "GET", "/v1/users/u-1/notifications")
    assert_status_shape(reply, 503, 14)


async def test_an_instances_health_is_not_reachable_through_the_gateway(stack: Stack) -> None:
    async with grpc.aio.insecure_channel(stack.gateway.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as health_error:
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    step("grpc.health.v1.Health/Check through the gateway is UNIMPLEMENTED (no route; reflection is the gateway's own)")
    assert health_error.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_a_stuck_instance_gives_rest_504_json_and_grpc_deadline_exceeded(stack: Stack) -> None:
    (instance_id,) = stack.users.processes
    stack.users.signal(instance_id, signal.SIGSTOP)
    try:
        assert_status_shape(await rest(stack.gateway.url, "GET", "/v1/users/u-1"), 504, 4)
        async with grpc.aio.insecure_channel(stack.gateway.address) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await users_service_pb2_grpc.UserServiceStub(channel).GetUser(
                    users_service_pb2.GetUserRequest(user_id="u-1"), timeout=5)
        step("a gRPC client gets DEADLINE_EXCEEDED from the route timeout")
        assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        stack.users.signal(instance_id, signal.SIGCONT)
