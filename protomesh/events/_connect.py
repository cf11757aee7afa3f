"""Connecting to the broker: robust connections, backoff between attempts, URLs safe to log."""

from __future__ import annotations

from urllib.parse import urlsplit

from aio_pika import RobustConnection
from aio_pika.abc import AbstractRobustConnection
from aio_pika.connection import make_url

from protomesh.aio import Backoff

# First pause after a failed attempt: a broker blip (restart of one node) is retried almost at once.
DEFAULT_BACKOFF_INITIAL_S = 0.2
# Longest pause: a broker back from a ~10 s restart is noticed within 5 s, while a long outage costs only
# one cheap failed TCP connect (and one log line) every 5 s.
DEFAULT_BACKOFF_MAX_S = 5.0
# Pause between aio-pika's own reconnect attempts once a connection was up (it uses a fixed interval):
# a refused connect costs nothing, and consumers resume ~1 s after the broker is back.
DEFAULT_RECONNECT_INTERVAL_S = 1.0
# A TCP + AMQP handshake with a healthy local broker takes milliseconds; beyond this it is not healthy.
DEFAULT_CONNECT_TIMEOUT_S = 5.0


def broker_backoff() -> Backoff:
    """The pause between attempts to reach the broker (see DEFAULT_BACKOFF_*)."""
    return Backoff(initial_s=DEFAULT_BACKOFF_INITIAL_S, max_s=DEFAULT_BACKOFF_MAX_S)


def safe_url(url: str) -> str:
    """The broker's host:port/vhost, without credentials: what logs and errors may show."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 5672}{parts.path or '/'}"


async def connect(url: str, *, name: str, reconnect_interval_s: float = DEFAULT_RECONNECT_INTERVAL_S,
                  timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S) -> AbstractRobustConnection:
    """One connection attempt; once up, aio-pika restores channels, queues and consumers after any drop.

    Unlike aio_pika.connect_robust, a failed or cancelled attempt closes the connection object, whose
    background reconnect task would otherwise go on connecting for nobody.
    """
    connection = RobustConnection(make_url(url, reconnect_interval=reconnect_interval_s),
                                  client_properties={"connection_name": name},
                                  reconnect_interval=reconnect_interval_s)
    try:
        await connection.connect(timeout=timeout_s)
    except BaseException:
        await connection.close()
        raise
    return connection
