"""Keyset paging helpers: page sizes, tokens bound to their query and tamper-evident, page splitting."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from protomesh import ConfigError, ServiceSettings, load_settings
from protomesh.errors import InvalidArgument
from protomesh.paging import Cursor, PageLimits, PageSettings, decode_page_token, encode_page_token, list_page

MOMENT = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


@dataclass(frozen=True)
class ListingSettings(PageSettings, ServiceSettings):
    name: str = "x"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.name:
            raise ValueError("name: must not be empty")


def test_a_token_gives_back_its_cursor_exactly() -> None:
    token = encode_page_token(Cursor(MOMENT, "o-1"), scope="u-1")

    assert decode_page_token(token, scope="u-1") == Cursor(MOMENT, "o-1")


def test_an_empty_token_means_the_first_page() -> None:
    assert decode_page_token("") is None


@pytest.mark.parametrize("token", ["garbage", "x" * 600, "AAAA", "WzEsIiIsMSwiYSJd"])
def test_a_token_not_made_here_is_an_invalid_argument_on_page_token(token: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        decode_page_token(token)

    assert [v.field for v in raised.value.violations] == ["page_token"]


def test_an_edited_token_is_refused() -> None:
    token = encode_page_token(Cursor(MOMENT, "o-1"))
    edited = token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]

    with pytest.raises(InvalidArgument):
        decode_page_token(edited)


def test_a_token_of_another_query_is_refused() -> None:
    token = encode_page_token(Cursor(MOMENT, "o-1"), scope="u-1")

    with pytest.raises(InvalidArgument, match="different query"):
        decode_page_token(token, scope="u-2")


@pytest.mark.parametrize(("requested", "expected"), [(0, 20), (5, 5), (1000, 100)])
def test_page_sizes_default_and_cap(requested: int, expected: int) -> None:
    assert PageLimits(default_size=20, max_size=100).size(requested) == expected


def test_a_negative_page_size_is_invalid() -> None:
    with pytest.raises(InvalidArgument):
        PageLimits().size(-1)


async def test_list_page_walks_every_item_once_in_order() -> None:
    items = [(MOMENT, f"id-{n}") for n in range(7)]

    async def fetch(after: Cursor | None, limit: int) -> list[tuple[datetime, str]]:
        rest = [i for i in items if after is None or (i[0], i[1]) > (after.time, after.id)]
        return rest[:limit]

    seen: list[tuple[datetime, str]] = []
    token = ""
    while True:
        page = await list_page(fetch, limits=PageLimits(default_size=3), page_size=0, page_token=token,
                               key=lambda i: Cursor(*i))
        seen.extend(page.items)
        token = page.next_page_token
        if not token:
            break

    assert seen == items


def test_page_settings_load_from_the_environment_and_give_their_limits(tmp_path: Path) -> None:
    env = {"LISTING_DEFAULT_PAGE_SIZE": "5", "LISTING_MAX_PAGE_SIZE": "7"}

    settings = load_settings(ListingSettings, "listing", env=env, config_dir=tmp_path)

    assert settings.page_limits == PageLimits(default_size=5, max_size=7)


@pytest.mark.parametrize("name", ["max_page_size", "default_page_size"])
def test_a_page_size_setting_below_one_is_a_config_error_naming_it(name: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings(ListingSettings, "listing", env={f"LISTING_{name.upper()}": "0"}, config_dir=tmp_path)


def test_the_settings_own_checks_still_run_after_the_page_checks() -> None:
    with pytest.raises(ValueError, match="name"):
        ListingSettings(name="")
