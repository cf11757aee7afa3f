"""Scores put every figure on one axis: 1.0 is the goal (or even with the peer), more is better."""

from __future__ import annotations

import json
from pathlib import Path

from bench._core import Figure, Outcome, Target
from bench.scores import append_history, goal_scores, peer_scores, read_history


def _figure(targets: dict[str, Target | None]) -> Figure:
    return Figure("px", "a figure", targets, lambda options: Outcome(values={}))


def test_an_at_least_goal_scores_measured_over_goal_and_an_at_most_goal_the_inverse() -> None:
    figure = _figure({"rps": Target(">=", 5000), "p99_ms": Target("<=", 20), "reported": None})
    scores = goal_scores([figure], {"rps": 2500.0, "p99_ms": 10.0, "reported": 3.0})
    assert scores == {"rps": 0.5, "p99_ms": 2.0}


def test_each_part_of_a_dict_value_is_scored_against_its_own_goal() -> None:
    figure = _figure({"p2": Target(">=", 1.0, per_key={"tiny": 0.5, "list50": 1.0})})
    assert goal_scores([figure], {"p2": {"tiny": 0.6, "list50": 0.9}}) == {"p2.tiny": 1.2, "p2.list50": 0.9}


def test_a_figure_that_did_not_run_has_no_score() -> None:
    figure = _figure({"rps": Target(">=", 5000)})
    assert goal_scores([figure], {"rps": {"status": "not run", "why": "no broker"}}) == {}


def test_a_cost_ratio_against_a_peer_is_inverted_so_that_more_means_protomesh_ahead() -> None:
    scores = peer_scores({"p3g_added_p50_envoy_vs_grpc_gateway": 2.0, "p7_events_vs_faststream": 1.5,
                          "p2_runtime_vs_fastapi": {"tiny": 0.5, "list50": 1.1}})
    assert scores == {"grpc-gateway (added p50)": 0.5, "FastStream (msg/s)": 1.5,
                      "FastAPI (tiny, CPU/req)": 0.5, "FastAPI (list50, CPU/req)": 1.1}


def test_each_full_run_adds_one_history_line_with_its_commit_and_scores(tmp_path: Path) -> None:
    history = tmp_path / "history.jsonl"
    figure = _figure({"rps": Target(">=", 5000)})
    for rps in (2500.0, 5000.0):
        append_history(history, [figure], {"rps": rps, "generated_at": "2026-12-02T00:00:00+00:00",
                                           "machine": {"cpu": "x", "cores": 2}})
    lines = read_history(history)
    assert [line["goals"] for line in lines] == [{"rps": 0.5}, {"rps": 1.0}]
    assert all(line["commit"] for line in lines)
    assert json.loads(history.read_text().splitlines()[0])["machine"] == {"cpu": "x", "cores": 2}
