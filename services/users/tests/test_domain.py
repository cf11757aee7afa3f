"""The users use cases against a real SQLite store: validation, uniqueness, update masks and paging."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app.domain import MAX_DISPLAY_NAME_LENGTH, User, UserFields, Users
from protomesh.errors import AlreadyExists, FieldViolation, InvalidArgument, NotFound
from protomesh.paging import Cursor, PageLimits, decode_page_token, encode_page_token


def fields(email: str = "ada@example.com", display_name: str = "Ada") -> UserFields:
    return UserFields(email=email, display_name=display_name)


def violated_paths(error: InvalidArgument) -> list[str]:
    return [violation.field for violation in error.violations]


async def create_many(users: Users, count: int) -> list[User]:
    return [await users.create(fields(f"user{n}@example.com", f"User {n}")) for n in range(count)]


async def test_create_normalises_the_email_and_trims_the_display_name(users: Users) -> None:
    user = await users.create(fields("  Ada.Lovelace@Example.COM ", "  Ada Lovelace \t"))

    assert user.email == "ada.lovelace@example.com"
    assert user.display_name == "Ada Lovelace"
    assert await users.get(user.user_id) == user


async def test_create_assigns_an_id_and_equal_create_and_update_times(users: Users) -> None:
    first, second = await create_many(users, 2)

    assert first.user_id
    assert first.user_id != second.user_id
    assert first.create_time == first.update_time
    assert first.create_time.tzinfo is not None


@pytest.mark.parametrize(
    "email",
    ["", "   ", "plain", "a@b", "a@@example.com", "a b@example.com", "a..b@example.com", ".a@example.com",
     "a@-example.com", "a@example.c0m-", "a\nb@example.com", "ä@example.com", "x" * 65 + "@example.com",
     "a@" + "b" * 250 + ".com"],
)
async def test_create_rejects_a_bad_email_on_field_user_email(users: Users, email: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        await users.create(fields(email=email))

    assert violated_paths(raised.value) == ["user.email"]


@pytest.mark.parametrize(
    "email", ["a@b.co", "first.last+tag@sub.example.org", "o'brien@example.ie", "x@xn--p1ai.xn--p1ai"]
)
async def test_create_accepts_ordinary_emails(users: Users, email: str) -> None:
    assert (await users.create(fields(email=email))).email == email


@pytest.mark.parametrize("name", ["", "   ", "x" * (MAX_DISPLAY_NAME_LENGTH + 1), "two\nlines", "bell\x07"])
async def test_create_rejects_a_bad_display_name_on_field_user_display_name(users: Users, name: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        await users.create(fields(display_name=name))

    assert violated_paths(raised.value) == ["user.display_name"]


async def test_a_display_name_of_the_maximum_length_after_trimming_is_accepted(users: Users) -> None:
    name = "é" * MAX_DISPLAY_NAME_LENGTH

    assert (await users.create(fields(display_name=f"  {name}  "))).display_name == name


async def test_create_reports_every_bad_field_at_once(users: Users) -> None:
    with pytest.raises(InvalidArgument) as raised:
        await users.create(fields(email="nope", display_name=""))

    assert violated_paths(raised.value) == ["user.email", "user.display_name"]


async def test_an_email_is_unique_whatever_its_case(users: Users) -> None:
    await users.create(fields("ada@example.com"))

    with pytest.raises(AlreadyExists):
        await users.create(fields("ADA@example.com", "Another Ada"))


async def test_get_of_an_unknown_id_is_not_found(users: Users) -> None:
    with pytest.raises(NotFound):
        await users.get("0" * 32)


@pytest.mark.parametrize("user_id", ["", "x" * 65])
async def test_get_without_a_usable_id_is_an_invalid_user_id(users: Users, user_id: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        await users.get(user_id)

    assert violated_paths(raised.value) == ["user_id"]


async def test_update_changes_only_the_fields_its_mask_names(users: Users) -> None:
    user = await users.create(fields())

    updated = await users.update(user.user_id, fields(email="not even an email", display_name=" Countess "),
                                 ["display_name"])

    assert (updated.email, updated.display_name) == ("ada@example.com", "Countess")
    assert updated.create_time == user.create_time
    assert updated.update_time > user.update_time
    assert await users.get(user.user_id) == updated


async def test_update_with_an_empty_mask_changes_every_mutable_field(users: Users) -> None:
    user = await users.create(fields())

    updated = await users.update(user.user_id, fields("Grace@Example.com", "Grace"), [])

    assert (updated.email, updated.display_name) == ("grace@example.com", "Grace")


async def test_update_with_an_empty_mask_validates_every_mutable_field(users: Users) -> None:
    user = await users.create(fields())

    with pytest.raises(InvalidArgument) as raised:
        await users.update(user.user_id, fields(email="", display_name=""), [])

    assert violated_paths(raised.value) == ["user.email", "user.display_name"]


@pytest.mark.parametrize(("path", "reason"), [("user_id", "output only"), ("create_time", "output only"),
                                              ("nickname", "not a field")])
async def test_update_rejects_a_mask_path_it_cannot_change_on_field_update_mask(
    users: Users, path: str, reason: str
) -> None:
    user = await users.create(fields())

    with pytest.raises(InvalidArgument) as raised:
        await users.update(user.user_id, fields(), ["display_name", path])

    assert violated_paths(raised.value) == ["update_mask"]
    assert path in raised.value.violations[0].description
    assert reason in raised.value.violations[0].description


async def test_update_of_an_unknown_id_is_not_found(users: Users) -> None:
    with pytest.raises(NotFound):
        await users.update("0" * 32, fields(), ["email"])


async def test_update_without_an_id_is_an_invalid_user_user_id(users: Users) -> None:
    with pytest.raises(InvalidArgument) as raised:
        await users.update("", fields(), ["email"])

    assert raised.value.violations == (FieldViolation("user.user_id", "is required"),)


async def test_update_to_an_email_of_another_user_already_exists(users: Users) -> None:
    ada, grace = await create_many(users, 2)

    with pytest.raises(AlreadyExists):
        await users.update(grace.user_id, fields(email=ada.email.upper()), ["email"])


async def test_update_to_the_users_own_email_is_allowed(users: Users) -> None:
    user = await users.create(fields())

    assert (await users.update(user.user_id, fields(), [])).email == user.email


async def test_delete_removes_the_user_and_a_second_delete_is_not_found(users: Users) -> None:
    user = await users.create(fields())

    await users.delete(user.user_id)

    with pytest.raises(NotFound):
        await users.get(user.user_id)
    with pytest.raises(NotFound):
        await users.delete(user.user_id)


async def test_pages_list_every_user_once_oldest_first(users: Users) -> None:
    created = await create_many(users, 7)
    users.limits = PageLimits(default_size=3, max_size=10)

    seen: list[User] = []
    token, pages = "", 0
    while True:
        page = await users.list(0, token)
        seen.extend(page.items)
        pages += 1
        token = page.next_page_token
        if not token:
            break

    assert seen == created
    assert pages == 3


async def test_a_full_last_page_has_no_next_token(users: Users) -> None:
    await create_many(users, 4)

    first = await users.list(2, "")
    second = await users.list(2, first.next_page_token)

    assert len(second.items) == 2
    assert second.next_page_token == ""


async def test_page_size_zero_gets_the_default_and_a_large_one_is_capped(users: Users) -> None:
    await create_many(users, 6)
    users.limits = PageLimits(default_size=2, max_size=4)

    assert len((await users.list(0, "")).items) == 2
    assert len((await users.list(1000, "")).items) == 4


async def test_a_default_above_the_maximum_is_capped_too(users: Users) -> None:
    await create_many(users, 3)
    users.limits = PageLimits(default_size=50, max_size=2)

    assert len((await users.list(0, "")).items) == 2


async def test_a_negative_page_size_is_an_invalid_page_size(users: Users) -> None:
    with pytest.raises(InvalidArgument) as raised:
        await users.list(-1, "")

    assert violated_paths(raised.value) == ["page_size"]


def tampered_tokens() -> list[str]:
    token = encode_page_token(Cursor(datetime(2030, 1, 1, tzinfo=UTC), "0" * 32))
    flipped = token[:5] + ("A" if token[5] != "A" else "B") + token[6:]
    return [flipped, token[:-3], token + "AAAA", "not a token!", "e30", "x" * 300]


@pytest.mark.parametrize("token", tampered_tokens())
async def test_a_tampered_page_token_is_an_invalid_page_token(users: Users, token: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        await users.list(0, token)

    assert violated_paths(raised.value) == ["page_token"]


async def test_a_page_token_round_trips_its_key(users: Users) -> None:
    user = await users.create(fields())
    key = Cursor(user.create_time, user.user_id)

    assert decode_page_token(encode_page_token(key)) == key
