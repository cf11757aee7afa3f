"""Draw the benchmark chart (a PNG) from the scores of the latest run and the history of full runs.

    .tools/bench-venv/bin/python bench/chart.py --scores SCORES.json --history bench/results/history.jsonl \\
        --out docs/benchmarks.png

Runs in the bench venv (matplotlib stays out of the project's dependencies); `python -m bench` calls it
whenever it writes the docs page. Three panels: each figure against its goal (1.0 = the goal, right of it =
met), protomesh against each peer (1.0 = even, right of it = protomesh ahead), and the trend of every goal
score over the full runs in the history.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

# Ticks of the log-scaled score axes, printed as plain numbers.
TICKS = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


def _bars(axis: Any, scores: dict[str, float], title: str, even: str) -> None:
    labels = list(scores)
    values = [scores[label] for label in labels]
    colors = ["#2e7d32" if value >= 1.0 else "#c62828" for value in values]
    axis.barh(labels, values, color=colors)
    axis.axvline(1.0, color="black", linewidth=1)
    axis.invert_yaxis()
    axis.set_xscale("log")
    axis.xaxis.set_major_locator(FixedLocator(TICKS))
    axis.xaxis.set_major_formatter(ScalarFormatter())
    axis.xaxis.set_minor_locator(NullLocator())
    axis.set_title(title, fontsize=10)
    axis.set_xlabel(f"score (log scale; 1.0 = {even})", fontsize=8)
    axis.tick_params(labelsize=7)
    for y, value in enumerate(values):
        axis.text(value, y, f" {value:.2f}", va="center", fontsize=7)


def _trend(axis: Any, history: list[dict[str, Any]]) -> None:
    keys = sorted({key for line in history for key in line.get("goals", {})})
    runs = [f"{line['generated_at'][:10]}\n{line['commit'][:7]}" for line in history]
    for key in keys:
        axis.plot(range(len(history)), [line.get("goals", {}).get(key) for line in history], marker="o",
                  label=key, linewidth=1)
    axis.axhline(1.0, color="black", linewidth=1)
    axis.set_yscale("log")
    axis.yaxis.set_major_locator(FixedLocator(TICKS))
    axis.yaxis.set_major_formatter(ScalarFormatter())
    axis.yaxis.set_minor_locator(NullLocator())
    axis.set_xticks(range(len(history)), runs, fontsize=6)
    axis.set_title("Goal scores over full runs (bench/results/history.jsonl)", fontsize=10)
    axis.tick_params(labelsize=7)
    axis.legend(fontsize=5, ncol=3, loc="best")


def draw(scores: dict[str, Any], history: list[dict[str, Any]], out: Path) -> None:
    peers = scores["peers"] or {"(no peer measured)": 1.0}
    heights = [max(len(scores["goals"]), 1) * 0.3 + 1, len(peers) * 0.3 + 1, *([4.0] if history else [])]
    figure, axes = plt.subplots(len(heights), 1, figsize=(9, sum(heights)),
                                gridspec_kw={"height_ratios": heights})
    _bars(axes[0], scores["goals"], f"Each figure against its goal ({scores.get('commit', '')})", "the goal")
    _bars(axes[1], peers, "protomesh against the peer a user would pick", "even")
    if history:
        _trend(axes[2], history)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scores", type=Path, required=True, help="JSON: {goals: {...}, peers: {...}, commit}")
    parser.add_argument("--history", type=Path, help="history.jsonl of full runs (the trend panel)")
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    args = parser.parse_args()
    history = []
    if args.history is not None and args.history.exists():
        history = [json.loads(line) for line in args.history.read_text().splitlines() if line.strip()]
    draw(json.loads(args.scores.read_text()), history, args.out)


if __name__ == "__main__":
    main()
