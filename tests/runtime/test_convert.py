"""protomesh.convert gives the same Timestamps protobuf's own (slower) datetime conversion gives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from protomesh.convert import timestamp

MOMENTS = [
    datetime(1970, 1, 1, tzinfo=UTC),
    datetime(2026, 11, 28, 5, 25, 7, 653620, tzinfo=UTC),
    datetime(1969, 7, 20, 20, 17, 40, 1, tzinfo=UTC),
    datetime(2026, 11, 28, 6, 0, 0, 999999, tzinfo=timezone(timedelta(hours=-5))),
]


@pytest.mark.parametrize("moment", MOMENTS, ids=str)
def test_timestamp_fields_equal_protobufs_own_conversion(moment: datetime) -> None:
    expected = Timestamp()
    expected.FromDatetime(moment)
    assert Timestamp(**timestamp(moment)) == expected


def test_a_naive_datetime_is_taken_as_utc() -> None:
    naive = datetime(2026, 1, 2, 3, 4, 5, 6)
    assert timestamp(naive) == timestamp(naive.replace(tzinfo=UTC))
