"""A deterministic clock for use cases that take `clock: Callable[[], datetime]`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

DEFAULT_CLOCK_START = datetime(2030, 1, 1, tzinfo=UTC)


class SteppingClock:
    """Moves one step (1 ms) per reading, so creation order is the list order in every test.

        orders = Orders(repo, users, clock=SteppingClock())
    """

    def __init__(self, start: datetime = DEFAULT_CLOCK_START, *, step: timedelta = timedelta(milliseconds=1)) -> None:
        self.now = start
        self.step = step

    def __call__(self) -> datetime:
        self.now += self.step
        return self.now
