"""`python -m bench`: measure issue 6's figures side by side into bench/results/latest.json and docs/BENCHMARKS.md.

    .venv/bin/python -m bench                       # every figure (~10 min), then the JSON and the docs page
    .venv/bin/python -m bench --only p1,p7          # some figures; the others keep their last results
    .venv/bin/python -m bench --smoke --only p1,p2  # seconds per figure, no targets judged, nothing published
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import (
    controlplane_scale,
    events,
    gateway_latency,
    gateway_throughput,
    mesh_up,
    overload,
    propagation,
    runtime_overhead,
    vs_fastapi,
    vs_grpc_gateway,
)
from bench._core import RESULTS_DIR, ROOT, Figure, NotRun, Options
from bench._proc import BENCH_VENV, busy_share, load_average
from bench.machine import describe
from bench.report import merge, write_markdown
from bench.scores import HISTORY, append_history, commit, goal_scores, peer_scores

FIGURES: tuple[Figure, ...] = (runtime_overhead.FIGURE, vs_fastapi.FIGURE, gateway_latency.FIGURE,
                               vs_grpc_gateway.FIGURE,
                               gateway_throughput.FIGURE, propagation.FIGURE, controlplane_scale.FIGURE,
                               events.FIGURE, mesh_up.FIGURE, overload.FIGURE)
DOCS = ROOT / "docs" / "BENCHMARKS.md"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ids = ",".join(figure.id for figure in FIGURES)
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="figures:\n" + "\n".join(f"  {f.id}  {f.title}" for f in FIGURES))
    parser.add_argument("--only", default=ids, help=f"comma-separated figures to run (default: all of {ids})")
    parser.add_argument("--smoke", action="store_true",
                        help="seconds per figure, targets not judged; writes bench/results/smoke.json, no docs")
    parser.add_argument("--out", type=Path, help="results file (default: bench/results/latest.json, "
                        "or smoke.json with --smoke)")
    parser.add_argument("--docs", type=Path, help=f"page to regenerate (default: {DOCS.relative_to(ROOT)}; "
                        "never with --smoke unless given)")
    args = parser.parse_args(argv)
    known = {figure.id: figure for figure in FIGURES}
    wanted = [part.strip() for part in args.only.split(",") if part.strip()]
    if unknown := [name for name in wanted if name not in known]:
        parser.error(f"unknown figure(s) {', '.join(unknown)}; choose from {ids}")
    args.figures = [figure for figure in FIGURES if figure.id in wanted]
    args.out = args.out or RESULTS_DIR / ("smoke.json" if args.smoke else "latest.json")
    args.docs = args.docs or (None if args.smoke else DOCS)
    return args


# The CPU share other work may take, sampled for BUSY_SAMPLE_S before a figure, before it counts as busy: a
# quarter of the machine is half of one of the two cores.
BUSY_SHARE = 0.25
BUSY_SAMPLE_S = 2.0


def run_figure(figure: Figure, options: Options) -> dict[str, Any]:
    """One figure's entry: its values and detail, or why it did not run; a crash is an "error" entry."""
    command = f".venv/bin/python -m bench --only {figure.id}{' --smoke' if options.smoke else ''}"
    targets = {key: str(target) for key, target in figure.targets.items() if target is not None}
    entry: dict[str, Any] = {"title": figure.title, "targets": targets, "smoke": options.smoke,
                             "measured_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                             "load_average": {"before": load_average()},
                             "cpu_busy_before": busy_share(options.pick(BUSY_SAMPLE_S, 0.2))}
    began = time.monotonic()
    shutil.rmtree(options.work_dir / figure.id, ignore_errors=True)  # logs of this run only
    try:
        outcome = figure.run(options)
    except NotRun as skipped:
        entry.update(status="not run", why=skipped.why, missing=skipped.missing, values=figure.not_run(skipped.why))
    except Exception as error:
        entry.update(status="error", why=f"{type(error).__name__}: {error}", traceback=traceback.format_exc(),
                     values={key: {"status": "error", "why": f"{type(error).__name__}: {error}"}
                             for key in figure.keys})
    else:
        met = None if options.smoke else figure.met(outcome.values)
        entry.update(status="measured", values=outcome.values, met=met,
                     baseline=outcome.baseline, subject=outcome.subject, notes=outcome.notes,
                     commands=[command, *outcome.commands], **({"table": outcome.table} if outcome.table else {}))
    entry["seconds"] = round(time.monotonic() - began, 1)
    entry["load_average"]["after"] = load_average()
    # Busy: other work took a share of the CPU in the moment before the figure started, with none of it running
    # (the load average is no measure of that: the previous figure's own load stays in it for minutes).
    entry["busy_machine"] = entry["cpu_busy_before"] >= BUSY_SHARE
    return relative(entry)


