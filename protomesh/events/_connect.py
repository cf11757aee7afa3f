"""Connecting to the broker: robust connections, backoff between attempts, URLs safe to log."""

from __future__ import annotations

from urllib.parse import urlsplit

from aio_pika import RobustConnection
from aio_pika.abc import AbstractRobustConnection
from aio_pika.connection import make_url

from protomesh.aio import Backoff

# First pause after a failed attempt: a broker blip (restart of one node) is retried almost at once.
DEFAULT_BACKOFF_INITIAL_S = 0.2
# Longest pause before a failed handler's event is tried again (the subscriber's retries).
DEFAULT_BACKOFF_MAX_S = 5.0
# Longest pause between attempts to reach the broker: a broker that is still booting (the local mesh starts
# services beside it) or back from a restart is reached within half a second. A refused connect costs nothing;
# the warning is logged on the first failure and every LOGGED_EVERY-th after it (every 10 s), not twice a second.
CONNECT_BACKOFF_MAX_S = 0.5
LOGGED_EVERY = 20
# Pause between aio-pika's own reconnect attempts once a connection was up (it uses a fixed interval):
# a refused connect costs nothing, and consumers resume ~1 s after the broker is back.
DEFAULT_RECONNECT_INTERVAL_S = 1.0
# A TCP + AMQP handshake with a healthy local broker takes milliseconds; beyond this it is not healthy.
DEFAULT_CONNECT_TIMEOUT_S = 5.0


def broker_backoff() -> Backoff:
    """The pause between attempts to reach the broker (DEFAULT_BACKOFF_INITIAL_S up to CONNECT_BACKOFF_MAX_S)."""
    return Backoff(initial_s=DEFAULT_BACKOFF_INITIAL_S, max_s=CONNECT_BACKOFF_MAX_S)


def worth_logging(failures: int) -> bool:
    """Whether the n-th failed attempt in a row is logged at WARNING (the first, then every LOGGED_EVERY-th)."""
    return failures == 1 or failures % LOGGED_EVERY == 0


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
