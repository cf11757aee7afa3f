"""The users every server of p1-p4 answers with: 50 rows in memory, so figures compare frameworks, not storage."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

# A ListUsers page of this many rows is the "list50" workload of p2.
LIST_SIZE = 50
_CREATED = datetime(2024, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Row:
    """One user as the users service's domain holds it (app.domain.User has the same fields)."""

    user_id: str
    email: str
    display_name: str
    create_time: datetime
    update_time: datetime


ROWS: tuple[Row, ...] = tuple(
    Row(f"{n:032x}", f"user{n}@example.com", f"User Number {n}", _CREATED + timedelta(minutes=n),
        _CREATED + timedelta(minutes=n, seconds=30))
    for n in range(1, LIST_SIZE + 1)
)
BY_ID: dict[str, Row] = {row.user_id: row for row in ROWS}
# The id every "tiny" call asks for.
TINY_ID = ROWS[0].user_id
