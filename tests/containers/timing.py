"""How long each phase of a container run took, logged as it ends and kept as JSON for the record."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger("containers")


class Phases:
    """Named durations in the order they ran; `measure` times one block."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.notes: dict[str, object] = {}

    @contextmanager
    def measure(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        log.info("phase: %s ...", name)
        try:
            yield
        finally:
            self.seconds[name] = round(time.monotonic() - started, 1)
            log.info("phase: %s took %.1fs", name, self.seconds[name])

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"seconds": self.seconds, **self.notes}, indent=2) + "\n")

    def summary(self) -> str:
        return ", ".join(f"{name} {seconds:.1f}s" for name, seconds in self.seconds.items())
