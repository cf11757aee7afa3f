"""The transactional outbox's relay: publishes events a service committed to its database, until confirmed."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from types import TracebackType
from typing import NamedTuple, Protocol, runtime_checkable

from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

from protomesh.aio import BackgroundTasks
from protomesh.events._connect import broker_backoff, worth_logging
from protomesh.events._publisher import Publisher

logger = logging.getLogger("protomesh.events")

# Events read and published per storage round trip: small enough that one slow batch does not delay
# marking earlier events published for long, large enough to drain a backlog after an outage quickly.
DEFAULT_OUTBOX_BATCH = 100
# Safety-net poll when nobody calls notify() (another process wrote the row, or a notify was missed).
DEFAULT_OUTBOX_POLL_S = 1.0


class OutboxRecord(NamedTuple):
    """One stored event: the storage's id for it, the serialized protobuf, its full proto name, and the
    traceparent of the call that committed it (`current_trace_parent()`; "" when none was kept)."""

    id: int
    payload: bytes
    event_type: str
    trace_parent: str = ""


class OutboxStorage(Protocol):
    """What a service's repository implements over the table it writes events to in the same transaction.

    fetch_unpublished returns the oldest unpublished events first, as (id, payload, event_type) tuples, or
    (id, payload, event_type, trace_parent) to publish each inside the trace of the call that stored it.
    """

    async def fetch_unpublished(self, limit: int) -> Sequence[tuple[int, bytes, str] | tuple[int, bytes, str, str]]:
        ...

    async def mark_published(self, ids: Sequence[int]) -> None: ...


@runtime_checkable
class CountingOutboxStorage(OutboxStorage, Protocol):
    """An outbox storage that can also count what is unpublished (exported as protomesh_outbox_backlog)."""

    async def count_unpublished(self) -> int: ...


class OutboxRelay:
    """Publishes the outbox in order, with confirms awaited per batch; while the broker is down it retries.

        relay = await ctx.enter(OutboxRelay(repo, publisher))
        async with repo.transaction() as tx:                     # the order and its event, atomically
            await tx.save_order(order)
            await tx.add_event(stamp_event(OrderCreated(order=order)))
        relay.notify()                                           # publish now rather than at the next poll

    An event is marked published only after the broker confirmed it, so none is lost; a crash between the
    two publishes it again (same event_id), which consumers drop. Store events already stamped (event_id).
    """

    def __init__(self, storage: OutboxStorage, publisher: Publisher, *, batch_size: int = DEFAULT_OUTBOX_BATCH,
                 poll_interval_s: float = DEFAULT_OUTBOX_POLL_S, require_route: bool = True) -> None:
        # require_route keeps an event pending until some consumer group has bound a queue for it (a fresh
        # broker, or consumers started after producers): dropping it would lose it. The price is that an
        # event type nobody ever subscribes to holds up the relay, hence the option.
        self.require_route = require_route
        self._storage = storage
        self._publisher = publisher
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        self._wake = asyncio.Event()
        self._relay = BackgroundTasks()
        self.published = 0

    async def __aenter__(self) -> OutboxRelay:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def start(self) -> None:
        if not self._relay.running:
            self._relay.start(self._run(), name="events-outbox-relay")

    def notify(self) -> None:
        """An event was just committed: publish without waiting for the next poll."""
        self._wake.set()

    async def close(self) -> None:
        """Stop relaying; an event being published is left unmarked and is published again next start."""
        await self._relay.stop()

    async def publish_pending(self) -> int:
        """Publish everything unpublished now, oldest first; returns how many. Raises the batch's first failure.

        A batch's events are published together on the publisher's channel (in order on the wire) and their
        confirms awaited together: a batch costs about one broker round trip, not one per event. Only the
        confirmed events are marked published; after a failure, events behind it in its batch may already
        have gone out (it follows them when retried).
        """
        total = 0
        while True:
            records = [OutboxRecord(*row) for row in await self._storage.fetch_unpublished(self.batch_size)]
            total += await self._publish_batch(records)
            if len(records) < self.batch_size:
                self._publisher.telemetry.outbox(0, 0.0)
                return total

    async def _publish_batch(self, records: Sequence[OutboxRecord]) -> int:
        events: list[Message] = []
        undecodable: ValueError | None = None
        for record in records:  # those before an undecodable row still go out
            try:
                events.append(decode_event(record.event_type, record.payload))
            except ValueError as error:
                undecodable = error
                break
        records = records[:len(events)]
        if events:
            await self._report_backlog(records, events[0])
        publishing = [asyncio.ensure_future(self._publisher.publish(event, require_route=self.require_route,
                                                                    trace_parent=record.trace_parent))
                      for record, event in zip(records, events, strict=True)]
        try:
            if publishing:
                await asyncio.wait(publishing)  # each publish has its own confirm timeout
        finally:
            for task in publishing:
                task.cancel()  # no-op for finished ones; the rest (relay closed) stay unmarked
            confirmed = [record.id for record, task in zip(records, publishing, strict=True)
                         if task.done() and not task.cancelled() and task.exception() is None]
            if confirmed:
                await self._storage.mark_published(confirmed)
        failures = [failure for task in publishing if (failure := task.exception()) is not None]
        if failures:
            raise failures[0]
        if undecodable is not None:
            raise undecodable
        return len(confirmed)

    async def _report_backlog(self, records: Sequence[OutboxRecord], oldest: Message) -> None:
        """Backlog and age of the oldest unpublished event (the one about to be published)."""
        if self._publisher.telemetry.metrics is None:
            return
        if isinstance(self._storage, CountingOutboxStorage):
            backlog = await self._storage.count_unpublished()
        else:  # at least what this batch holds
            backlog = len(records)
        self._publisher.telemetry.outbox(backlog, max(time.time() - _event_time_s(oldest), 0.0))

    async def _run(self) -> None:
        backoff = broker_backoff()
        failures = 0
        while True:
            self._wake.clear()
            try:
                self.published += await self.publish_pending()
            except Exception as error:
                delay = backoff.next_delay()
                failures += 1
                logger.log(logging.WARNING if worth_logging(failures) else logging.DEBUG,
                           "outbox relay: %s; retrying in %.1fs (attempt %d)", error, delay, failures)
                # Not woken by notify(): orders placed during an outage must not hammer a broker that is down.
                await asyncio.sleep(delay)
                continue
            backoff.reset()
            failures = 0
            try:
                async with asyncio.timeout(self.poll_interval_s):
                    await self._wake.wait()
            except TimeoutError:
                pass


def _event_time_s(event: Message) -> float:
    """The event's event_time in seconds since the epoch (now when it has none)."""
    field = event.DESCRIPTOR.fields_by_name.get("event_time")
    if field is None or not event.HasField("event_time"):
        return time.time()
    stamp = getattr(event, "event_time")  # noqa: B009 - the field is only known at runtime
    seconds: float = stamp.seconds + stamp.nanos / 1e9
    return seconds


def decode_event(type_name: str, payload: bytes) -> Message:
    """Decode a stored event by its full proto name (its generated module must have been imported)."""
    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(type_name)
    except KeyError:
        raise ValueError(f"outbox event type {type_name!r} is unknown: import its generated _pb2 module") from None
    try:
        message: Message = message_factory.GetMessageClass(descriptor).FromString(payload)
    except DecodeError as error:
        raise ValueError(f"outbox payload is not a valid {type_name}: {error}") from error
    return message
