"""Layers point one way: services and the gateway stand on the runtime, the local mesh on both, and the runtime
knows none of them (the graph is scripts/import_graph.py's, read from the source)."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from localmesh.testing import project_root

ROOT = project_root()


def _import_graph() -> ModuleType:
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["import_graph"] = module
    spec.loader.exec_module(module)
    return module


GRAPH = _import_graph()


def test_the_runtime_imports_nothing_of_the_project() -> None:
    edges, _ = GRAPH.graph(ROOT)
    assert edges["protomesh"] == set()


def test_the_gateway_stands_on_the_runtimes_public_names_only() -> None:
    edges, private = GRAPH.graph(ROOT)
    assert edges["gateway_envoy"] == {"protomesh"}
    assert private.get("gateway_envoy", set()) == set()


def test_the_local_mesh_stands_on_the_runtime_and_the_gateway() -> None:
    edges, private = GRAPH.graph(ROOT)
    assert edges["localmesh"] <= {"protomesh", "gateway_envoy"}
    assert private.get("localmesh", set()) == set()


def test_a_services_code_imports_only_the_runtime() -> None:
    for service in sorted((ROOT / "services").glob("*/app")):
        used = {module.split(".")[0] for path in service.rglob("*.py") for module in GRAPH.imported_modules(path)}
        assert used & {"localmesh", "gateway_envoy", "bench", "tests"} == set(), service.parent.name
        private = {m for path in service.rglob("*.py") for m in GRAPH.imported_modules(path)
                   if m.startswith("protomesh._")}
        assert private == set(), service.parent.name


def test_no_two_test_modules_share_a_file_name() -> None:
    # pytest imports test modules, and the helpers beside them, by file name (the test folders are not
    # packages): a second x.py anywhere under tests/ stops the whole run at collection.
    names = [path.name for path in (ROOT / "tests").rglob("*.py") if path.name != "conftest.py"]
    assert sorted({name for name in names if names.count(name) > 1}) == []
