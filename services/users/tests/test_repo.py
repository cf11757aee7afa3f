"""SqliteUserRepository on real files: WAL, unique emails, list order and keyset paging."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app.domain import EmailTaken, User, UserChanges
from app.repo import SqliteUserRepository
from protomesh.paging import Cursor

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def user(n: int, *, at: datetime | None = None, user_id: str | None = None) -> User:
    moment = at or T0 + timedelta(seconds=n)
    return User(user_id or f"{n:032x}", f"user{n}@example.com", f"User {n}", moment, moment)


async def add_all(repo: SqliteUserRepository, *users: User) -> None:
    for one in users:
        await repo.add(one)


async def test_the_database_runs_in_wal_mode(repo: SqliteUserRepository) -> None:
    assert await repo.journal_mode() == "wal"


async def test_open_creates_missing_folders_and_data_survives_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "users.db"
    async with SqliteUserRepository.open(path) as repo:
        await repo.add(user(1))

    async with SqliteUserRepository.open(path) as reopened:
        assert await reopened.get(user(1).user_id) == user(1)


async def test_a_second_user_with_the_same_email_is_email_taken(repo: SqliteUserRepository) -> None:
    await repo.add(user(1))

    with pytest.raises(EmailTaken):
        await repo.add(User("f" * 32, user(1).email, "Other", T0, T0))


async def test_a_duplicate_id_stays_a_plain_integrity_error(repo: SqliteUserRepository) -> None:
    await repo.add(user(1))

    with pytest.raises(sqlite3.IntegrityError):
        await repo.add(User(user(1).user_id, "other@example.com", "Other", T0, T0))


async def test_an_update_to_a_taken_email_is_email_taken(repo: SqliteUserRepository) -> None:
    await add_all(repo, user(1), user(2))

    with pytest.raises(EmailTaken):
        await repo.update(user(2).user_id, UserChanges(email=user(1).email), T0)


async def test_an_update_writes_only_the_given_fields_and_the_update_time(repo: SqliteUserRepository) -> None:
    await repo.add(user(1))
    later = T0 + timedelta(days=1)

    updated = await repo.update(user(1).user_id, UserChanges(display_name="Renamed"), later)

    assert updated == User(user(1).user_id, user(1).email, "Renamed", user(1).create_time, later)
    assert await repo.get(user(1).user_id) == updated


async def test_update_and_delete_of_a_missing_user_report_it(repo: SqliteUserRepository) -> None:
    assert await repo.update("missing", UserChanges(display_name="x"), T0) is None
    assert await repo.delete("missing") is False
    assert await repo.get("missing") is None


async def test_times_keep_their_microseconds(repo: SqliteUserRepository) -> None:
    precise = user(1, at=T0 + timedelta(microseconds=123_457))
    await repo.add(precise)

    assert (await repo.get(precise.user_id)) == precise


async def test_the_list_is_oldest_first_and_ties_are_ordered_by_id(repo: SqliteUserRepository) -> None:
    await add_all(repo, user(3), user(2, at=T0, user_id="b" * 32), user(1, at=T0, user_id="a" * 32))

    listed = await repo.list_after(None, 10)

    assert [one.user_id for one in listed] == ["a" * 32, "b" * 32, user(3).user_id]


async def test_paging_is_stable_while_users_are_added(repo: SqliteUserRepository) -> None:
    await add_all(repo, *(user(n) for n in range(5)))
    first = await repo.list_after(None, 3)

    # Newer users land after the cursor; one with the cursor's exact time but a smaller id lands before it.
    await add_all(repo, user(10), user(11), user(99, at=first[-1].create_time, user_id="0" * 32 + "a"))
    rest = await repo.list_after(Cursor(first[-1].create_time, first[-1].user_id), 100)

    seen = [one.user_id for one in (*first, *rest)]
    assert seen == [user(n).user_id for n in (0, 1, 2, 3, 4, 10, 11)]
    assert len(set(seen)) == len(seen)


async def test_list_after_honours_the_limit(repo: SqliteUserRepository) -> None:
    await add_all(repo, *(user(n) for n in range(5)))

    assert len(await repo.list_after(None, 2)) == 2
    assert await repo.list_after(Cursor(T0 + timedelta(seconds=4), user(4).user_id), 2) == []
