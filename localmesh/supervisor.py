"""Keeps one process of the mesh running: restarts it with backoff when it exits on its own, per its restart
policy, and marks it failed when it crash-loops, while the rest of the mesh keeps serving."""

from __future__ import annotations

import asyncio
import collections
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from localmesh.topology import Restart
from protomesh.aio import BackgroundTasks, Backoff

log = logging.getLogger("localmesh.supervisor")

# A crash loop: this many exits within the window mark the process failed instead of restarting it again.
CRASH_LOOP_EXITS = 5
CRASH_LOOP_WINDOW_S = 60.0
# The first restart comes almost at once (a killed instance is back within ~1-2 s of Python start-up);
# repeated exits wait longer, up to the cap.
RESTART_BACKOFF_INITIAL_S = 0.1
RESTART_BACKOFF_MAX_S = 10.0
# A process that stayed up this long had recovered: its next exit restarts quickly again.
STABLE_AFTER_S = 10.0
# How often an exit is looked for: a killed process is noticed within this (one waitpid per process).
WATCH_INTERVAL_S = 0.05
# How long a (re)started process may take to become ready; RabbitMQ's cold boot is the slowest (~9 s).
READY_TIMEOUT_S = 60.0

STARTING, READY, UNREADY, RESTARTING, FAILED, EXITED, STOPPED = (
    "starting", "ready", "unready", "restarting", "failed", "exited", "stopped")


class Runnable(Protocol):
    """What the supervisor drives: a child process, or a detached one it can still start, watch and stop."""

    def start(self) -> None: ...

    def exit_code(self) -> int | None: ...

    def stop(self) -> int | None: ...

    def log_tail(self, lines: int = 40) -> str: ...


@dataclass
class Status:
    """What `protomesh status` shows of one supervised process."""

    state: str = STOPPED
    pid: int | None = None
    restarts: int = 0
    started_at: float = 0.0               # wall clock of the current process's start
    last_exit: int | None = None          # negative: the signal that ended it


class Supervised:
    """One process the mesh keeps running.

        supervised = Supervised("users-1", process, ready=instance_ready, restart=Restart("unless-stopped"))
        await supervised.start()          # returns once ready; a later exit is restarted in the background
        await supervised.stop()           # a stop asked for: never restarted
    """

    def __init__(self, name: str, runnable: Runnable, *, ready: Callable[[], Awaitable[bool]], restart: Restart,
                 pid: Callable[[], int | None], on_exit: Callable[[int], Awaitable[None]] | None = None,
                 on_change: Callable[[], None] | None = None, ready_timeout_s: float = READY_TIMEOUT_S) -> None:
        self.name = name
        self.runnable = runnable
        self.restart = restart
        self.status = Status()
        self._ready = ready
        self._pid = pid
        self._on_exit = on_exit
        self._on_change = on_change or (lambda: None)
        self._ready_timeout_s = ready_timeout_s
        self._exits: collections.deque[float] = collections.deque(maxlen=CRASH_LOOP_EXITS)
        self._backoff = Backoff(initial_s=RESTART_BACKOFF_INITIAL_S, max_s=RESTART_BACKOFF_MAX_S)
        self._watch = BackgroundTasks()

    @property
    def ready(self) -> bool:
        return self.status.state == READY

    async def start(self) -> float:
        """Start it and wait until ready (RuntimeError if it exits first, TimeoutError if it takes too long);
        from then on an exit of its own is restarted per the policy. Returns the seconds it took."""
        began = time.monotonic()
        await self._launch()
        await self._until_ready(raise_on_exit=True)
        self._set(READY)
        if not self._watch.running:
            self._watch.start(self._supervise(), name=f"supervise-{self.name}")
        return time.monotonic() - began

    async def stop(self) -> None:
        """Stop it on purpose (SIGTERM, then SIGKILL after its timeout): it is not restarted."""
        await self._watch.stop()
        code = await asyncio.to_thread(self.runnable.stop)
        self.status.last_exit = code if code is not None else self.status.last_exit
        self.status.pid = None
        self._set(STOPPED)

    async def _launch(self) -> None:
        self.status.started_at = time.time()
        self._set(STARTING)
        await asyncio.to_thread(self.runnable.start)
        self.status.pid = self._pid()
        self._on_change()

    async def _until_ready(self, *, raise_on_exit: bool) -> bool:
        """True once ready; False (or RuntimeError when raise_on_exit) if it exited first; TimeoutError."""
        deadline = time.monotonic() + self._ready_timeout_s
        while not await self._ready():
            if self.runnable.exit_code() is not None:
                if raise_on_exit:
                    raise RuntimeError(f"{self.name} exited while starting:\n{self.runnable.log_tail()}")
                return False
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} was not ready after {self._ready_timeout_s:.0f}s "
                                   f"(log: {self.runnable.log_tail(5)})")
            await asyncio.sleep(WATCH_INTERVAL_S)
        return True

    async def _supervise(self) -> None:
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            code = self.runnable.exit_code()
            if code is None:
                continue
            if not await self._exited(code):
                return
            await self._relaunch()

    async def _exited(self, code: int) -> bool:
        """Record an exit of its own; True when it is to be started again."""
        now = time.monotonic()
        uptime = time.time() - self.status.started_at
        self.status.last_exit, self.status.pid = code, None
        self._exits.append(now)
        if self._on_exit is not None:
            await self._on_exit(code)
        if not self.restart.restarts(code, self.status.restarts):
            log.warning("%s exited (%s); restart policy %s: left stopped", self.name, describe_exit(code),
                        self.restart.policy)
            self._set(EXITED)
            return False
        if len(self._exits) == CRASH_LOOP_EXITS and now - self._exits[0] <= CRASH_LOOP_WINDOW_S:
            log.error("%s exited %d times within %.0f s (last: %s): marked failed, not restarted again; "
                      "`protomesh logs %s` shows why, `protomesh restart %s` tries again", self.name,
                      CRASH_LOOP_EXITS, CRASH_LOOP_WINDOW_S, describe_exit(code), self.name, self.name)
            self._set(FAILED)
            return False
        if uptime >= STABLE_AFTER_S:
            self._backoff.reset()
        delay = self._backoff.next_delay()
        log.warning("%s exited (%s) after %.1f s; restarting in %.1f s (restart %d)", self.name,
                    describe_exit(code), uptime, delay, self.status.restarts + 1)
        self._set(RESTARTING)
        await asyncio.sleep(delay)
        return True

    async def _relaunch(self) -> None:
        self.status.restarts += 1
        await self._launch()
        try:
            back = await self._until_ready(raise_on_exit=False)
        except TimeoutError as exc:
            log.error("%s", exc)
            self._set(UNREADY)
            return
        if back:
            log.info("%s is back (restart %d)", self.name, self.status.restarts)
            self._set(READY)

    def _set(self, state: str) -> None:
        self.status.state = state
        self._on_change()


def describe_exit(code: int) -> str:
    """`exit code 1`, or `signal SIGKILL` for a process a signal ended."""
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"
