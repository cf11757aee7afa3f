#!/usr/bin/env python3
"""Prints which top-level parts of the project import which (read from the source, nothing is imported).

    python3 scripts/import_graph.py            # one line per part: what it imports
    python3 scripts/import_graph.py --private  # also the private runtime modules (protomesh._x) each part uses
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The parts, each a folder; every service under services/ is a part of its own (its package is `app`).
PACKAGES = ("protomesh", "gateway_envoy", "localmesh", "bench", "tests", "clients", "scripts")


def parts(root: Path) -> dict[str, Path]:
    found = {name: root / name for name in PACKAGES if (root / name).is_dir()}
    found.update({f"services/{p.name}": p for p in sorted((root / "services").glob("*")) if (p / "app").is_dir()})
    return found


def imported_modules(path: Path) -> set[str]:
    try:
        tree = ast.parse(path.read_text(), str(path))
    except SyntaxError:
        return set()
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def graph(root: Path) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """part -> the other parts it imports, and part -> the private protomesh modules it imports."""
    known = parts(root)
    edges: dict[str, set[str]] = defaultdict(set)
    private: dict[str, set[str]] = defaultdict(set)
    for part, folder in known.items():
        for path in folder.rglob("*.py"):
            for module in imported_modules(path):
                top = module.split(".")[0]
                if top in known and top != part:
                    edges[part].add(top)
                if top == "protomesh" and part != "protomesh" and any(p.startswith("_") for p in module.split(".")):
                    private[part].add(module)
        edges.setdefault(part, set())
    return dict(edges), dict(private)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=ROOT, help="the project folder (default: this checkout)")
    parser.add_argument("--private", action="store_true", help="list the private protomesh modules each part uses")
    args = parser.parse_args(argv)
    edges, private = graph(args.root)
    width = max(map(len, edges), default=0)
    for part in sorted(edges):
        print(f"{part:<{width}} -> {', '.join(sorted(edges[part])) or '(nothing of the project)'}")
        if args.private and private.get(part):
            print(f"{'':<{width}}    private: {', '.join(sorted(private[part]))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
