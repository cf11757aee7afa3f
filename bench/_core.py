"""What every figure module shares: run options, the outcome shape, and the not-run signal."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"


class NotRun(Exception):
    """A figure cannot be measured here (a tool missing, a component not ready): recorded, never faked.

    `missing` names the tool or component that is absent; the smoke test accepts only those skips.
    """

    def __init__(self, why: str, *, missing: str = "") -> None:
        super().__init__(why)
        self.why = why
        self.missing = missing


@dataclass(frozen=True)
class Options:
    """How long and how large each figure runs; `smoke` shrinks everything to seconds and skips no code path."""

    smoke: bool = False
    work_dir: Path = RESULTS_DIR / "work"

    def pick(self, full: float, smoke: float) -> float:
        return smoke if self.smoke else full

    def count(self, full: int, smoke: int) -> int:
        return smoke if self.smoke else full


@dataclass
class Outcome:
    """What one figure measured: its published values plus baseline/subject raw numbers and the commands."""

    values: dict[str, Any]
    baseline: Mapping[str, Any] = field(default_factory=dict)
    subject: Mapping[str, Any] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # A table of the figure's own (`columns`, `rows`, optional `title`), rendered as such on the docs page.
    table: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Target:
    """What a value must be: at least (">=") or at most ("<=") `value`; a dict of values must all be, each against
    its own goal in `per_key` when named there (p2: tiny >= 0.5, list50 >= 1)."""

    op: Literal[">=", "<="]
    value: float
    unit: str = ""
    per_key: Mapping[str, float] = field(default_factory=dict)

    def met(self, measured: Any) -> bool:
        if isinstance(measured, Mapping):
            return all(self._holds(inner, self.per_key.get(key, self.value)) for key, inner in measured.items())
        return self._holds(measured, self.value)

    def _holds(self, measured: Any, goal: float) -> bool:
        return bool(measured >= goal if self.op == ">=" else measured <= goal)

    def __str__(self) -> str:
        sign = "≥" if self.op == ">=" else "≤"
        if self.per_key:
            return " / ".join(f"{key} {sign} {goal:,g}{self.unit}" for key, goal in self.per_key.items())
        return f"{sign} {self.value:,g}{self.unit}"


@dataclass(frozen=True)
class Figure:
    """One figure: its JSON keys with their targets (None: reported, no target), and the function that measures it."""

    id: str
    title: str
    targets: Mapping[str, Target | None]
    run: Callable[[Options], Outcome]

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(self.targets)

    def met(self, values: Mapping[str, Any]) -> dict[str, bool]:
        return {key: target.met(values[key]) for key, target in self.targets.items() if target is not None}

    def not_run(self, why: str) -> dict[str, Any]:
        return {key: {"status": "not run", "why": why} for key in self.keys}
