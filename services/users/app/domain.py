"""Users' rules and use cases (create, get, list, update, delete), free of gRPC and SQL."""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from protomesh import paging
from protomesh.errors import AlreadyExists, FieldViolation, NotFound
from protomesh.paging import Cursor, Page, PageLimits
from protomesh.validation import id_problems, raise_if

# RFC 5321 caps a path at 256 octets including its angle brackets, leaving 254 for the address,
# and the part before the @ at 64.
MAX_EMAIL_LENGTH = 254
MAX_EMAIL_LOCAL_LENGTH = 64
MAX_DISPLAY_NAME_LENGTH = 64
# Fields of User a client may change, in the order an empty update mask applies them.
MUTABLE_FIELDS = ("email", "display_name")
_OUTPUT_ONLY_FIELDS = frozenset({"user_id", "create_time", "update_time"})

# Deliberately simple: ASCII dot-atoms at a dotted host whose last label starts with a letter. It
# rejects what is surely wrong; only a confirmation mail proves an address right.
_ATOM = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_EMAIL = re.compile(rf"(?P<local>{_ATOM}(?:\.{_ATOM})*)@(?:{_LABEL}\.)+[a-z](?:[a-z0-9-]{{0,61}}[a-z0-9])")


@dataclass(frozen=True, slots=True)
class User:
    """A person who can place orders and receive notifications."""

    user_id: str
    email: str
    display_name: str
    create_time: datetime
    update_time: datetime


@dataclass(frozen=True, slots=True)
class UserFields:
    """Values a client sends for a user: all of them on create, those its update mask names on update."""

    email: str = ""
    display_name: str = ""


@dataclass(frozen=True, slots=True)
class UserChanges:
    """Validated new values for an update; None leaves the stored value as it is."""

    email: str | None = None
    display_name: str | None = None


class EmailTaken(AlreadyExists):
    """Another user has this email; repositories raise it from their unique constraint."""

    def __init__(self) -> None:
        super().__init__("a user with this email exists already")


class UserRepository(Protocol):
    """Storage of users, owned by the domain; implementations raise EmailTaken on a duplicate email."""

    async def add(self, user: User) -> None: ...

    async def get(self, user_id: str) -> User | None: ...

    async def update(self, user_id: str, changes: UserChanges, update_time: datetime) -> User | None: ...

    async def delete(self, user_id: str) -> bool: ...

    async def list_after(self, after: Cursor | None, limit: int) -> Sequence[User]: ...


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _new_id() -> str:
    return uuid.uuid4().hex


@dataclass(slots=True)
class Users:
    """The use cases; build it with a repository, the limits can change while serving (hot reload)."""

    repo: UserRepository
    limits: PageLimits = field(default_factory=PageLimits)
    clock: Callable[[], datetime] = _utc_now
    new_id: Callable[[], str] = _new_id

    async def create(self, fields: UserFields) -> User:
        values, violations = _clean(fields, MUTABLE_FIELDS)
        raise_if(violations)
        now = self.clock()
        user = User(self.new_id(), values["email"], values["display_name"], now, now)
        await self.repo.add(user)
        return user

    async def get(self, user_id: str) -> User:
        raise_if(id_problems(user_id, "user_id"))
        user = await self.repo.get(user_id)
        if user is None:
            raise _not_found(user_id)
        return user

    async def list(self, page_size: int, page_token: str) -> Page[User]:
        """Everyone, oldest first (ties by id), one page at a time."""
        return await paging.list_page(self.repo.list_after, limits=self.limits, page_size=page_size,
                                      page_token=page_token, key=_cursor)

    async def update(self, user_id: str, fields: UserFields, paths: Sequence[str]) -> User:
        violations = id_problems(user_id, "user.user_id")
        names, mask_violations = _mask_fields(paths)
        values, field_violations = _clean(fields, names)
        raise_if([*violations, *mask_violations, *field_violations])
        user = await self.repo.update(user_id, UserChanges(**values), self.clock())
        if user is None:
            raise _not_found(user_id)
        return user

    async def delete(self, user_id: str) -> None:
        raise_if(id_problems(user_id, "user_id"))
        if not await self.repo.delete(user_id):
            raise _not_found(user_id)


def normalize_email(raw: str) -> str:
    return raw.strip().lower()


def _email_problem(email: str) -> str | None:
    if not email:
        return "is required"
    if len(email) > MAX_EMAIL_LENGTH:
        return f"must be at most {MAX_EMAIL_LENGTH} characters"
    match = _EMAIL.fullmatch(email)
    if match is None or len(match["local"]) > MAX_EMAIL_LOCAL_LENGTH:
        return "must be an email address like name@example.com"
    return None


def _display_name_problem(name: str) -> str | None:
    if not name:
        return "is required"
    if len(name) > MAX_DISPLAY_NAME_LENGTH:
        return f"must be at most {MAX_DISPLAY_NAME_LENGTH} characters"
    if any(unicodedata.category(char) == "Cc" for char in name):
        return "must not contain control characters"
    return None


# Each mutable field: how its value is normalised, then what is wrong with the result (None = fine).
_FIELD_RULES: dict[str, tuple[Callable[[str], str], Callable[[str], str | None]]] = {
    "email": (normalize_email, _email_problem),
    "display_name": (str.strip, _display_name_problem),
}


def _clean(fields: UserFields, names: Iterable[str]) -> tuple[dict[str, str], list[FieldViolation]]:
    """The normalised values of the named fields and a violation (path as the client sees it) per bad one."""
    values: dict[str, str] = {}
    violations: list[FieldViolation] = []
    for name in names:
        normalize, problem_of = _FIELD_RULES[name]
        values[name] = normalize(getattr(fields, name))
        problem = problem_of(values[name])
        if problem is not None:
            violations.append(FieldViolation(f"user.{name}", problem))
    return values, violations


def _mask_fields(paths: Sequence[str]) -> tuple[tuple[str, ...], list[FieldViolation]]:
    """The fields an update mask names (all mutable ones for an empty mask or "*") and its bad paths."""
    if not paths or list(paths) == ["*"]:
        return MUTABLE_FIELDS, []
    violations = [
        FieldViolation("update_mask", f"{path!r} {_why_not_mutable(path)}; mutable fields: {', '.join(MUTABLE_FIELDS)}")
        for path in paths
        if path not in MUTABLE_FIELDS
    ]
    return tuple(dict.fromkeys(path for path in paths if path in MUTABLE_FIELDS)), violations


def _why_not_mutable(path: str) -> str:
    return "is output only" if path in _OUTPUT_ONLY_FIELDS else "is not a field of User"


def _cursor(user: User) -> Cursor:
    return Cursor(user.create_time, user.user_id)


def _not_found(user_id: str) -> NotFound:
    return NotFound(f"user {user_id!r} does not exist")
