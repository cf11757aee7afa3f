"""`make protos` refuses contracts whose generated Python package an installed module would hide."""

from __future__ import annotations

from pathlib import Path

import pytest

from protomesh._codegen import CodegenError, generate, shadowing

PING = 'syntax = "proto3";\npackage {package};\nmessage Ping {{}}\n'


def contract(root: Path, relative: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(PING.format(package=".".join(Path(relative).parent.parts)))


def test_a_contract_under_grpc_is_refused_naming_the_installed_module_that_wins(tmp_path: Path) -> None:
    contract(tmp_path / "protos", "grpc/testing/ping.proto")

    with pytest.raises(CodegenError, match=r"grpc/testing/ping.proto generates the Python package grpc.testing, "
                                           r"but grpc is the installed module .*site-packages/grpc"):
        generate(tmp_path / "protos", tmp_path / "gen", tmp_path / "set.binpb")
    assert not (tmp_path / "gen").exists()


def test_contracts_under_a_package_of_ones_own_are_fine_and_googles_packages_are_not(tmp_path: Path) -> None:
    assert shadowing(["acme/ledger/v1/ledger.proto", "acme/users/v1/users.proto"], tmp_path / "gen") == []
    [problem] = shadowing(["google/example/v1/x.proto"], tmp_path / "gen")
    assert "but google is the installed module" in problem


def test_the_runtimes_own_contract_options_generate_into_the_runtimes_package(tmp_path: Path) -> None:
    assert shadowing(["protomesh/v1/auth.proto"], tmp_path / "gen") == []
