"""`protomesh new service`: names that would clash are refused, and a fresh scaffold passes lint and its tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from localmesh.scaffold import plural, problem
from localmesh.testing import project_root
from localmesh.topology import Topology

ROOT = project_root()
BUF = ROOT / ".tools" / "node" / "node_modules" / ".bin" / "buf"
VENV_BIN = Path(sys.executable).parent


@pytest.mark.parametrize(("name", "why"), [
    ("grpc", "shadow the installed module 'grpc'"),
    ("google", "shadow the installed module 'google'"),
    ("json", "shadow the installed module 'json'"),
    ("users", "services/users or protos/acme/users exists already"),
    ("consul", "has an entry named 'consul' already"),
    ("class", "reserved"),
    ("app", "reserved"),
    ("Ledger", "lowercase letters"),
    ("ledger-2", "lowercase letters"),
    ("lc", "LC_* variables belong to another program"),
])
def test_a_name_that_would_clash_is_refused_with_the_reason(name: str, why: str) -> None:
    reason = problem(ROOT, name, env={})
    assert reason is not None
    assert why in reason


def test_a_name_whose_settings_prefix_is_already_in_the_environment_is_refused() -> None:
    assert "LEDGER_MODE are set" in str(problem(ROOT, "ledger", env={"LEDGER_MODE": "x"}))
    assert problem(ROOT, "ledger", env={}) is None


@pytest.mark.parametrize(("name", "names"), [("ledger", "ledgers"), ("box", "boxes"), ("policy", "policies"),
                                             ("day", "days")])
def test_resource_names_are_pluralised_for_urls(name: str, names: str) -> None:
    assert plural(name) == names


def _copy_project(target: Path) -> Path:
    """A project of its own: copies of what the scaffold edits, links to what lint needs from this one."""
    for name in ("services", "config", "docker-compose.yml", "pyproject.toml"):
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
        else:
            shutil.copyfile(source, target / name)
    shutil.copytree(ROOT / "protos", target / "protos")
    for name in ("protomesh", "localmesh", "gateway_envoy"):  # first-party for ruff's import order, as here
        (target / name).symlink_to(ROOT / name)
    return target


def _run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, f"{' '.join(argv)} (in {cwd}):\n{result.stdout}{result.stderr}"


@pytest.mark.slow
def test_a_fresh_scaffold_passes_protos_lint_and_its_own_tests(tmp_path: Path) -> None:
    project = _copy_project(tmp_path)
    protomesh = [sys.executable, "-m", "protomesh.cli"]
    _run([*protomesh, "new", "service", "ledger", "--project", str(project)], project)
    assert Topology.load(project, {}).specs["ledger"].source == "ledger"

    _run([*protomesh, "protos", "--root", "protos", "--python-out", "gen/python",
          "--descriptor-out", "gen/descriptors/protomesh.binpb"], project)
    _run([str(BUF), "format", "--diff", "--exit-code", "--path", "acme"], project / "protos")
    _run([str(BUF), "lint"], project / "protos")
    _run([str(VENV_BIN / "ruff"), "check", "services/ledger"], project)
    service = project / "services" / "ledger"
    _run([sys.executable, "-m", "mypy", "app", "tests"], service)
    env = {**os.environ, "PYTHONPATH": str(project / "gen" / "python")}
    _run([sys.executable, "-m", "pytest", "tests", "-q", "-p", "no:cacheprovider"], service, env)
