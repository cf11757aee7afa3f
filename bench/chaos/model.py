"""What a chaos run is configured with (durations, load) and what each scenario reports."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Timing:
    """How long load runs around each fault; `--short` (the `make test` gate) uses seconds, the full run more."""

    before_s: float
    after_s: float
    # Requests per second each load worker sends; workers are paced so the load stays steady and bounded.
    rate_per_worker: float = 40.0
    workers: int = 4
    # A request that has not answered within this long counts as failed (the gateway's route timeout is 15 s).
    request_timeout_s: float = 5.0
    # How many times the kill9 scenario kills (and restarts) an instance, `before_s` apart: the goal is per kill.
    kills: int = 1

    @property
    def max_requests(self) -> int:
        """Hard cap on requests per scenario, whatever happens to the clock: well above the paced total."""
        return int(self.workers * self.rate_per_worker * (self.before_s + self.after_s + 120))


SHORT = Timing(before_s=1.0, after_s=1.5)
FULL = Timing(before_s=5.0, after_s=12.0, kills=10)


@dataclass
class Failure:
    """One failed request: when (seconds since the load started), which operation, and what came back."""

    at_s: float
    op: str
    detail: str


@dataclass
class Tally:
    """Requests sent and failed, per operation, with the first failures kept for the report."""

    total: int = 0
    failed: int = 0
    by_op: dict[str, list[int]] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    keep_failures: int = 20

    def add(self, op: str, failure: Failure | None) -> None:
        self.total += 1
        counts = self.by_op.setdefault(op, [0, 0])
        counts[0] += 1
        if failure is not None:
            self.failed += 1
            counts[1] += 1
            if len(self.failures) < self.keep_failures:
                self.failures.append(failure)


@dataclass
class ScenarioResult:
    """What one scenario measured, against its goals (a goal is a sentence and whether it held)."""

    name: str
    title: str
    tally: Tally
    duration_s: float
    metrics: dict[str, Any] = field(default_factory=dict)
    goals: dict[str, bool] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)

    @property
    def met(self) -> bool:
        return all(self.goals.values())

    def explain(self) -> str:
        """A multi-line account for an assertion message: counts, metrics, the fault timeline and failures."""
        lines = [f"{self.name}: {self.tally.failed} failed of {self.tally.total} ({self.duration_s:.1f} s)",
                 f"  goals: {self.goals}", f"  metrics: {self.metrics}",
                 f"  per op [total, failed]: {self.tally.by_op}"]
        lines += [f"  {event}" for event in self.events]
        lines += [f"  failed at {f.at_s:.3f}s {f.op}: {f.detail}" for f in self.tally.failures]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title, "met": self.met, "goals": self.goals,
            "total": self.tally.total, "failed": self.tally.failed, "by_op": self.tally.by_op,
            "metrics": self.metrics, "duration_s": round(self.duration_s, 2), "timeline": self.events,
            "failures": [asdict(f) for f in self.tally.failures],
        }
