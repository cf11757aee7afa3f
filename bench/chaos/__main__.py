"""`python -m bench.chaos`: break a running mesh under load, scenario by scenario, and publish what clients saw.

    .venv/bin/python -m bench.chaos                    # full run (~3 min): bench/results/chaos.json + docs
    .venv/bin/python -m bench.chaos --only kill9,consul
    .venv/bin/python -m bench.chaos --short            # the `make test` gate's seconds; nothing published
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.chaos.harness import ChaosMesh
from bench.chaos.load import open_workload
from bench.chaos.model import FULL, SHORT, ScenarioResult, Timing
from bench.chaos.report import DOCS, RESULTS_DIR, ROOT, write_json, write_markdown
from bench.chaos.scenarios import SCENARIOS, Scenario, run_scenario

# Between scenarios the shared mesh must be whole again within this long, else the next gets a fresh mesh.
HEALTHY_TIMEOUT_S = 30.0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    names = ",".join(SCENARIOS)
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos", description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="scenarios:\n" + "\n".join(f"  {s.name:<13} {s.title}" for s in SCENARIOS.values()))
    parser.add_argument("--only", default=names, help=f"comma-separated scenarios (default: all of {names})")
    parser.add_argument("--short", action="store_true", help="seconds of load per scenario (the test gate); "
                        "results go to the run's var dir, no docs")
    parser.add_argument("--rate", type=float, help="requests per second per load client "
                        f"(default: {FULL.rate_per_worker:.0f}; {FULL.workers} clients)")
    parser.add_argument("--out", type=Path, help="results file (default: bench/results/chaos.json; "
                        "with --short, chaos-short.json in the var dir)")
    parser.add_argument("--docs", type=Path, help=f"page to regenerate (default: {DOCS.relative_to(ROOT)}; "
                        "none with --short unless given)")
    parser.add_argument("--var-dir", type=Path, help="state and logs of the mesh (default: var/chaos/<time>)")
    args = parser.parse_args(argv)
    wanted = [name.strip() for name in args.only.split(",") if name.strip()]
    if unknown := [name for name in wanted if name not in SCENARIOS]:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {names}")
    args.scenarios = [SCENARIOS[name] for name in wanted]
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    args.var_dir = args.var_dir or ROOT / "var" / "chaos" / stamp
    # Short runs are checks, not published figures: their results stay with their logs (git-ignored var/).
    args.out = args.out or (args.var_dir / "chaos-short.json" if args.short else RESULTS_DIR / "chaos.json")
    args.docs = args.docs or (None if args.short else DOCS)
    return args


async def healthy(mesh: ChaosMesh) -> bool:
    """Every component runs and every service is back to its planned instances, in Consul and in Envoy."""
    if dead := mesh.dead():
        print(f"    {', '.join(dead)} exited: the next scenario gets a fresh mesh", flush=True)
        return False
    try:
        await mesh.settle_all(timeout=HEALTHY_TIMEOUT_S)
    except TimeoutError as exc:
        print(f"    the mesh did not recover ({exc}): the next scenario gets a fresh mesh", flush=True)
        return False
    return True


async def run_all(scenarios: Sequence[Scenario], timing: Timing, var_dir: Path) -> list[ScenarioResult]:
    """Run the scenarios in order on one mesh, starting a fresh one only after a scenario left it broken."""
    results: list[ScenarioResult] = []
    pending = list(scenarios)
    meshes = 0
    while pending:
        meshes += 1
        print(f"==> starting a mesh (state and logs in {var_dir / f'mesh-{meshes}'})", flush=True)
        async with ChaosMesh(var_dir / f"mesh-{meshes}") as mesh, open_workload(mesh.client) as work:
            while pending:
                scenario = pending.pop(0)
                print(f"==> {scenario.name}: {scenario.title}", flush=True)
                result = await run_scenario(scenario, mesh, work, timing)
                results.append(result)
                print(("    met: " if result.met else "    NOT MET: ") + result.explain(), flush=True)
                if pending and not await healthy(mesh):
                    break
    return results


def _python() -> str:
    """The interpreter as a reader would type it: `.venv/bin/python` from the checkout."""
    try:
        return str(Path(sys.executable).relative_to(ROOT))
    except ValueError:
        return "python"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    base = SHORT if args.short else FULL
    timing = base if args.rate is None else dataclasses.replace(base, rate_per_worker=args.rate)
    command = shlex.join([_python(), "-m", "bench.chaos", *(sys.argv[1:] if argv is None else argv)])
    results = asyncio.run(run_all(args.scenarios, timing, args.var_dir))
    document = write_json(args.out, results, command=command, mode="short" if args.short else "full",
                          timing=timing, var_dir=args.var_dir)
    print(f"==> wrote {args.out}", flush=True)
    if args.docs is not None:
        write_markdown(args.docs, document)
        print(f"==> wrote {args.docs}", flush=True)
    missed = [r.name for r in results if not r.met]
    print(f"==> {len(results) - len(missed)} of {len(results)} scenarios met their goals"
          + (f"; not met: {', '.join(missed)}" if missed else ""), flush=True)
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
