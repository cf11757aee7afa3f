"""Side-by-side measurement: server CPU per request around a load run, and paired rounds that cancel drift."""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench._load import LoadResult
from bench._proc import cpu_seconds


@dataclass(frozen=True)
class Sample:
    """One load run against one server: the load result and the server's CPU seconds over it (also per named
    process when several were charged)."""

    load: LoadResult
    cpu_s: float
    cpu_parts: Mapping[str, float] = field(default_factory=dict)

    @property
    def cpu_us(self) -> float:
        """Server CPU microseconds per answered request (user + system, all threads)."""
        return self.per_request(self.cpu_s)

    def part_us(self, name: str) -> float:
        """CPU microseconds per answered request of one named process."""
        return self.per_request(self.cpu_parts[name])

    def per_request(self, cpu_s: float) -> float:
        return cpu_s / self.load.requests * 1e6 if self.load.requests else float("nan")

    def summary(self) -> dict[str, Any]:
        parts = {f"{name}_cpu_us": round(self.part_us(name), 1) for name in self.cpu_parts}
        return {**self.load.summary(), "server_cpu_s": round(self.cpu_s, 3), "server_cpu_us": round(self.cpu_us, 1),
                **parts}


def measured(pids: Sequence[int] | Mapping[str, int], load: Callable[[], LoadResult]) -> Sample:
    """Run `load` and charge the CPU the given server processes spent meanwhile to it (a mapping names them:
    the sample then has each one's share too)."""
    named = pids if isinstance(pids, Mapping) else {str(pid): pid for pid in pids}
    for attempt in (1, 2):
        before = {name: cpu_seconds(pid) for name, pid in named.items()}
        result = load()
        spent = {name: cpu_seconds(pid) - before[name] for name, pid in named.items()}
        if not result.errors:
            break
        # A failed request spoils the sample's latency and CPU: the sample is taken once more, said on stderr;
        # failures twice in a row end the figure.
        print(f"    {result.errors} failed request(s) (attempt {attempt} of 2) in: {result.command}", file=sys.stderr)
    else:
        raise RuntimeError(f"{result.errors} failed requests, twice in a row, in: {result.command}")
    return Sample(result, sum(spent.values()), spent if isinstance(pids, Mapping) else {})


def paired_rounds(subjects: Mapping[str, Callable[[], Sample]], rounds: int) -> dict[str, list[Sample]]:
    """Every subject once per round, the order reversed every other round.

    On a shared machine the load drifts; a ratio of two neighbouring measurements cancels most of it, and
    alternating the order cancels what is left of "who went first".
    """
    names = list(subjects)
    samples: dict[str, list[Sample]] = {name: [] for name in names}
    for number in range(rounds):
        for name in names if number % 2 == 0 else names[::-1]:
            samples[name].append(subjects[name]())
    return samples


def median_ratio(numerators: Sequence[Sample], denominators: Sequence[Sample],
                 metric: Callable[[Sample], float]) -> float:
    """Median over rounds of metric(numerator) / metric(denominator), pairing round with round."""
    return statistics.median(paired(numerators, denominators, metric, ratio=True))


def median_difference(minuends: Sequence[Sample], subtrahends: Sequence[Sample],
                      metric: Callable[[Sample], float]) -> float:
    """Median over rounds of metric(minuend) - metric(subtrahend), pairing round with round (e.g. ms added per call)."""
    return statistics.median(paired(minuends, subtrahends, metric))


def quartiles(values: Sequence[float]) -> tuple[float, float]:
    """The first and third quartiles (the spread of round-by-round ratios or differences); one value: itself."""
    if len(values) < 2:
        return values[0], values[0]
    first, _, third = statistics.quantiles(values, n=4)
    return first, third


def paired(minuends: Sequence[Sample], subtrahends: Sequence[Sample], metric: Callable[[Sample], float],
           *, ratio: bool = False) -> list[float]:
    """Round-by-round differences (or ratios) of metric, pairing round with round."""
    return [metric(m) / metric(s) if ratio else metric(m) - metric(s)
            for m, s in zip(minuends, subtrahends, strict=True)]


def described(samples: Sequence[Sample]) -> dict[str, Any]:
    """Medians plus every round's raw numbers, for the JSON detail."""
    return {
        "median_rps": round(statistics.median(s.load.rps for s in samples), 1),
        "median_server_cpu_us": round(statistics.median(s.cpu_us for s in samples), 1),
        "median_p50_ms": round(statistics.median(s.load.p50_ms for s in samples), 3),
        "rounds": [s.summary() for s in samples],
    }


def rps(sample: Sample) -> float:
    return sample.load.rps


def cpu_us(sample: Sample) -> float:
    return sample.cpu_us
