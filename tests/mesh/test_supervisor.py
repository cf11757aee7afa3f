"""The supervisor keeps real processes running: restarts with backoff, a crash loop marked failed, policies kept."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from localmesh.process import ManagedProcess
from localmesh.supervisor import CRASH_LOOP_EXITS, EXITED, FAILED, READY, STOPPED, Supervised
from localmesh.topology import Restart
from protomesh.aio import poll_until


async def _always_ready() -> bool:
    return True


def supervised(tmp_path: Path, code: str, restart: Restart, exits: list[int] | None = None) -> Supervised:
    process = ManagedProcess("worker", [sys.executable, "-c", code], log_dir=tmp_path)

    async def record(exit_code: int) -> None:
        if exits is not None:
            exits.append(exit_code)

    return Supervised("worker-1", process, ready=_always_ready, restart=restart, on_exit=record,
                      pid=lambda: process.pid)


async def test_a_killed_process_is_restarted_and_its_exit_is_recorded(tmp_path: Path) -> None:
    exits: list[int] = []
    worker = supervised(tmp_path, "import time; time.sleep(60)", Restart("unless-stopped"), exits)
    await worker.start()
    first = worker.status.pid
    assert first is not None

    os.kill(first, signal.SIGKILL)
    await poll_until(lambda: worker.status.restarts == 1 and worker.ready, timeout=10, what="the restart")

    assert worker.status.pid not in (None, first)
    assert (worker.status.last_exit, exits) == (-signal.SIGKILL, [-signal.SIGKILL])
    await worker.stop()
    assert worker.status.state == STOPPED


async def test_five_exits_within_a_minute_mark_the_process_failed_and_it_stays_down(tmp_path: Path) -> None:
    worker = supervised(tmp_path, "import sys, time; time.sleep(0.1); sys.exit(3)", Restart("always"))
    await worker.start()

    await poll_until(lambda: worker.status.state == FAILED, timeout=30, what="the crash loop being noticed")

    assert worker.status.restarts == CRASH_LOOP_EXITS - 1
    assert worker.status.last_exit == 3
    await asyncio.sleep(0.5)  # a failed process is left down: no restart after the crash loop
    assert (worker.status.state, worker.status.restarts) == (FAILED, CRASH_LOOP_EXITS - 1)


async def test_a_no_restart_policy_leaves_an_exited_process_stopped(tmp_path: Path) -> None:
    worker = supervised(tmp_path, "import sys, time; time.sleep(0.2); sys.exit(0)", Restart("no"))
    await worker.start()

    await poll_until(lambda: worker.status.state == EXITED, timeout=10, what="the exit")

    assert (worker.status.restarts, worker.status.last_exit) == (0, 0)


async def test_a_stop_on_purpose_is_never_restarted_and_a_start_brings_it_back(tmp_path: Path) -> None:
    worker = supervised(tmp_path, "import time; time.sleep(60)", Restart("always"))
    await worker.start()
    await worker.stop()

    assert worker.runnable.exit_code() is not None
    assert worker.status.restarts == 0
    await worker.start()
    assert worker.status.state == READY
    await worker.stop()
