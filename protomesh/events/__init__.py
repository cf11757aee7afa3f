"""Events over RabbitMQ: publish protobuf events with confirms, consume them as groups, relay an outbox."""

from __future__ import annotations

from protomesh.events._connect import (
    DEFAULT_BACKOFF_INITIAL_S,
    DEFAULT_BACKOFF_MAX_S,
    DEFAULT_RECONNECT_INTERVAL_S,
)
from protomesh.events._envelope import (
    CONTENT_TYPE,
    DEFAULT_EXCHANGE,
    Delivery,
    current_delivery,
    event_id_of,
    event_type,
    stamp_event,
)
from protomesh.events._handlers import EventHandlers, UndeliverableEvent
from protomesh.events._outbox import (
    DEFAULT_OUTBOX_BATCH,
    DEFAULT_OUTBOX_POLL_S,
    CountingOutboxStorage,
    OutboxRecord,
    OutboxRelay,
    OutboxStorage,
    decode_event,
)
from protomesh.events._publisher import DEFAULT_PUBLISH_TIMEOUT_S, Publisher, PublishError, Unroutable
from protomesh.events._subscriber import DEFAULT_PREFETCH, DEFAULT_RETRY_DELAY_S, Subscriber
from protomesh.events._telemetry import current_trace_parent
from protomesh.events._topology import DEFAULT_DELIVERY_LIMIT

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_BACKOFF_INITIAL_S",
    "DEFAULT_BACKOFF_MAX_S",
    "DEFAULT_DELIVERY_LIMIT",
    "DEFAULT_EXCHANGE",
    "DEFAULT_OUTBOX_BATCH",
    "DEFAULT_OUTBOX_POLL_S",
    "DEFAULT_PREFETCH",
    "DEFAULT_PUBLISH_TIMEOUT_S",
    "DEFAULT_RECONNECT_INTERVAL_S",
    "DEFAULT_RETRY_DELAY_S",
    "CountingOutboxStorage",
    "Delivery",
    "EventHandlers",
    "OutboxRecord",
    "OutboxRelay",
    "OutboxStorage",
    "PublishError",
    "Publisher",
    "Subscriber",
    "UndeliverableEvent",
    "Unroutable",
    "current_delivery",
    "current_trace_parent",
    "decode_event",
    "event_id_of",
    "event_type",
    "stamp_event",
]
