"""UserService over a real grpc.aio server (the runtime's Server and interceptor): messages, paging, statuses."""

from __future__ import annotations

import grpc
import grpc.aio
import pytest
from acme.users.v1 import users_pb2, users_service_pb2
from acme.users.v1.users_service_pb2_grpc import UserServiceStub
from google.protobuf import field_mask_pb2

from protomesh.testing import field_violations


async def create(stub: UserServiceStub, email: str = "ada@example.com", name: str = "Ada") -> users_pb2.User:
    request = users_service_pb2.CreateUserRequest(user=users_pb2.User(email=email, display_name=name))
    response: users_service_pb2.CreateUserResponse = await stub.CreateUser(request, timeout=5)
    return response.user


async def test_a_created_user_can_be_read_back_with_its_times(stub: UserServiceStub) -> None:
    created = await create(stub, email="  Ada@Example.com ")

    fetched = (await stub.GetUser(users_service_pb2.GetUserRequest(user_id=created.user_id), timeout=5)).user

    assert fetched == created
    assert created.email == "ada@example.com"
    assert created.create_time.seconds > 0
    assert created.update_time == created.create_time


async def test_the_client_cannot_choose_the_id_or_the_times(stub: UserServiceStub) -> None:
    request = users_service_pb2.CreateUserRequest(
        user=users_pb2.User(user_id="mine", email="a@example.com", display_name="A", create_time={"seconds": 1})
    )

    created = (await stub.CreateUser(request, timeout=5)).user

    assert created.user_id != "mine"
    assert created.create_time.seconds != 1


async def test_list_users_pages_through_everyone_oldest_first(stub: UserServiceStub) -> None:
    ids = [(await create(stub, f"u{n}@example.com", f"U{n}")).user_id for n in range(5)]

    seen: list[str] = []
    token = ""
    for _ in range(10):
        page = await stub.ListUsers(users_service_pb2.ListUsersRequest(page_size=2, page_token=token), timeout=5)
        seen.extend(user.user_id for user in page.users)
        token = page.next_page_token
        if not token:
            break

    assert seen == ids


async def test_update_user_changes_the_fields_of_its_mask_only(stub: UserServiceStub) -> None:
    created = await create(stub)
    request = users_service_pb2.UpdateUserRequest(
        user=users_pb2.User(user_id=created.user_id, email="ignored@example.com", display_name="Countess"),
        update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
    )

    updated = (await stub.UpdateUser(request, timeout=5)).user

    assert (updated.email, updated.display_name) == ("ada@example.com", "Countess")
    assert updated.create_time == created.create_time
    assert updated.update_time.ToDatetime() > created.update_time.ToDatetime()


async def test_a_mask_naming_an_output_only_field_is_invalid_on_update_mask(stub: UserServiceStub) -> None:
    created = await create(stub)
    request = users_service_pb2.UpdateUserRequest(user=created, update_mask=field_mask_pb2.FieldMask(paths=["user_id"]))

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.UpdateUser(request, timeout=5)

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(raised.value) == ["update_mask"]


async def test_a_deleted_user_is_not_found_afterwards(stub: UserServiceStub) -> None:
    created = await create(stub)

    await stub.DeleteUser(users_service_pb2.DeleteUserRequest(user_id=created.user_id), timeout=5)

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetUser(users_service_pb2.GetUserRequest(user_id=created.user_id), timeout=5)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_duplicate_email_is_already_exists(stub: UserServiceStub) -> None:
    await create(stub)

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await create(stub, email="ADA@example.com", name="Other Ada")

    assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_a_bad_email_is_invalid_argument_with_a_field_violation_on_user_email(stub: UserServiceStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await create(stub, email="not-an-email")

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(raised.value) == ["user.email"]


async def test_an_unknown_id_is_not_found(stub: UserServiceStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetUser(users_service_pb2.GetUserRequest(user_id="0" * 32), timeout=5)

    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_tampered_page_token_is_invalid_on_page_token(stub: UserServiceStub) -> None:
    for n in range(3):
        await create(stub, f"u{n}@example.com", f"U{n}")
    token = (await stub.ListUsers(users_service_pb2.ListUsersRequest(page_size=1), timeout=5)).next_page_token

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListUsers(users_service_pb2.ListUsersRequest(page_token=token[:-2]), timeout=5)

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(raised.value) == ["page_token"]
