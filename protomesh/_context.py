"""Per-call context carried across awaits: the correlation id and the deadline of the incoming call."""

from __future__ import annotations

import contextvars
import time

# Metadata key that carries the correlation id between services and back to clients.
CORRELATION_ID_KEY = "x-correlation-id"

_correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("protomesh_correlation_id",
                                                                               default=None)
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("protomesh_deadline", default=None)


def correlation_id() -> str | None:
    """The correlation id of the call being served, if any."""
    return _correlation_id.get()


def time_remaining() -> float | None:
    """Seconds left before the incoming call's deadline (None when the caller set no deadline)."""
    deadline = _deadline.get()
    return None if deadline is None else deadline - time.monotonic()


CallTokens = tuple[contextvars.Token[str | None], contextvars.Token[float | None]]


def bind_call(cid: str, remaining: float | None) -> CallTokens:
    """Set the current call's context; returns tokens for reset_call()."""
    deadline = None if remaining is None else time.monotonic() + remaining
    return _correlation_id.set(cid), _deadline.set(deadline)


def reset_call(tokens: CallTokens) -> None:
    _correlation_id.reset(tokens[0])
    _deadline.reset(tokens[1])


def outgoing_timeout(explicit: float | None) -> float | None:
    """The timeout for a downstream call: the caller's explicit one, capped by what is left upstream."""
    remaining = time_remaining()
    if remaining is None:
        return explicit
    remaining = max(remaining, 0.0)
    return remaining if explicit is None else min(explicit, remaining)
