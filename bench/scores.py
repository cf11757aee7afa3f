"""Each figure against its goal and its peer, as one number each, and the history of full runs that keeps them.

A score is measured ÷ goal for an "at least" goal and goal ÷ measured for an "at most" one, so 1.0 is the
goal and more is better on every axis; a peer score is protomesh ÷ the peer the same way (more: protomesh
ahead). `bench/results/history.jsonl` gets one line per full `make bench` run: the commit, the date, the
machine and those scores, which `bench/chart.py` draws as the trend.
"""

from __future__ import annotations

import datetime
import json
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench._core import ROOT, Figure, Target

HISTORY = ROOT / "bench" / "results" / "history.jsonl"
# The peers a user would pick instead, as a result key (and the part of a dict value) with how it reads:
# "higher" when the key is already protomesh-better-when-higher, "lower" when it is a protomesh ÷ peer cost.
PEERS: tuple[tuple[str, str, str | None, str], ...] = (
    ("FastAPI (tiny, CPU/req)", "p2_runtime_vs_fastapi", "tiny", "higher"),
    ("FastAPI (list50, CPU/req)", "p2_runtime_vs_fastapi", "list50", "higher"),
    ("grpc-gateway (added p50)", "p3g_added_p50_envoy_vs_grpc_gateway", None, "lower"),
    ("grpc-gateway (req/s)", "p3g_rps_envoy_vs_grpc_gateway", None, "higher"),
    ("FastStream (msg/s)", "p7_events_vs_faststream", None, "higher"),
)


def _score(value: Any, op: str, goal: float) -> float | None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    if op == ">=":
        return round(value / goal, 4) if goal else None
    return round(goal / value, 4) if value > 0 else None


def goal_scores(figures: Sequence[Figure], results: Mapping[str, Any]) -> dict[str, float]:
    """label -> score for every value with a goal (a dict value: one score per part)."""
    scores: dict[str, float] = {}
    for figure in figures:
        for key, target in figure.targets.items():
            if target is None or key not in results:
                continue
            value = results[key]
            parts = value.items() if isinstance(value, Mapping) and "status" not in value else [(None, value)]
            for part, inner in parts:
                goal = target.per_key.get(part, target.value) if part is not None else target.value
                score = _score(inner, target.op, goal)
                if score is not None:
                    scores[f"{key}{'.' + part if part else ''}"] = score
    return scores


def peer_scores(results: Mapping[str, Any]) -> dict[str, float]:
    """peer label -> protomesh ÷ peer (higher: protomesh ahead), for the peers this run measured."""
    scores: dict[str, float] = {}
    for label, key, part, reads in PEERS:
        value = results.get(key)
        if isinstance(value, Mapping) and part is not None:
            value = value.get(part)
        score = _score(value, ">=" if reads == "higher" else "<=", 1.0)
        if score is not None:
            scores[label] = score
    return scores


def targets_of(figures: Sequence[Figure]) -> dict[str, Target]:
    return {key: target for figure in figures for key, target in figure.targets.items() if target is not None}


def commit() -> str:
    """The checkout's commit (short), with "+changes" when the work tree differs from it outside what the bench
    itself writes (bench/results, docs); "unknown" outside git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()

    head = git("rev-parse", "--short=12", "HEAD") or "unknown"
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results", ":!docs")
    return f"{head}+changes" if changed else head


def append_history(path: Path, figures: Sequence[Figure], results: Mapping[str, Any]) -> dict[str, Any]:
    """One line for this full run: commit, date, machine, and the goal and peer scores."""
    machine = results.get("machine", {})
    line = {"commit": results.get("commit") or commit(),
            "generated_at": results.get("generated_at") or datetime.datetime.now(datetime.UTC).isoformat(),
            "machine": {"cpu": machine.get("cpu"), "cores": machine.get("cores")},
            "goals": goal_scores(figures, results), "peers": peer_scores(results)}
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as history:
        history.write(json.dumps(line, ensure_ascii=False) + "\n")
    return line


def read_history(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
