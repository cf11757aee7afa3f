"""How a service's process runs: the event loop it runs on, and its heap after start-up.

Two defaults a Python service gains from and rarely thinks of (their price is in docs/BENCHMARKS.md, p2):

- `server.event_loop: uvloop`: grpc.aio runs on any asyncio loop; uvloop's costs less CPU per call than the
  standard library's. `asyncio` turns it off (a debugger or a library that needs the standard loop).
- `server.gc_freeze: true`: once the service is serving, everything allocated while starting (modules,
  descriptors, settings, connections) moves to the permanent generation, so the collector's full passes stop
  walking it on every call's garbage.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable

from protomesh._settings import ConfigError

EVENT_LOOPS = ("uvloop", "asyncio")


def loop_factory(event_loop: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory asyncio.Runner takes for `server.event_loop` (None: the standard library's loop)."""
    if event_loop == "asyncio":
        return None
    if event_loop != "uvloop":
        raise ConfigError(f"server.event_loop: expected one of {', '.join(EVENT_LOOPS)}, got {event_loop!r}")
    try:
        import uvloop
    except ImportError:
        raise ConfigError("server.event_loop: uvloop is not installed; `pip install uvloop`, or set "
                          "server.event_loop: asyncio") from None
    return uvloop.new_event_loop


def freeze_startup_heap() -> None:
    """Collect start-up's garbage once, then keep what survived out of every later collection."""
    gc.collect()
    gc.freeze()
