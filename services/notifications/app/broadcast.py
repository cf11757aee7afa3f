"""In-process fan-out of new items to the watchers of their key (a user id), never blocking the publisher."""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Generic, TypeVar

from protomesh.errors import DomainError

log = logging.getLogger(__name__)

T = TypeVar("T")

# Notifications a watcher may have waiting before it counts as too slow and is dropped: far more than a
# user gets in the time a healthy client takes to read a message, small enough to bound memory per watcher.
DEFAULT_WATCH_QUEUE_SIZE = 64
# A quiet watch still sends something this often (a heartbeat), well inside the gateway's stream idle
# timeout (300 s) and any proxy's, so a client can tell a quiet stream from a dead one.
DEFAULT_WATCH_HEARTBEAT_S = 20.0


class WatchTooSlow(DomainError):
    """The watcher did not keep up and was dropped; it should catch up (ListNotifications) and watch again."""

    code = "RESOURCE_EXHAUSTED"

    def __init__(self, queue_size: int) -> None:
        super().__init__(f"the watch fell more than {queue_size} notifications behind and was ended; "
                         "catch up with ListNotifications, then watch again")


class _End(enum.Enum):
    SHUTDOWN = "shutdown"
    DROPPED = "dropped"


class Watch(Generic[T]):
    """One watcher's items, in publish order: `async for notification in watch`.

    Iteration ends when the broadcaster closes (server shutdown) and raises WatchTooSlow when dropped.
    """

    def __init__(self, key: str, queue_size: int) -> None:
        self.key = key
        self._queue_size = queue_size
        # Unbounded underneath so the end marker always fits; offer() enforces the bound.
        self._queue: asyncio.Queue[T | _End] = asyncio.Queue()
        self._ended: _End | None = None

    def offer(self, item: T) -> bool:
        """Queue the item; False (and nothing queued) when the watcher is too far behind."""
        if self._ended is not None or self._queue.qsize() >= self._queue_size:
            return False
        self._queue.put_nowait(item)
        return True

    def end(self, reason: _End) -> None:
        """Stop the iteration: after what is queued on shutdown, at once (queue discarded) when dropped."""
        if self._ended is None:
            self._ended = reason
            if reason is _End.DROPPED:
                while not self._queue.empty():
                    self._queue.get_nowait()
            self._queue.put_nowait(reason)

    def __aiter__(self) -> AsyncIterator[T]:
        return self

    async def __anext__(self) -> T:
        item = await self._queue.get()
        if item is _End.DROPPED:
            self._queue.put_nowait(item)  # every later read fails the same way
            raise WatchTooSlow(self._queue_size)
        if isinstance(item, _End):
            self._queue.put_nowait(item)
            raise StopAsyncIteration
        return item


class Broadcaster(Generic[T]):
    """Delivers each published item to the current watchers of its key.

        async with Broadcaster[Notification]() as broadcaster:
            with broadcaster.watch("u-1") as watch:
                async for notification in watch: ...
            broadcaster.publish("u-1", notification)     # from the event consumer, after its commit

    publish() never waits: a watcher whose queue is full is dropped (its iteration raises WatchTooSlow).
    """

    def __init__(self, *, queue_size: int = DEFAULT_WATCH_QUEUE_SIZE) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size must be at least 1, got {queue_size}")
        self.queue_size = queue_size
        self._watches: dict[str, set[Watch[T]]] = {}
        self._closed = False

    @property
    def watcher_count(self) -> int:
        return sum(len(watches) for watches in self._watches.values())

    @contextmanager
    def watch(self, key: str) -> Iterator[Watch[T]]:
        """Watch the items published for key from now on, until the block exits."""
        watch: Watch[T] = Watch(key, self.queue_size)
        if self._closed:
            watch.end(_End.SHUTDOWN)
        self._watches.setdefault(key, set()).add(watch)
        try:
            yield watch
        finally:
            self._forget(watch)

    def publish(self, key: str, item: T) -> None:
        for watch in list(self._watches.get(key, ())):
            if not watch.offer(item):
                log.warning("dropping a watcher of %s: more than %d items behind", key, self.queue_size)
                watch.end(_End.DROPPED)
                self._forget(watch)

    def close(self) -> None:
        """End every watch (server shutdown): their iterations stop cleanly; later watches end at once."""
        self._closed = True
        for watches in list(self._watches.values()):
            for watch in list(watches):
                watch.end(_End.SHUTDOWN)

    async def __aenter__(self) -> Broadcaster[T]:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.close()

    def _forget(self, watch: Watch[T]) -> None:
        watches = self._watches.get(watch.key)
        if watches is not None:
            watches.discard(watch)
            if not watches:
                del self._watches[watch.key]