def relative(value: Any) -> Any:
    """The same data with this checkout's absolute path dropped from every string (results travel)."""
    if isinstance(value, dict):
        return {key: relative(inner) for key, inner in value.items()}
    if isinstance(value, list):
        return [relative(inner) for inner in value]
    return value.replace(f"{ROOT}/", "") if isinstance(value, str) else value


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    options = Options(smoke=args.smoke)
    measured_commit = commit()  # before the run writes its own results (the history and chart name this one)
    entries: dict[str, dict[str, Any]] = {}
    for figure in args.figures:
        sys.stdout.write(f"==> {figure.id}: {figure.title}\n")
        sys.stdout.flush()
        entries[figure.id] = entry = run_figure(figure, options)
        values = ", ".join(f"{key}={value}" for key, value in entry["values"].items())
        sys.stdout.write(f"    {entry['status']} in {entry['seconds']} s: {values}\n")
        if entry["status"] == "error":
            sys.stdout.write(entry["traceback"])
        sys.stdout.flush()
    top = {"generated_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
           "smoke": args.smoke, "commit": measured_commit, "machine": describe()}
    results = merge(args.out, FIGURES, entries, top)
    sys.stdout.write(f"==> results in {args.out}\n")
    failed = any(entry["status"] == "error" for entry in entries.values())
    if args.docs is not None:
        full = not args.smoke and len(args.figures) == len(FIGURES)
        if full:  # the trend is of whole runs only: a partial run would mix figures of different days
            append_history(HISTORY, FIGURES, results)
            sys.stdout.write(f"==> history line in {HISTORY}\n")
        chart = draw_chart(results, args.docs.with_name(CHART_NAME), history=HISTORY if not args.smoke else None)
        write_markdown(args.docs, FIGURES, results, chart=chart)
        sys.stdout.write(f"==> page in {args.docs}\n")
        failed = failed or (chart is None and os.environ.get("CI") == "true")
    return 1 if failed else 0


CHART_NAME = "benchmarks.png"


def draw_chart(results: dict[str, Any], out: Path, *, history: Path | None) -> Path | None:
    """The PNG of every figure against its goal and peer (and the trend), drawn by bench/chart.py in the bench
    venv; None, said on stdout, when that venv is missing."""
    python = BENCH_VENV / "bin" / "python"
    if not python.exists():
        sys.stdout.write(f"==> no chart: the bench venv ({python}) is missing; run `scripts/bootstrap.sh bench`\n")
        return None
    scores = {"goals": goal_scores(FIGURES, results), "peers": peer_scores(results),
              "commit": results.get("commit") or commit()}
    scores_file = out.with_suffix(".scores.json.tmp")
    scores_file.write_text(json.dumps(scores))
    argv = [str(python), str(ROOT / "bench" / "chart.py"), "--scores", str(scores_file), "--out", str(out),
            *(["--history", str(history)] if history is not None else [])]
    try:
        drawn = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    finally:
        scores_file.unlink(missing_ok=True)
    if drawn.returncode != 0:
        sys.stdout.write(f"==> no chart: bench/chart.py failed:\n{drawn.stderr[-2000:]}\n")
        return None
    sys.stdout.write(f"==> chart in {out}\n")
    return out


if __name__ == "__main__":
    sys.exit(main())
