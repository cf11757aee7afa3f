"""Keyset paging for List methods: the page-size rule and checksummed page tokens bound to their query.

    page = await list_page(
        lambda after, limit: repo.list_after(after, user_id=user_id, limit=limit),   # rows after the cursor
        limits=PageLimits(default_size=20, max_size=100), page_size=request.page_size,
        page_token=request.page_token, key=lambda o: Cursor(o.create_time, o.order_id), scope=user_id)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from protomesh.errors import FieldViolation, InvalidArgument
from protomesh.sqlite import from_micros, to_micros

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 20
DEFAULT_MAX_PAGE_SIZE = 100

# A token is a checksummed key, not a secret: it only holds a position the client has already seen.
# The checksum turns an edited or truncated token into a clear error instead of a wrong page; the
# version lets the format change without misreading old tokens.
_TOKEN_VERSION = 1
_DIGEST_SIZE = 8
_MAX_TOKEN_LENGTH = 512
_NOT_OURS = "is not a token from a previous response of this method"


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where the previous page ended: the last item's creation time and its id (the tie breaker)."""

    time: datetime
    id: str


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list, in list order, and the token of the next one ("" on the last page)."""

    items: tuple[T, ...]
    next_page_token: str


@dataclass(frozen=True, slots=True)
class PageLimits:
    """Page sizes of a List method: what page_size 0 gets, and the cap for larger requests."""

    default_size: int = DEFAULT_PAGE_SIZE
    max_size: int = DEFAULT_MAX_PAGE_SIZE

    def __post_init__(self) -> None:
        if self.default_size < 1 or self.max_size < 1:
            raise ValueError(f"page sizes must be at least 1, got {self}")

    def size(self, requested: int, *, field: str = "page_size") -> int:
        """0 means the default, values above the maximum are capped, negative ones are rejected."""
        if requested < 0:
            raise InvalidArgument([FieldViolation(field, "must not be negative")])
        return min(requested or self.default_size, self.max_size)


@dataclass(frozen=True)
class PageSettings:
    """Settings fields of a service with List methods; mix into its settings before ServiceSettings.

        @dataclass(frozen=True)
        class OrdersSettings(PageSettings, ServiceSettings): ...   # a __post_init__ of its own calls super()'s
    """

    default_page_size: int = DEFAULT_PAGE_SIZE
    max_page_size: int = DEFAULT_MAX_PAGE_SIZE

    def __post_init__(self) -> None:
        # Raised while loading (and on a hot reload, which then keeps the last good settings); the message
        # names the field, which PageLimits' own check cannot.
        for name in ("max_page_size", "default_page_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1, got {getattr(self, name)}")

    @property
    def page_limits(self) -> PageLimits:
        return PageLimits(default_size=self.default_page_size, max_size=self.max_page_size)


def encode_page_token(cursor: Cursor, *, scope: str = "") -> str:
    """An opaque token for the page after cursor; scope is the query's filter (e.g. the user id)."""
    payload = json.dumps([_TOKEN_VERSION, scope, to_micros(cursor.time), cursor.id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(payload + _digest(payload)).rstrip(b"=").decode("ascii")


def decode_page_token(token: str, *, scope: str = "", field: str = "page_token") -> Cursor | None:
    """The cursor in token (None for ""); InvalidArgument when it was not made by encode_page_token for
    this scope."""
    if not token:
        return None
    decoded = _decode(token) if len(token) <= _MAX_TOKEN_LENGTH else None
    if decoded is None:
        raise InvalidArgument([FieldViolation(field, _NOT_OURS)])
    token_scope, cursor = decoded
    if token_scope != scope:
        raise InvalidArgument([FieldViolation(field, "was issued for a different query (filters changed)")])
    return cursor


def split_page(items: Sequence[T], size: int, *, key: Callable[[T], Cursor], scope: str = "") -> tuple[list[T], str]:
    """Given up to size + 1 items, the page to return and the token of the next one ("" on the last)."""
    page = list(items[:size])
    if len(items) <= size or not page:
        return page, ""
    return page, encode_page_token(key(page[-1]), scope=scope)


async def list_page(fetch: Callable[[Cursor | None, int], Awaitable[Sequence[T]]], *, limits: PageLimits,
                    page_size: int, page_token: str, key: Callable[[T], Cursor], scope: str = "") -> Page[T]:
    """One page: fetch(after, limit) returns up to limit items after the cursor in list order (oldest first,
    ties broken by id); the page's token is bound to scope, the query's filter."""
    size = limits.size(page_size)
    after = decode_page_token(page_token, scope=scope)
    items, token = split_page(await fetch(after, size + 1), size, key=key, scope=scope)
    return Page(tuple(items), token)


def _decode(token: str) -> tuple[str, Cursor] | None:
    try:
        raw = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        return None
    payload, digest = raw[:-_DIGEST_SIZE], raw[-_DIGEST_SIZE:]
    if not payload or digest != _digest(payload):
        return None
    try:
        version, scope, time_us, item_id = json.loads(payload)
    except (ValueError, TypeError):
        return None
    if version != _TOKEN_VERSION or not isinstance(scope, str) or not isinstance(item_id, str):
        return None
    if not isinstance(time_us, int) or isinstance(time_us, bool):
        return None
    try:
        return scope, Cursor(from_micros(time_us), item_id)
    except OverflowError:  # a forged checksum over a time past year 9999
        return None


def _digest(payload: bytes) -> bytes:
    return hashlib.blake2b(payload, digest_size=_DIGEST_SIZE, person=b"protomesh-page").digest()


__all__ = ["DEFAULT_MAX_PAGE_SIZE", "DEFAULT_PAGE_SIZE", "Cursor", "Page", "PageLimits", "PageSettings",
           "decode_page_token", "encode_page_token", "list_page", "split_page"]
